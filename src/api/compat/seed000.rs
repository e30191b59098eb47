//! Seed 000, "WhatsApp QR Service" (`COMPAT_API=seed000`): its five routes, onto ours.
//!
//! | seed 000 | our call | scope |
//! |---|---|---|
//! | `POST /init` `{"sessionId","chatbotId"}` | `SessionManager::add` (when new; `chatbotId` kept in the session's `metadata`), then `link_for` (`QR_LINK_WINDOW_SECS`), as `GET /api/sessions/{id}/qr` starts linking | `sessions:write` |
//! | `GET /qr-code/{sessionId}` | [`sessions::wait_for_qr`], the handler of `GET /api/sessions/{id}/qr` | `sessions:write` |
//! | `GET /status/{sessionId}` | `SessionManager::get`, as `GET /api/sessions/{id}` | `sessions:read` |
//! | `POST /send` `{"sessionId","to","message"}` | `Queue::enqueue` of a text, as `POST /api/sessions/{id}/messages` | `messages:send` |
//! | `POST /disconnect` `{"sessionId"}` | `SessionManager::logout`, as `POST /api/sessions/{id}/logout` | `sessions:write` |
//! | `GET /health` | ours, unchanged (`{"status":"ok","sessions","connected"}`): the seed shows no body | none |
//!
//! Its callbacks (`{BACKEND_URL}/whatsapp-qr/webhook` and `/whatsapp-qr/incoming`) are the
//! `seed000` webhook format (`crate::webhooks`). The GETs a page polls take `?token=` too.
//!
//! What differs, and why:
//! * Statuses: ours map onto its four ([`Seed000Status`]): `pairing_code` is `connecting`;
//!   `logged_out` and `error` are `disconnected` (the seed had no words for them).
//! * `/send` answers once the text is durably queued (the `messageId` is the one WhatsApp will
//!   see), not once WhatsApp took it: a session that is down holds it and sends it later,
//!   where the seed failed. `GET /api/messages/{messageId}` follows it.
//! * `/qr-code` of a connected session answers `{"qrCode":null,"status":"connected"}`, so a
//!   page polling it learns it is linked; when no QR comes within 10 s it is 503
//!   `QR_NOT_READY`. A QR lives `QR_LINK_WINDOW_SECS` after the last `/init` or `/qr-code`,
//!   where the seed kept linking until the QR codes ran out.
//! * Sessions and their credentials live where the gateway keeps them (`SESSIONS_DIR`), not in
//!   the seed's `/sessions` layout; `npm run clean`'s per-session delete is
//!   `DELETE /api/sessions/{id}`.
//! * Errors are `{"success":false,"error","message","code","requestId"}`; the seed documented
//!   none.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CompatErrorBody, PageCaller, json_object, required_text};
use crate::api::auth::{Caller, Scope};
use crate::api::body::{RequestBody, SmallLimit};
use crate::api::error::ApiError;
use crate::api::json_response;
use crate::api::openapi::{PhoneField, SessionPath};
use crate::api::send_pdf::check_content_type;
use crate::api::sessions::{self, session_id};
use crate::api::state::AppState;
use crate::domain::SessionId;
use crate::seeds::{Seed000Status, iso_seconds};
use crate::session::SessionError;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(init))
        .routes(routes!(qr_code))
        .routes(routes!(status))
        .routes(routes!(send))
        .routes(routes!(disconnect))
}

/// `POST /init` body.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Describes the JSON; parsing is by hand.
struct Seed000InitBody {
    #[schema(example = "unique-session-id", pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    session_id: String,
    /// Kept in the session's `metadata` as `chatbotId` when the session is created.
    #[schema(example = "chatbot-uuid")]
    chatbot_id: Option<String>,
}

/// `POST /init` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Seed000InitAnswer {
    /// Always `true`.
    success: bool,
    session_id: String,
    /// `connecting` while it starts, `qr_ready` once a QR waits, `connected` if it was linked.
    status: Seed000Status,
}

/// `GET /qr-code/{sessionId}` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Seed000QrAnswer {
    /// The QR as a PNG data URL; `null` once the session is connected.
    #[schema(example = "data:image/png;base64,iVBORw0KGgo…")]
    qr_code: Option<String>,
    /// `qr_ready`, or `connected`.
    status: Seed000Status,
}

/// `GET /status/{sessionId}` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Seed000StatusAnswer {
    session_id: String,
    status: Seed000Status,
    /// When it last connected (UTC, `2024-01-15T10:30:00Z`); `null` before that.
    last_connected_at: Option<String>,
}

