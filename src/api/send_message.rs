//! `POST /api/sessions/{sessionId}/messages`: a text, an image, a document, an audio (a voice
//! note with `ptt`) or a video, as JSON (media in
//! base64 or a data URL) or as `multipart/form-data` (media as a `file` part, without base64's
//! third). Both are parsed into an [`OutgoingContent`] and go through the same journal, queue,
//! idempotency, pacing and retries as `POST /api/send-pdf`.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::auth::{Caller, Scope};
use crate::api::body::{PdfLimit, RequestBody};
use crate::api::error::{ApiError, AuthErrors, ErrorBody};
use crate::api::json_response;
use crate::api::openapi::{PhoneField, SessionPath};
use crate::api::send_pdf::{IdempotencyHeader, enqueue_error, idempotency_key, phone_field, scoped_idempotency};
use crate::api::state::AppState;
use crate::domain::{
    ContentKind, DeliveryStatus, FileName, InlineMedia, MAX_MEDIA_BYTES, MediaError, OutgoingContent, PhoneNumber,
    decode_inline,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(send_message, list_messages))
}

/// `GET /api/sessions/{sessionId}/messages` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `in` (received; the default) or `out` (sent through this gateway).
    #[param(pattern = "^(in|out)$")]
    direction: Option<String>,
    /// Only this chat: a JID (`51987654321@s.whatsapp.net`, `…@lid`); for `out`, a phone number too.
    chat: Option<String>,
    /// 1–200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// The `next` of the previous page.
    #[param(minimum = 1)]
    before: Option<i64>,
}

/// A message of either direction.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum HistoryItem {
    In(Box<crate::domain::IncomingMessage>),
    Out(Box<crate::api::messages::MessageView>),
}

/// A page of messages, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    items: Vec<HistoryItem>,
    /// Pass as `before` for the next page; `null` on the last one.
    next: Option<u64>,
}

/// The messages a session received (`direction=in`) or sent (`out`), newest first (needs
/// `messages:read` on the session).
#[utoipa::path(get, path = "/api/sessions/{sessionId}/messages", tag = "messages",
    params(SessionPath, ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of messages", body = MessagePage),
        (status = 400, description = "Invalid session id or query (INVALID_SESSION_ID, INVALID_QUERY)", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = ErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED), or too many failed authentications from this address (TOO_MANY_AUTH_FAILURES)", body = ErrorBody),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT), or the database cannot be reached (STORAGE_UNAVAILABLE, with Retry-After)", body = ErrorBody),
    ))]
async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let session = crate::api::sessions::session_id(path)?;
    caller.require_session(Scope::MessagesRead, &session)?;
    let axum::extract::Query(query) = query.map_err(|_| ApiError::InvalidQuery("limit and before are numbers"))?;
    let outgoing = match query.direction.as_deref() {
        None | Some("in") => false,
        Some("out") => true,
        Some(_) => return Err(ApiError::InvalidQuery("direction must be \"in\" or \"out\"")),
    };
    let before = match query.before {
        None => None,
        Some(before) if before >= 1 => Some(before.unsigned_abs()),
        Some(_) => return Err(ApiError::InvalidQuery("before is a cursor from `next`")),
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=crate::inbox::MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidQuery("limit must be 1 to 200"));
    }
    crate::api::home_session::existing_session(&state, &caller, &session).await?;
    if outgoing {
        // Sent messages are addressed by phone number: a chat JID names its digits; a chat that
        // names none (a group, a LID) has no sent messages.
        let recipient = match query.chat.as_deref().map(PhoneNumber::parse) {
            None => None,
            Some(Ok(phone)) => Some(phone.digits().to_owned()),
            Some(Err(_)) => return Ok(json_response(StatusCode::OK, &MessagePage { items: Vec::new(), next: None })),
        };
        let rows = state
            .journal
            .by_session(session.as_str(), recipient, before, limit + 1)
            .await
            .map_err(ApiError::internal)?;
        let next = (rows.len() > limit).then(|| rows[limit - 1].0);
        let items = rows
            .into_iter()
            .take(limit)
            .map(|(_, record)| HistoryItem::Out(Box::new(crate::api::messages::MessageView::from(record))))
            .collect();
        return Ok(json_response(StatusCode::OK, &MessagePage { items, next }));
    }
    let page = state.inbox.list(&session, query.chat, limit, before).await.map_err(ApiError::storage)?;
    let items = page.items.into_iter().map(|m| HistoryItem::In(Box::new(m))).collect();
    Ok(json_response(StatusCode::OK, &MessagePage { items, next: page.next }))
}

