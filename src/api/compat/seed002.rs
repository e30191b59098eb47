//! Seed 002, "WhatsApp Orchestrator" (`COMPAT_API=seed002`): its routes, onto ours.
//!
//! | seed 002 | our call | scope |
//! |---|---|---|
//! | `GET /generate-qr` | `SessionManager::add` of a new `session_<ms>_<random>` id, then [`sessions::wait_for_qr`] (the handler of `GET /api/sessions/{id}/qr`) | `sessions:write` |
//! | `GET /sessions` | `SessionManager::list`, the token's sessions only, as `GET /api/sessions` | `sessions:read` |
//! | `GET /sessions/{sessionId}` | `SessionManager::get`, as `GET /api/sessions/{id}` | `sessions:read` |
//! | `POST /sessions/{sessionId}/send-message` `{"number","message"}` | `Queue::enqueue` of a text, as `POST /api/sessions/{id}/messages` | `messages:send` |
//! | `POST /sessions/{sessionId}/restart` | `SessionManager::restart`, as `POST /api/sessions/{id}/restart` | `sessions:write` |
//! | `DELETE /sessions/{sessionId}` | [`sessions::remove`], as `DELETE /api/sessions/{id}` | `sessions:write` |
//! | `POST /config/download-media` `{"enabled"}` | none: `INBOUND_MEDIA_MAX_BYTES` decides (see below) | `admin` |
//! | `GET /health` | ours, unchanged (`{"status":"ok","sessions","connected"}`): the seed shows no body | none |
//!
//! Its four callbacks (`new-session-connected`, `status-update`, `messages/received`,
//! `qr-update` under `BACKEND_BASE_URL`) are the `seed002` webhook format
//! (`crate::webhooks`). The GETs a page calls take `?token=` too.
//!
//! What differs, and why:
//! * A session is the seed's `whatsapp_sessions` row ([`Seed002SessionRow`]): `status` in its four
//!   words ([`Seed002Status`]); `auth_folder_path` is the session's credentials folder under
//!   `SESSIONS_DIR` (the seed's was `./auth_sessions/<id>`; nothing outside the gateway should
//!   touch it); `server_port` is always `null` (one process serves every session, on `PORT`);
//!   `created_at` is not kept by the gateway, so it is absent.
//! * `send-message` answers once the text is durably queued (`messageId`), not once WhatsApp
//!   took it; a session that is down holds it and sends it later.
//! * `/generate-qr`'s QR lives `QR_LINK_WINDOW_SECS` (120 s) unless someone asks for it again
//!   (`GET /api/sessions/{id}/qr`): an abandoned page stops linking by itself. Its `qr-update`
//!   callbacks go on meanwhile.
//! * `/config/download-media`: the gateway always downloads received files, up to
//!   `INBOUND_MEDIA_MAX_BYTES`, and keeps them `INBOUND_RETENTION_DAYS`; `{"enabled":true}`
//!   answers so, `{"enabled":false}` is 409 `SETTING_FIXED` rather than a success that changes
//!   nothing.
//! * Errors are `{"success":false,"error","message","code","requestId"}`: the seed's clients
//!   read `message`, its backend examples `error`.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use rand::RngExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
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
use crate::seeds::{Seed002Status, iso_millis};
use crate::session::SessionSummary;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(generate_qr))
        .routes(routes!(list_sessions))
        .routes(routes!(get_session, delete_session))
        .routes(routes!(send_message))
        .routes(routes!(restart_session))
        .routes(routes!(download_media))
}

/// `GET /generate-qr` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Seed002GenerateQrAnswer {
    /// Always `true`.
    success: bool,
    /// The new session's id.
    #[schema(example = "session_1705312200123_abc123def")]
    session_id: String,
    /// The QR as a PNG data URL, for an `<img src>`.
    #[schema(example = "data:image/png;base64,iVBORw0KGgo…")]
    qr: String,
    /// The text the QR encodes.
    #[schema(example = "2@ABC123…")]
    qr_text: String,
    /// Always `QR generado. Escanea con WhatsApp para conectar.`
    #[schema(example = "QR generado. Escanea con WhatsApp para conectar.")]
    message: &'static str,
}