/// `POST /send` body.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Describes the JSON; parsing is by hand.
struct Seed000SendBody {
    #[schema(example = "unique-session-id", pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    session_id: String,
    #[schema(value_type = PhoneField)]
    to: String,
    /// 1 to 65,536 characters, not only whitespace.
    #[schema(example = "Hola, ¿cómo estás?", min_length = 1, max_length = 65536, pattern = r"\S")]
    message: String,
}

/// `POST /send` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Seed000SendAnswer {
    /// Always `true`.
    success: bool,
    /// The WhatsApp message id; `GET /api/messages/{messageId}` follows it.
    #[schema(example = "3EB0A1B2C3D4E5F60718")]
    message_id: String,
}

/// `POST /disconnect` body.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Describes the JSON; parsing is by hand.
struct Seed000DisconnectBody {
    #[schema(example = "unique-session-id", pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    session_id: String,
}

/// `POST /disconnect` answer.
#[derive(Debug, Serialize, ToSchema)]
struct Seed000DisconnectAnswer {
    /// Always `true`.
    success: bool,
    /// Always `Session disconnected`.
    #[schema(example = "Session disconnected")]
    message: &'static str,
}

/// The JSON object of a `POST`'s body (`HTTP_MAX_JSON_BYTES`).
async fn body(state: &AppState, req: Request) -> Result<Map<String, Value>, ApiError> {
    check_content_type(req.headers())?;
    let bytes = RequestBody::<SmallLimit>::from_request(req, state).await?.bytes;
    json_object(&bytes)
}

/// Start a session and its linking (seed 000's `POST /init`; needs `sessions:write`).
///
/// Compatibility dialect of seed 000, served with `COMPAT_API=seed000`. Creates the session when
/// new and keeps it linking for `QR_LINK_WINDOW_SECS`; its QR codes go to `BACKEND_URL` as
/// `type: qr` callbacks, and `GET /qr-code/{sessionId}` shows the current one.
#[utoipa::path(post, path = "/init", tag = "compat",
    request_body(content = Seed000InitBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Linking (or already linked)", body = Seed000InitAnswer),
        (status = 400, description = "Invalid input (BAD_JSON, MISSING_FIELD, INVALID_FIELD_TYPE, INVALID_SESSION_ID)", body = CompatErrorBody),
        (status = 401, description = "No token (MISSING_TOKEN)", body = CompatErrorBody),
        (status = 403, description = "Unknown token (INVALID_TOKEN) or not allowed (FORBIDDEN)", body = CompatErrorBody),
        (status = 408, description = "Body not received in time (BODY_TIMEOUT)", body = CompatErrorBody),
        (status = 413, description = "Body too large (PAYLOAD_TOO_LARGE)", body = CompatErrorBody),
        (status = 415, description = "Not application/json (UNSUPPORTED_MEDIA_TYPE)", body = CompatErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED, TOO_MANY_AUTH_FAILURES); see Retry-After", body = CompatErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error (INTERNAL)", body = CompatErrorBody),
        (status = 503, description = "Shutting down or timed out (SHUTTING_DOWN, TIMEOUT)", body = CompatErrorBody),
    ))]
