//! Seed 003, the per-user WhatsApp service on Baileys with Socket.IO (`COMPAT_API=seed003`):
//! its REST routes and its Socket.IO events, mapped onto ours. The session is always the
//! caller's own ([`Caller::home_session`](crate::api::auth::Caller::home_session)), created on
//! first use; tokens are ours or JWTs.
//!
//! | seed 003 | what it does here |
//! |---|---|
//! | `GET /api/whatsapp/qr` | `GET /api/sessions/{id}/qr`: starts linking, waits up to 10 s; `{success,message,connected,data:{qr}}`, `qr` a PNG data URL (`null` when connected) |
//! | `GET /api/whatsapp/get_conversations` | `GET /api/sessions/{id}/chats`, plus when each chat began |
//! | `GET /api/whatsapp/get_messages?conversationId=` | the chat's received messages (`GET …/messages?chat=`) and those sent to its number (`direction=out`), oldest first, the latest 200 |
//! | socket `join {token}` | binds the socket to the token's session; `session-ready` at once if it is connected |
//! | socket `get-qr {token}` | as `join`, then keeps the session linking while the socket is open (as an open `/ws/session/{id}`); the current QR as `qr-code` at once |
//! | socket `send-message {token, conversationId, textContent, attachments}` | `POST /api/sessions/{id}/messages` of a text; `message-sent {success:true, conversationId}` once it is durably queued |
//! | → `qr-code "data:image/png;base64,…"` | `session.qr` (`qrPng`) |
//! | → `session-ready {success:true}` | `session.status` with `connected` |
//! | → `session-closed {reason:"logged_out"}` | `session.logged_out` |
//! | → `chats-updated` (no argument) | `message.received` |
//! | → `error "mensaje"` | a failed `join`, `get-qr` or `send-message`: our error's Spanish message |
//!
//! Conversations: `id` is the chat's JID (as `GET …/chats` names it, `…@lid` when WhatsApp hides
//! the number), `external_id` the number's JID (`51987654321@s.whatsapp.net`) whenever the
//! sender's number is known. Either, or a bare number, is a `conversationId`. Message ids are
//! WhatsApp's. `sender_type` is `user` for what the contact sent and `ai` for what was sent
//! through the gateway (it cannot tell a person from a bot).
//!
//! What cannot be reproduced: `contact_photo_url` is always `null` (profile pictures are not
//! fetched); conversations are the chats that received messages (a number only written to has
//! none, though its sent messages are listed by `get_messages` with the number); a sent text's
//! `text_content` is its first 100 characters (the gateway keeps no more once it is sent);
//! `message_type` is `image` for stickers and `text` (with no `text_content`) for locations,
//! contacts and reactions; `attachments` in `send-message` are refused with `error` (their shape
//! is not documented); the service's database columns beyond these (AI personality, `ai_active`)
//! do not exist here.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::extract::SocketRef;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{self, Linking};
use crate::api::auth::{Caller, Scope};
use crate::api::error::{ApiError, AuthErrors, ErrorBody, RateLimited};
use crate::api::json_response;
use crate::api::socketio::{self, Dialect, Emit, Payload};
use crate::api::state::AppState;
use crate::domain::{IncomingKind, IncomingMessage, PhoneNumber, SessionId};
use crate::events::{EventKind, GatewayEvent};
use crate::journal::MessageRecord;
use crate::session::Status;

/// Messages `get_messages` returns at most: the latest.
const MAX_MESSAGES: usize = crate::inbox::MAX_PAGE;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(qr)).routes(routes!(get_conversations)).routes(routes!(get_messages))
}

/// The answer of `GET /api/whatsapp/qr`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = seed003::QrAnswer)]
struct QrAnswer {
    /// Always `true`.
    success: bool,
    #[schema(example = "Escanea este código QR con WhatsApp")]
    message: &'static str,
    /// Whether the number is linked and connected (then there is nothing to scan).
    connected: bool,
    data: QrData,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = seed003::QrData)]