/// A session, as seed 002's `whatsapp_sessions` row.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Seed002SessionRow {
    #[schema(example = "session_1705312200123_abc123def")]
    session_id: String,
    /// The linked number, once known.
    #[schema(example = "5491234567890")]
    phone_number: Option<String>,
    status: Seed002Status,
    /// Why it is in this status, in words a person can act on.
    error_message: Option<String>,
    /// When it last connected (`2024-01-15T10:30:00.000Z`).
    last_seen: Option<String>,
    /// The session's credentials folder under `SESSIONS_DIR`.
    #[schema(example = "./sessions/session_1705312200123_abc123def")]
    auth_folder_path: String,
    /// Always `null`: one process serves every session.
    server_port: Option<u16>,
    /// The linked device's JID.
    #[schema(example = "5491234567890:1@s.whatsapp.net")]
    whatsapp_user_id: Option<String>,
    /// When its state last changed.
    updated_at: String,
}

/// `{"success":true,"data":[…]}`.
#[derive(Debug, Serialize, ToSchema)]
struct Seed002SessionListAnswer {
    /// Always `true`.
    success: bool,
    data: Vec<Seed002SessionRow>,
}

/// `{"success":true,"data":{…}}`, and a `message` for actions.
#[derive(Debug, Serialize, ToSchema)]
struct Seed002SessionAnswer {
    /// Always `true`.
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "Sesión reiniciada")]
    message: Option<&'static str>,
    data: Seed002SessionRow,
}

/// `DELETE /sessions/{sessionId}` answer.
#[derive(Debug, Serialize, ToSchema)]
struct Seed002DeletedAnswer {
    /// Always `true`.
    success: bool,
    /// Always `Sesión eliminada`.
    #[schema(example = "Sesión eliminada")]
    message: &'static str,
}

/// `POST /sessions/{sessionId}/send-message` body.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // Describes the JSON; parsing is by hand.
struct Seed002SendMessageBody {
    #[schema(value_type = PhoneField)]
    number: String,
    /// 1 to 65,536 characters, not only whitespace.
    #[schema(example = "Hola desde WhatsApp!", min_length = 1, max_length = 65536, pattern = r"\S")]
    message: String,
}

/// `POST /sessions/{sessionId}/send-message` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Seed002SentAnswer {
    /// Always `true`.
    success: bool,
    /// Always `Mensaje encolado para envío.`
    #[schema(example = "Mensaje encolado para envío.")]
    message: &'static str,
    /// The WhatsApp message id; `GET /api/messages/{messageId}` follows it.
    #[schema(example = "3EB0A1B2C3D4E5F60718")]
    message_id: String,
}

/// `POST /config/download-media` body.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // Describes the JSON; parsing is by hand.
struct Seed002DownloadMediaBody {
    /// `true` (the gateway always downloads); `false` is 409 `SETTING_FIXED`.
    enabled: bool,
}

/// `POST /config/download-media` answer.
#[derive(Debug, Serialize, ToSchema)]
struct Seed002DownloadMediaAnswer {
    /// Always `true`.
    success: bool,
    /// Always `true`.
    enabled: bool,
    #[schema(example = "Los archivos recibidos se descargan siempre, hasta INBOUND_MEDIA_MAX_BYTES.")]
    message: &'static str,
}

/// The seed's row of `session`.
fn row(state: &AppState, session: SessionSummary) -> Seed002SessionRow {
    let me = session.state.me;
    Seed002SessionRow {
        auth_folder_path: state.sessions.folder(&session.id),
        session_id: session.id.as_str().to_owned(),
        phone_number: me.as_ref().map(|me| me.phone.clone()),
        status: session.state.status.into(),
        error_message: session.state.reason,
        last_seen: session.state.connected_at.map(iso_millis),
        server_port: None,
        whatsapp_user_id: me.map(|me| me.jid),
        updated_at: iso_millis(session.state.updated_at),
    }
}

