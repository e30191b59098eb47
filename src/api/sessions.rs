//! `/api/sessions`: create, list, inspect, link by QR over HTTP, restart, log out and delete
//! sessions. Handlers translate HTTP to [`SessionManager`](crate::session::SessionManager) calls;
//! every change goes through the session's own supervisor.

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::RngExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::auth::{Caller, Scope};
use crate::api::body::{RequestBody, SmallLimit};
use crate::api::error::{ApiError, AuthErrors, ErrorBody, RateLimited, SessionPathErrors};
use crate::api::json_response;
use crate::api::openapi::{PhoneField, SessionPath};
use crate::api::state::AppState;
use crate::domain::{InvalidSessionId, SessionId};
use crate::session::{Account, SessionSummary, Status, png_data_url, qr_png};

/// How long `GET …/qr` waits for the first QR code.
const QR_WAIT: Duration = Duration::from_secs(10);
/// Longest `description`, in characters.
const MAX_DESCRIPTION_CHARS: usize = 256;
/// Largest `metadata`, serialized.
const MAX_METADATA_BYTES: usize = 16 * 1024;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_session, list_sessions))
        .routes(routes!(get_session, delete_session))
        .routes(routes!(session_qr))
        .routes(routes!(restart_session))
        .routes(routes!(logout_session))
        .routes(routes!(pairing_code))
}

/// A session: its status in words a person can act on, the linked account and its queue.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    #[schema(example = "tienda_lima")]
    pub session_id: String,
    pub description: Option<String>,
    /// Any JSON object given at creation, echoed as it was.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub status: Status,
    /// Why the session is in this status, e.g. "cannot reach WhatsApp (…); retrying".
    pub reason: Option<String>,
    /// The linked account, once known.
    pub me: Option<Account>,
    /// When it last connected, unix ms.
    pub connected_at: Option<u64>,
    /// When its state last changed, unix ms.
    pub updated_at: u64,
    /// With `DATABASE_URL`: the gateway of the fleet that runs the session now (`GATEWAY_ID`);
    /// absent while none does, and on the files. Every gateway answers with the state that one
    /// recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "gw-1:3000")]
    pub gateway: Option<String>,
    pub queue: QueueView,
}

/// Messages waiting to be sent through the session.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub pending: usize,
    pub bytes: u64,
}

/// `{"sessions":[…]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// A QR code to scan, as seeds 000 and 002 return it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QrView {
    /// The QR as a PNG data URL, ready for an `<img src>`.
    #[schema(example = "data:image/png;base64,iVBORw0KGgo…")]
    pub qr: String,
    /// The text the QR encodes.
    #[schema(example = "2@…")]
    pub qr_text: String,
    /// When the next code replaces this one, unix ms.
    pub expires_at: u64,
    /// Always `qr_ready`.
    #[schema(example = "qr_ready")]
    pub status: Status,
}

/// A PNG image.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Only describes the `image/png` answer.
struct PngImage(Vec<u8>);