/// The JSON body of `POST /api/sessions/{sessionId}/messages`, by `type`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Only describes the JSON for the OpenAPI document; parsing is by hand.
#[serde(untagged)]
enum SendMessageBody {
    Text(TextBody),
    Image(ImageBody),
    Document(DocumentBody),
    Audio(AudioBody),
    Video(VideoBody),
}

/// An audio: OGG/Opus (by its bytes), sent as a voice note when `ptt` is true. Its length is
/// read from the file.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct AudioBody {
    #[schema(value_type = PhoneField)]
    to: String,
    #[serde(rename = "type")]
    #[schema(pattern = "^audio$")]
    kind: String,
    /// A voice note (push to talk): shown with a microphone and a waveform. Default `false`.
    ptt: Option<bool>,
    media: AudioMedia,
}

/// An OGG/Opus file in base64, or as a data URL in `dataUrl`; at most 16 MiB decoded.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct AudioMedia {
    #[schema(pattern = "^T2dnUw[A-Za-z0-9+/]*={0,2}$")]
    base64: String,
    /// `audio/ogg` (`; codecs=opus` allowed), `audio/opus` or generic; another is 400.
    #[schema(pattern = "^(?:audio/ogg|audio/opus|application/ogg)(?:;.*)?$")]
    mimetype: Option<String>,
}

/// A video: MP4 (by its bytes). Its length is read from the file.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct VideoBody {
    #[schema(value_type = PhoneField)]
    to: String,
    #[serde(rename = "type")]
    #[schema(pattern = "^video$")]
    kind: String,
    /// At most 1,024 characters.
    #[schema(max_length = 1024)]
    caption: Option<String>,
    media: VideoMedia,
}

/// An MP4 file in base64, or as a data URL in `dataUrl`; at most 16 MiB decoded.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct VideoMedia {
    #[schema(pattern = "^[A-Za-z0-9+/]{5}[A-Za-z0-9+/]*={0,2}$")]
    base64: String,
    /// `video/mp4` or generic; another is 400.
    #[schema(pattern = "^video/mp4$")]
    mimetype: Option<String>,
}

/// A text.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct TextBody {
    /// The recipient: a phone number with its country code, or its user JID.
    #[schema(value_type = PhoneField)]
    to: String,
    #[serde(rename = "type")]
    #[schema(pattern = "^text$")]
    kind: String,
    /// 1 to 65,536 characters, not only whitespace.
    #[schema(min_length = 1, max_length = 65536, pattern = r"\S")]
    text: String,
}

/// An image: JPEG, PNG or WebP (by its bytes).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct ImageBody {
    #[schema(value_type = PhoneField)]
    to: String,
    #[serde(rename = "type")]
    #[schema(pattern = "^image$")]
    kind: String,
    /// At most 1,024 characters.
    #[schema(max_length = 1024)]
    caption: Option<String>,
    media: ImageMedia,
}

/// A document: any file.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct DocumentBody {
    #[schema(value_type = PhoneField)]
    to: String,
    #[serde(rename = "type")]
    #[schema(pattern = "^document$")]
    kind: String,
    /// At most 1,024 characters.
    #[schema(max_length = 1024)]
    caption: Option<String>,
    media: DocumentMedia,
}