/// The row of `id` now: 404 `SESSION_NOT_FOUND` when there is none.
fn current(state: &AppState, id: &SessionId) -> Result<Seed002SessionRow, ApiError> {
    Ok(row(state, state.sessions.get(id).ok_or(ApiError::SessionNotFound)?))
}

/// A new id in the seed's form: `session_`, unix ms, `_`, nine random base-36 characters.
fn new_session_id() -> Result<SessionId, ApiError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..9).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
    SessionId::parse(&format!("session_{}_{suffix}", crate::domain::now_ms())).map_err(ApiError::internal)
}

/// A new session and its QR code (seed 002's `GET /generate-qr`; needs `sessions:write`).
///
/// Compatibility dialect of seed 002, served with `COMPAT_API=seed002`. Creates a session with a
/// new id and waits up to 10 s for its first QR; when a phone scans it, `BACKEND_BASE_URL` gets
/// `new-session-connected`. A page may give the token as `?token=`.
#[utoipa::path(get, path = "/generate-qr", tag = "compat",
    params(("token" = Option<String>, Query, description = "The API token, for a page that cannot set headers")),
    security(("bearer" = []), ("query_token" = [])),
    responses(
        (status = 200, description = "The new session and its QR", body = Seed002GenerateQrAnswer),
        (status = 401, description = "No token (MISSING_TOKEN)", body = CompatErrorBody),
        (status = 403, description = "Unknown token (INVALID_TOKEN) or not allowed (FORBIDDEN)", body = CompatErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED, TOO_MANY_AUTH_FAILURES); see Retry-After", body = CompatErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error (INTERNAL)", body = CompatErrorBody),
        (status = 503, description = "No QR within 10 s (QR_NOT_READY; see Retry-After), shutting down or timed out", body = CompatErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
async fn generate_qr(State(state): State<AppState>, PageCaller(caller): PageCaller) -> Result<Response, ApiError> {
    caller.require(Scope::SessionsWrite)?;
    let id = new_session_id()?;
    caller.require_session(Scope::SessionsWrite, &id)?;
    state.sessions.add(id.clone(), None, None).await?;
    let qr = sessions::wait_for_qr(&state, &id).await?;
    let answer = Seed002GenerateQrAnswer {
        success: true,
        session_id: id.as_str().to_owned(),
        qr: crate::session::qr_data_url(&qr.code).map_err(ApiError::internal)?,
        qr_text: qr.code,
        message: "QR generado. Escanea con WhatsApp para conectar.",
    };
    Ok(json_response(StatusCode::OK, &answer))
}

/// The sessions this token may see (seed 002's `GET /sessions`; needs `sessions:read`).
///
/// Compatibility dialect of seed 002, served with `COMPAT_API=seed002`. A page may give the
/// token as `?token=`.
#[utoipa::path(get, path = "/sessions", tag = "compat",
    params(("token" = Option<String>, Query, description = "The API token, for a page that cannot set headers")),
    security(("bearer" = []), ("query_token" = [])),
    responses(
        (status = 200, description = "The sessions, by id", body = Seed002SessionListAnswer),
        (status = 401, description = "No token (MISSING_TOKEN)", body = CompatErrorBody),
        (status = 403, description = "Unknown token (INVALID_TOKEN) or not allowed (FORBIDDEN)", body = CompatErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED, TOO_MANY_AUTH_FAILURES); see Retry-After", body = CompatErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Timed out (TIMEOUT)", body = CompatErrorBody),
    ))]
async fn list_sessions(State(state): State<AppState>, PageCaller(caller): PageCaller) -> Result<Response, ApiError> {
    caller.require(Scope::SessionsRead)?;
    let data = state.sessions.list().into_iter().filter(|s| caller.may_use(&s.id)).map(|s| row(&state, s)).collect();
    Ok(json_response(StatusCode::OK, &Seed002SessionListAnswer { success: true, data }))
}