/// The body of `POST /api/sessions`; every field is optional.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Describes the JSON for the OpenAPI document; parsing is by hand.
struct CreateSessionBody {
    /// The id; generated when absent.
    #[schema(example = "tienda_lima", pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    session_id: Option<String>,
    /// Up to 256 characters.
    #[schema(example = "Caja principal, Lima", max_length = 256)]
    description: Option<String>,
    /// Any JSON object (up to 16 KiB), kept and echoed.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// 200 with the session as it is now.
fn current(state: &AppState, id: &SessionId) -> Result<Response, ApiError> {
    let session = state.sessions.get(id).ok_or(ApiError::SessionNotFound)?;
    Ok(json_response(StatusCode::OK, &view(state, session)))
}

fn view(state: &AppState, session: SessionSummary) -> SessionView {
    let (pending, bytes) = state.queue.depth(&session.id);
    SessionView {
        session_id: session.id.as_str().to_owned(),
        description: session.description,
        metadata: session.metadata,
        status: session.state.status,
        reason: session.state.reason,
        me: session.state.me,
        connected_at: session.state.connected_at,
        updated_at: session.state.updated_at,
        gateway: session.gateway.map(|gateway| gateway.to_string()),
        queue: QueueView { pending, bytes },
    }
}

/// The session id of the path: 400 `INVALID_SESSION_ID` when it breaks the rule.
pub(crate) fn session_id(path: Result<Path<String>, PathRejection>) -> Result<SessionId, ApiError> {
    let Path(raw) = path.map_err(|_| ApiError::InvalidSessionId(InvalidSessionId))?;
    Ok(SessionId::parse(&raw)?)
}

/// A fresh id: `s_` and 12 hex digits.
fn generate_id() -> Result<SessionId, ApiError> {
    let raw: [u8; 6] = rand::rng().random();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    SessionId::parse(&format!("s_{hex}")).map_err(ApiError::internal)
}

/// What `POST /api/sessions` asked for.
#[derive(Debug, Default)]
struct NewSession {
    id: Option<SessionId>,
    description: Option<String>,
    metadata: Option<Map<String, Value>>,
}

/// Parses the optional JSON body of `POST /api/sessions`, naming the field at fault.
fn parse_create(body: &[u8]) -> Result<NewSession, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(NewSession::default());
    }
    let mut object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => object,
        // The body is optional, and `null` says so in JSON.
        Ok(Value::Null) => return Ok(NewSession::default()),
        _ => return Err(ApiError::BadJson),
    };
    let id = match object.remove("sessionId") {
        None | Some(Value::Null) => None,
        Some(Value::String(raw)) => Some(SessionId::parse(&raw)?),
        Some(_) => return Err(ApiError::WrongFieldType { field: "sessionId", expected: "a string" }),
    };
    let description = match object.remove("description") {
        None | Some(Value::Null) => None,
        // Bidi overrides and zero-width characters could make one name look like another.
        Some(Value::String(text)) if text.chars().count() <= MAX_DESCRIPTION_CHARS => {
            Some(crate::domain::visible_text(&text)).filter(|text| !text.is_empty())
        }
        Some(Value::String(_)) => {
            return Err(ApiError::WrongFieldType { field: "description", expected: "at most 256 characters" });
        }
        Some(_) => return Err(ApiError::WrongFieldType { field: "description", expected: "a string" }),
    };
    let metadata = match object.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) if serde_json::to_vec(&map).map_or(0, |v| v.len()) <= MAX_METADATA_BYTES => Some(map),
        Some(Value::Object(_)) => {
            return Err(ApiError::WrongFieldType { field: "metadata", expected: "at most 16 KiB of JSON" });
        }
        Some(_) => return Err(ApiError::WrongFieldType { field: "metadata", expected: "a JSON object" }),
    };
    Ok(NewSession { id, description, metadata })
}

/// Create a session (needs `sessions:write`). It waits, unlinked, until someone links it.
#[utoipa::path(post, path = "/api/sessions", tag = "sessions",
    request_body(content = Option<CreateSessionBody>, content_type = "application/json",
        description = "Optional: without a body the id is generated"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = SessionView),
        (status = 400, description = "Invalid input (BAD_JSON, INVALID_FIELD_TYPE, INVALID_SESSION_ID)", body = ErrorBody),
        AuthErrors,
        (status = 408, description = "Body not received in time (BODY_TIMEOUT)", body = ErrorBody),
        (status = 409, description = "The id is taken (SESSION_EXISTS)", body = ErrorBody),
        (status = 413, description = "Body too large (PAYLOAD_TOO_LARGE)", body = ErrorBody),
        (status = 415, description = "Not application/json (UNSUPPORTED_MEDIA_TYPE)", body = ErrorBody),
        RateLimited,
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Shutting down or timed out (SHUTTING_DOWN, TIMEOUT)", body = ErrorBody),
    ))]