/// An image's bytes in base64 (either alphabet, padding optional, line breaks allowed), or as a
/// data URL in `dataUrl`; at most 16 MiB decoded. JPEG, PNG and WebP are taken (the pattern
/// shows PNG and JPEG).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct ImageMedia {
    #[schema(pattern = "^(?:iVBORw0KGgo|/9j/)[A-Za-z0-9+/]*={0,2}$")]
    base64: String,
    /// The media type; sniffed from the bytes when absent, and one that contradicts them is 400.
    #[schema(pattern = "^image/(?:png|jpeg|jpg)$")]
    mimetype: Option<String>,
}

/// A document's bytes in base64 (either alphabet, padding optional, line breaks allowed), or as
/// a data URL in `dataUrl` instead (`data:text/csv;base64,…`); at most 16 MiB decoded.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
struct DocumentMedia {
    #[schema(pattern = "^(?:[A-Za-z0-9+/]{4})+$")]
    base64: String,
    /// The media type; sniffed from the bytes when they show one (a declared type that
    /// contradicts them is 400), else this one, else `application/octet-stream`.
    #[schema(pattern = "^[a-z]+/[a-z0-9.+-]+$")]
    mimetype: Option<String>,
    /// The name it shows (default `Comprobante.pdf` for a PDF, `archivo.<ext>` otherwise).
    #[schema(max_length = 255, pattern = r"^[^/\\\x00-\x1f\x7f-\x9f]*$")]
    file_name: Option<String>,
}

/// The multipart form of the same request (`file` is the media).
#[derive(ToSchema)]
#[allow(dead_code)]
struct SendMessageForm {
    #[schema(value_type = PhoneField)]
    to: String,
    #[schema(rename = "type")]
    kind: ContentKind,
    text: Option<String>,
    caption: Option<String>,
    /// `true` for a voice note (audio only).
    #[schema(pattern = "^(?:true|false|1|0)$")]
    ptt: Option<String>,
    /// Overrides the `file` part's own Content-Type.
    mimetype: Option<String>,
    /// Overrides the `file` part's own file name.
    #[schema(rename = "fileName")]
    file_name: Option<String>,
    #[schema(value_type = Option<String>, format = Binary)]
    file: Option<Vec<u8>>,
}

/// The `202` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageAccepted {
    /// Always `true`.
    success: bool,
    /// The WhatsApp message id; `GET /api/messages/{messageId}` follows it.
    #[schema(example = "3EB0A1B2C3D4E5F60718")]
    message_id: String,
    /// `queued`, or where the first request with the same `Idempotency-Key` is now.
    status: DeliveryStatus,
}

/// Send a text, an image, a document, an audio or a video (needs `messages:send` on the session).
///
/// Answers 202 once the message is durable on disk; it is then delivered in order per session,
/// retrying while the session is down, exactly like `POST /api/send-pdf`. Media types are sniffed
/// from the bytes; an image must be JPEG, PNG or WebP, an audio OGG/Opus (a voice note with
/// `ptt: true`), a video MP4; the length of audio and video is read from the file.
#[utoipa::path(post, path = "/api/sessions/{sessionId}/messages", tag = "messages",
    params(SessionPath, IdempotencyHeader),
    request_body(content(
        (SendMessageBody = "application/json"),
        (SendMessageForm = "multipart/form-data"),
    )),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Queued (durable)", body = MessageAccepted),
        (status = 400, description = "Invalid input (BAD_JSON, MISSING_FIELD, INVALID_FIELD_TYPE, INVALID_SESSION_ID, INVALID_PHONE, INVALID_MESSAGE_TYPE, INVALID_MEDIA, INVALID_BASE64, INVALID_FILE_NAME, INVALID_MIMETYPE, NOT_AN_IMAGE, NOT_OGG_OPUS, NOT_A_VIDEO, MEDIA_TYPE_MISMATCH, EMPTY_TEXT, TEXT_TOO_LONG, CAPTION_TOO_LONG, NUL_CHARACTER, INVALID_IDEMPOTENCY_KEY)", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = ErrorBody),
        (status = 408, description = "Body not received in time (BODY_TIMEOUT)", body = ErrorBody),
        (status = 413, description = "Body or media too large (PAYLOAD_TOO_LARGE)", body = ErrorBody),
        (status = 415, description = "Neither JSON nor multipart/form-data (UNSUPPORTED_MEDIA_TYPE)", body = ErrorBody),
        (status = 422, description = "Idempotency-Key reused with another body (IDEMPOTENCY_KEY_REUSED)", body = ErrorBody),
        (status = 429, description = "Queue full (QUEUE_FULL), rate limited (RATE_LIMITED), or too many failed authentications (TOO_MANY_AUTH_FAILURES); see Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT), or the database cannot be reached (STORAGE_UNAVAILABLE, with Retry-After)", body = ErrorBody),
        (status = 507, description = "Disk full, nothing stored (INSUFFICIENT_STORAGE)", body = ErrorBody),
    ))]
