//! `GET /api/sessions/{sessionId}/chats`: who wrote, when, and how many messages are unread;
//! `POST …/chats/{chat}/read` marks a chat read (and tells the sender, with read receipts).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::auth::{Caller, Scope};
use crate::api::error::{ApiError, AuthErrors, ErrorBody};
use crate::api::json_response;
use crate::api::openapi::SessionPath;
use crate::api::state::AppState;
use crate::domain::{InvalidSessionId, SessionId};
use crate::inbox::ChatSummary;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_chats)).routes(routes!(mark_read))
}

/// The chats of a session.
#[derive(Debug, Serialize, ToSchema)]
struct ChatList {
    items: Vec<ChatSummary>,
}

/// The answer to marking a chat read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ChatRead {
    chat: String,
    /// Messages that were unread.
    marked: usize,
    /// Whether read receipts went to WhatsApp (only while the session is connected).
    receipts_sent: bool,
}

/// The chats a session received messages in, most recent first (needs `messages:read`).
#[utoipa::path(get, path = "/api/sessions/{sessionId}/chats", tag = "messages",
    params(SessionPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The chats", body = ChatList),
        (status = 400, description = "Invalid session id (INVALID_SESSION_ID)", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = ErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED), or too many failed authentications from this address (TOO_MANY_AUTH_FAILURES)", body = ErrorBody),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT), or the database cannot be reached (STORAGE_UNAVAILABLE, with Retry-After)", body = ErrorBody),
    ))]
async fn list_chats(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let session = crate::api::sessions::session_id(path)?;
    caller.require_session(Scope::MessagesRead, &session)?;
    crate::api::home_session::existing_session(&state, &caller, &session).await?;
    let items = state.inbox.chats(&session).await.map_err(ApiError::storage)?;
    Ok(json_response(StatusCode::OK, &ChatList { items }))
}

/// Mark a chat read, sending read receipts for its unread messages (needs `messages:send`).
#[utoipa::path(post, path = "/api/sessions/{sessionId}/chats/{chat}/read", tag = "messages",
    params(SessionPath, ("chat" = String, Path, description = "The chat's JID, as the chat list gives it")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Marked read", body = ChatRead),
        (status = 400, description = "Invalid session id (INVALID_SESSION_ID)", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such session or chat (SESSION_NOT_FOUND, CHAT_NOT_FOUND)", body = ErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED), or too many failed authentications from this address (TOO_MANY_AUTH_FAILURES)", body = ErrorBody),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT), or the database cannot be reached (STORAGE_UNAVAILABLE, with Retry-After)", body = ErrorBody),
    ))]
async fn mark_read(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((raw, chat)) = path.map_err(|_| ApiError::InvalidSessionId(InvalidSessionId))?;
    let session = SessionId::parse(&raw)?;
    caller.require_session(Scope::MessagesSend, &session)?;
    crate::api::home_session::existing_session(&state, &caller, &session).await?;
    let unread =
        state.inbox.mark_read(&session, &chat).await.map_err(ApiError::storage)?.ok_or(ApiError::ChatNotFound)?;
    let mut receipts_sent = false;
    if !unread.is_empty()
        && let Some(client) = state.sessions.connected_client(&session)
    {
        let ids: Vec<&str> = unread.iter().map(|m| m.message_id.as_str()).collect();
        match client.mark_read(&chat, &ids).await {
            Ok(()) => receipts_sent = true,
            Err(e) => tracing::warn!(session = %session, error = %e, "read receipts not sent"),
        }
    }
    Ok(json_response(StatusCode::OK, &ChatRead { chat, marked: unread.len(), receipts_sent }))
}