async fn create_session(State(state): State<AppState>, caller: Caller, req: Request) -> Result<Response, ApiError> {
    caller.require(Scope::SessionsWrite)?;
    crate::api::send_pdf::check_content_type(req.headers())?;
    let body = RequestBody::<SmallLimit>::from_request(req, &state).await?.bytes;
    let NewSession { id, description, metadata } = parse_create(&body)?;
    let id = match (id, caller.is_jwt_user().then(|| caller.home_session()).flatten()) {
        (Some(id), _) => id,
        // A user's JWT names its one session.
        (None, Some(home)) => home,
        (None, None) => generate_id()?,
    };
    caller.require_session(Scope::SessionsWrite, &id)?;
    let created = state.sessions.add(id, description, metadata).await?;
    Ok(json_response(StatusCode::CREATED, &view(&state, created)))
}

/// List the sessions this token may see (needs `sessions:read`).
#[utoipa::path(get, path = "/api/sessions", tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The sessions, by id", body = SessionList),
        AuthErrors,
        RateLimited,
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn list_sessions(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Scope::SessionsRead)?;
    if caller.is_jwt_user() {
        crate::api::home_session::ensure_home_session(&state, &caller).await?;
    }
    let sessions =
        state.sessions.list().into_iter().filter(|s| caller.may_use(&s.id)).map(|s| view(&state, s)).collect();
    Ok(json_response(StatusCode::OK, &SessionList { sessions }))
}

/// One session (needs `sessions:read`).
#[utoipa::path(get, path = "/api/sessions/{sessionId}", tag = "sessions",
    params(SessionPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session", body = SessionView),
        SessionPathErrors,
        AuthErrors,
        RateLimited,
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(path)?;
    caller.require_session(Scope::SessionsRead, &id)?;
    crate::api::home_session::existing_session(&state, &caller, &id).await?;
    current(&state, &id)
}

/// The QR code to link the session (needs `sessions:write`).
///
/// Starts linking if needed and keeps it going for `QR_LINK_WINDOW_SECS` after the last call,
/// so a client that polls keeps it alive. Waits up to 10 s for the first code. Answers the PNG
/// with `Accept: image/png`, JSON otherwise.
#[utoipa::path(get, path = "/api/sessions/{sessionId}/qr", tag = "sessions",
    params(SessionPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The QR code (JSON, or the PNG with Accept: image/png)",
            content((QrView = "application/json"), (PngImage = "image/png"))),
        SessionPathErrors,
        AuthErrors,
        (status = 409, description = "Already linked and connected (ALREADY_CONNECTED), or linking by a pairing code that is still outstanding (PAIRING_CODE_OUTSTANDING)", body = ErrorBody),
        RateLimited,
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "No QR within 10 s (QR_NOT_READY; see reason and Retry-After) or timed out", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
async fn session_qr(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = session_id(path)?;
    caller.require_session(Scope::SessionsWrite, &id)?;
    crate::api::home_session::existing_session(&state, &caller, &id).await?;
    let qr = wait_for_qr(&state, &id).await?;
    let png = qr_png(&qr.code).map_err(ApiError::internal)?;
    let wants_png = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.to_ascii_lowercase().contains("image/png"));
    if wants_png {
        return Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))], png).into_response());
    }
    Ok(json_response(
        StatusCode::OK,
        &QrView { qr: png_data_url(&png), qr_text: qr.code, expires_at: qr.expires_at, status: Status::QrReady },
    ))
}