/// One session (seed 002's `GET /sessions/{sessionId}`; needs `sessions:read`).
///
/// Compatibility dialect of seed 002, served with `COMPAT_API=seed002`. A page may give the
/// token as `?token=`.
#[utoipa::path(get, path = "/sessions/{sessionId}", tag = "compat",
    params(SessionPath,
        ("token" = Option<String>, Query, description = "The API token, for a page that cannot set headers")),
    security(("bearer" = []), ("query_token" = [])),
    responses(
        (status = 200, description = "The session", body = Seed002SessionAnswer),
        (status = 400, description = "Invalid id (INVALID_SESSION_ID)", body = CompatErrorBody),
        (status = 401, description = "No token (MISSING_TOKEN)", body = CompatErrorBody),
        (status = 403, description = "Unknown token (INVALID_TOKEN) or not allowed (FORBIDDEN)", body = CompatErrorBody),
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = CompatErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED, TOO_MANY_AUTH_FAILURES); see Retry-After", body = CompatErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Timed out (TIMEOUT)", body = CompatErrorBody),
    ))]
async fn get_session(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(path)?;
    caller.require_session(Scope::SessionsRead, &id)?;
    let data = current(&state, &id)?;
    Ok(json_response(StatusCode::OK, &Seed002SessionAnswer { success: true, message: None, data }))
}

/// Send a text from the session (seed 002's `POST /sessions/{sessionId}/send-message`; needs
/// `messages:send`).
///
/// Compatibility dialect of seed 002, served with `COMPAT_API=seed002`. Answers once the text is
/// durably queued; it is then delivered as `POST /api/sessions/{sessionId}/messages` delivers,
/// in order, retrying while the session is down. An `Idempotency-Key` header works as there.
#[utoipa::path(post, path = "/sessions/{sessionId}/send-message", tag = "compat",
    params(SessionPath, crate::api::send_pdf::IdempotencyHeader),
    request_body(content = Seed002SendMessageBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Queued (durable)", body = Seed002SentAnswer),
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
async fn send_message(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let id = session_id(path)?;
    caller.require_session(Scope::MessagesSend, &id)?;
    let idempotency = crate::api::send_pdf::idempotency_key(req.headers())?;
    check_content_type(req.headers())?;
    let bytes = RequestBody::<SmallLimit>::from_request(req, &state).await?.bytes;
    let mut object = json_object(&bytes)?;
    let to = crate::api::send_pdf::phone_field(object.remove("number"), "number")?;
    let text = required_text(&mut object, "message")?;
    let message_id = super::send_text(&state, &caller, &id, to, &text, idempotency, &bytes).await?;
    let answer = Seed002SentAnswer { success: true, message: crate::api::ACCEPTED_MESSAGE, message_id };
    Ok(json_response(StatusCode::OK, &answer))
}

/// Restart the session: a new client on the same credentials (seed 002's
/// `POST /sessions/{sessionId}/restart`; needs `sessions:write`).
///
/// Compatibility dialect of seed 002, served with `COMPAT_API=seed002`.
#[utoipa::path(post, path = "/sessions/{sessionId}/restart", tag = "compat",
    params(SessionPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Restarting; the session as it is now", body = Seed002SessionAnswer),
        (status = 400, description = "Invalid id (INVALID_SESSION_ID)", body = CompatErrorBody),
        (status = 401, description = "No token (MISSING_TOKEN)", body = CompatErrorBody),
        (status = 403, description = "Unknown token (INVALID_TOKEN) or not allowed (FORBIDDEN)", body = CompatErrorBody),
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = CompatErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED, TOO_MANY_AUTH_FAILURES); see Retry-After", body = CompatErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Shutting down or timed out (SHUTTING_DOWN, TIMEOUT)", body = CompatErrorBody),
    ))]
async fn restart_session(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(path)?;
    caller.require_session(Scope::SessionsWrite, &id)?;
    state.sessions.restart(&id).await?;
    let data = current(&state, &id)?;
    Ok(json_response(StatusCode::OK, &Seed002SessionAnswer { success: true, message: Some("Sesión reiniciada"), data }))
}

