//! `GET /api/sessions/{sessionId}/contacts/{phone}` and `POST …/contacts/check`: is this number
//! on WhatsApp, with its JID and LID. Cached answers are free; numbers that must be asked count
//! against the session's `CONTACT_CHECKS_PER_MINUTE`.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::auth::{Caller, Scope};
use crate::api::body::{RequestBody, SmallLimit};
use crate::api::error::{ApiError, AuthErrors, ErrorBody};
use crate::api::json_response;
use crate::api::openapi::{PhoneField, SessionPath};
use crate::api::state::AppState;
use crate::domain::{InvalidSessionId, PhoneNumber, SessionId};
use crate::session::contacts::ContactCheck;

/// Most numbers one `contacts/check` call may ask about.
pub const MAX_BATCH: usize = 50;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(check_one)).routes(routes!(check_many))
}

/// `{sessionId}` and `{phone}` in the path.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only documents the path; the handler parses it.
struct ContactPath {
    /// The session id.
    #[param(rename = "sessionId", pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", example = "tienda_lima")]
    session_id: String,
    /// The number with its country code (`+`, spaces, dashes, dots and parentheses ignored), or
    /// its user JID.
    #[param(
        pattern = r"^(?:\+?(?:[ .()-]*[0-9]){7,15}[ .()-]*|[0-9]{7,15}@(?:s\.whatsapp\.net|c\.us))$",
        example = "51987654321"
    )]
    phone: String,
}

/// `POST …/contacts/check` body.
#[derive(ToSchema)]
#[allow(dead_code)] // Only describes the JSON for the OpenAPI document; parsing is by hand.
struct CheckBody {
    /// 1 to 50 numbers (strings or JSON integers).
    #[schema(min_items = 1, max_items = 50)]
    phones: Vec<PhoneField>,
}

/// The answers, in the order asked.
#[derive(Debug, Serialize, ToSchema)]
struct CheckResults {
    results: Vec<ContactCheck>,
}

/// Is this number on WhatsApp (needs `messages:send` on the session, which must be connected).
#[utoipa::path(get, path = "/api/sessions/{sessionId}/contacts/{phone}", tag = "messages",
    params(ContactPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The answer", body = ContactCheck),
        (status = 400, description = "Invalid session id or phone (INVALID_SESSION_ID, INVALID_PHONE)", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = ErrorBody),
        (status = 409, description = "The session is not connected (SESSION_NOT_CONNECTED)", body = ErrorBody),
        (status = 429, description = "The session's contact-check quota or the token's rate (RATE_LIMITED), or too many failed authentications (TOO_MANY_AUTH_FAILURES); see Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 502, description = "WhatsApp did not answer (UPSTREAM_FAILED)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn check_one(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((raw_session, raw_phone)) = path.map_err(|_| ApiError::InvalidSessionId(InvalidSessionId))?;
    let session = SessionId::parse(&raw_session)?;
    caller.require_session(Scope::MessagesSend, &session)?;
    crate::api::home_session::existing_session(&state, &caller, &session).await?;
    let phone = PhoneNumber::parse(&raw_phone)?;
    let mut results = check(&state, &session, vec![phone]).await?;
    let result = results.pop().ok_or_else(|| ApiError::internal("no answer"))?;
    Ok(json_response(StatusCode::OK, &result))
}

/// Which of up to 50 numbers are on WhatsApp (needs `messages:send` on the session).
#[utoipa::path(post, path = "/api/sessions/{sessionId}/contacts/check", tag = "messages",
    params(SessionPath),
    request_body(content = CheckBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The answers, in the order asked", body = CheckResults),
        (status = 400, description = "Invalid input (BAD_JSON, MISSING_FIELD, INVALID_FIELD_TYPE, INVALID_PHONE, INVALID_SESSION_ID, TOO_MANY_PHONES)", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such session (SESSION_NOT_FOUND)", body = ErrorBody),
        (status = 408, description = "Body not received in time (BODY_TIMEOUT)", body = ErrorBody),
        (status = 409, description = "The session is not connected (SESSION_NOT_CONNECTED)", body = ErrorBody),
        (status = 413, description = "Body too large (PAYLOAD_TOO_LARGE)", body = ErrorBody),
        (status = 415, description = "Not application/json (UNSUPPORTED_MEDIA_TYPE)", body = ErrorBody),
        (status = 429, description = "The session's contact-check quota or the token's rate (RATE_LIMITED), or too many failed authentications (TOO_MANY_AUTH_FAILURES); see Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 502, description = "WhatsApp did not answer (UPSTREAM_FAILED)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn check_many(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let session = crate::api::sessions::session_id(path)?;
    caller.require_session(Scope::MessagesSend, &session)?;
    crate::api::home_session::existing_session(&state, &caller, &session).await?;
    crate::api::send_pdf::check_content_type(req.headers())?;
    let body = RequestBody::<SmallLimit>::from_request(req, &state).await?.bytes;
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&body) else {
        return Err(ApiError::BadJson);
    };
    let phones = match object.remove("phones") {
        None | Some(Value::Null) => return Err(ApiError::MissingField("phones")),
        Some(Value::Array(items)) if items.is_empty() => return Err(ApiError::MissingField("phones")),
        Some(Value::Array(items)) if items.len() > MAX_BATCH => return Err(ApiError::TooManyPhones),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| crate::api::send_pdf::phone_field(Some(item), "phones"))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(ApiError::WrongFieldType { field: "phones", expected: "an array of phone numbers" }),
    };
    let results = check(&state, &session, phones).await?;
    Ok(json_response(StatusCode::OK, &CheckResults { results }))
}

/// Answers from the cache where fresh, the rest from WhatsApp in one query (within quota).
async fn check(state: &AppState, session: &SessionId, phones: Vec<PhoneNumber>) -> Result<Vec<ContactCheck>, ApiError> {
    if !state.sessions.contains(session) {
        return Err(ApiError::SessionNotFound);
    }
    let mut unknown: Vec<PhoneNumber> = Vec::new();
    for phone in &phones {
        if state.contacts.cached(phone).is_none() && !unknown.contains(phone) {
            unknown.push(phone.clone());
        }
    }
    if !unknown.is_empty() {
        let client = state.sessions.connected_client(session).ok_or(ApiError::SessionNotConnected)?;
        state
            .contacts
            .take(session, unknown.len() as u32)
            .map_err(|wait| ApiError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 })?;
        let answers = client.check_numbers(&unknown).await.map_err(|e| ApiError::UpstreamFailed(e.to_string()))?;
        for answer in &answers {
            state.contacts.remember(answer);
        }
    }
    phones
        .iter()
        .map(|phone| state.contacts.cached(phone).ok_or_else(|| ApiError::internal("an answer went missing")))
        .collect()
}
