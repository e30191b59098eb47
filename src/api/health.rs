//! `/health` (the seed's), `/health/live` and `/health/ready`, all without a token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::json_response;
use crate::api::state::{AppState, Phase};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(live)).routes(routes!(ready))
}

/// The gateway's sessions at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
    /// Configured sessions.
    pub sessions: usize,
    /// Sessions connected to WhatsApp right now (through this gateway).
    pub connected: usize,
    /// With `DATABASE_URL`: this gateway's id in the fleet (`GATEWAY_ID`); absent on the files.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "gw-1:3000")]
    pub gateway: Option<String>,
}

/// Liveness or readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    /// `ok` (live), `ready`, `starting`, `stopping`, `database_unreachable` (with
    /// `DATABASE_URL`: Postgres does not answer) or `journal_unwritable`.
    #[schema(example = "ready")]
    pub status: String,
}

/// Sessions and connected sessions (the Node service's health check).
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "Always, while the process serves", body = Health)))]
async fn health(State(state): State<AppState>) -> Response {
    let (sessions, connected) = state.sessions.counts();
    let gateway = state.sessions.gateway().map(|id| id.to_string());
    json_response(StatusCode::OK, &Health { status: "ok".into(), sessions, connected, gateway })
}

/// The process is alive and serving HTTP (for Docker's HEALTHCHECK and liveness probes).
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "Alive", body = Probe)))]
async fn live() -> Response {
    json_response(StatusCode::OK, &Probe { status: "ok".into() })
}

/// Ready for traffic: started, not shutting down, the database reachable (with `DATABASE_URL`),
/// and the journal can be written.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Probe),
        (status = 503, description = "Starting, stopping, the database unreachable, or the journal cannot be written", body = Probe),
    ))]
async fn ready(State(state): State<AppState>) -> Response {
    let status = match state.lifecycle.get() {
        Phase::Starting => "starting",
        Phase::Stopping => "stopping",
        Phase::Running if state.shutdown.is_cancelled() => "stopping",
        Phase::Running if !database_reachable(&state).await => "database_unreachable",
        Phase::Running if !state.journal.is_writable().await => "journal_unwritable",
        Phase::Running => "ready",
    };
    let code = if status == "ready" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(code, &Probe { status: status.into() })
}

/// True without a database, or when it answers a trivial query in time.
async fn database_reachable(state: &AppState) -> bool {
    match &state.database {
        Some(db) => db.is_reachable().await,
        None => true,
    }
}
