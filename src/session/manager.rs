//! The registry of sessions: which exist, starting their supervisors, adding and removing
//! sessions at run time, the commands callers send them, and the summary `/health` reports.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, broadcast, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::actor::{self, Command, Labels, SessionShared};
use super::client::SessionClient;
use super::forwarded::{Answer, Forwarded};
use super::upstream::{Upstream, UpstreamError};
use super::{SessionEvent, SessionState, Status};
use crate::domain::SessionEntry;
use crate::domain::SessionId;
use crate::fleet::Fleet;
use crate::storage::{SessionRegistry, StorageError};

/// How long a command waits for the supervisor's answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// Events buffered for slow followers of [`SessionManager::events`].
const EVENT_BUFFER: usize = 1024;
/// How often a fleet's gateway reads the shared registry when no notice woke it (a notice sent
/// while its listener was reconnecting is lost).
const REGISTRY_POLL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StorageError),
    #[error("WhatsApp client settings: {0}")]
    Upstream(#[from] UpstreamError),
    /// A blocking file task panicked or was cancelled.
    #[error("session file task: {0}")]
    Writer(#[from] tokio::task::JoinError),
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("a session with this id already exists")]
    Exists,
    #[error("session not found")]
    NotFound,
    #[error("the session did not answer in time")]
    Unresponsive,
}

/// A session as callers see it.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub id: SessionId,
    pub description: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub state: SessionState,
    /// In a fleet: the gateway that runs the session now, when one does (as far as this one
    /// knows).
    pub gateway: Option<crate::domain::GatewayId>,
}

/// Cheap-to-clone handle on every session.
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

struct Inner {
    sessions: DashMap<SessionId, Arc<SessionShared>>,
    registry: Arc<dyn SessionRegistry>,
    /// Serialises rewrites of `sessions.config.json` and the creation and removal of sessions.
    file_lock: tokio::sync::Mutex<()>,
    upstream: Upstream,
    /// On Postgres: this gateway in the fleet; a number's client runs only under its lease.
    fleet: Option<Fleet>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// Linked sessions connecting at boot, at most this many at once.
    startup: Arc<Semaphore>,
    events: broadcast::Sender<SessionEvent>,
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

    /// Cancelled when the session is deleted.
    pub fn deleted(&self) -> CancellationToken {
        self.shared.deleted.clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.remove_watcher();
    }
}