async fn send_message(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let session = crate::api::sessions::session_id(path)?;
    caller.require_session(Scope::MessagesSend, &session)?;
    crate::api::home_session::existing_session(&state, &caller, &session).await?;
    let form = body_form(req.headers())?;
    let idempotency = idempotency_key(req.headers())?;
    let body = RequestBody::<PdfLimit>::from_request(req, &state).await?.bytes;
    let (to, content) = match form {
        BodyForm::Json => parse_json(&body)?,
        BodyForm::Multipart { boundary } => parse_multipart(body.clone(), boundary).await?,
    };
    let idempotency = scoped_idempotency(&caller, idempotency, &body);
    drop(body);
    let enqueued = state.queue.enqueue(&session, to, content, idempotency).await.map_err(enqueue_error)?;
    let status = match enqueued {
        crate::queue::Enqueued::New(_) => DeliveryStatus::Queued,
        crate::queue::Enqueued::Replay(ref id) => {
            state.queue.status(id).await.map_err(ApiError::journal)?.map_or(DeliveryStatus::Queued, |r| r.status)
        }
    };
    let accepted = MessageAccepted { success: true, message_id: enqueued.id().to_string(), status };
    Ok(json_response(StatusCode::ACCEPTED, &accepted))
}

/// How the body is encoded.
enum BodyForm {
    Json,
    Multipart { boundary: String },
}

/// JSON when the Content-Type says so or says nothing; multipart with its boundary; else 415.
fn body_form(headers: &HeaderMap) -> Result<BodyForm, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(BodyForm::Json) };
    let text = value.to_str().map_err(|_| ApiError::UnsupportedMediaType)?;
    let essence = text.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(BodyForm::Json)
    } else if essence.eq_ignore_ascii_case("multipart/form-data") {
        let boundary = multer::parse_boundary(text).map_err(|_| ApiError::InvalidMedia("no multipart boundary"))?;
        Ok(BodyForm::Multipart { boundary })
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// The fields of a request, however it was encoded.
#[derive(Default)]
struct Fields {
    to: Option<Value>,
    kind: Option<String>,
    text: Option<String>,
    caption: Option<String>,
    media: Option<Media>,
    mimetype: Option<String>,
    file_name: Option<String>,
    ptt: Option<bool>,
}

/// The media's bytes and what came with them.
struct Media {
    bytes: Bytes,
    declared_type: Option<String>,
    declared_name: Option<String>,
}

fn parse_json(body: &[u8]) -> Result<(PhoneNumber, OutgoingContent), ApiError> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
        return Err(ApiError::BadJson);
    };
    let mut fields = Fields {
        to: object.remove("to"),
        kind: optional_string(object.remove("type"), "type")?,
        text: optional_string(object.remove("text"), "text")?,
        caption: optional_string(object.remove("caption"), "caption")?,
        ptt: match object.remove("ptt") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(ptt)) => Some(ptt),
            Some(_) => return Err(ApiError::WrongFieldType { field: "ptt", expected: "true or false" }),
        },
        ..Fields::default()
    };
    match object.remove("media") {
        None | Some(Value::Null) => {}
        Some(Value::Object(mut media)) => {
            let base64 = optional_string(media.remove("base64"), "media.base64")?;
            let data_url = optional_string(media.remove("dataUrl"), "media.dataUrl")?;
            let encoded = match (base64, data_url) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::InvalidMedia("give media.base64 or media.dataUrl, not both"));
                }
                (Some(text), None) | (None, Some(text)) => text,
                (None, None) => return Err(ApiError::MissingField("media.base64")),
            };
            let InlineMedia { bytes, declared_type, declared_name } = decode_inline(&encoded, MAX_MEDIA_BYTES)
                .map_err(|e| match e {
                    MediaError::Empty => ApiError::MissingField("media.base64"),
                    MediaError::InvalidBase64 => ApiError::InvalidMedia("media is not valid base64"),
                    MediaError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
                })?;
            fields.media = Some(Media { bytes, declared_type, declared_name });
            fields.mimetype = optional_string(media.remove("mimetype"), "media.mimetype")?;
            fields.file_name = optional_string(media.remove("fileName"), "media.fileName")?;
        }
        Some(_) => return Err(ApiError::WrongFieldType { field: "media", expected: "an object" }),
    }
    build(fields)
}

