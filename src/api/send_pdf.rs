//! `POST /api/send-pdf`, the seed's route: the request body parsed into domain types, and the
//! 202 answer, byte for byte the Node service's.
//!
//! Parsing is pure (bytes in, typed request or [`ApiError`] out) so every rule is unit-tested
//! here; the handler checks the caller, reads the body, calls [`SendPdfRequest::parse`] and
//! enqueues.

use std::fmt;

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::auth::{Caller, Scope};
use crate::api::body::{PdfLimit, RequestBody};
use crate::api::error::{ApiError, AuthErrors, ErrorBody};
use crate::api::openapi::PhoneField;
use crate::api::state::AppState;
use crate::domain::SessionId;
use crate::domain::{FileName, OutgoingContent, PdfDocument, PhoneNumber};
use crate::journal::IdempotencyKey;
use crate::queue::EnqueueError;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(send_pdf))
}

/// The body of `POST /api/send-pdf`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // Only describes the JSON for the OpenAPI document; parsing is by hand.
#[serde(rename_all = "camelCase")]
struct SendPdfBody {
    /// The session (linked number) that sends it.
    #[schema(example = "tienda_lima", pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    session_id: String,
    /// The recipient: 7 to 15 digits with the country code; `+`, spaces, dashes, dots and
    /// parentheses are ignored, and a user JID (`…@s.whatsapp.net`) is taken. A JSON integer is
    /// accepted too.
    #[schema(value_type = PhoneField)]
    to: String,
    /// The PDF (at most 16 MiB) as base64: the standard or the URL-safe alphabet, padded or
    /// not, line breaks allowed, optionally as a base64 data URL (`data:application/pdf;base64,`,
    /// `data:;base64,`, `data:application/octet-stream;name=x.pdf;base64,`, …). It must decode to
    /// a PDF as readers take one, `%PDF-` within its first 1,024 bytes (a byte order mark or
    /// whitespace may come first; the bytes are sent unchanged), and a data URL's type must not
    /// name another kind of file.
    #[schema(
        example = "JVBERi0xLjQKJSVFT0YK",
        pattern = "^(?:data:(?:application/(?:pdf|x-pdf|octet-stream))?(?:;name=[A-Za-z0-9._%-]+)?;base64,)?(?:[A-Za-z0-9+/_-]{4})*(?:[A-Za-z0-9+/_-]{4}|[A-Za-z0-9+/_-]{2}(?:==)?|[A-Za-z0-9+/_-]{3}=?)$",
        max_length = 22369652
    )]
    pdf_base64: String,
    /// The name the recipient sees (at most 255 characters, no `/`, `\` or control characters;
    /// bidirectional-control and zero-width characters are removed); `.pdf` is added when
    /// missing. Absent, `null` or empty: `Comprobante.pdf`.
    #[schema(example = "F001-123.pdf", max_length = 255, pattern = r"^[^/\\\x00-\x1f\x7f-\x9f]*$")]
    file_name: Option<String>,
}

/// The optional `Idempotency-Key` header.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Only documents the header; the handler reads it.
pub(crate) struct IdempotencyHeader {
    /// 1-255 visible ASCII characters (e.g. the invoice number): the same key and body answer as
    /// the first time and send nothing new; the same key with another body is 422.
    #[param(rename = "Idempotency-Key", pattern = "^[!-~]{1,255}$", example = "F001-123")]
    idempotency_key: Option<String>,
}

