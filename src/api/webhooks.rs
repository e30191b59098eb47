//! `/api/webhooks`: register, list and delete endpoints; list, and replay, their deliveries.
//! Every route needs `webhooks:write`.
//!
//! The admin sees and manages every endpoint. Any other token sees and manages only the
//! endpoints it registered: another's id answers 404 as an unknown one does. A token limited to
//! some sessions registers endpoints for those sessions only (no filter means all of them).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::auth::{Caller, Scope, SessionAccess};
use crate::api::body::{RequestBody, SmallLimit};
use crate::api::error::{ApiError, AuthErrors, ErrorBody};
use crate::api::json_response;
use crate::api::state::AppState;
use crate::domain::SessionId;
use crate::events::EventKind;
use crate::webhooks::{
    Delivery, Endpoint, NewEndpoint, Owner, Viewer, WebhookDeliveryStatus, WebhookFormat, WebhookSecret,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_delivery))
        .routes(routes!(retry_failed))
}

/// `POST /api/webhooks` body.
#[derive(ToSchema)]
#[allow(dead_code)] // Only describes the JSON; parsing is by hand.
struct CreateBody {
    /// Where events are posted: an http or https URL. The admin's may be a private address;
    /// other tokens' must resolve to public addresses only, unless `WEBHOOK_ALLOW_PRIVATE=true`
    /// (400 `WEBHOOK_URL_NOT_ALLOWED`).
    #[schema(
        pattern = "^https?://(?:[A-Za-z0-9.-]+|\\[[0-9A-Fa-f:.]+\\])(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(?:[/?][A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$",
        max_length = 2048
    )]
    url: String,
    /// The events to post (default: all).
    events: Option<Vec<EventKind>>,
    /// Only these sessions (default, or `null`: all). A token limited to some sessions may name
    /// only those (403 otherwise), and its default is all of them.
    sessions: Option<Vec<SessionIdText>>,
    /// `whsec_` + base64 of 24 to 64 bytes; generated when absent.
    #[schema(
        pattern = "^whsec_(?:(?:[A-Za-z0-9+/]{4}){8,20}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?|(?:[A-Za-z0-9+/]{4}){21}(?:[A-Za-z0-9+/]{2}==)?)$"
    )]
    secret: Option<String>,
    /// How events are posted (default `standard`: our events, to `url`). `seed000` and `seed002`
    /// post a sibling service's callbacks instead, on its paths below `url` (its backend's base
    /// URL): seed 000's `/whatsapp-qr/webhook` and `/whatsapp-qr/incoming`, seed 002's
    /// `/api/whatsapp/sessions/{new-session-connected,status-update,qr-update}` and
    /// `/api/whatsapp/messages/received`. Events the service had no callback for are not posted.
    format: Option<WebhookFormat>,
}

/// A session id, as a string.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", example = "tienda_lima")]
struct SessionIdText(String);

/// An endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WebhookView {
    id: String,
    url: String,
    /// `null`: every event.
    events: Option<Vec<EventKind>>,
    /// `null`: every session.
    sessions: Option<Vec<String>>,
    created_at: u64,
    /// Why it receives nothing (it answered 410); replaying deliveries enables it again.
    disabled: Option<String>,
    /// Deliveries waiting.
    pending: u64,
    /// The name of the token that registered it (`admin` for the admin token and `WEBHOOK_URL`).
    owner: String,
    /// How events are posted: `standard`, or a sibling service's callbacks below `url`.
    format: WebhookFormat,
}

/// The answer to a creation: the endpoint and its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CreatedWebhook {
    #[serde(flatten)]
    webhook: WebhookView,
    secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct WebhookList {
    items: Vec<WebhookView>,
}

