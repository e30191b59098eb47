//! Seed 004, OmniWP's per-user WhatsApp Web service (`COMPAT_API=seed004`): its
//! `/api/v1/whatsapp/*` routes and its Socket.IO events, mapped onto ours. One session per user:
//! the caller's own ([`Caller::home_session`](crate::api::auth::Caller::home_session)), created
//! by `connect`; tokens are ours or JWTs.
//!
//! | seed 004 | what it does here |
//! |---|---|
//! | `POST /api/v1/whatsapp/connect` | `GET /api/sessions/{id}/qr` (creating the session): `{qrCode, status}`; `qrCode` is `null` when connected or when no code came within 10 s (it then comes as `whatsapp_qr_generated`) |
//! | `GET /api/v1/whatsapp/status` | `GET /api/sessions/{id}`: `{connected, status, qrCode}`; while a QR is shown, it keeps linking going as `connect` does |
//! | `POST /api/v1/whatsapp/disconnect` | `POST /api/sessions/{id}/logout`: `{success, status}` |
//! | `POST /api/v1/whatsapp/restore` | `POST /api/sessions/{id}/restart`: `{success, status}` |
//! | `POST /api/v1/whatsapp/send` `{to \| phoneNumber, message}` | `POST /api/sessions/{id}/messages` of a text, then waits up to 10 s for WhatsApp's ack: `{success, message: Mensaje}` |
//! | `GET /api/v1/whatsapp/info` | the linked account: `{userId, phoneNumber, name, connectedAt}` |
//! | `GET /api/v1/whatsapp/messages?limit=&clientId=` | `GET …/messages` both ways, newest first: `{success, messages: [Mensaje]}` |
//! | socket handshake `auth: {token}` | the token is checked; a wrong one gets `connect_error` |
//! | socket `subscribe_whatsapp` | joins the session's room; then its status (and its QR while one is shown) at once |
//! | → `whatsapp_qr_generated {qrCode}` | `session.qr` (`qr`) |
//! | → `whatsapp_status_change {status, connected, reason}` | `session.status` |
//! | → `whatsapp_message_received {message: Mensaje}` | `message.received` |
//!
//! `qrCode` is the text the QR encodes (what whatsapp-web.js's `qr` event gives; the service
//! shipped `qrcode-terminal`, not an image library): draw it with any QR component. Statuses
//! are ours: `disconnected`, `connecting`, `qr_ready`, `pairing_code`, `connected`,
//! `logged_out`, `error`. In a Mensaje, `userId` is the session id, `clientId` the contact's
//! number (`+51987654321`, or the chat's JID when WhatsApp hides the number), `id` WhatsApp's
//! message id.
//!
//! The body of `send` is not in the seed's document: `{"to": "+51987654321", "message": "Hola"}`
//! (`phoneNumber` or `number` for `to`, `text` for `message`), at most 4096 characters as the
//! seed says. A send WhatsApp has not acknowledged within 10 s answers 202 with status `queued`:
//! it is durable and goes out in order, like every message here.
//!
//! What cannot be reproduced: the CRM side (`/messages/send` with `clientId`, `orderId`,
//! `templateType`, the Twilio fallback, creating clients from incoming messages); Redis (the
//! gateway keeps its own state); the seed's per-route rate limits (each token has its own rate,
//! `RATE_LIMIT_PER_SECOND`); a sent text's `text` in `messages` is its first 100 characters
//! (the gateway keeps no more once it is sent).

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::extract::SocketRef;
use tokio::sync::broadcast;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{self, Linking};
use crate::api::auth::{Caller, Scope};
use crate::api::body::{RequestBody, SmallLimit};
use crate::api::error::{ApiError, AuthErrors, ErrorBody, RateLimited};
use crate::api::json_response;
use crate::api::openapi::PhoneField;
use crate::api::socketio::{self, Dialect, Emit};
use crate::api::state::AppState;
use crate::domain::{DeliveryStatus, IncomingMessage, MessageId, PhoneNumber};
use crate::events::{EventKind, GatewayEvent};
use crate::journal::MessageRecord;
use crate::session::Status;

/// The longest text `send` takes, as the seed validates it.
const MAX_MESSAGE_CHARS: usize = 4096;
/// How long `send` waits for WhatsApp's ack.
const SEND_WAIT: Duration = Duration::from_secs(10);

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(connect))
        .routes(routes!(status))
        .routes(routes!(disconnect))
        .routes(routes!(restore))
        .routes(routes!(send))
        .routes(routes!(info))
        .routes(routes!(messages))
}

