//! `POST /api/send-pdf`: the request body parsed into domain types, and the 202 answer.
//!
//! Parsing is pure (bytes in, typed request or [`ApiError`] out) so every rule is unit-tested
//! here; the handler only reads the body, calls [`SendPdfRequest::parse`] and enqueues.

use std::fmt;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header;
use hyper::{HeaderMap, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{FileName, PdfDocument, PhoneNumber};
use crate::http::error::ApiError;
use crate::session::SessionId;

/// The `message` of a 202 answer, as in the Node service.
pub const ACCEPTED_MESSAGE: &str = "Mensaje encolado para envío.";

/// A validated send request.
#[derive(Debug, Clone)]
pub struct SendPdfRequest {
    /// `sessionId`: which linked number sends.
    pub session_id: SessionId,
    /// `to`: the recipient.
    pub to: PhoneNumber,
    /// `pdfBase64`, decoded.
    pub pdf: PdfDocument,
    /// `fileName`, or `Comprobante.pdf` when absent or `null`.
    pub file_name: FileName,
}

/// The body as sent; each field is checked by hand to name it in the error.
#[derive(Deserialize)]
struct RawRequest {
    #[serde(rename = "sessionId")]
    session_id: Option<Value>,
    to: Option<Value>,
    #[serde(rename = "pdfBase64")]
    pdf_base64: Option<Value>,
    #[serde(rename = "fileName")]
    file_name: Option<Value>,
}

impl SendPdfRequest {
    /// Parses `{"sessionId","to","pdfBase64","fileName"?}`.
    ///
    /// Not a JSON object → `BadJson`; a required field absent, `null` or `""` →
    /// `MissingField(name)` (the Node service rejected falsy values); a wrong JSON type →
    /// `WrongFieldType`; then each value's own rule. `to` may also be a JSON integer, since
    /// clients often send phone numbers as numbers. Unknown fields are ignored.
    pub fn parse(body: &[u8]) -> Result<SendPdfRequest, ApiError> {
        let raw: RawRequest = serde_json::from_slice(body).map_err(|_| ApiError::BadJson)?;

        let session_id = SessionId::parse(&required_string(raw.session_id, "sessionId")?)?;
        let to = match raw.to {
            Some(Value::Number(n)) if n.is_u64() => PhoneNumber::parse(&n.to_string())?,
            other => PhoneNumber::parse(&required_string(other, "to")?)?,
        };
        let pdf = PdfDocument::from_base64(&required_string(raw.pdf_base64, "pdfBase64")?)?;
        let file_name = match raw.file_name {
            None | Some(Value::Null) => FileName::default(),
            Some(Value::String(name)) => FileName::parse(&name)?,
            Some(_) => {
                return Err(ApiError::WrongFieldType { field: "fileName", expected: "a string" });
            }
        };

        Ok(SendPdfRequest { session_id, to, pdf, file_name })
    }
}

fn required_string(value: Option<Value>, field: &'static str) -> Result<String, ApiError> {
    match value {
        None | Some(Value::Null) => Err(ApiError::MissingField(field)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(ApiError::MissingField(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::WrongFieldType { field, expected: "a string" }),
    }
}

/// `415` unless the `Content-Type` is absent or `application/json` (parameters such as
/// `; charset=utf-8` allowed, any case). An absent header is tolerated for `curl -d` users.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value.as_bytes().split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
    if essence.eq_ignore_ascii_case(b"application/json") { Ok(()) } else { Err(ApiError::UnsupportedMediaType) }
}

/// The `202 Accepted` body: `{"success":true,"message":"Mensaje encolado para envío.","messageId":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SendPdfAccepted {
    success: bool,
    message: &'static str,
    #[serde(rename = "messageId")]
    message_id: String,
}

impl SendPdfAccepted {
    /// The answer for the queued job `message_id`.
    pub fn new(message_id: impl fmt::Display) -> SendPdfAccepted {
        SendPdfAccepted { success: true, message: ACCEPTED_MESSAGE, message_id: message_id.to_string() }
    }

    /// The id the client can use to correlate logs.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// `202 Accepted` with this body as JSON.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        super::json_response(StatusCode::ACCEPTED, &self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use serde_json::json;

    const PDF_B64: &str = "JVBERi0xLjQKJSVFT0YK"; // "%PDF-1.4\n%%EOF\n"

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn valid() -> serde_json::Value {
        json!({"sessionId": "tienda_lima", "to": "51987654321", "pdfBase64": PDF_B64})
    }

    #[test]
    fn parses_a_valid_request_with_default_file_name() {
        let req = SendPdfRequest::parse(&body(valid())).unwrap();
        assert_eq!(req.session_id.as_str(), "tienda_lima");
        assert_eq!(req.to.digits(), "51987654321");
        assert_eq!(req.pdf.bytes().as_ref(), b"%PDF-1.4\n%%EOF\n");
        assert_eq!(req.file_name.as_str(), "Comprobante.pdf");
    }

    #[test]
    fn file_name_given_null_or_invalid() {
        let mut v = valid();
        v["fileName"] = json!("Factura F001-23");
        assert_eq!(SendPdfRequest::parse(&body(v.clone())).unwrap().file_name.as_str(), "Factura F001-23.pdf");
        v["fileName"] = json!(null);
        assert_eq!(SendPdfRequest::parse(&body(v.clone())).unwrap().file_name.as_str(), "Comprobante.pdf");
        v["fileName"] = json!("../etc/passwd");
        assert!(matches!(SendPdfRequest::parse(&body(v.clone())), Err(ApiError::InvalidFileName(_))));
        v["fileName"] = json!(12);
        assert!(matches!(SendPdfRequest::parse(&body(v)), Err(ApiError::WrongFieldType { field: "fileName", .. })));
    }

    #[test]
    fn phone_may_be_a_number_or_formatted() {
        let mut v = valid();
        v["to"] = json!(51987654321u64);
        assert_eq!(SendPdfRequest::parse(&body(v.clone())).unwrap().to.digits(), "51987654321");
        v["to"] = json!("+51 987-654-321");
        assert_eq!(SendPdfRequest::parse(&body(v.clone())).unwrap().to.digits(), "51987654321");
        v["to"] = json!("12345");
        assert!(matches!(SendPdfRequest::parse(&body(v.clone())), Err(ApiError::InvalidPhone(_))));
        v["to"] = json!(-51987654321i64);
        assert!(matches!(SendPdfRequest::parse(&body(v)), Err(ApiError::WrongFieldType { field: "to", .. })));
    }

    #[test]
    fn missing_fields_are_named() {
        for field in ["sessionId", "to", "pdfBase64"] {
            for replacement in [None, Some(json!(null)), Some(json!("")), Some(json!("  "))] {
                let mut v = valid();
                match &replacement {
                    None => {
                        v.as_object_mut().unwrap().remove(field);
                    }
                    Some(r) => v[field] = r.clone(),
                }
                match SendPdfRequest::parse(&body(v)) {
                    Err(ApiError::MissingField(f)) => assert_eq!(f, field),
                    other => panic!("{field} {replacement:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn wrong_types_are_named() {
        for (field, value) in [("sessionId", json!(1)), ("pdfBase64", json!(["x"])), ("to", json!(true))] {
            let mut v = valid();
            v[field] = value;
            match SendPdfRequest::parse(&body(v)) {
                Err(ApiError::WrongFieldType { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn value_rules_map_to_their_errors() {
        let mut v = valid();
        v["sessionId"] = json!("../x");
        assert!(matches!(SendPdfRequest::parse(&body(v)), Err(ApiError::InvalidSessionId(_))));
        let mut v = valid();
        v["pdfBase64"] = json!("not base64!");
        assert!(matches!(SendPdfRequest::parse(&body(v)), Err(ApiError::InvalidBase64)));
        let mut v = valid();
        v["pdfBase64"] = json!("aGVsbG8="); // "hello"
        assert!(matches!(SendPdfRequest::parse(&body(v)), Err(ApiError::NotAPdf)));
        let mut v = valid();
        v["pdfBase64"] = json!(format!("data:application/pdf;base64,{PDF_B64}"));
        assert!(SendPdfRequest::parse(&body(v)).is_ok());
    }

    #[test]
    fn non_object_bodies_are_bad_json() {
        for raw in [&b""[..], b"{", b"[]", b"\"x\"", b"null", b"{\"sessionId\":\"a\",\"sessionId\":\"b\"}"] {
            assert!(matches!(SendPdfRequest::parse(raw), Err(ApiError::BadJson)), "{raw:?}");
        }
    }

    #[test]
    fn content_type_rules() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_ok());
        for ok in ["application/json", "Application/JSON; charset=utf-8", " application/json ;x=y"] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ok));
            assert!(check_content_type(&h).is_ok(), "{ok}");
        }
        for bad in ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", ""] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(bad));
            assert!(matches!(check_content_type(&h), Err(ApiError::UnsupportedMediaType)), "{bad}");
        }
    }

    #[test]
    fn accepted_body_shape() {
        let accepted = SendPdfAccepted::new("job-42");
        assert_eq!(
            serde_json::to_string(&accepted).unwrap(),
            r#"{"success":true,"message":"Mensaje encolado para envío.","messageId":"job-42"}"#
        );
        let response = accepted.into_response();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