#[derive(Debug, Serialize, ToSchema)]
struct DeliveryList {
    items: Vec<Delivery>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Retried {
    /// Deliveries made pending again.
    retried: u64,
}

/// `?status=&limit=`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveryQuery {
    #[param(pattern = "^(pending|delivered|failed)$")]
    status: Option<String>,
    /// 1–500, default 100.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

fn view(endpoint: Endpoint, pending: u64) -> WebhookView {
    WebhookView {
        id: endpoint.id,
        url: endpoint.url,
        events: endpoint.events,
        sessions: endpoint.sessions,
        created_at: endpoint.created_at,
        disabled: endpoint.disabled,
        pending,
        owner: endpoint.owner.name,
        format: endpoint.format,
    }
}

/// What `format` must be.
const FORMATS: &str = "\"standard\", \"seed000\" or \"seed002\"";

/// Whose endpoints `caller` sees and manages.
fn viewer(caller: &Caller) -> Viewer {
    if caller.is_admin() { Viewer::Admin } else { Viewer::Token(caller.name().to_owned()) }
}

/// The sessions an endpoint of `caller` listens to: what it asked for, within the caller's
/// sessions; all of them when it asked for none.
fn confined_sessions(caller: &Caller, asked: Option<Vec<SessionId>>) -> Result<Option<Vec<String>>, ApiError> {
    match (caller.sessions(), asked) {
        (SessionAccess::All, asked) => Ok(asked.map(|ids| ids.iter().map(|id| id.as_str().to_owned()).collect())),
        (SessionAccess::Only(allowed), None) => {
            let mut ids: Vec<String> = allowed.iter().map(|id| id.as_str().to_owned()).collect();
            ids.sort();
            Ok(Some(ids))
        }
        (SessionAccess::Only(_), Some(asked)) => {
            if let Some(outside) = asked.iter().find(|id| !caller.may_use(id)) {
                tracing::debug!(caller = caller.name(), session = %outside, "webhook for a session not allowed");
                return Err(ApiError::Forbidden("register a webhook for this session"));
            }
            Ok(Some(asked.iter().map(|id| id.as_str().to_owned()).collect()))
        }
    }
}

/// Register an endpoint (needs `webhooks:write`).
#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks",
    request_body(content = CreateBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered; the secret is shown only here", body = CreatedWebhook),
        (status = 400, description = "Invalid input (BAD_JSON, MISSING_FIELD, INVALID_FIELD_TYPE (also a format other than standard, seed000 and seed002), INVALID_URL, INVALID_EVENT_TYPE, INVALID_SESSION_ID, INVALID_SECRET), or a url that does not resolve to public addresses only, for a token other than the admin (WEBHOOK_URL_NOT_ALLOWED)", body = ErrorBody),
        AuthErrors,
        (status = 408, description = "Body not received in time (BODY_TIMEOUT)", body = ErrorBody),
        (status = 413, description = "Body too large (PAYLOAD_TOO_LARGE)", body = ErrorBody),
        (status = 415, description = "Not application/json (UNSUPPORTED_MEDIA_TYPE)", body = ErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED), or too many failed authentications from this address (TOO_MANY_AUTH_FAILURES)", body = ErrorBody),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn create_webhook(State(state): State<AppState>, caller: Caller, req: Request) -> Result<Response, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    crate::api::send_pdf::check_content_type(req.headers())?;
    let body = RequestBody::<SmallLimit>::from_request(req, &state).await?.bytes;
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&body) else {
        return Err(ApiError::BadJson);
    };
    let url = match object.remove("url") {
        None | Some(Value::Null) => return Err(ApiError::MissingField("url")),
        Some(Value::String(url)) if crate::webhooks::is_http_url(url.trim()) && url.len() <= 2048 => {
            url.trim().to_owned()
        }
        Some(Value::String(_)) => return Err(ApiError::InvalidUrl),
        Some(_) => return Err(ApiError::WrongFieldType { field: "url", expected: "a string" }),
    };
    let events = match object.remove("events") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|item| item.as_str().and_then(EventKind::parse).ok_or(ApiError::InvalidEventType))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(ApiError::WrongFieldType { field: "events", expected: "an array of event names" }),
    };
    let sessions = match object.remove("sessions") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|item| {
                    let text = item
                        .as_str()
                        .ok_or(ApiError::WrongFieldType { field: "sessions", expected: "an array of session ids" })?;
                    Ok(SessionId::parse(text)?)
                })
                .collect::<Result<Vec<_>, ApiError>>()?,
        ),
        Some(_) => return Err(ApiError::WrongFieldType { field: "sessions", expected: "an array of session ids" }),
    };
    let secret = match object.remove("secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(secret)) => Some(WebhookSecret::parse(&secret).map_err(|_| ApiError::InvalidSecret)?),
        Some(_) => return Err(ApiError::WrongFieldType { field: "secret", expected: "a string" }),
    };
    let format = match object.remove("format") {
        None | Some(Value::Null) => WebhookFormat::Standard,
        Some(Value::String(name)) => {
            WebhookFormat::parse(&name).ok_or(ApiError::WrongFieldType { field: "format", expected: FORMATS })?
        }
        Some(_) => return Err(ApiError::WrongFieldType { field: "format", expected: "a string" }),
    };
    let sessions = confined_sessions(&caller, sessions)?;
    let owner = Owner { name: caller.name().to_owned(), admin: caller.is_admin() };
    state.webhooks.check_destination(&owner, &url).await.map_err(|_| {
        tracing::debug!(caller = caller.name(), "webhook url refused: not a public address");
        ApiError::WebhookUrlNotAllowed
    })?;
    let endpoint = state
        .webhooks
        .create(NewEndpoint { url, events, sessions, secret, owner, format })
        .await
        .map_err(ApiError::internal)?;
    let secret = endpoint.secret.expose();
    Ok(json_response(StatusCode::CREATED, &CreatedWebhook { webhook: view(endpoint, 0), secret }))
}