/// `{qrCode, status}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = seed004::Connect)]
struct ConnectAnswer {
    /// The text the QR encodes; `null` when connected, or when none came within 10 s.
    #[schema(example = "2@AbCdEf…,…")]
    qr_code: Option<String>,
    status: Status,
}

/// Link the caller's number: a QR to scan (needs `sessions:write`).
///
/// Creates the session if needed, starts linking and keeps it going `QR_LINK_WINDOW_SECS`
/// after the last call; waits up to 10 s for the first code.
#[utoipa::path(post, path = "/api/v1/whatsapp/connect", tag = "compat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The QR (or `null`) and the status", body = ConnectAnswer),
        AuthErrors,
        (status = 409, description = "Linking by a pairing code (PAIRING_CODE_OUTSTANDING)", body = ErrorBody),
        RateLimited,
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Shutting down or timed out (SHUTTING_DOWN, TIMEOUT)", body = ErrorBody),
    ))]
async fn connect(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let id = common::home(&caller, Scope::SessionsWrite)?;
    let answer = match common::link(&state, &id).await? {
        Linking::Connected => ConnectAnswer { qr_code: None, status: Status::Connected },
        Linking::Qr(qr) => ConnectAnswer { qr_code: Some(qr.code), status: Status::QrReady },
        Linking::Pending(status) => ConnectAnswer { qr_code: None, status },
    };
    Ok(json_response(StatusCode::OK, &answer))
}

/// `{connected, status, qrCode}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = seed004::Status)]
struct StatusAnswer {
    connected: bool,
    status: Status,
    /// The QR to scan while `qr_ready`, else `null`.
    qr_code: Option<String>,
}

/// The caller's connection status (needs `sessions:read`); `disconnected` before `connect`.
///
/// While a QR is shown, each call keeps linking going `QR_LINK_WINDOW_SECS` longer, as
/// `connect` does.
#[utoipa::path(get, path = "/api/v1/whatsapp/status", tag = "compat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The status", body = StatusAnswer),
        AuthErrors,
        RateLimited,
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn status(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let id = common::home(&caller, Scope::SessionsRead)?;
    let now = state.sessions.get(&id).map(|s| s.state);
    let status = now.as_ref().map_or(Status::Disconnected, |s| s.status);
    if status == Status::QrReady {
        // A page that polls while it shows a QR keeps linking going, as `GET …/qr` does. (It
        // fails only for a session deleted this instant: nothing left to keep going.)
        let _ = state.sessions.link_for(&id, state.qr_link_window);
    }
    let qr_code = now.and_then(|s| s.qr).map(|qr| qr.code);
    Ok(json_response(StatusCode::OK, &StatusAnswer { connected: status == Status::Connected, status, qr_code }))
}

/// `{success, status}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = seed004::Done)]
struct Done {
    /// Always `true`.
    success: bool,
    /// The status now.
    status: Status,
}

/// Log the caller's number out: unlink it from the phone and delete its credentials (needs
/// `sessions:write`). Without a session, nothing to do.
#[utoipa::path(post, path = "/api/v1/whatsapp/disconnect", tag = "compat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Logged out", body = Done),
        AuthErrors,
        RateLimited,
        (status = 503, description = "Shutting down, busy or timed out (SHUTTING_DOWN, SESSION_UNRESPONSIVE, TIMEOUT)", body = ErrorBody),
    ))]
async fn disconnect(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let id = common::home(&caller, Scope::SessionsWrite)?;
    if state.sessions.contains(&id) {
        state.sessions.logout(&id).await?;
    }
    Ok(json_response(StatusCode::OK, &Done { success: true, status: common::status(&state, &id) }))
}

/// Reconnect the caller's number from its stored credentials (needs `sessions:write`).
#[utoipa::path(post, path = "/api/v1/whatsapp/restore", tag = "compat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Restarting", body = Done),
        AuthErrors,
        (status = 404, description = "Never connected (SESSION_NOT_FOUND)", body = ErrorBody),
        RateLimited,
        (status = 503, description = "Shutting down or timed out (SHUTTING_DOWN, TIMEOUT)", body = ErrorBody),
    ))]
