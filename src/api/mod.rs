//! The HTTP surface, on axum: one file per resource, each with its own `router()`, merged here
//! under the cross-cutting layers.
//!
//! Layers, outermost first: request id (`request_id`), the language of error messages
//! (`language`), a log span per request, CORS, metrics by route template, and a timeout on every
//! route (`deadline`, paused while a body is read); with `COMPAT_API`, the sibling services'
//! dialects (`compat`) and, around the deadline, the rewriting of their errors into their
//! shapes. Bodies are read by an extractor (`body`) with
//! a per-route size limit and a time limit, after the token is checked (`auth`). Errors are one
//! type (`error`). `serve` owns the accept loop: connection cap and per-address share, idle and
//! header-read deadlines, backoff on accept errors, and the graceful drain. `/openapi.json` is
//! generated from the handlers.

mod admin;
pub mod auth;
mod body;
mod chats;
mod compat;
mod contacts;
mod deadline;
pub mod error;
mod health;
mod language;
mod messages;
mod metrics;
mod openapi;
mod request_id;
mod send_message;
mod send_pdf;
pub(crate) mod serve;
pub(crate) mod sessions;
pub mod state;
mod webhooks;
pub mod ws;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) use metrics::open_router as metrics_router;
pub use send_pdf::{ACCEPTED_MESSAGE, SendPdfAccepted, SendPdfRequest};
pub(crate) use serve::serve;

use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::config::CompatDialects;

/// Every route, with its layers, ready to serve: ours, and the dialects of `compat`
/// (`COMPAT_API`). Also stores the generated OpenAPI document in `state` for `/openapi.json`:
/// it describes what this server answers, so the compatibility routes are in it only when on.
pub fn router(state: AppState, cors_origins: &[String], compat: CompatDialects) -> Router {
    let (router, document) = openapi_router(compat).split_for_parts();
    let _ = state.openapi.set(serde_json::to_vec(&document).unwrap_or_default().into());
    let timeout = state.limits.request_timeout;
    let router = router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async {
            // axum adds the `Allow` header listing the route's methods.
            error::localized_error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "method not allowed",
                error::METHOD_NOT_ALLOWED_ES,
            )
        })
        // Bodies are limited per route by `body::RequestBody`.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(timeout, deadline::middleware));
    // Outside the deadline, so that its 503 takes a dialect's shape too.
    let router = if compat.is_empty() { router } else { router.layer(middleware::from_fn(compat::reshape_errors)) };
    router
        .layer(middleware::from_fn(record_metrics))
        .layer(cors(cors_origins))
        // 5xx are logged once, with their cause, by `ApiError`; an expected 503 (no QR yet, no
        // WhatsApp) is not an error of ours.
        .layer(TraceLayer::new_for_http().make_span_with(request_span).on_failure(()))
        // Inside the request id's scope: a Spanish body carries the same id.
        .layer(middleware::from_fn(language::middleware))
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// The routes and their documentation, before the layers.
fn openapi_router(compat: CompatDialects) -> OpenApiRouter<AppState> {
    let doc = if compat.is_empty() { openapi::ApiDoc::openapi() } else { openapi::with_compat_tag(compat) };
    OpenApiRouter::with_openapi(doc)
        .routes(routes!(openapi::openapi_json))
        .merge(send_pdf::router())
        .merge(messages::router())
        .merge(send_message::router())
        .merge(contacts::router())
        .merge(chats::router())
        .merge(webhooks::router())
        .merge(sessions::router())
        .merge(ws::router())
        .merge(health::router())
        .merge(metrics::router())
        .merge(admin::router())
        .merge(compat::router(compat))
}

/// The OpenAPI document, as `/openapi.json` serves it with the `COMPAT_API` dialects `compat`.
pub fn openapi_document(compat: CompatDialects) -> utoipa::openapi::OpenApi {
    openapi_router(compat).split_for_parts().1
}

/// A JSON response: the one place that serialises a body and sets the content type.
pub(crate) fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(json) => {
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response()
        }
        // Our bodies are plain structs of strings and numbers; this is a bug, not a client error.
        Err(e) => {
            tracing::error!(error = %e, "response body did not serialize");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// One span per request: the path without its query (a `?token=` never reaches a log line), the
/// request id, and the caller's token name once it is known.
fn request_span(req: &Request<Body>) -> tracing::Span {
    let id = req.extensions().get::<request_id::RequestId>().map(|id| id.0.as_str()).unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %id,
        caller = tracing::field::Empty,
    )
}

/// Counts requests by method, route template and status, and times them.
async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = match *req.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        // Arbitrary methods would make arbitrary series.
        _ => "OTHER",
    };
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    ::metrics::histogram!(crate::metrics::HTTP_DURATION, "method" => method, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    ::metrics::counter!(crate::metrics::HTTP_REQUESTS, "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

/// `CORS_ALLOWED_ORIGINS`: browsers on those origins may call the API (preflight included);
/// any other origin gets no `Access-Control-Allow-*` headers, so its browser refuses.
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            request_id::HEADER.clone(),
        ])
        .expose_headers([request_id::HEADER.clone(), header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeliveryStatus;
    use crate::session::Status;

    /// The document's enums are derived from the variant names; the wire spells them with
    /// `as_str`. This keeps the two from drifting apart.
    #[test]
    fn documented_status_enums_match_what_the_server_sends() {
        let doc = serde_json::to_value(openapi_document(CompatDialects::default())).unwrap();
        let schemas = &doc["components"]["schemas"];
        let documented = |name: &str| -> Vec<String> {
            schemas[name]["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(documented("Status"), Status::ALL.map(|s| s.as_str().to_owned()));
        assert_eq!(documented("DeliveryStatus"), DeliveryStatus::ALL.map(|s| s.as_str().to_owned()));
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    }
}