struct QrData {
    /// The QR as a PNG data URL; `null` when connected.
    #[schema(example = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA…")]
    qr: Option<String>,
}

/// The QR code to link the caller's number, as seed 003 answers it (needs `sessions:write`).
///
/// Starts linking if needed and keeps it going `QR_LINK_WINDOW_SECS` after the last call;
/// waits up to 10 s for the first code.
#[utoipa::path(get, path = "/api/whatsapp/qr", tag = "compat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The QR to scan, or `connected: true`", body = QrAnswer),
        AuthErrors,
        (status = 409, description = "Linking by a pairing code (PAIRING_CODE_OUTSTANDING)", body = ErrorBody),
        RateLimited,
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "No QR within 10 s (QR_NOT_READY), shutting down or timed out", body = ErrorBody),
    ))]
async fn qr(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let id = common::home(&caller, Scope::SessionsWrite)?;
    let answer = match common::link(&state, &id).await? {
        Linking::Connected => QrAnswer {
            success: true,
            message: "WhatsApp ya está conectado",
            connected: true,
            data: QrData { qr: None },
        },
        Linking::Qr(qr) => QrAnswer {
            success: true,
            message: "Escanea este código QR con WhatsApp",
            connected: false,
            data: QrData { qr: Some(crate::session::qr_data_url(&qr.code).map_err(ApiError::internal)?) },
        },
        Linking::Pending(status) => {
            return Err(ApiError::QrNotReady { reason: format!("the session is {}", status.as_str()) });
        }
    };
    Ok(json_response(StatusCode::OK, &answer))
}

/// `{success, conversations}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = seed003::Conversations)]
struct Conversations {
    /// Always `true`.
    success: bool,
    conversations: Vec<Conversation>,
}

/// A chat, as seed 003's `conversations_new` row.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = seed003::Conversation)]
struct Conversation {
    /// The chat's JID: a `conversationId`.
    #[schema(example = "51987654321@s.whatsapp.net")]
    id: String,
    /// The contact's number as a JID when known, else the chat's JID.
    #[schema(example = "51987654321@s.whatsapp.net")]
    external_id: String,
    /// The name the contact set in WhatsApp.
    contact_name: Option<String>,
    /// Always `null`: profile pictures are not fetched.
    contact_photo_url: Option<String>,
    /// Its first received message's time.
    #[schema(example = "2025-01-20T10:00:00Z")]
    started_at: String,
    /// Messages received since it was last marked read.
    unread_count: u64,
}

/// The caller's conversations, most recent first (needs `messages:read`).
#[utoipa::path(get, path = "/api/whatsapp/get_conversations", tag = "compat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The conversations", body = Conversations),
        AuthErrors,
        RateLimited,
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn get_conversations(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let id = common::home(&caller, Scope::MessagesRead)?;
    let chats = state.inbox.chats(&id).await.map_err(ApiError::storage)?;
    let starts = state.inbox.chat_starts(&id).await.map_err(ApiError::storage)?;
    let conversations = chats
        .into_iter()
        .map(|chat| Conversation {
            external_id: chat.from.as_deref().map_or_else(|| chat.chat.clone(), common::phone_jid),
            started_at: common::iso8601(starts.get(&chat.chat).copied().unwrap_or(chat.last_message_at), false),
            contact_name: chat.push_name,
            contact_photo_url: None,
            unread_count: chat.unread_count,
            id: chat.chat,
        })
        .collect();
    Ok(json_response(StatusCode::OK, &Conversations { success: true, conversations }))
}

/// `GET /api/whatsapp/get_messages` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
struct MessagesQuery {
    /// A conversation's `id` or `external_id`, or a phone number.
    #[param(example = "51987654321@s.whatsapp.net")]
    conversation_id: Option<String>,
}

/// `{success, messages}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = seed003::Messages)]
struct Messages {
    /// Always `true`.
    success: bool,
    messages: Vec<Message>,
}