async fn restore(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let id = common::home(&caller, Scope::SessionsWrite)?;
    state.sessions.restart(&id).await?;
    Ok(json_response(StatusCode::OK, &Done { success: true, status: common::status(&state, &id) }))
}

/// A message, as seed 004's `Mensaje`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = seed004::Mensaje)]
pub(crate) struct Mensaje {
    /// WhatsApp's id of the message.
    id: String,
    /// The session.
    user_id: String,
    /// The contact: `+51987654321`, or the chat's JID when the number is hidden.
    #[schema(example = "+51987654321")]
    client_id: String,
    /// Always `whatsapp`.
    #[schema(example = "whatsapp")]
    channel: &'static str,
    direction: Direction,
    /// Always `whatsapp_web`.
    #[schema(example = "whatsapp_web")]
    provider: &'static str,
    /// The text or caption (a sent text's first 100 characters in lists).
    text: Option<String>,
    status: MensajeStatus,
    #[schema(example = "2024-01-01T00:00:00.000Z")]
    created_at: String,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = seed004::Direction)]
enum Direction {
    Inbound,
    Outbound,
}

/// `sent`, `received` and `failed` as the seed; `queued` for a message WhatsApp has not
/// acknowledged yet (it goes out in order; this gateway queues durably).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = seed004::MensajeStatus)]
enum MensajeStatus {
    Queued,
    Sent,
    Received,
    Failed,
}

impl From<DeliveryStatus> for MensajeStatus {
    fn from(status: DeliveryStatus) -> MensajeStatus {
        match status {
            DeliveryStatus::Queued | DeliveryStatus::Sending => MensajeStatus::Queued,
            DeliveryStatus::Sent | DeliveryStatus::Delivered | DeliveryStatus::Read => MensajeStatus::Sent,
            DeliveryStatus::Failed => MensajeStatus::Failed,
        }
    }
}

impl Mensaje {
    fn received(message: IncomingMessage) -> Mensaje {
        Mensaje {
            client_id: message.from.as_deref().map_or_else(|| message.chat.clone(), common::plus),
            id: message.message_id,
            user_id: message.session_id,
            channel: "whatsapp",
            direction: Direction::Inbound,
            provider: "whatsapp_web",
            text: message.text.or(message.caption),
            status: MensajeStatus::Received,
            created_at: common::iso8601(message.timestamp, true),
        }
    }

    fn sent(record: MessageRecord, text: Option<String>) -> Mensaje {
        Mensaje {
            id: record.message_id,
            user_id: record.session_id,
            client_id: common::plus(&record.to),
            channel: "whatsapp",
            direction: Direction::Outbound,
            provider: "whatsapp_web",
            text: text.or(record.preview).or(record.caption),
            status: record.status.into(),
            created_at: common::iso8601(record.created_at, true),
        }
    }
}

/// The body of `send` (the seed's document shows none).
#[derive(Deserialize, ToSchema)]
#[schema(as = seed004::SendBody)]
#[allow(dead_code)] // Describes the JSON for the OpenAPI document; parsing is by hand.
struct SendBody {
    /// The recipient (`phoneNumber` or `number` are taken too).
    #[schema(value_type = PhoneField)]
    to: String,
    /// The text, 1 to 4096 characters (`text` is taken too).
    #[schema(min_length = 1, max_length = 4096)]
    message: String,
}

/// `{success, message}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = seed004::Sent)]
struct SentAnswer {
    /// Always `true`.
    success: bool,
    message: Mensaje,
}

/// Send a text from the caller's number (needs `messages:send`); the session must be connected.
///
/// Answers 200 once WhatsApp acknowledged it, 202 with status `queued` when it has not within
/// 10 s (it is durable and goes out in order), 502 when it failed.
#[utoipa::path(post, path = "/api/v1/whatsapp/send", tag = "compat",
    request_body(content = SendBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Sent", body = SentAnswer),
        (status = 202, description = "Queued, not acknowledged yet", body = SentAnswer),
        (status = 400, description = "Invalid input (BAD_JSON, MISSING_FIELD, INVALID_FIELD_TYPE, INVALID_PHONE, EMPTY_TEXT)", body = ErrorBody),
        AuthErrors,
        (status = 408, description = "Body not received in time (BODY_TIMEOUT)", body = ErrorBody),
        (status = 409, description = "Not connected (SESSION_NOT_CONNECTED)", body = ErrorBody),
        (status = 413, description = "Body too large (PAYLOAD_TOO_LARGE)", body = ErrorBody),
        (status = 415, description = "Not application/json (UNSUPPORTED_MEDIA_TYPE)", body = ErrorBody),
        (status = 429, description = "Queue full (QUEUE_FULL), rate limited (RATE_LIMITED), or too many failed authentications (TOO_MANY_AUTH_FAILURES); see Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 502, description = "WhatsApp refused it (UPSTREAM_FAILED)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
        (status = 507, description = "Disk full, nothing stored (INSUFFICIENT_STORAGE)", body = ErrorBody),
    ))]