async fn init(State(state): State<AppState>, caller: Caller, req: Request) -> Result<Response, ApiError> {
    caller.require(Scope::SessionsWrite)?;
    let mut object = body(&state, req).await?;
    let id = SessionId::parse(&required_text(&mut object, "sessionId")?)?;
    let chatbot_id = match object.remove("chatbotId") {
        None | Some(Value::Null) => None,
        Some(value @ (Value::String(_) | Value::Number(_))) => Some(value),
        Some(_) => return Err(ApiError::WrongFieldType { field: "chatbotId", expected: "a string" }),
    };
    caller.require_session(Scope::SessionsWrite, &id)?;
    if !state.sessions.contains(&id) {
        let metadata = chatbot_id.map(|chatbot| Map::from_iter([("chatbotId".to_owned(), chatbot)]));
        match state.sessions.add(id.clone(), None, metadata).await {
            // Another `/init` made it meanwhile: the same session.
            Ok(_) | Err(SessionError::Exists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let current = state.sessions.get(&id).map(|s| s.state.status).ok_or(ApiError::SessionNotFound)?;
    let status = match Seed000Status::from(current) {
        Seed000Status::Connected => Seed000Status::Connected,
        other => {
            state.sessions.link_for(&id, state.qr_link_window)?;
            if other == Seed000Status::QrReady { other } else { Seed000Status::Connecting }
        }
    };
    Ok(json_response(StatusCode::OK, &Seed000InitAnswer { success: true, session_id: id.as_str().to_owned(), status }))
}

/// The QR code to scan (seed 000's `GET /qr-code/{sessionId}`; needs `sessions:write`).
///
/// Compatibility dialect of seed 000, served with `COMPAT_API=seed000`. Starts linking if
/// needed and keeps it going `QR_LINK_WINDOW_SECS` after the last call; waits up to 10 s for the
/// first code. A page may give the token as `?token=`.
#[utoipa::path(get, path = "/qr-code/{sessionId}", tag = "compat",
    params(SessionPath,
        ("token" = Option<String>, Query, description = "The API token, for a page that cannot set headers")),
    security(("bearer" = []), ("query_token" = [])),
    responses(
        (status = 200, description = "The QR (or `qrCode: null` when connected)", body = Seed000QrAnswer),
        (status = 400, description = "Invalid id (INVALID_SESSION_ID)", body = CompatErrorBody),
        (status = 401, description = "No token (MISSING_TOKEN)", body = CompatErrorBody),
        (status = 403, description = "Unknown token (INVALID_TOKEN) or not allowed (FORBIDDEN)", body = CompatErrorBody),
        (status = 404, description = "No such session (SESSION_NOT_FOUND): `POST /init` first", body = CompatErrorBody),
        (status = 409, description = "Linking by a pairing code (PAIRING_CODE_OUTSTANDING)", body = CompatErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED, TOO_MANY_AUTH_FAILURES); see Retry-After", body = CompatErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error (INTERNAL)", body = CompatErrorBody),
        (status = 503, description = "No QR within 10 s (QR_NOT_READY; see Retry-After) or timed out", body = CompatErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
async fn qr_code(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(path)?;
    caller.require_session(Scope::SessionsWrite, &id)?;
    let answer = match sessions::wait_for_qr(&state, &id).await {
        Ok(qr) => Seed000QrAnswer {
            qr_code: Some(crate::session::qr_data_url(&qr.code).map_err(ApiError::internal)?),
            status: Seed000Status::QrReady,
        },
        Err(ApiError::AlreadyConnected) => Seed000QrAnswer { qr_code: None, status: Seed000Status::Connected },
        Err(e) => return Err(e),
    };
    Ok(json_response(StatusCode::OK, &answer))
}

/// A session's connection (seed 000's `GET /status/{sessionId}`; needs `sessions:read`).
///
/// Compatibility dialect of seed 000, served with `COMPAT_API=seed000`. A page may give the
/// token as `?token=`.
#[utoipa::path(get, path = "/status/{sessionId}", tag = "compat",
    params(SessionPath,
        ("token" = Option<String>, Query, description = "The API token, for a page that cannot set headers")),
    security(("bearer" = []), ("query_token" = [])),
    responses(
        (status = 200, description = "The status", body = Seed000StatusAnswer),
        (status = 400, description = "Invalid id (INVALID_SESSION_ID)", body = CompatErrorBody),
        (status = 401, description = "No token (MISSING_TOKEN)", body = CompatErrorBody),
        (status = 403, description = "Unknown token (INVALID_TOKEN) or not allowed (FORBIDDEN)", body = CompatErrorBody),
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = CompatErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED, TOO_MANY_AUTH_FAILURES); see Retry-After", body = CompatErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Timed out (TIMEOUT)", body = CompatErrorBody),
    ))]
async fn status(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(path)?;
    caller.require_session(Scope::SessionsRead, &id)?;
    let session = state.sessions.get(&id).ok_or(ApiError::SessionNotFound)?;
    let answer = Seed000StatusAnswer {
        session_id: id.as_str().to_owned(),
        status: session.state.status.into(),
        last_connected_at: session.state.connected_at.map(iso_seconds),
    };
    Ok(json_response(StatusCode::OK, &answer))
}