/// Starts linking `id` if needed, keeps it going `QR_LINK_WINDOW_SECS`, and waits up to 10 s for
/// its QR code: 409 `ALREADY_CONNECTED` when linked, `PAIRING_CODE_OUTSTANDING` while it links
/// by a pairing code, 503 `QR_NOT_READY` (with the session's reason) when none comes.
pub(crate) async fn wait_for_qr(state: &AppState, id: &SessionId) -> Result<crate::session::Qr, ApiError> {
    match state.sessions.get(id).map(|s| s.state.status) {
        Some(Status::Connected) => return Err(ApiError::AlreadyConnected),
        // Linking by code: a QR would be a second way in, and WhatsApp sends none meanwhile.
        Some(Status::PairingCode) => return Err(ApiError::PairingCodeOutstanding),
        _ => {}
    }
    let mut watch = state.sessions.link_for(id, state.qr_link_window)?;
    let deadline = tokio::time::Instant::now() + QR_WAIT;
    loop {
        let now = watch.borrow_and_update().clone();
        match now.status {
            Status::Connected => return Err(ApiError::AlreadyConnected),
            Status::PairingCode => return Err(ApiError::PairingCodeOutstanding),
            _ => {}
        }
        if let Some(qr) = now.qr {
            return Ok(qr);
        }
        match tokio::time::timeout_at(deadline, watch.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return Err(ApiError::SessionNotFound),
            Err(_) => {
                let reason = now.reason.unwrap_or_else(|| "WhatsApp has not sent one yet".into());
                return Err(ApiError::QrNotReady {
                    reason: format!("the session is {}: {reason}", now.status.as_str()),
                });
            }
        }
    }
}

/// Restart the session: a new client on the same credentials (needs `sessions:write`).
#[utoipa::path(post, path = "/api/sessions/{sessionId}/restart", tag = "sessions",
    params(SessionPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Restarting; the session as it is now", body = SessionView),
        SessionPathErrors,
        AuthErrors,
        RateLimited,
        (status = 503, description = "Shutting down or timed out (SHUTTING_DOWN, TIMEOUT)", body = ErrorBody),
    ))]
async fn restart_session(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(path)?;
    caller.require_session(Scope::SessionsWrite, &id)?;
    state.sessions.restart(&id).await?;
    current(&state, &id)
}

/// Log out: unlink from the phone and delete the credentials, keep the session (needs
/// `sessions:write`). Logging out a logged-out session is a 200 too.
#[utoipa::path(post, path = "/api/sessions/{sessionId}/logout", tag = "sessions",
    params(SessionPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Logged out; the session", body = SessionView),
        SessionPathErrors,
        AuthErrors,
        RateLimited,
        (status = 503, description = "Shutting down, busy or timed out (SHUTTING_DOWN, SESSION_UNRESPONSIVE, TIMEOUT)", body = ErrorBody),
    ))]
async fn logout_session(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(path)?;
    caller.require_session(Scope::SessionsWrite, &id)?;
    state.sessions.logout(&id).await?;
    current(&state, &id)
}

/// Delete the session: log out if linked, stop, delete its folder and its entry in
/// `sessions.config.json`. Its queued messages fail with `SESSION_DELETED` (needs
/// `sessions:write`).
#[utoipa::path(delete, path = "/api/sessions/{sessionId}", tag = "sessions",
    params(SessionPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        SessionPathErrors,
        AuthErrors,
        RateLimited,
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Shutting down, busy or timed out (SHUTTING_DOWN, SESSION_UNRESPONSIVE, TIMEOUT)", body = ErrorBody),
    ))]