async fn send(State(state): State<AppState>, caller: Caller, req: Request) -> Result<Response, ApiError> {
    let id = common::home(&caller, Scope::MessagesSend)?;
    crate::api::send_pdf::check_content_type(req.headers())?;
    let body = RequestBody::<SmallLimit>::from_request(req, &state).await?.bytes;
    let (to, text) = parse_send(&body)?;
    // Subscribed before the message exists, so its ack cannot be missed.
    let mut events = state.events.subscribe();
    let message_id = common::send_text(&state, &id, to, &text).await?;
    let record = outcome(&state, &mut events, &message_id).await?;
    if record.status == DeliveryStatus::Failed {
        return Err(ApiError::UpstreamFailed(record.last_error.unwrap_or_else(|| "not sent".into())));
    }
    let code = if record.status.is_final() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok(json_response(code, &SentAnswer { success: true, message: Mensaje::sent(record, Some(text)) }))
}

/// `{to | phoneNumber | number, message | text}`.
fn parse_send(body: &[u8]) -> Result<(PhoneNumber, String), ApiError> {
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
        return Err(ApiError::BadJson);
    };
    let to = ["to", "phoneNumber", "number"].into_iter().find_map(|key| object.remove(key).filter(|v| !v.is_null()));
    let to = crate::api::send_pdf::phone_field(to, "to")?;
    let text = match ["message", "text"].into_iter().find_map(|key| object.remove(key).filter(|v| !v.is_null())) {
        Some(Value::String(text)) if text.chars().count() <= MAX_MESSAGE_CHARS => text,
        Some(Value::String(_)) => {
            return Err(ApiError::WrongFieldType { field: "message", expected: "at most 4096 characters" });
        }
        None => return Err(ApiError::MissingField("message")),
        Some(_) => return Err(ApiError::WrongFieldType { field: "message", expected: "a string" }),
    };
    Ok((to, text))
}

/// The message once WhatsApp acknowledged it or it failed, or as it is after [`SEND_WAIT`].
async fn outcome(
    state: &AppState,
    events: &mut broadcast::Receiver<std::sync::Arc<GatewayEvent>>,
    id: &MessageId,
) -> Result<MessageRecord, ApiError> {
    let deadline = tokio::time::Instant::now() + SEND_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) => {
                let ours = event.event == EventKind::MessageStatus
                    && event.data.get("messageId").and_then(Value::as_str) == Some(id.as_str());
                let done = event.data.get("status").and_then(Value::as_str).and_then(DeliveryStatus::parse);
                if !(ours && done.is_some_and(DeliveryStatus::is_final)) {
                    continue;
                }
            }
            // Fell behind the bus: the journal knows.
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                let record = state.queue.status(id).await.map_err(ApiError::journal)?;
                if !record.as_ref().is_some_and(|r| r.status.is_final()) {
                    continue;
                }
            }
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {}
        }
        return state.queue.status(id).await.map_err(ApiError::journal)?.ok_or(ApiError::MessageNotFound);
    }
}

/// The linked account, as seed 004's `Sesión`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = seed004::Info)]
struct Info {
    /// The session.
    user_id: String,
    #[schema(example = "+5491123456789")]
    phone_number: String,
    /// The name the account shows.
    name: Option<String>,
    /// When it last connected.
    #[schema(example = "2024-01-01T00:00:00.000Z")]
    connected_at: Option<String>,
}