/// Send a text (seed 000's `POST /send`; needs `messages:send`).
///
/// Compatibility dialect of seed 000, served with `COMPAT_API=seed000`. Answers once the text is
/// durably queued; it is then delivered as `POST /api/sessions/{sessionId}/messages` delivers,
/// in order, retrying while the session is down. An `Idempotency-Key` header works as there.
#[utoipa::path(post, path = "/send", tag = "compat",
    params(crate::api::send_pdf::IdempotencyHeader),
    request_body(content = Seed000SendBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Queued (durable)", body = Seed000SendAnswer),
        (status = 400, description = "Invalid input (BAD_JSON, MISSING_FIELD, INVALID_FIELD_TYPE, INVALID_SESSION_ID, INVALID_PHONE, EMPTY_TEXT, TEXT_TOO_LONG, NUL_CHARACTER, INVALID_IDEMPOTENCY_KEY)", body = CompatErrorBody),
        (status = 401, description = "No token (MISSING_TOKEN)", body = CompatErrorBody),
        (status = 403, description = "Unknown token (INVALID_TOKEN) or not allowed (FORBIDDEN)", body = CompatErrorBody),
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = CompatErrorBody),
        (status = 408, description = "Body not received in time (BODY_TIMEOUT)", body = CompatErrorBody),
        (status = 413, description = "Body too large (PAYLOAD_TOO_LARGE)", body = CompatErrorBody),
        (status = 415, description = "Not application/json (UNSUPPORTED_MEDIA_TYPE)", body = CompatErrorBody),
        (status = 422, description = "Idempotency-Key reused with another body (IDEMPOTENCY_KEY_REUSED)", body = CompatErrorBody),
        (status = 429, description = "Queue full (QUEUE_FULL) or rate limited (RATE_LIMITED, TOO_MANY_AUTH_FAILURES); see Retry-After", body = CompatErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error (INTERNAL)", body = CompatErrorBody),
        (status = 503, description = "Timed out (TIMEOUT)", body = CompatErrorBody),
        (status = 507, description = "Disk full, nothing stored (INSUFFICIENT_STORAGE)", body = CompatErrorBody),
    ))]
async fn send(State(state): State<AppState>, caller: Caller, req: Request) -> Result<Response, ApiError> {
    caller.require(Scope::MessagesSend)?;
    let idempotency = crate::api::send_pdf::idempotency_key(req.headers())?;
    check_content_type(req.headers())?;
    let bytes = RequestBody::<SmallLimit>::from_request(req, &state).await?.bytes;
    let mut object = json_object(&bytes)?;
    let id = SessionId::parse(&required_text(&mut object, "sessionId")?)?;
    let to = crate::api::send_pdf::phone_field(object.remove("to"), "to")?;
    let text = required_text(&mut object, "message")?;
    let message_id = super::send_text(&state, &caller, &id, to, &text, idempotency, &bytes).await?;
    Ok(json_response(StatusCode::OK, &Seed000SendAnswer { success: true, message_id }))
}

/// Log the session out (seed 000's `POST /disconnect`; needs `sessions:write`).
///
/// Compatibility dialect of seed 000, served with `COMPAT_API=seed000`. Unlinks the phone and
/// deletes the credentials, keeping the session (link it again with `POST /init`); a
/// `type: disconnected` callback with `reason: logout` follows.
#[utoipa::path(post, path = "/disconnect", tag = "compat",
    request_body(content = Seed000DisconnectBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Logged out", body = Seed000DisconnectAnswer),
        (status = 400, description = "Invalid input (BAD_JSON, MISSING_FIELD, INVALID_FIELD_TYPE, INVALID_SESSION_ID)", body = CompatErrorBody),
        (status = 401, description = "No token (MISSING_TOKEN)", body = CompatErrorBody),
        (status = 403, description = "Unknown token (INVALID_TOKEN) or not allowed (FORBIDDEN)", body = CompatErrorBody),
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = CompatErrorBody),
        (status = 408, description = "Body not received in time (BODY_TIMEOUT)", body = CompatErrorBody),
        (status = 413, description = "Body too large (PAYLOAD_TOO_LARGE)", body = CompatErrorBody),
        (status = 415, description = "Not application/json (UNSUPPORTED_MEDIA_TYPE)", body = CompatErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED, TOO_MANY_AUTH_FAILURES); see Retry-After", body = CompatErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error (INTERNAL)", body = CompatErrorBody),
        (status = 503, description = "Shutting down, busy or timed out (SHUTTING_DOWN, SESSION_UNRESPONSIVE, TIMEOUT)", body = CompatErrorBody),
    ))]
async fn disconnect(State(state): State<AppState>, caller: Caller, req: Request) -> Result<Response, ApiError> {
    caller.require(Scope::SessionsWrite)?;
    let mut object = body(&state, req).await?;
    let id = SessionId::parse(&required_text(&mut object, "sessionId")?)?;
    caller.require_session(Scope::SessionsWrite, &id)?;
    state.sessions.logout(&id).await?;
    Ok(json_response(StatusCode::OK, &Seed000DisconnectAnswer { success: true, message: "Session disconnected" }))
}