impl SessionManager {
    /// Reads the registry (`sessions.config.json` by default; an invalid file is a start-up
    /// error) and prepares every listed session, asking the credential store once which of them
    /// are linked. Nothing runs until [`SessionManager::start_all`]. At most
    /// `startup_concurrency` linked sessions connect at once at boot.
    pub(crate) async fn load(
        registry: Arc<dyn SessionRegistry>,
        upstream: Upstream,
        fleet: Option<Fleet>,
        cancel: CancellationToken,
        tasks: TaskTracker,
        startup_concurrency: usize,
    ) -> Result<Self, SessionError> {
        let entries = registry.load().await?;
        let ids: Vec<SessionId> = entries.iter().map(|e| e.session_id.clone()).collect();
        let linked = upstream.credentials().with_credentials(&ids).await?;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        if let Some(fleet) = &fleet {
            fleet.set_sessions(entries.len());
        }
        let sessions = DashMap::new();
        for entry in entries {
            let labels = Labels { description: entry.description, metadata: entry.metadata };
            let is_linked = linked.contains(&entry.session_id);
            let shared = SessionShared::new(entry.session_id.clone(), is_linked, labels, events.clone());
            sessions.insert(entry.session_id, Arc::new(shared));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                sessions,
                registry,
                file_lock: tokio::sync::Mutex::new(()),
                upstream,
                fleet,
                cancel,
                tasks,
                startup: Arc::new(Semaphore::new(startup_concurrency.max(1))),
                events,
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
        let fleet = self.inner.fleet.clone();
        let cancel = self.inner.cancel.clone();
        let startup = self.inner.startup.clone();
        let id = shared.id.clone();
        self.inner.tasks.spawn(async move {
            // A panic inside one session's supervisor must not end that session for good, nor
            // touch any other: the supervisor runs in a task of its own and is started again.
            loop {
                let span = tracing::info_span!("session", session = %id);
                let run = tracing::Instrument::instrument(
                    actor::supervise(shared.clone(), upstream.clone(), fleet.clone(), cancel.clone(), startup.clone()),
                    span,
                );
                match tokio::spawn(run).await {
                    Ok(()) => return,
                    Err(e) if e.is_panic() && !cancel.is_cancelled() => {
                        tracing::error!(session = %id, "session supervisor panicked; restarting it");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(_) => return,
                }
            }
        });
    }

    pub fn contains(&self, id: &SessionId) -> bool {
        self.inner.sessions.contains_key(id)
    }

    /// Every session event (status, QR, connected, logged out) from now on.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner.events.subscribe()
    }

    /// Watches a session, creating it (and its entry in `sessions.config.json`) if new.
    pub async fn watch(&self, id: &SessionId) -> Result<Watcher, SessionError> {
        let shared = match self.get_shared(id) {
            Some(shared) => shared,
            None => match self.create(id.clone(), Labels::default()).await {
                Ok(shared) | Err(CreateRace::Exists(shared)) => shared,
                Err(CreateRace::Failed(e)) => return Err(e),
            },
        };
        // Subscribe before announcing ourselves so the first state we read is not stale.
        let state = shared.state.subscribe();
        shared.add_watcher();
        Ok(Watcher { shared, state })
    }

    /// Adds a new session: 409-style [`SessionError::Exists`] if the id is taken.
    pub async fn add(
        &self,
        id: SessionId,
        description: Option<String>,
        metadata: Option<Map<String, Value>>,
    ) -> Result<SessionSummary, SessionError> {
        match self.create(id, Labels { description, metadata }).await {
            Ok(shared) => Ok(summary(&shared)),
            Err(CreateRace::Exists(_)) => Err(SessionError::Exists),
            Err(CreateRace::Failed(e)) => Err(e),
        }
    }

    async fn create(&self, id: SessionId, labels: Labels) -> Result<Arc<SessionShared>, CreateRace> {
        if self.inner.cancel.is_cancelled() {
            return Err(CreateRace::Failed(SessionError::ShuttingDown));
        }
        let _guard = self.inner.file_lock.lock().await;
        if let Some(existing) = self.get_shared(&id) {
            return Err(CreateRace::Exists(existing));
        }
        let entry = SessionEntry {
            session_id: id.clone(),
            description: labels.description.clone(),
            metadata: labels.metadata.clone(),
            extra: Map::new(),
        };
        self.inner.registry.add(entry).await.map_err(|e| CreateRace::Failed(e.into()))?;
        // A new entry may find credentials left in place (a folder copied over from before).
        let linked = self.inner.upstream.credentials().has_credentials(&id).await.unwrap_or_else(|e| {
            tracing::warn!(session = %id, error = %e, "cannot tell whether the new session has credentials");
            false
        });
        let shared = Arc::new(SessionShared::new(id.clone(), linked, labels, self.inner.events.clone()));
        self.inner.sessions.insert(id.clone(), shared.clone());
        self.count_for_fleet();
        tracing::info!(session = %id, "new session added to {}", self.inner.registry.describe());
        self.spawn(shared.clone());
        Ok(shared)
    }

    fn get_shared(&self, id: &SessionId) -> Option<Arc<SessionShared>> {
        self.inner.sessions.get(id).map(|s| s.value().clone())
    }

    /// One session.
    pub fn get(&self, id: &SessionId) -> Option<SessionSummary> {
        self.get_shared(id).map(|shared| summary(&shared))
    }

    /// Where the session's credentials are, for people: its folder (whether or not it exists
    /// yet), or the database that holds them.
    pub fn folder(&self, id: &SessionId) -> String {
        self.inner.upstream.credentials().location(id)
    }

    /// Whether another gateway of the fleet runs the session (holds its lease).
    pub(crate) fn runs_elsewhere(&self, id: &SessionId) -> bool {
        self.get_shared(id).is_some_and(|shared| runs_elsewhere(&shared))
    }

    /// This gateway's id in the fleet (on Postgres).
    pub fn gateway(&self) -> Option<&crate::domain::GatewayId> {
        self.inner.fleet.as_ref().map(Fleet::gateway)
    }

    /// This gateway in the fleet (on Postgres).
    pub(crate) fn fleet(&self) -> Option<&Fleet> {
        self.inner.fleet.as_ref()
    }

    fn count_for_fleet(&self) {
        if let Some(fleet) = &self.inner.fleet {
            fleet.set_sessions(self.inner.sessions.len());
        }
    }

    /// In a fleet: keeps this gateway's sessions the same as the shared registry's, which other
    /// gateways add to and remove from, and shows the sessions other gateways run as they
    /// recorded them. Woken by their notices, with a poll as the fallback.
    pub(crate) async fn follow_fleet(self, cancel: CancellationToken) {
        let Some(fleet) = self.inner.fleet.clone() else { return };
        let mut states = fleet.state_changes();
        let Some(mut incoming) = fleet.take_incoming() else { return };
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = fleet.sessions_changed() => self.follow_registry_once().await,
                () = tokio::time::sleep(REGISTRY_POLL) => {
                    self.follow_registry_once().await;
                    self.mirror_all(&fleet).await;
                }
                Some(command) = incoming.recv() => self.serve_forwarded(command),
                changed = states.recv() => match changed {
                    Ok(Some(session)) => self.mirror(&fleet, &session).await,
                    Ok(None) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.mirror_all(&fleet).await,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    async fn follow_registry_once(&self) {
        if let Err(e) = self.sync_registry().await {
            tracing::warn!(error = %e, "cannot read the shared session registry");
        }
    }

    /// Shows every session another gateway runs as that gateway recorded it.
    async fn mirror_all(&self, fleet: &Fleet) {
        let elsewhere: Vec<SessionId> =
            self.inner.sessions.iter().filter(|s| runs_elsewhere(s)).map(|s| s.key().clone()).collect();
        for session in elsewhere {
            self.mirror(fleet, &session).await;
        }
    }

    /// Shows `session`, if another gateway runs it, as that gateway recorded it: its status,
    /// QR and account. A state recorded under a lease that is gone says that nobody runs the
    /// number now.
    async fn mirror(&self, fleet: &Fleet, session: &SessionId) {
        let Some(shared) = self.get_shared(session) else { return };
        if !runs_elsewhere(&shared) {
            return;
        }
        let recorded = match fleet.state_of(session).await {
            Ok(Some(recorded)) if &recorded.owner != fleet.gateway() => recorded,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(session = %session, error = %e, "cannot read the session's state from the fleet");
                return;
            }
        };
        let mut state: SessionState = match serde_json::from_value(recorded.state) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(session = %session, error = %e, "a session state recorded by another gateway is unreadable");
                return;
            }
        };
        let runs_on = recorded.live.then(|| recorded.owner.clone());
        // A gateway that stopped running the number while it was active left an account that is
        // no longer true; one that stopped because it was logged out (or failed) left the truth.
        if !recorded.live && (state.status == Status::Connected || state.status.is_starting()) {
            state.status = Status::Disconnected;
            state.reason =
                Some(format!("gateway {} stopped running this number; another takes it over", recorded.owner));
            state.qr = None;
            state.pairing_code = None;
        }
        shared.mirror(state, runs_on);
    }