/// The linked account (needs `sessions:read`); 409 before one is linked.
#[utoipa::path(get, path = "/api/v1/whatsapp/info", tag = "compat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = Info),
        AuthErrors,
        (status = 409, description = "No linked account (SESSION_NOT_CONNECTED)", body = ErrorBody),
        RateLimited,
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn info(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let id = common::home(&caller, Scope::SessionsRead)?;
    let now = state.sessions.get(&id).map(|s| s.state).ok_or(ApiError::SessionNotConnected)?;
    let me = now.me.ok_or(ApiError::SessionNotConnected)?;
    let info = Info {
        user_id: id.as_str().to_owned(),
        phone_number: common::plus(&me.phone),
        name: me.push_name,
        connected_at: now.connected_at.map(|at| common::iso8601(at, true)),
    };
    Ok(json_response(StatusCode::OK, &info))
}

/// `GET /api/v1/whatsapp/messages` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
struct MessagesQuery {
    /// 1–200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// Only this contact: a phone number (`+51987654321`).
    client_id: Option<String>,
}

/// `{success, messages}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = seed004::Messages)]
struct MessageList {
    /// Always `true`.
    success: bool,
    messages: Vec<Mensaje>,
}

/// The caller's messages, both ways, newest first (needs `messages:read`).
#[utoipa::path(get, path = "/api/v1/whatsapp/messages", tag = "compat",
    params(MessagesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The messages", body = MessageList),
        (status = 400, description = "Invalid query (INVALID_QUERY)", body = ErrorBody),
        AuthErrors,
        RateLimited,
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn messages(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<MessagesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = common::home(&caller, Scope::MessagesRead)?;
    let Query(query) = query.map_err(|_| ApiError::InvalidQuery("limit is a number"))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=crate::inbox::MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidQuery("limit must be 1 to 200"));
    }
    let client = match query.client_id.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) => Some(PhoneNumber::parse(raw)?),
    };
    if !state.sessions.contains(&id) {
        return Ok(json_response(StatusCode::OK, &MessageList { success: true, messages: Vec::new() }));
    }
    let mut all: Vec<(u64, Mensaje)> = Vec::new();
    // Received messages, of the contact's chat when one is asked for (by its number's JID, or
    // the chat whose sender has that number).
    let chat = match &client {
        None => None,
        Some(phone) => {
            let chats = state.inbox.chats(&id).await.map_err(ApiError::storage)?;
            let found = chats.into_iter().find(|c| c.from.as_deref() == Some(phone.digits())).map(|c| c.chat);
            Some(found.unwrap_or_else(|| common::phone_jid(phone.digits())))
        }
    };
    let page = state.inbox.list(&id, chat, limit, None).await.map_err(ApiError::storage)?;
    all.extend(page.items.into_iter().map(|m| (m.timestamp, Mensaje::received(m))));
    let recipient = client.as_ref().map(|phone| phone.digits().to_owned());
    let rows = state.journal.by_session(id.as_str(), recipient, None, limit).await.map_err(ApiError::journal)?;
    all.extend(rows.into_iter().map(|(_, record)| (record.created_at, Mensaje::sent(record, None))));
    all.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let messages = all.into_iter().take(limit).map(|(_, m)| m).collect();
    Ok(json_response(StatusCode::OK, &MessageList { success: true, messages }))
}

/// What seed 004's sockets get for an event of the bus.
pub(crate) fn socket_event(event: &GatewayEvent) -> Option<Emit> {
    match event.event {
        EventKind::SessionQr => {
            let code = event.data.get("qr").and_then(Value::as_str)?;
            Emit::one("whatsapp_qr_generated", serde_json::json!({"qrCode": code}))
        }
        EventKind::SessionStatus => {
            let status = event.data.get("status").and_then(Value::as_str)?;
            status_change(status, event.data.get("reason").unwrap_or(&Value::Null))
        }
        EventKind::MessageReceived => {
            let message: IncomingMessage = serde_json::from_value(event.data.clone()).ok()?;
            Emit::one("whatsapp_message_received", serde_json::json!({"message": Mensaje::received(message)}))
        }
        EventKind::SessionConnected | EventKind::SessionLoggedOut | EventKind::MessageStatus => None,
    }
}

/// Registers seed 004's client events on a new socket.
pub(crate) fn register(state: &AppState, socket: &SocketRef) {
    socketio::on(state, socket, "subscribe_whatsapp", subscribe);
}