async fn parse_multipart(body: Bytes, boundary: String) -> Result<(PhoneNumber, OutgoingContent), ApiError> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = Fields::default();
    let bad = |_| ApiError::InvalidMedia("malformed multipart body");
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            let declared_type = field.content_type().map(ToString::to_string);
            let declared_name = field.file_name().map(str::to_owned);
            let bytes = field.bytes().await.map_err(bad)?;
            if bytes.len() > MAX_MEDIA_BYTES {
                return Err(ApiError::PayloadTooLarge { limit: MAX_MEDIA_BYTES });
            }
            fields.media = Some(Media { bytes, declared_type, declared_name });
            continue;
        }
        let text = field.text().await.map_err(bad)?;
        let text = (!text.is_empty()).then_some(text);
        match name.as_str() {
            "to" => fields.to = text.map(Value::String),
            "type" => fields.kind = text,
            "text" => fields.text = text,
            "caption" => fields.caption = text,
            "mimetype" => fields.mimetype = text,
            "ptt" => {
                fields.ptt = match text.as_deref() {
                    None => None,
                    Some("true" | "1") => Some(true),
                    Some("false" | "0") => Some(false),
                    Some(_) => return Err(ApiError::WrongFieldType { field: "ptt", expected: "true or false" }),
                }
            }
            "fileName" => fields.file_name = text,
            _ => {} // Unknown fields are ignored, as in JSON.
        }
    }
    build(fields)
}

/// The recipient and the checked content of a request.
fn build(fields: Fields) -> Result<(PhoneNumber, OutgoingContent), ApiError> {
    let to = phone_field(fields.to, "to")?;
    let kind = fields.kind.ok_or(ApiError::MissingField("type"))?;
    let kind = ContentKind::parse(&kind).ok_or(ApiError::InvalidMessageType)?;
    let caption = fields.caption.as_deref();
    let content = match kind {
        ContentKind::Text => OutgoingContent::text(fields.text.as_deref().unwrap_or_default())?,
        ContentKind::Image | ContentKind::Document | ContentKind::Audio | ContentKind::Video => {
            let media = fields.media.ok_or(ApiError::MissingField("media"))?;
            // A media type of `application/octet-stream` from a form or a FileReader says nothing.
            let declared = fields.mimetype.or(media.declared_type);
            match kind {
                ContentKind::Image => OutgoingContent::image(media.bytes, declared.as_deref(), caption)?,
                // WhatsApp shows no caption on audio.
                ContentKind::Audio => {
                    OutgoingContent::audio(media.bytes, declared.as_deref(), fields.ptt.unwrap_or(false))?
                }
                ContentKind::Video => OutgoingContent::video(media.bytes, declared.as_deref(), caption)?,
                _ => {
                    // No name, or one of only invisible characters: the default name.
                    let file_name = match fields.file_name.or(media.declared_name).map(|n| FileName::parse(&n)) {
                        None | Some(Err(crate::domain::InvalidFileName::Empty)) => None,
                        Some(name) => Some(name?),
                    };
                    OutgoingContent::document(media.bytes, declared.as_deref(), file_name, caption)?
                }
            }
        }
    };
    Ok((to, content))
}