/// Delete the session: log out if linked, stop, delete its credentials; its queued messages fail
/// with `SESSION_DELETED` (seed 002's `DELETE /sessions/{sessionId}`; needs `sessions:write`).
///
/// Compatibility dialect of seed 002, served with `COMPAT_API=seed002`.
#[utoipa::path(delete, path = "/sessions/{sessionId}", tag = "compat",
    params(SessionPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deleted", body = Seed002DeletedAnswer),
        (status = 400, description = "Invalid id (INVALID_SESSION_ID)", body = CompatErrorBody),
        (status = 401, description = "No token (MISSING_TOKEN)", body = CompatErrorBody),
        (status = 403, description = "Unknown token (INVALID_TOKEN) or not allowed (FORBIDDEN)", body = CompatErrorBody),
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = CompatErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED, TOO_MANY_AUTH_FAILURES); see Retry-After", body = CompatErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error (INTERNAL)", body = CompatErrorBody),
        (status = 503, description = "Shutting down, busy or timed out (SHUTTING_DOWN, SESSION_UNRESPONSIVE, TIMEOUT)", body = CompatErrorBody),
    ))]
async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(path)?;
    caller.require_session(Scope::SessionsWrite, &id)?;
    sessions::remove(&state, &id).await?;
    Ok(json_response(StatusCode::OK, &Seed002DeletedAnswer { success: true, message: "Sesión eliminada" }))
}

/// What the gateway says instead of a setting.
const ALWAYS_DOWNLOADED: &str = "received files are always downloaded, up to INBOUND_MEDIA_MAX_BYTES";

/// Automatic download of received files (seed 002's `POST /config/download-media`; needs
/// `admin`).
///
/// Compatibility dialect of seed 002, served with `COMPAT_API=seed002`. The gateway always
/// downloads received files, up to `INBOUND_MEDIA_MAX_BYTES`, and keeps them
/// `INBOUND_RETENTION_DAYS`: `{"enabled":true}` says so; `{"enabled":false}` is 409
/// `SETTING_FIXED`.
#[utoipa::path(post, path = "/config/download-media", tag = "compat",
    request_body(content = Seed002DownloadMediaBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Downloads are on", body = Seed002DownloadMediaAnswer),
        (status = 400, description = "Invalid input (BAD_JSON, MISSING_FIELD, INVALID_FIELD_TYPE)", body = CompatErrorBody),
        (status = 401, description = "No token (MISSING_TOKEN)", body = CompatErrorBody),
        (status = 403, description = "Unknown token (INVALID_TOKEN) or not the admin (FORBIDDEN)", body = CompatErrorBody),
        (status = 408, description = "Body not received in time (BODY_TIMEOUT)", body = CompatErrorBody),
        (status = 409, description = "Downloads cannot be turned off (SETTING_FIXED)", body = CompatErrorBody),
        (status = 413, description = "Body too large (PAYLOAD_TOO_LARGE)", body = CompatErrorBody),
        (status = 415, description = "Not application/json (UNSUPPORTED_MEDIA_TYPE)", body = CompatErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED, TOO_MANY_AUTH_FAILURES); see Retry-After", body = CompatErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Timed out (TIMEOUT)", body = CompatErrorBody),
    ))]
async fn download_media(State(state): State<AppState>, caller: Caller, req: Request) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    check_content_type(req.headers())?;
    let bytes = RequestBody::<SmallLimit>::from_request(req, &state).await?.bytes;
    let mut object = json_object(&bytes)?;
    match object.remove("enabled") {
        None | Some(Value::Null) => Err(ApiError::MissingField("enabled")),
        Some(Value::Bool(true)) => Ok(json_response(
            StatusCode::OK,
            &Seed002DownloadMediaAnswer {
                success: true,
                enabled: true,
                message: "Los archivos recibidos se descargan siempre, hasta INBOUND_MEDIA_MAX_BYTES.",
            },
        )),
        Some(Value::Bool(false)) => Err(ApiError::SettingFixed(ALWAYS_DOWNLOADED)),
        Some(_) => Err(ApiError::WrongFieldType { field: "enabled", expected: "a boolean" }),
    }
}
