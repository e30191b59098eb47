//! `GET /metrics`: Prometheus text format. On the API port it needs `metrics:read` (or admin);
//! `METRICS_LISTEN` serves the same text without a token on a separate address.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::auth::{Caller, Scope};
use crate::api::error::{ApiError, AuthErrors, ErrorBody, RateLimited};
use crate::api::state::AppState;
use crate::metrics::{QUEUE_BYTES, QUEUE_DEPTH, SESSIONS};
use crate::queue::Queue;
use crate::session::{SessionManager, Status};

/// The content type of the Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The router of the optional `METRICS_LISTEN` address: `/metrics` only, no token.
pub(crate) fn open_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(|State(state): State<AppState>| async move { exposition(&state) }))
        .with_state(state)
}

/// Prometheus metrics (needs `metrics:read`).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        AuthErrors,
        RateLimited,
        (status = 503, description = "Timed out (TIMEOUT)", body = ErrorBody),
    ))]
async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Scope::MetricsRead)?;
    Ok(exposition(&state))
}

fn exposition(state: &AppState) -> Response {
    let text = render(&state.metrics, &state.sessions, &state.queue);
    ([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], text).into_response()
}

/// Sets the state gauges from the registries, then renders the text exposition format.
fn render(handle: &PrometheusHandle, sessions: &SessionManager, queue: &Queue) -> String {
    let mut by_status = Status::ALL.map(|status| (status, 0usize));
    for status in sessions.statuses() {
        if let Some(slot) = by_status.iter_mut().find(|(s, _)| *s == status) {
            slot.1 += 1;
        }
    }
    for (status, count) in by_status {
        metrics::gauge!(SESSIONS, "status" => status.as_str()).set(count as f64);
    }
    for (session, messages, bytes) in queue.depths() {
        metrics::gauge!(QUEUE_DEPTH, "session" => session.as_str().to_owned()).set(messages as f64);
        metrics::gauge!(QUEUE_BYTES, "session" => session.as_str().to_owned()).set(bytes as f64);
    }
    handle.run_upkeep();
    handle.render()
}