    /// Starts the sessions another gateway added, and ends (without touching the phone or the
    /// store) those another gateway deleted.
    async fn sync_registry(&self) -> Result<(), SessionError> {
        let _guard = self.inner.file_lock.lock().await;
        if self.inner.cancel.is_cancelled() {
            return Ok(());
        }
        let entries = self.inner.registry.load().await?;
        let listed: std::collections::HashSet<SessionId> = entries.iter().map(|e| e.session_id.clone()).collect();
        let gone: Vec<Arc<SessionShared>> =
            self.inner.sessions.iter().filter(|s| !listed.contains(s.key())).map(|s| s.value().clone()).collect();
        for shared in gone {
            let (reply, done) = oneshot::channel();
            let _ = ask(&shared, Command::Forget(reply), done).await;
            self.inner.sessions.remove(&shared.id);
            if let Some(fleet) = &self.inner.fleet {
                fleet.forget(&shared.id);
            }
            tracing::info!(session = %shared.id, "session deleted by another gateway");
        }
        for entry in entries {
            if self.inner.sessions.contains_key(&entry.session_id) {
                continue;
            }
            let id = entry.session_id;
            let linked = self.inner.upstream.credentials().has_credentials(&id).await.unwrap_or(false);
            let labels = Labels { description: entry.description, metadata: entry.metadata };
            let shared = Arc::new(SessionShared::new(id.clone(), linked, labels, self.inner.events.clone()));
            self.inner.sessions.insert(id.clone(), shared.clone());
            tracing::info!(session = %id, "session added by another gateway");
            self.spawn(shared);
        }
        self.count_for_fleet();
        Ok(())
    }