/// `subscribe_whatsapp`: the socket's session's events from now on, starting with where it
/// stands (its status, and its QR while one is shown). The handshake bound the socket (a seed
/// 003 socket, bound by no handshake, has nothing to subscribe to).
async fn subscribe(state: AppState, socket: SocketRef, _: Value) {
    let Some(caller) = socketio::bound_caller(&socket) else {
        tracing::debug!(sid = %socket.id, "subscribe_whatsapp without a token in the handshake; ignored");
        return;
    };
    let joined = common::home(&caller, Scope::MessagesRead).and_then(|id| {
        socketio::join(&state, &socket, Dialect::Seed004, caller, &id)?;
        Ok(id)
    });
    let id = match joined {
        Ok(id) => id,
        Err(e) => {
            tracing::debug!(sid = %socket.id, code = e.code(), "subscribe_whatsapp refused");
            return;
        }
    };
    let now = state.sessions.get(&id).map(|s| s.state);
    let status = now.as_ref().map_or(Status::Disconnected, |s| s.status);
    let reason = now.as_ref().and_then(|s| s.reason.clone());
    if let Some(emit) = status_change(status.as_str(), &serde_json::json!(reason)) {
        socketio::emit(&socket, &emit);
    }
    if let Some(qr) = now.and_then(|s| s.qr)
        && let Some(emit) = Emit::one("whatsapp_qr_generated", serde_json::json!({"qrCode": qr.code}))
    {
        socketio::emit(&socket, &emit);
    }
}

/// `whatsapp_status_change {status, connected, reason}`.
fn status_change(status: &str, reason: &Value) -> Option<Emit> {
    Emit::one(
        "whatsapp_status_change",
        serde_json::json!({"status": status, "connected": status == Status::Connected.as_str(), "reason": reason}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: EventKind, data: Value) -> GatewayEvent {
        GatewayEvent { id: "evt_1".into(), event: kind, session_id: "tienda".into(), timestamp: 1, data }
    }

    #[test]
    fn bus_events_become_seed_004_events() {
        let qr = socket_event(&event(EventKind::SessionQr, json!({"qr": "2@x", "qrPng": "data:…"})));
        assert_eq!(qr, Emit::one("whatsapp_qr_generated", json!({"qrCode": "2@x"})));
        let status = socket_event(&event(EventKind::SessionStatus, json!({"status": "connected", "reason": null})));
        assert_eq!(
            status,
            Emit::one("whatsapp_status_change", json!({"status": "connected", "connected": true, "reason": null}))
        );
        let received = json!({
            "messageId": "3EB0", "sessionId": "tienda", "direction": "in", "chat": "123@lid",
            "from": "51987654321", "fromLid": null, "pushName": "Ana", "timestamp": 1_704_067_200_000_u64,
            "type": "text", "text": "Hola", "caption": null, "media": null, "quotedId": null,
            "location": null, "reaction": null, "contact": null, "summary": null,
        });
        let message = socket_event(&event(EventKind::MessageReceived, received));
        assert_eq!(
            message,
            Emit::one(
                "whatsapp_message_received",
                json!({"message": {
                    "id": "3EB0", "userId": "tienda", "clientId": "+51987654321", "channel": "whatsapp",
                    "direction": "inbound", "provider": "whatsapp_web", "text": "Hola", "status": "received",
                    "createdAt": "2024-01-01T00:00:00.000Z",
                }})
            )
        );
        assert_eq!(socket_event(&event(EventKind::MessageStatus, json!({}))), None);
    }

    #[test]
    fn send_bodies() {
        let (to, text) = parse_send(br#"{"to":"+51 987 654 321","message":"Hola"}"#).unwrap();
        assert_eq!((to.digits(), text.as_str()), ("51987654321", "Hola"));
        let (to, text) = parse_send(br#"{"phoneNumber":"51987654321@c.us","text":"Hola"}"#).unwrap();
        assert_eq!((to.digits(), text.as_str()), ("51987654321", "Hola"));
        let code = |body: &[u8]| parse_send(body).err().map(|e| e.code());
        assert_eq!(code(br#"{"to":"51987654321"}"#), Some("MISSING_FIELD"));
        assert_eq!(code(br#"{"message":"x"}"#), Some("MISSING_FIELD"));
        assert_eq!(code(br#"{"to":"12","message":"x"}"#), Some("INVALID_PHONE"));
        let long = format!(r#"{{"to":"51987654321","message":"{}"}}"#, "x".repeat(4097));
        assert_eq!(code(long.as_bytes()), Some("INVALID_FIELD_TYPE"));
        assert_eq!(code(b"[]"), Some("BAD_JSON"));
    }
}