/// Queue a PDF for delivery (needs `messages:send` on the session).
///
/// Answers 202 once the PDF and its record are durable on disk. The PDF is then delivered in
/// order per session, retrying with backoff while the session is down.
#[utoipa::path(post, path = "/api/send-pdf", tag = "messages",
    request_body(content = SendPdfBody, content_type = "application/json"),
    params(IdempotencyHeader),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Queued (durable)", body = SendPdfAccepted),
        (status = 400, description = "Invalid input (BAD_JSON, MISSING_FIELD, INVALID_FIELD_TYPE, INVALID_SESSION_ID, INVALID_PHONE, INVALID_BASE64, NOT_A_PDF, INVALID_FILE_NAME, INVALID_IDEMPOTENCY_KEY)", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = ErrorBody),
        (status = 408, description = "Body not received in time (BODY_TIMEOUT)", body = ErrorBody),
        (status = 413, description = "Body or PDF too large (PAYLOAD_TOO_LARGE)", body = ErrorBody),
        (status = 415, description = "Not application/json (UNSUPPORTED_MEDIA_TYPE)", body = ErrorBody),
        (status = 422, description = "Idempotency-Key reused with another body (IDEMPOTENCY_KEY_REUSED)", body = ErrorBody),
        (status = 429, description = "Queue full (QUEUE_FULL), rate limited (RATE_LIMITED), or too many failed authentications (TOO_MANY_AUTH_FAILURES); see Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT), or the database cannot be reached (STORAGE_UNAVAILABLE, with Retry-After)", body = ErrorBody),
        (status = 507, description = "Disk full, nothing stored (INSUFFICIENT_STORAGE)", body = ErrorBody),
    ))]
async fn send_pdf(State(state): State<AppState>, caller: Caller, req: Request) -> Result<Response, ApiError> {
    caller.require(Scope::MessagesSend)?;
    check_content_type(req.headers())?;
    let idempotency = idempotency_key(req.headers())?;
    let body = RequestBody::<PdfLimit>::from_request(req, &state).await?.bytes;
    let request = SendPdfRequest::parse(&body)?;
    caller.require_session(Scope::MessagesSend, &request.session_id)?;
    crate::api::home_session::existing_session(&state, &caller, &request.session_id).await?;
    let idempotency = scoped_idempotency(&caller, idempotency, &body);
    let enqueued = state
        .queue
        .enqueue(&request.session_id, request.to, OutgoingContent::pdf(request.pdf, request.file_name), idempotency)
        .await
        .map_err(enqueue_error)?;
    Ok(SendPdfAccepted::new(enqueued.id()).into_response())
}

/// The answer to a message the queue did not take.
pub(crate) fn enqueue_error(error: EnqueueError) -> ApiError {
    match error {
        EnqueueError::Full { retry_after } => {
            ApiError::QueueFull { retry_after_secs: retry_after.as_secs_f64().ceil() as u64 }
        }
        EnqueueError::KeyReused => ApiError::IdempotencyKeyReused,
        EnqueueError::DiskFull => ApiError::InsufficientStorage,
        EnqueueError::Journal(e) => ApiError::journal(e),
    }
}

/// The idempotency key of a request by `caller` with this `body`. Keys are per token: two
/// systems that both number their invoices from 1 never collide. The admin token keeps bare
/// keys, as before scoped tokens existed; every file token's are `"{name} {key}"`. A key is
/// visible ASCII without spaces, so no key one caller can choose equals another's: an admin key
/// never holds a space, and a scoped one splits at its last space into one token name and one
/// key. (Before, scoped keys were `name:key`, which the admin could also send.)
pub(crate) fn scoped_idempotency(caller: &Caller, key: Option<String>, body: &[u8]) -> Option<IdempotencyKey> {
    key.map(|key| IdempotencyKey {
        key: if caller.is_static_admin() { key } else { format!("{} {key}", caller.name()) },
        fingerprint: Sha256::digest(body).into(),
    })
}

/// `Idempotency-Key`: optional; 1–255 visible ASCII characters.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().map_err(|_| ApiError::InvalidIdempotencyKey)?.trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    Ok(Some(key.to_owned()))
}

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
        // A UTF-8 byte order mark, as some Windows tools write, is not an error.
        let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
        let raw: RawRequest = serde_json::from_slice(body).map_err(|_| ApiError::BadJson)?;

        let session_id = SessionId::parse(&required_string(raw.session_id, "sessionId")?)?;
        let to = phone_field(raw.to, "to")?;
        let pdf = PdfDocument::from_base64(&required_string(raw.pdf_base64, "pdfBase64")?)?;
        let file_name = match raw.file_name {
            // `fileName || 'Comprobante.pdf'`, as the Node service reads it.
            None | Some(Value::Null) => FileName::default(),
            Some(Value::String(name)) if name.trim().is_empty() => FileName::default(),
            Some(Value::String(name)) => FileName::parse_pdf(&name)?,
            Some(_) => {
                return Err(ApiError::WrongFieldType { field: "fileName", expected: "a string" });
            }
        };

        Ok(SendPdfRequest { session_id, to, pdf, file_name })
    }
}