    /// Every session, by id.
    pub fn list(&self) -> Vec<SessionSummary> {
        let mut all: Vec<SessionSummary> = self.inner.sessions.iter().map(|s| summary(s.value())).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Keeps an unlinked session linking for `window` (QR over HTTP) and returns its state.
    pub fn link_for(&self, id: &SessionId, window: Duration) -> Result<watch::Receiver<SessionState>, SessionError> {
        let state = self.link_for_here(id, window)?;
        if let Some(gateway) = self.runs_on_another(id) {
            // That gateway links it: keep its window open too (its QR is shown here).
            let (manager, id) = (self.clone(), id.clone());
            let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            self.track(async move {
                if let Err(e) = manager.forward(&gateway, &id, Forwarded::Link { window_ms }).await {
                    tracing::debug!(session = %id, error = %e, "cannot extend the linking window on its gateway");
                }
            });
        }
        Ok(state)
    }

    pub(super) fn link_for_here(
        &self,
        id: &SessionId,
        window: Duration,
    ) -> Result<watch::Receiver<SessionState>, SessionError> {
        let shared = self.get_shared(id).ok_or(SessionError::NotFound)?;
        let state = shared.state.subscribe();
        shared.extend_link_window(window);
        Ok(state)
    }

    /// In a fleet: tells the gateway that runs `id`, when it is another one, that a message for
    /// it was accepted here (it picks it up at once rather than at its next poll of the journal).
    pub(crate) fn announce_queued(&self, id: &SessionId) {
        let Some(fleet) = self.inner.fleet.clone() else { return };
        if self.runs_on_another(id).is_none() {
            return;
        }
        let id = id.clone();
        self.track(async move { fleet.announce_queued(&id).await });
    }

    /// In a fleet: the gateway that runs `id` when it is another one.
    fn runs_on_another(&self, id: &SessionId) -> Option<crate::domain::GatewayId> {
        let fleet = self.inner.fleet.as_ref()?;
        let shared = self.get_shared(id)?;
        shared.runs_on().filter(|gateway| runs_elsewhere(&shared) && gateway != fleet.gateway())
    }

    /// Runs `task` until it ends or the gateway stops waiting for its tasks.
    pub(super) fn track(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.tasks.spawn(task);
    }

    /// Stops the session's client and starts a new one (on the gateway that runs it).
    pub async fn restart(&self, id: &SessionId) -> Result<(), SessionError> {
        match self.runs_on_another(id) {
            Some(gateway) => self.forward(&gateway, id, Forwarded::Restart).await?.into_result(),
            None => self.restart_here(id).await,
        }
    }

    pub(super) async fn restart_here(&self, id: &SessionId) -> Result<(), SessionError> {
        let shared = self.get_shared(id).ok_or(SessionError::NotFound)?;
        if shared.send(Command::Restart).await { Ok(()) } else { Err(SessionError::ShuttingDown) }
    }

    /// Unlinks the session from the phone and deletes its credentials; the session stays.
    pub async fn logout(&self, id: &SessionId) -> Result<(), SessionError> {
        match self.runs_on_another(id) {
            Some(gateway) => self.forward(&gateway, id, Forwarded::Logout).await?.into_result(),
            None => self.logout_here(id).await,
        }
    }

    pub(super) async fn logout_here(&self, id: &SessionId) -> Result<(), SessionError> {
        let shared = self.get_shared(id).ok_or(SessionError::NotFound)?;
        let (reply, done) = oneshot::channel();
        ask(&shared, Command::Logout(reply), done).await
    }

    /// A pairing code to link the session by typing it on the phone (`phone` is the number
    /// being linked). Starts a client if none runs, and keeps linking going for `window`.
    pub async fn pairing_code(
        &self,
        id: &SessionId,
        phone: crate::domain::PhoneNumber,
        window: Duration,
    ) -> Result<Result<String, super::PairingError>, SessionError> {
        let Some(gateway) = self.runs_on_another(id) else { return self.pairing_code_here(id, phone, window).await };
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        match self.forward(&gateway, id, Forwarded::PairingCode { phone: phone.to_string(), window_ms }).await? {
            Answer::Code { code } => Ok(Ok(code)),
            Answer::NoCode { error } => Ok(Err(error)),
            other => other.into_result().and(Err(SessionError::Unresponsive)),
        }
    }

    pub(super) async fn pairing_code_here(
        &self,
        id: &SessionId,
        phone: crate::domain::PhoneNumber,
        window: Duration,
    ) -> Result<Result<String, super::PairingError>, SessionError> {
        let shared = self.get_shared(id).ok_or(SessionError::NotFound)?;
        if shared.state.borrow().status == Status::Connected {
            return Ok(Err(super::PairingError::AlreadyLinked));
        }
        shared.extend_link_window(window);
        let (reply, answer) = oneshot::channel();
        if !shared.send(Command::PairCode(phone, reply)).await {
            return Err(SessionError::ShuttingDown);
        }
        // The socket may take up to 20 s to come up, then WhatsApp answers the request: within
        // the route's own timeout.
        match tokio::time::timeout(Duration::from_secs(25), answer).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(SessionError::Unresponsive),
            Err(_) => Err(SessionError::Unresponsive),
        }
    }

