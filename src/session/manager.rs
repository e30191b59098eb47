//! The registry of sessions: which exist, starting their supervisors, creating new ones for
//! a WebSocket that asks, and the summary `/health` reports.

use std::path::PathBuf;
use std::sync::Arc;

use dashmap::DashMap;
use serde_json::Map;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use whatsapp_rust::Client;

use super::actor::{self, SessionShared};
use super::store::{SessionEntry, SessionsFile, StoreError};
use super::upstream::{Upstream, UpstreamError};
use super::{SessionState, Status};
use crate::domain::SessionId;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("WhatsApp client settings: {0}")]
    Upstream(#[from] UpstreamError),
    /// The blocking task that rewrites `sessions.config.json` panicked or was cancelled.
    #[error("sessions.config.json writer: {0}")]
    Writer(#[from] tokio::task::JoinError),
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// Cheap-to-clone handle on every session.
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

struct Inner {
    sessions: DashMap<SessionId, Arc<SessionShared>>,
    file: SessionsFile,
    /// Serialises rewrites of `sessions.config.json`.
    file_lock: tokio::sync::Mutex<()>,
    dir: PathBuf,
    upstream: Upstream,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// A WebSocket's subscription to a session. While any exists for an unlinked session, it
/// keeps producing QR codes; dropping the last one stops linking.
pub struct Watcher {
    shared: Arc<SessionShared>,
    state: watch::Receiver<SessionState>,
}

impl Watcher {
    pub fn state(&mut self) -> &mut watch::Receiver<SessionState> {
        &mut self.state
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.remove_watcher();
    }
}

impl SessionManager {
    /// Reads `sessions.config.json` (an invalid file is a start-up error) and prepares every
    /// listed session. Nothing runs until [`SessionManager::start_all`].
    pub(crate) fn load(
        file: SessionsFile,
        dir: PathBuf,
        upstream: Upstream,
        cancel: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Self, SessionError> {
        let entries = file.load()?;
        let sessions = DashMap::new();
        for entry in entries {
            let path = dir.join(entry.session_id.as_str());
            sessions.insert(entry.session_id.clone(), Arc::new(SessionShared::new(entry.session_id, path)));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                sessions,
                file,
                file_lock: tokio::sync::Mutex::new(()),
                dir,
                upstream,
                cancel,
                tasks,
            }),
        })
    }

    /// Starts the supervisor of every configured session.
    pub(crate) fn start_all(&self) {
        for session in self.inner.sessions.iter() {
            self.spawn(session.value().clone());
        }
    }

    fn spawn(&self, shared: Arc<SessionShared>) {
        let upstream = self.inner.upstream.clone();
        let cancel = self.inner.cancel.clone();
        let id = shared.id.clone();
        self.inner.tasks.spawn(async move {
            // A panic inside one session's supervisor must not end that session for good, nor
            // touch any other: the supervisor runs in a task of its own and is started again.
            loop {
                let span = tracing::info_span!("session", session = %id);
                let run = tracing::Instrument::instrument(
                    actor::supervise(shared.clone(), upstream.clone(), cancel.clone()),
                    span,
                );
                match tokio::spawn(run).await {
                    Ok(()) => return,
                    Err(e) if e.is_panic() && !cancel.is_cancelled() => {
                        tracing::error!(session = %id, "session supervisor panicked; restarting it");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    Err(_) => return,
                }
            }
        });
    }

    pub fn contains(&self, id: &SessionId) -> bool {
        self.inner.sessions.contains_key(id)
    }

    /// Watches a session, creating it (and its entry in `sessions.config.json`) if new.
    pub async fn watch(&self, id: &SessionId) -> Result<Watcher, SessionError> {
        if self.inner.cancel.is_cancelled() {
            return Err(SessionError::ShuttingDown);
        }
        let shared = match self.inner.sessions.get(id).map(|s| s.value().clone()) {
            Some(shared) => shared,
            None => self.create(id).await?,
        };
        // Subscribe before announcing ourselves so the first state we read is not stale.
        let state = shared.state.subscribe();
        shared.add_watcher();
        Ok(Watcher { shared, state })
    }

    async fn create(&self, id: &SessionId) -> Result<Arc<SessionShared>, SessionError> {
        let _guard = self.inner.file_lock.lock().await;
        if let Some(existing) = self.inner.sessions.get(id) {
            return Ok(existing.value().clone());
        }
        let entry = SessionEntry { session_id: id.clone(), description: None, extra: Map::new() };
        let file = &self.inner.file;
        // A blocking fsync: keep it off the async workers.
        let path = file.path().to_path_buf();
        tokio::task::spawn_blocking(move || SessionsFile::new(path).append(entry))
            .await
            .map_err(SessionError::Writer)??;
        let shared = Arc::new(SessionShared::new(id.clone(), self.inner.dir.join(id.as_str())));
        self.inner.sessions.insert(id.clone(), shared.clone());
        tracing::info!(session = %id, "new session added to {}", file.path().display());
        self.spawn(shared.clone());
        Ok(shared)
    }

    /// The session's state channel, for senders that wait for a connection.
    pub fn state(&self, id: &SessionId) -> Option<watch::Receiver<SessionState>> {
        self.inner.sessions.get(id).map(|s| s.state.subscribe())
    }

    /// The session's client if it is connected right now.
    pub(crate) fn connected_client(&self, id: &SessionId) -> Option<Arc<Client>> {
        self.inner.sessions.get(id).and_then(|s| s.connected_client())
    }

    /// Waits for every session supervisor to finish (they stop when the shutdown token fires).
    pub(crate) async fn wait_stopped(&self, deadline: std::time::Duration) -> bool {
        self.inner.tasks.close();
        tokio::time::timeout(deadline, self.inner.tasks.wait()).await.is_ok()
    }

    /// The status of every session, in no order.
    pub fn statuses(&self) -> Vec<Status> {
        self.inner.sessions.iter().map(|s| s.state.borrow().status).collect()
    }

    /// (sessions, connected sessions)
    pub fn counts(&self) -> (usize, usize) {
        let total = self.inner.sessions.len();
        let connected = self.inner.sessions.iter().filter(|s| s.state.borrow().status == Status::Connected).count();
        (total, connected)
    }
}