/// A message, as seed 003's `messages_new` row.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = seed003::Message)]
struct Message {
    /// WhatsApp's id of the message.
    id: String,
    sender_type: SenderType,
    message_type: MessageType,
    /// The text or caption; a sent text's first 100 characters.
    text_content: Option<String>,
    #[schema(example = "2025-01-20T10:00:00Z")]
    created_at: String,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = seed003::SenderType)]
enum SenderType {
    /// The contact.
    User,
    /// Sent through the gateway.
    Ai,
}

/// What a message carries.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = seed003::MessageType)]
enum MessageType {
    Text,
    Image,
    Audio,
    Video,
    Document,
}

impl MessageType {
    fn of_received(kind: IncomingKind) -> MessageType {
        match kind {
            IncomingKind::Image | IncomingKind::Sticker => MessageType::Image,
            IncomingKind::Audio => MessageType::Audio,
            IncomingKind::Video => MessageType::Video,
            IncomingKind::Document => MessageType::Document,
            IncomingKind::Text
            | IncomingKind::Location
            | IncomingKind::Contact
            | IncomingKind::Reaction
            | IncomingKind::Other => MessageType::Text,
        }
    }

    /// By name, so that kinds of content added later fall back to `document`.
    fn of_sent(kind: &str) -> MessageType {
        match kind {
            "text" => MessageType::Text,
            "image" => MessageType::Image,
            "audio" => MessageType::Audio,
            "video" => MessageType::Video,
            _ => MessageType::Document,
        }
    }
}

fn received(message: IncomingMessage) -> (u64, Message) {
    let at = message.timestamp;
    let message = Message {
        id: message.message_id,
        sender_type: SenderType::User,
        message_type: MessageType::of_received(message.kind),
        text_content: message.text.or(message.caption),
        created_at: common::iso8601(at, false),
    };
    (at, message)
}

fn sent(record: MessageRecord) -> (u64, Message) {
    let at = record.created_at;
    let message = Message {
        id: record.message_id,
        sender_type: SenderType::Ai,
        message_type: MessageType::of_sent(record.kind.as_str()),
        text_content: record.preview.or(record.caption),
        created_at: common::iso8601(at, false),
    };
    (at, message)
}

/// A conversation: its chat in the inbox and the contact's number, each when known.
struct Target {
    chat: Option<String>,
    phone: Option<PhoneNumber>,
}

/// The conversation a `conversationId` names: a chat's JID, the contact's number as a JID, or
/// the bare number. 404 `CHAT_NOT_FOUND` for anything else.
async fn target(state: &AppState, id: &SessionId, conversation: &str) -> Result<Target, ApiError> {
    let phone = PhoneNumber::parse(conversation).ok();
    let chats = state.inbox.chats(id).await.map_err(ApiError::storage)?;
    let found = chats.into_iter().find(|chat| {
        chat.chat == conversation || phone.as_ref().is_some_and(|p| chat.from.as_deref() == Some(p.digits()))
    });
    match (found, phone) {
        (Some(chat), phone) => Ok(Target {
            phone: chat.from.as_deref().and_then(|from| PhoneNumber::parse(from).ok()).or(phone),
            chat: Some(chat.chat),
        }),
        (None, Some(phone)) => Ok(Target { chat: None, phone: Some(phone) }),
        (None, None) => Err(ApiError::ChatNotFound),
    }
}