/// The endpoints, without their secrets (needs `webhooks:write`): every one for the admin, the
/// token's own for any other token.
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The endpoints", body = WebhookList),
        AuthErrors,
        (status = 429, description = "Rate limited (RATE_LIMITED), or too many failed authentications from this address (TOO_MANY_AUTH_FAILURES)", body = ErrorBody),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn list_webhooks(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let items = state.webhooks.list(&viewer(&caller)).await.map_err(ApiError::internal)?;
    let items = items.into_iter().map(|(endpoint, pending)| view(endpoint, pending)).collect();
    Ok(json_response(StatusCode::OK, &WebhookList { items }))
}

/// Delete an endpoint and its deliveries (needs `webhooks:write`).
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        AuthErrors,
        (status = 404, description = "No such endpoint, or not this token's (WEBHOOK_NOT_FOUND)", body = ErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED), or too many failed authentications from this address (TOO_MANY_AUTH_FAILURES)", body = ErrorBody),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    if state.webhooks.delete(&id, &viewer(&caller)).await.map_err(ApiError::internal)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::WebhookNotFound)
    }
}

/// An endpoint's deliveries, newest first (needs `webhooks:write`); `?status=failed` lists the
/// dead letters.
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id"), DeliveryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The deliveries", body = DeliveryList),
        (status = 400, description = "Invalid query (INVALID_QUERY)", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such endpoint, or not this token's (WEBHOOK_NOT_FOUND)", body = ErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED), or too many failed authentications from this address (TOO_MANY_AUTH_FAILURES)", body = ErrorBody),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let Query(query) = query.map_err(|_| ApiError::InvalidQuery("limit is a number"))?;
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(
            WebhookDeliveryStatus::parse(text)
                .ok_or(ApiError::InvalidQuery("status is pending, delivered or failed"))?,
        ),
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::InvalidQuery("limit must be 1 to 500"));
    }
    let items = state
        .webhooks
        .deliveries(&id, &viewer(&caller), status, limit)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::WebhookNotFound)?;
    Ok(json_response(StatusCode::OK, &DeliveryList { items }))
}

/// Retry one failed delivery (needs `webhooks:write`).
#[utoipa::path(post, path = "/api/webhooks/{id}/deliveries/{deliveryId}/retry", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id"), ("deliveryId" = i64, Path, description = "The delivery's id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Pending again (0 if it was not failed)", body = Retried),
        (status = 400, description = "Invalid delivery id (INVALID_QUERY)", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such endpoint, or not this token's (WEBHOOK_NOT_FOUND)", body = ErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED), or too many failed authentications from this address (TOO_MANY_AUTH_FAILURES)", body = ErrorBody),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn retry_delivery(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, i64)>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let Path((id, delivery)) = path.map_err(|_| ApiError::InvalidQuery("the delivery id is a number"))?;
    let retried = state
        .webhooks
        .retry(&id, &viewer(&caller), Some(delivery))
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::WebhookNotFound)?;
    Ok(json_response(StatusCode::ACCEPTED, &Retried { retried }))
}

/// Retry every failed delivery of an endpoint, in their order (needs `webhooks:write`).
#[utoipa::path(post, path = "/api/webhooks/{id}/deliveries/retry", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Pending again", body = Retried),
        AuthErrors,
        (status = 404, description = "No such endpoint, or not this token's (WEBHOOK_NOT_FOUND)", body = ErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED), or too many failed authentications from this address (TOO_MANY_AUTH_FAILURES)", body = ErrorBody),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn retry_failed(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let retried = state
        .webhooks
        .retry(&id, &viewer(&caller), None)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::WebhookNotFound)?;
    Ok(json_response(StatusCode::ACCEPTED, &Retried { retried }))
}