    /// Logs the session out if linked, stops it, deletes its credentials (on SQLite its folder)
    /// and removes it from `sessions.config.json` (on the gateway that runs it).
    pub async fn delete(&self, id: &SessionId) -> Result<(), SessionError> {
        let Some(gateway) = self.runs_on_another(id) else { return self.delete_here(id).await };
        self.forward(&gateway, id, Forwarded::Delete).await?.into_result()?;
        // Gone from the registry: this gateway forgets it now rather than on the notice.
        self.sync_registry().await
    }

    pub(super) async fn delete_here(&self, id: &SessionId) -> Result<(), SessionError> {
        let _guard = self.inner.file_lock.lock().await;
        let shared = self.get_shared(id).ok_or(SessionError::NotFound)?;
        let (reply, done) = oneshot::channel();
        ask(&shared, Command::Stop(reply), done).await?;
        self.inner.sessions.remove(id);
        self.count_for_fleet();
        if let Some(fleet) = &self.inner.fleet {
            fleet.forget(id);
        }
        self.inner.registry.remove(id).await?;
        self.inner.upstream.credentials().remove(id).await?;
        tracing::info!(session = %id, "session deleted");
        Ok(())
    }

    /// The session's state channel, for senders that wait for a connection.
    pub fn state(&self, id: &SessionId) -> Option<watch::Receiver<SessionState>> {
        self.inner.sessions.get(id).map(|s| s.state.subscribe())
    }

    /// The session's client if it is connected right now.
    pub(crate) fn connected_client(&self, id: &SessionId) -> Option<SessionClient> {
        let client = self.inner.sessions.get(id).and_then(|s| s.connected_client())?;
        Some(SessionClient::new(client))
    }

    /// Waits for every session supervisor to finish (they stop when the shutdown token fires).
    pub(crate) async fn wait_stopped(&self, deadline: Duration) -> bool {
        self.inner.tasks.close();
        tokio::time::timeout(deadline, self.inner.tasks.wait()).await.is_ok()
    }

    /// The status of every session this gateway runs (in a fleet, not those another runs), in
    /// no order.
    pub fn statuses(&self) -> Vec<Status> {
        self.inner.sessions.iter().filter(|s| !runs_elsewhere(s)).map(|s| s.state.borrow().status).collect()
    }

    /// (sessions, sessions connected on this gateway)
    pub fn counts(&self) -> (usize, usize) {
        let total = self.inner.sessions.len();
        let connected = self
            .inner
            .sessions
            .iter()
            .filter(|s| !runs_elsewhere(s) && s.state.borrow().status == Status::Connected)
            .count();
        (total, connected)
    }
}

fn runs_elsewhere(shared: &SessionShared) -> bool {
    shared.elsewhere.load(std::sync::atomic::Ordering::Acquire)
}

/// `create` found the id taken (and hands back that session), or failed.
enum CreateRace {
    Exists(Arc<SessionShared>),
    Failed(SessionError),
}

fn summary(shared: &SessionShared) -> SessionSummary {
    SessionSummary {
        id: shared.id.clone(),
        description: shared.labels.description.clone(),
        metadata: shared.labels.metadata.clone(),
        state: shared.state.borrow().clone(),
        gateway: shared.runs_on(),
    }
}

/// Sends `command` and waits for the supervisor's answer.
async fn ask(shared: &SessionShared, command: Command, done: oneshot::Receiver<()>) -> Result<(), SessionError> {
    if !shared.send(command).await {
        return Err(SessionError::ShuttingDown);
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, done).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SessionError::ShuttingDown),
        Err(_) => Err(SessionError::Unresponsive),
    }
}