async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(path)?;
    caller.require_session(Scope::SessionsWrite, &id)?;
    remove(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes the session; its queued messages fail with `SESSION_DELETED`.
pub(crate) async fn remove(state: &AppState, id: &SessionId) -> Result<(), ApiError> {
    state.sessions.delete(id).await?;
    state.queue.close_session(id);
    Ok(())
}

/// The body of `POST …/pairing-code`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // Describes the JSON for the OpenAPI document; parsing is by hand.
struct PairingCodeBody {
    /// The number of the phone being linked, with country code (`+`, spaces, dashes ignored).
    #[schema(value_type = PhoneField)]
    phone: String,
}

/// A pairing code to type on the phone.
#[derive(Debug, Serialize, ToSchema)]
pub struct PairingCodeView {
    /// Type it under WhatsApp > Linked devices > Link a device > Link with phone number instead.
    #[schema(example = "ABCD-EFGH")]
    pub code: String,
}

/// Link by pairing code instead of a QR (needs `sessions:write`): WhatsApp sends the phone a
/// notification, and the person types this code there.
#[utoipa::path(post, path = "/api/sessions/{sessionId}/pairing-code", tag = "sessions",
    params(SessionPath),
    request_body(content = PairingCodeBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The code", body = PairingCodeView),
        (status = 400, description = "Invalid input (BAD_JSON, MISSING_FIELD, INVALID_FIELD_TYPE, INVALID_PHONE, INVALID_SESSION_ID)", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = ErrorBody),
        (status = 408, description = "Body not received in time (BODY_TIMEOUT)", body = ErrorBody),
        (status = 409, description = "Already linked (ALREADY_CONNECTED) or a code is live (PAIRING_CODE_OUTSTANDING)", body = ErrorBody),
        (status = 413, description = "Body too large (PAYLOAD_TOO_LARGE)", body = ErrorBody),
        (status = 415, description = "Not application/json (UNSUPPORTED_MEDIA_TYPE)", body = ErrorBody),
        (status = 422, description = "WhatsApp refused it (PAIRING_REJECTED)", body = ErrorBody),
        (status = 429, description = "Rate limited, by us (RATE_LIMITED) or by WhatsApp (PAIRING_RATE_LIMITED), or too many failed authentications (TOO_MANY_AUTH_FAILURES); see Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "WhatsApp not reachable (PAIRING_UNAVAILABLE), busy or timed out", body = ErrorBody),
    ))]
async fn pairing_code(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let id = session_id(path)?;
    caller.require_session(Scope::SessionsWrite, &id)?;
    crate::api::home_session::existing_session(&state, &caller, &id).await?;
    crate::api::send_pdf::check_content_type(req.headers())?;
    let body = RequestBody::<SmallLimit>::from_request(req, &state).await?.bytes;
    let phone = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut object)) => crate::api::send_pdf::phone_field(object.remove("phone"), "phone")?,
        _ => return Err(ApiError::BadJson),
    };
    let code = state.sessions.pairing_code(&id, phone, state.qr_link_window).await??;
    Ok(json_response(StatusCode::OK, &PairingCodeView { code: dashed(&code) }))
}

/// `ABCDEFGH` → `ABCD-EFGH`, as the phone shows it.
fn dashed(code: &str) -> String {
    match (code.len(), code.get(..4), code.get(4..)) {
        (8, Some(head), Some(tail)) => format!("{head}-{tail}"),
        _ => code.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_bodies() {
        assert!(matches!(parse_create(b""), Ok(NewSession { id: None, description: None, metadata: None })));
        let NewSession { id, description, metadata } =
            parse_create(br#"{"sessionId":"tienda","description":"Lima","metadata":{"owner":"ventas"}}"#).unwrap();
        assert_eq!(id.unwrap().as_str(), "tienda");
        assert_eq!(description.as_deref(), Some("Lima"));
        assert_eq!(metadata.unwrap()["owner"], "ventas");
        assert!(matches!(parse_create(b"[]"), Err(ApiError::BadJson)));
        assert!(matches!(parse_create(b"null"), Ok(NewSession { id: None, .. })));
        assert!(matches!(parse_create(br#"{"sessionId":"../x"}"#), Err(ApiError::InvalidSessionId(_))));
        assert!(matches!(parse_create(br#"{"sessionId":1}"#), Err(ApiError::WrongFieldType { .. })));
        assert!(matches!(parse_create(br#"{"metadata":[1]}"#), Err(ApiError::WrongFieldType { .. })));
        let long = format!(r#"{{"description":"{}"}}"#, "x".repeat(257));
        assert!(matches!(parse_create(long.as_bytes()), Err(ApiError::WrongFieldType { .. })));
        assert!(generate_id().is_ok());
    }

    #[test]
    fn pairing_codes_are_shown_dashed() {
        assert_eq!(dashed("ABCDEFGH"), "ABCD-EFGH");
        assert_eq!(dashed("ABCD-EFGH"), "ABCD-EFGH");
    }
}