/// A conversation's messages, both ways, oldest first: the latest 200 (needs `messages:read`).
#[utoipa::path(get, path = "/api/whatsapp/get_messages", tag = "compat",
    params(MessagesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The messages", body = Messages),
        (status = 400, description = "No conversationId (INVALID_QUERY)", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such conversation (CHAT_NOT_FOUND)", body = ErrorBody),
        RateLimited,
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn get_messages(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<MessagesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = common::home(&caller, Scope::MessagesRead)?;
    let conversation = query
        .ok()
        .and_then(|Query(q)| q.conversation_id)
        .filter(|c| !c.trim().is_empty())
        .ok_or(ApiError::InvalidQuery("conversationId is required"))?;
    let Target { chat, phone } = target(&state, &id, conversation.trim()).await?;
    let mut messages: Vec<(u64, Message)> = Vec::new();
    if let Some(chat) = chat {
        let page = state.inbox.list(&id, Some(chat), MAX_MESSAGES, None).await.map_err(ApiError::storage)?;
        messages.extend(page.items.into_iter().map(received));
    }
    if let Some(phone) = phone {
        let rows = state
            .journal
            .by_session(id.as_str(), Some(phone.digits().to_owned()), None, MAX_MESSAGES)
            .await
            .map_err(ApiError::internal)?;
        messages.extend(rows.into_iter().map(|(_, record)| sent(record)));
    }
    messages.sort_by_key(|(at, _)| *at);
    let skip = messages.len().saturating_sub(MAX_MESSAGES);
    let messages = messages.into_iter().skip(skip).map(|(_, m)| m).collect();
    Ok(json_response(StatusCode::OK, &Messages { success: true, messages }))
}

/// What seed 003's sockets get for an event of the bus.
pub(crate) fn socket_event(event: &GatewayEvent) -> Option<Emit> {
    match event.event {
        EventKind::SessionQr => {
            event.data.get("qrPng").and_then(Value::as_str).and_then(|png| Emit::one("qr-code", png))
        }
        EventKind::SessionStatus
            if event.data.get("status").and_then(Value::as_str) == Some(Status::Connected.as_str()) =>
        {
            session_ready()
        }
        EventKind::SessionLoggedOut => Emit::one("session-closed", serde_json::json!({"reason": "logged_out"})),
        EventKind::MessageReceived => Some(Emit { event: "chats-updated", payload: Payload::Nothing }),
        EventKind::SessionStatus | EventKind::SessionConnected | EventKind::MessageStatus => None,
    }
}

fn session_ready() -> Option<Emit> {
    Emit::one("session-ready", serde_json::json!({"success": true}))
}

/// Registers seed 003's client events on a new socket.
pub(crate) fn register(state: &AppState, socket: &SocketRef) {
    socketio::on(state, socket, "join", join);
    socketio::on(state, socket, "get-qr", get_qr);
    socketio::on(state, socket, "send-message", send_message);
}

/// Sends seed 003's `error`: our error's Spanish message.
fn fail(socket: &SocketRef, error: &ApiError) {
    tracing::debug!(sid = %socket.id, code = error.code(), "seed 003 socket event refused");
    if let Some(emit) = Emit::one("error", error.spanish()) {
        socketio::emit(socket, &emit);
    }
}

/// The caller of an event's `{token}`, bound to the socket and in its session's room.
async fn enter(state: &AppState, socket: &SocketRef, data: &Value, scope: Scope) -> Result<SessionId, ApiError> {
    let caller = socketio::check_token(state, socket, data.get("token").and_then(Value::as_str)).await?;
    let id = common::home(&caller, scope)?;
    socketio::join(state, socket, Dialect::Seed003, caller, &id)?;
    Ok(id)
}

/// `join {token}`.
async fn join(state: AppState, socket: SocketRef, data: Value) {
    match enter(&state, &socket, &data, Scope::MessagesRead).await {
        Ok(id) if common::status(&state, &id) == Status::Connected => {
            if let Some(ready) = session_ready() {
                socketio::emit(&socket, &ready);
            }
        }
        Ok(_) => {}
        Err(e) => fail(&socket, &e),
    }
}

/// `get-qr {token}`.
async fn get_qr(state: AppState, socket: SocketRef, data: Value) {
    let result = async {
        let id = enter(&state, &socket, &data, Scope::SessionsWrite).await?;
        // In the room now: every QR from here on comes as a `qr-code` event. One shown before
        // (someone else is linking this number) is sent now.
        let now = state.sessions.get(&id).map(|s| s.state);
        match now.as_ref().map(|s| s.status) {
            Some(Status::Connected) => return Ok(session_ready()),
            Some(Status::PairingCode) => return Err(ApiError::PairingCodeOutstanding),
            _ => {}
        }
        socketio::keep_linking(&state, &socket, &id).await?;
        match now.and_then(|s| s.qr).map(|qr| crate::session::qr_data_url(&qr.code)) {
            Some(Ok(png)) => Ok(Emit::one("qr-code", png)),
            Some(Err(e)) => Err(ApiError::internal(e)),
            None => Ok(None),
        }
    }
    .await;
    match result {
        Ok(Some(emit)) => socketio::emit(&socket, &emit),
        Ok(None) => {}
        Err(e) => fail(&socket, &e),
    }
}

/// `send-message {token, conversationId, textContent, attachments}`.
async fn send_message(state: AppState, socket: SocketRef, data: Value) {
    let result = async {
        let caller = socketio::check_token(&state, &socket, data.get("token").and_then(Value::as_str)).await?;
        let id = common::home(&caller, Scope::MessagesSend)?;
        let conversation = match data.get("conversationId") {
            Some(Value::String(c)) if !c.trim().is_empty() => c.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            None | Some(Value::Null) => return Err(ApiError::MissingField("conversationId")),
            Some(_) => return Err(ApiError::WrongFieldType { field: "conversationId", expected: "a string" }),
        };
        let text = match data.get("textContent") {
            Some(Value::String(text)) => text.clone(),
            None | Some(Value::Null) => return Err(ApiError::MissingField("textContent")),
            Some(_) => return Err(ApiError::WrongFieldType { field: "textContent", expected: "a string" }),
        };
        if data.get("attachments").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
            return Err(ApiError::WrongFieldType {
                field: "attachments",
                expected: "empty (attachments are not supported)",
            });
        }
        let phone = target(&state, &id, &conversation).await?.phone.ok_or(ApiError::ChatNotFound)?;
        common::send_text(&state, &id, phone, &text).await?;
        Ok(conversation)
    }
    .await;
    match result {
        Ok(conversation) => {
            let sent = Emit::one("message-sent", serde_json::json!({"success": true, "conversationId": conversation}));
            if let Some(sent) = sent {
                socketio::emit(&socket, &sent);
            }
        }
        Err(e) => fail(&socket, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, data: Value) -> GatewayEvent {
        GatewayEvent { id: "evt_1".into(), event: kind, session_id: "tienda".into(), timestamp: 1, data }
    }

    #[test]
    fn bus_events_become_seed_003_events() {
        use serde_json::json;
        let qr = socket_event(&event(EventKind::SessionQr, json!({"qr": "2@x", "qrPng": "data:image/png;base64,AA"})));
        assert_eq!(qr, Emit::one("qr-code", "data:image/png;base64,AA"));
        let ready = socket_event(&event(EventKind::SessionStatus, json!({"status": "connected", "reason": null})));
        assert_eq!(ready, Emit::one("session-ready", json!({"success": true})));
        assert_eq!(socket_event(&event(EventKind::SessionStatus, json!({"status": "qr_ready"}))), None);
        let closed = socket_event(&event(EventKind::SessionLoggedOut, json!({})));
        assert_eq!(closed, Emit::one("session-closed", json!({"reason": "logged_out"})));
        let chats = socket_event(&event(EventKind::MessageReceived, json!({"messageId": "A"})));
        assert_eq!(chats, Some(Emit { event: "chats-updated", payload: Payload::Nothing }));
        assert_eq!(socket_event(&event(EventKind::MessageStatus, json!({}))), None);
        assert_eq!(socket_event(&event(EventKind::SessionConnected, json!({}))), None);
    }

    #[test]
    fn kinds_become_seed_003_message_types() {
        use IncomingKind as K;
        let names: Vec<String> = [K::Text, K::Image, K::Sticker, K::Audio, K::Video, K::Document, K::Location]
            .into_iter()
            .map(|k| serde_json::to_value(MessageType::of_received(k)).unwrap().as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["text", "image", "image", "audio", "video", "document", "text"]);
        assert!(matches!(MessageType::of_sent("document"), MessageType::Document));
        assert!(matches!(MessageType::of_sent("text"), MessageType::Text));
        assert!(matches!(MessageType::of_sent("something new"), MessageType::Document));
    }
}