fn optional_string(value: Option<Value>, field: &'static str) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::WrongFieldType { field, expected: "a string" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn parse(v: Value) -> Result<(PhoneNumber, OutgoingContent), ApiError> {
        parse_json(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn text_image_and_document() {
        let (to, text) = parse(json!({"to":"+51 987 654 321","type":"text","text":"hola"})).unwrap();
        assert_eq!((to.digits(), text.kind()), ("51987654321", ContentKind::Text));
        let (_, image) =
            parse(json!({"to":"51987654321","type":"image","caption":"foto","media":{"dataUrl":format!("data:image/png;base64,{}", b64(PNG))}}))
                .unwrap();
        assert_eq!((image.kind(), image.caption()), (ContentKind::Image, Some("foto")));
        let (_, doc) = parse(json!({"to":"51987654321","type":"document","media":{"base64":b64(b"a;b\n"),"mimetype":"text/csv","fileName":"v.csv"}})).unwrap();
        assert_eq!(doc.file_name().map(FileName::as_str), Some("v.csv"));
        assert_eq!(doc.mimetype().map(|m| m.as_str()), Some("text/csv"));
    }

    #[test]
    fn bad_input_names_its_fault() {
        let code = |v: Value| parse(v).err().map(|e| e.code());
        assert_eq!(code(json!({"to":"51987654321","type":"text","text":"  "})), Some("EMPTY_TEXT"));
        assert_eq!(code(json!({"to":"51987654321","type":"text","text":"x".repeat(65_537)})), Some("TEXT_TOO_LONG"));
        assert_eq!(code(json!({"to":"51987654321","type":"text","text":"ho\u{0}la"})), Some("NUL_CHARACTER"));
        assert_eq!(code(json!({"to":"51987654321","type":"sticker"})), Some("INVALID_MESSAGE_TYPE"));
        assert_eq!(code(json!({"to":"51987654321"})), Some("MISSING_FIELD"));
        assert_eq!(code(json!({"to":"51987654321","type":"image"})), Some("MISSING_FIELD"));
        assert_eq!(code(json!({"to":"51987654321","type":"image","media":{"base64":"@@"}})), Some("INVALID_MEDIA"));
        assert_eq!(
            code(json!({"to":"51987654321","type":"image","media":{"base64":b64(b"%PDF-1.4")}})),
            Some("NOT_AN_IMAGE")
        );
        assert_eq!(
            code(json!({"to":"51987654321","type":"image","media":{"base64":b64(PNG),"mimetype":"image/jpeg"}})),
            Some("MEDIA_TYPE_MISMATCH")
        );
        assert_eq!(
            code(json!({"to":"51987654321","type":"document","media":{"base64":b64(PNG),"dataUrl":"data:;base64,AA"}})),
            Some("INVALID_MEDIA")
        );
        assert_eq!(code(json!({"to":"12","type":"text","text":"x"})), Some("INVALID_PHONE"));
        assert_eq!(code(json!({"to":"51987654321","type":"text","text":5})), Some("INVALID_FIELD_TYPE"));
        assert_eq!(parse_json(b"[1]").err().map(|e| e.code()), Some("BAD_JSON"));
    }

    #[tokio::test]
    async fn multipart_carries_the_file_raw() {
        let boundary = "XyZ";
        let mut body = Vec::new();
        for (name, value) in [("to", "51987654321"), ("type", "document"), ("caption", "la factura")] {
            body.extend(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes(),
            );
        }
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"F-9.pdf\"\r\nContent-Type: application/pdf\r\n\r\n")
                .bytes(),
        );
        body.extend(b"%PDF-1.4\n\x00\xff binary\r\n");
        body.extend(format!("\r\n--{boundary}--\r\n").bytes());
        let (_, doc) = parse_multipart(Bytes::from(body), boundary.into()).await.unwrap();
        assert_eq!(doc.file_name().map(FileName::as_str), Some("F-9.pdf"));
        assert_eq!(doc.caption(), Some("la factura"));
        assert_eq!(doc.payload().as_ref(), b"%PDF-1.4\n\x00\xff binary\r\n");
    }
}
