//! [`AppState`]: what every handler reaches through axum's `State`. Cheap to clone: every field
//! is a handle over shared state.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::api::auth::Authenticator;
use crate::config::HttpLimits;
use crate::journal::Journal;
use crate::queue::Queue;
use crate::session::SessionManager;
use crate::shutdown::Shutdown;

/// Shared handles for the handlers.
#[derive(Clone)]
pub struct AppState {
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) sessions: SessionManager,
    pub(crate) queue: Queue,
    pub(crate) journal: Journal,
    /// The shared Postgres, when `DATABASE_URL` put the state there.
    pub(crate) database: Option<crate::storage::postgres::Database>,
    pub(crate) inbox: crate::inbox::Inbox,
    pub(crate) webhooks: crate::webhooks::Webhooks,
    pub(crate) contacts: Arc<crate::session::contacts::ContactBook>,
    pub(crate) events: crate::events::EventBus,
    pub(crate) shutdown: Shutdown,
    pub(crate) limits: HttpLimits,
    /// `QR_LINK_WINDOW_SECS`: linking goes on this long after the last `GET …/qr`.
    pub(crate) qr_link_window: std::time::Duration,
    /// `MAX_BODY_BYTES`: the body limit of `POST /api/send-pdf`.
    pub(crate) max_body_bytes: usize,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) metrics: PrometheusHandle,
    /// `/openapi.json`, serialized once the router (which generates it) is built.
    pub(crate) openapi: Arc<OnceLock<bytes::Bytes>>,
}

/// Where the process is in its life, for `/health/ready`.
#[derive(Clone, Default)]
pub struct Lifecycle(Arc<AtomicU8>);

/// The phases of [`Lifecycle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting = 0,
    Running = 1,
    Stopping = 2,
}

impl Lifecycle {
    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Release);
    }

    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Stopping,
        }
    }
}