/// A phone number given as a string or as a JSON number: an integer, or a number with no
/// fraction (`51987654321.0` is the same integer to JSON Schema).
pub(crate) fn phone_field(value: Option<Value>, field: &'static str) -> Result<PhoneNumber, ApiError> {
    match value {
        Some(Value::Number(n)) => {
            let digits = match (n.as_u64(), n.as_f64()) {
                (Some(whole), _) => whole.to_string(),
                (None, Some(f)) if f.fract() == 0.0 && (0.0..1e15).contains(&f) => format!("{f:.0}"),
                _ => return Err(ApiError::WrongFieldType { field, expected: "a phone number" }),
            };
            Ok(PhoneNumber::parse(&digits)?)
        }
        other => Ok(PhoneNumber::parse(&required_string(other, field)?)?),
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
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value.as_bytes().split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
    if essence.eq_ignore_ascii_case(b"application/json") { Ok(()) } else { Err(ApiError::UnsupportedMediaType) }
}

/// The `202 Accepted` body: `{"success":true,"message":"Mensaje encolado para envío.","messageId":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SendPdfAccepted {
    /// Always `true`.
    success: bool,
    /// Always `Mensaje encolado para envío.`
    #[schema(value_type = String, example = "Mensaje encolado para envío.")]
    message: &'static str,
    /// The WhatsApp message id of every attempt; `GET /api/messages/{messageId}` tells its status.
    #[serde(rename = "messageId")]
    #[schema(example = "3EB0A1B2C3D4E5F60718")]
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
    pub fn into_response(self) -> Response {
        super::json_response(StatusCode::ACCEPTED, &self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
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
        v["fileName"] = json!("");
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
        v["to"] = json!(51987654321.0);
        assert_eq!(SendPdfRequest::parse(&body(v.clone())).unwrap().to.digits(), "51987654321");
        v["to"] = json!(5198765432.5);
        assert!(matches!(SendPdfRequest::parse(&body(v.clone())), Err(ApiError::WrongFieldType { field: "to", .. })));
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
    fn a_byte_order_mark_before_the_json_is_fine() {
        let mut raw = b"\xef\xbb\xbf".to_vec();
        raw.extend(body(valid()));
        assert_eq!(SendPdfRequest::parse(&raw).unwrap().to.digits(), "51987654321");
    }

    #[test]
    fn a_pdf_of_the_maximum_size_fits_the_default_body_however_it_is_encoded() {
        use base64::Engine as _;
        let mut pdf = b"%PDF-1.4\n".to_vec();
        // Compressed content looks random: one base64 character in 64 is a '/'.
        let mut state = 0x2545_f491_u32;
        pdf.extend((0..crate::domain::MAX_PDF_BYTES - pdf.len()).map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        }));
        let encoded = base64::engine::general_purpose::STANDARD.encode(&pdf);
        let wrapped: Vec<&str> = encoded.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
        let text = wrapped.join("\r\n");
        // Escaped as a JSON string by an encoder that escapes '/' (PHP's json_encode does).
        let json = format!(
            r#"{{"sessionId":"tienda_lima","to":"51987654321","pdfBase64":{}}}"#,
            serde_json::to_string(&text).unwrap().replace('/', "\\/")
        );
        let slashes = encoded.bytes().filter(|b| *b == b'/').count();
        assert!(slashes > encoded.len() / 70, "the sample has the usual share of '/': {slashes}");
        assert!(
            json.len() <= crate::config::DEFAULT_MAX_BODY_BYTES,
            "{} > {}",
            json.len(),
            crate::config::DEFAULT_MAX_BODY_BYTES
        );
        let parsed = SendPdfRequest::parse(json.as_bytes()).unwrap();
        assert_eq!(parsed.pdf.bytes().as_ref(), pdf.as_slice());
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
