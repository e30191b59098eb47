//! `GET /api/messages/{messageId}`: where a message is.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::auth::{Caller, Scope};
use crate::api::error::{ApiError, AuthErrors, ErrorBody, RateLimited};
use crate::api::json_response;
use crate::api::state::AppState;
use crate::domain::{ContentKind, DeliveryStatus, MessageId, SessionId};
use crate::journal::MessageRecord;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(message_status)).routes(routes!(message_media))
}

/// The file of a received message, with its content type and file name (needs `messages:read`
/// on its session).
///
/// The bytes and their type come from whoever sent the message, and this route shares its
/// origin with the admin page, so the answer can never run as a page: `nosniff`, a sandboxing
/// CSP, and `attachment` for every type but plain images, audio, video, PDF and plain text.
#[utoipa::path(get, path = "/api/messages/{messageId}/media", tag = "messages",
    params(("messageId" = String, Path, description = "The id of a received message")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        AuthErrors,
        (status = 404, description = "No such received message, or its file is not kept (MESSAGE_NOT_FOUND, MEDIA_NOT_STORED)", body = ErrorBody),
        RateLimited,
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT), or the database cannot be reached (STORAGE_UNAVAILABLE, with Retry-After)", body = ErrorBody),
    ))]
async fn message_media(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::MessagesRead)?;
    let message = state.inbox.get(&id).await.map_err(ApiError::storage)?.ok_or(ApiError::MessageNotFound)?;
    require_visible(&caller, &message.session_id)?;
    let media = message.media.unwrap_or_default();
    if !media.stored {
        return Err(ApiError::MediaNotStored(media.error.unwrap_or_else(|| "the message has no file".into())));
    }
    let bytes = state
        .inbox
        .file(&id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::MediaNotStored("the file is gone".into()))?;
    let essence = media.mimetype.as_deref().and_then(media_type_essence);
    let mut response = Response::new(axum::body::Body::from(bytes));
    let headers = response.headers_mut();
    let content_type = essence.as_deref().and_then(|m| HeaderValue::from_str(m).ok());
    headers.insert(header::CONTENT_TYPE, content_type.unwrap_or(HeaderValue::from_static("application/octet-stream")));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    let inline = essence.as_deref().is_some_and(renders_harmlessly);
    let disposition = match media.file_name.as_deref() {
        // RFC 6266 with RFC 5987 encoding: any name, no header injection.
        Some(name) => {
            let encoded: String = name
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{encoded}")).ok()
        }
        None if !inline => Some(HeaderValue::from_static("attachment")),
        None => None,
    };
    if let Some(value) = disposition {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `type/subtype` of a media type, lowercase and without parameters; `None` if it is not one.
fn media_type_essence(mimetype: &str) -> Option<String> {
    let essence = mimetype.split(';').next()?.trim().to_ascii_lowercase();
    let (kind, subtype) = essence.split_once('/')?;
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    (token(kind) && token(subtype)).then_some(essence)
}

/// Types a browser shows as a picture, a player, a PDF viewer or plain text: never a page that
/// runs script. Everything else (html, svg, xml, javascript, …) is sent as an attachment.
fn renders_harmlessly(essence: &str) -> bool {
    matches!(essence, "image/jpeg" | "image/png" | "image/gif" | "image/webp" | "application/pdf" | "text/plain")
        || (essence.starts_with("audio/") || essence.starts_with("video/"))
}

/// A message of a session the caller may not read is answered as if it did not exist, so that
/// ids cannot be probed.
fn require_visible(caller: &Caller, session_id: &str) -> Result<(), ApiError> {
    match SessionId::parse(session_id) {
        Ok(session) if caller.may_use(&session) => Ok(()),
        _ => Err(ApiError::MessageNotFound),
    }
}

/// A message and its delivery status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    /// The id `202` answered with; also the WhatsApp message id.
    #[schema(example = "3EB0A1B2C3D4E5F60718")]
    pub message_id: String,
    /// Always `out`: a message this gateway sends.
    #[schema(example = "out")]
    pub direction: &'static str,
    pub session_id: String,
    /// The recipient's digits.
    pub to: String,
    /// What it carries.
    #[serde(rename = "type")]
    pub kind: ContentKind,
    /// The file name the recipient sees (documents; `null` otherwise).
    pub file_name: Option<String>,
    /// The media type (images, documents, audio and video; `null` for texts).
    pub mimetype: Option<String>,
    /// The caption, if any.
    pub caption: Option<String>,
    /// The start of a text, on one line, at most 100 characters (ending in `…` when cut); `null`
    /// for media, and for texts accepted before the gateway kept it.
    pub preview: Option<String>,
    /// For audio: `true` for a voice note. Absent for other kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ptt: Option<bool>,
    pub status: DeliveryStatus,
    /// Failed send attempts so far.
    pub attempts: u32,
    /// The latest error, kept after later successes.
    pub last_error: Option<String>,
    /// Accepted at, unix milliseconds.
    pub created_at: u64,
    /// Last change, unix milliseconds.
    pub updated_at: u64,
    /// Size in bytes of the file, or of the text as UTF-8.
    pub size: u64,
}

impl From<MessageRecord> for MessageView {
    fn from(r: MessageRecord) -> Self {
        MessageView {
            message_id: r.message_id,
            direction: "out",
            session_id: r.session_id,
            to: r.to,
            kind: r.kind,
            file_name: r.file_name,
            mimetype: r.mimetype,
            caption: r.caption,
            preview: r.preview,
            ptt: r.ptt,
            status: r.status,
            attempts: r.attempts,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            size: r.size,
        }
    }
}

/// The delivery status of a message (needs `messages:read` on its session).
#[utoipa::path(get, path = "/api/messages/{messageId}", tag = "messages",
    params(("messageId" = String, Path, description = "The id from the 202 answer")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The message", body = MessageView),
        AuthErrors,
        (status = 404, description = "No such message, or one of a session this token may not read (MESSAGE_NOT_FOUND)", body = ErrorBody),
        RateLimited,
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT), or the database cannot be reached (STORAGE_UNAVAILABLE, with Retry-After)", body = ErrorBody),
    ))]
async fn message_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::MessagesRead)?;
    let record = state
        .queue
        .status(&MessageId::from_stored(id))
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::MessageNotFound)?;
    require_visible(&caller, &record.session_id)?;
    Ok(json_response(StatusCode::OK, &MessageView::from(record)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_harmless_types_are_shown_inline() {
        assert_eq!(media_type_essence("Text/HTML; charset=utf-8").as_deref(), Some("text/html"));
        assert_eq!(media_type_essence("image/svg+xml").as_deref(), Some("image/svg+xml"));
        assert_eq!(media_type_essence("nonsense"), None);
        assert_eq!(media_type_essence("text/html\r\nX: y"), None);
        for active in
            ["text/html", "image/svg+xml", "text/xml", "application/xml", "application/xhtml+xml", "text/javascript"]
        {
            assert!(!renders_harmlessly(active), "{active}");
        }
        for passive in ["image/jpeg", "image/png", "audio/ogg", "video/mp4", "application/pdf", "text/plain"] {
            assert!(renders_harmlessly(passive), "{passive}");
        }
    }
}
