//! The outgoing queue: accepted PDFs wait here, per session and in order, until their session
//! is connected, and failed sends are retried with backoff.
//!
//! Every message is in the [`Journal`] before the caller hears 202, and the in-memory lanes are
//! rebuilt from it at start. A message is done when WhatsApp's server acknowledged it (`sent`),
//! or when it failed for good. Each session has its own lane and worker, so one session's
//! backlog never delays another's; lanes and the whole queue are bounded (count and bytes).

mod retry;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{Notify, mpsc, oneshot};

pub use retry::RetryPolicy;

use crate::config::QueueLimits;
use crate::domain::{ContentKind, FileName, MessageId, MimeType, OutgoingContent, PhoneNumber, SessionId};
use crate::journal::{Accepted, DeliveryStatus, IdempotencyKey, Journal, JournalError, MessageRecord, NewMessage};
use crate::session::{Connections, DeliveryEvent, SessionManager, Writes};
use crate::shutdown::Shutdown;
use crate::storage::credentials::WriteFence;

/// A message waiting to be delivered: its metadata only. The bytes stay in the journal's
/// segments until the attempt that sends them ([`Journal::read_payload`]), so a backlog costs
/// memory per message, not per byte.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) id: MessageId,
    pub(crate) to: PhoneNumber,
    pub(crate) kind: ContentKind,
    pub(crate) mimetype: Option<MimeType>,
    pub(crate) file_name: Option<FileName>,
    pub(crate) caption: Option<String>,
    /// A voice note (audio only).
    pub(crate) ptt: bool,
    /// The content's size in bytes, counted against the queue's byte bounds.
    pub(crate) size: u64,
    /// When the message was accepted (wall clock, survives restarts).
    pub(crate) accepted_at_ms: u64,
}

impl Job {
    /// The job of a journal row, with the session whose lane it belongs in; `None` when a
    /// stored field no longer parses.
    fn from_record(record: MessageRecord) -> Option<(SessionId, Job)> {
        let session = SessionId::parse(&record.session_id).ok()?;
        let to = PhoneNumber::parse(&record.to).ok()?;
        let file_name = match &record.file_name {
            Some(name) => Some(FileName::parse(name).ok()?),
            None => None,
        };
        let mimetype = match &record.mimetype {
            Some(mimetype) => Some(MimeType::parse(mimetype)?),
            None => None,
        };
        let job = Job {
            id: MessageId::from_stored(record.message_id),
            to,
            kind: record.kind,
            mimetype,
            file_name,
            caption: record.caption,
            ptt: record.ptt.unwrap_or(false),
            size: record.size,
            accepted_at_ms: record.created_at,
        };
        Some((session, job))
    }
}

/// One session's FIFO of jobs and the signal that wakes its worker.
#[derive(Default)]
pub(crate) struct Lane {
    state: Mutex<LaneState>,
    added: Notify,
    /// Set when the session is deleted: the worker fails what is left and stops.
    closed: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct LaneState {
    jobs: VecDeque<Job>,
    /// Bytes of the queued PDFs, plus reservations for messages being journaled.
    bytes: u64,
    /// Messages being journaled right now (counted against the bounds).
    reserved: usize,
}

impl Lane {
    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn front(&self) -> Option<Job> {
        self.lock().jobs.front().cloned()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Why a PDF was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("the queue is full")]
    Full { retry_after: Duration },
    #[error("this idempotency key was used with another body")]
    KeyReused,
    #[error("the disk is full")]
    DiskFull,
    #[error("journal: {0}")]
    Journal(JournalError),
}

/// What the caller gets for an accepted PDF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Newly accepted.
    New(MessageId),
    /// The same idempotency key and body were accepted before: nothing new is sent.
    Replay(MessageId),
}

impl Enqueued {
    pub fn id(&self) -> &MessageId {
        match self {
            Enqueued::New(id) | Enqueued::Replay(id) => id,
        }
    }
}

/// Cheap-to-clone handle on the queue.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

/// Settings of the queue, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    pub retry: RetryPolicy,
    pub max_age: Duration,
    pub min_interval: Duration,
    pub limits: QueueLimits,
    /// The journal is shared with other gateways (a fleet on Postgres): a session's messages may
    /// be accepted anywhere and are sent by the gateway that runs it, which picks them up from
    /// the journal ([`FLEET_POLL`]) and sends none that another gateway already finished.
    pub shared: bool,
}

/// How long a refused accept is watched for a commit that went through after all.
const WITHDRAW_FOR: Duration = Duration::from_secs(600);

/// How often, in a fleet, the gateway that runs a session looks in the shared journal for its
/// messages accepted by other gateways.
pub(crate) const FLEET_POLL: Duration = Duration::from_secs(1);

struct Inner {
    lanes: DashMap<SessionId, Arc<Lane>>,
    sessions: Arc<dyn Connections>,
    journal: Journal,
    settings: QueueSettings,
    shutdown: Shutdown,
    /// Whole-queue totals (messages, bytes), reservations included.
    totals: Mutex<(usize, u64)>,
    /// Sends waiting for the server's ack, by message id.
    acks: DashMap<String, oneshot::Sender<Option<String>>>,
    /// When recent messages were acknowledged, until their delivery receipt.
    sent_at: DashMap<String, std::time::Instant>,
    /// Whether a number is on WhatsApp, asked once per number.
    on_whatsapp: Mutex<HashMap<String, bool>>,
}

/// Most acknowledged messages timed at once for the sent→delivered histogram.
const SENT_TIMES_CAP: usize = 10_000;

/// How long a send waits for WhatsApp's server ack before it is tried again (same id).
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(30);

impl Queue {
    pub fn new(sessions: SessionManager, journal: Journal, settings: QueueSettings, shutdown: Shutdown) -> Self {
        Self::with_connections(Arc::new(sessions), journal, settings, shutdown)
    }

    /// A queue whose workers find their sessions' connections in `sessions` (the tests' fake).
    pub(crate) fn with_connections(
        sessions: Arc<dyn Connections>,
        journal: Journal,
        settings: QueueSettings,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                lanes: DashMap::new(),
                sessions,
                journal,
                settings,
                shutdown,
                totals: Mutex::new((0, 0)),
                acks: DashMap::new(),
                sent_at: DashMap::new(),
                on_whatsapp: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Rebuilds the lanes from the journal's unfinished rows, in the order they were accepted.
    /// No PDF is read: each is loaded from the outbox when its turn to be sent comes.
    pub async fn restore(&self) -> Result<usize, JournalError> {
        let pending = self.inner.journal.pending().await?;
        let count = pending.len();
        for record in pending {
            let message_id = MessageId::from_stored(record.message_id.as_str());
            let Some((session, job)) = Job::from_record(record) else {
                self.set_status(&message_id, DeliveryStatus::Failed, Some("unreadable after restart".into())).await;
                continue;
            };
            let lane = self.lane(&session);
            self.push(&lane, job);
        }
        if count > 0 {
            tracing::info!(messages = count, "queue restored from the journal");
        }
        Ok(count)
    }

    /// Adds to `lane` the open messages of `session` that the shared journal has and the lane
    /// lacks (accepted by another gateway); how many.
    pub(crate) async fn resync(&self, session: &SessionId, lane: &Lane) -> usize {
        let records = match self.inner.journal.pending_for(session).await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(session = %session, error = %e, "cannot read the session's messages from the journal");
                return 0;
            }
        };
        let known: std::collections::HashSet<String> =
            lane.lock().jobs.iter().map(|job| job.id.as_str().to_owned()).collect();
        let mut added = 0;
        for record in records {
            if known.contains(&record.message_id) {
                continue;
            }
            if let Some((_, job)) = Job::from_record(record) {
                self.push(lane, job);
                added += 1;
            }
        }
        if added > 0 {
            tracing::info!(session = %session, messages = added, "messages accepted by other gateways picked up");
        }
        added
    }

    fn push(&self, lane: &Lane, job: Job) {
        let size = job.size;
        {
            let mut totals = self.inner.totals.lock().unwrap_or_else(|p| p.into_inner());
            totals.0 += 1;
            totals.1 += size;
        }
        let mut state = lane.lock();
        state.bytes += size;
        state.jobs.push_back(job);
        drop(state);
        lane.added.notify_one();
    }

    /// Accepts a message for delivery through `session`: durable once this returns `Ok`.
    pub async fn enqueue(
        &self,
        session: &SessionId,
        to: PhoneNumber,
        content: OutgoingContent,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Enqueued, EnqueueError> {
        let lane = self.lane(session);
        let size = content.payload().len() as u64;
        self.reserve(&lane, size)?;
        let id = MessageId::generate();
        let job = Job {
            id: id.clone(),
            to: to.clone(),
            kind: content.kind(),
            mimetype: content.mimetype().cloned(),
            file_name: content.file_name().cloned(),
            caption: content.caption().map(str::to_owned),
            ptt: content.ptt().unwrap_or(false),
            size,
            accepted_at_ms: 0,
        };
        // From here on the bytes live in the journal's segments only: the queue keeps none.
        let keyed = idempotency.is_some();
        let message =
            NewMessage { message_id: id.as_str().to_owned(), session_id: session.clone(), to, content, idempotency };
        let accepted = self.inner.journal.accept(message).await;
        self.release(&lane, size);
        match accepted {
            Ok(Accepted::New) => {
                let kind = job.kind;
                self.push(&lane, Job { accepted_at_ms: crate::domain::now_ms(), ..job });
                if self.inner.settings.shared {
                    self.inner.sessions.announce_queued(session);
                }
                tracing::info!(session = %session, message_id = %id, %kind, "message queued");
                Ok(Enqueued::New(id))
            }
            Ok(Accepted::Replay { message_id }) => Ok(Enqueued::Replay(MessageId::from_stored(message_id))),
            Ok(Accepted::KeyReusedWithOtherBody) => Err(EnqueueError::KeyReused),
            Err(JournalError::DiskFull) => Err(EnqueueError::DiskFull),
            Err(e) => {
                // A shared database that went away during the commit may have committed it: the
                // client is refused, so the message must never be sent. (With an idempotency key
                // the client's retry finds it and is answered with it instead.)
                if self.inner.settings.shared && !keyed {
                    self.inner.shutdown.spawn(self.clone().withdraw(id.clone()));
                }
                Err(EnqueueError::Journal(e))
            }
        }
    }

    /// Makes sure a message whose accept was refused is never sent: once the journal answers,
    /// a row that was committed after all is failed before any gateway sends it (a worker that
    /// finds it final skips it). Gives up after [`WITHDRAW_FOR`] or at shutdown.
    async fn withdraw(self, id: MessageId) {
        let cancel = self.inner.shutdown.token();
        let until = tokio::time::Instant::now() + WITHDRAW_FOR;
        while tokio::time::Instant::now() < until {
            match self.inner.journal.get(&id).await {
                Ok(None) => return,
                // Being sent already (a worker found it first): too late to take back.
                Ok(Some(record)) if record.status != DeliveryStatus::Queued => return,
                Ok(Some(_)) => {
                    let reason = "refused: the database failed while it was accepted, and the client was told so";
                    match self.inner.journal.set_status(&id, DeliveryStatus::Failed, Some(reason.into())).await {
                        Ok(_) => {
                            tracing::warn!(message_id = %id, "a refused message was committed after all: failed, not sent");
                            return;
                        }
                        Err(e) => tracing::debug!(message_id = %id, error = %e, "cannot withdraw yet"),
                    }
                }
                Err(e) => tracing::debug!(message_id = %id, error = %e, "cannot look for a refused message yet"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        tracing::error!(message_id = %id, "cannot tell whether a refused message was committed");
    }

    /// Counts a message against the bounds before it is journaled, or refuses it.
    fn reserve(&self, lane: &Lane, size: u64) -> Result<(), EnqueueError> {
        let limits = self.inner.settings.limits;
        let mut totals = self.inner.totals.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = lane.lock();
        let lane_count = state.jobs.len() + state.reserved;
        if lane_count + 1 > limits.per_session
            || state.bytes + size > limits.per_session_bytes
            || totals.0 + 1 > limits.total
            || totals.1 + size > limits.total_bytes
        {
            // A rough guess: one pacing interval per waiting message ahead, at least a second.
            let wait = self.inner.settings.min_interval.saturating_mul(lane_count.min(600) as u32);
            return Err(EnqueueError::Full { retry_after: wait.max(Duration::from_secs(1)) });
        }
        state.reserved += 1;
        state.bytes += size;
        totals.0 += 1;
        totals.1 += size;
        Ok(())
    }

    fn release(&self, lane: &Lane, size: u64) {
        let mut totals = self.inner.totals.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = lane.lock();
        state.reserved = state.reserved.saturating_sub(1);
        state.bytes = state.bytes.saturating_sub(size);
        totals.0 = totals.0.saturating_sub(1);
        totals.1 = totals.1.saturating_sub(size);
    }

    /// Removes the lane's first job once it is done (sent or failed for good).
    pub(crate) fn finish_front(&self, lane: &Lane) {
        let removed = {
            let mut state = lane.lock();
            let job = state.jobs.pop_front();
            if let Some(job) = &job {
                state.bytes = state.bytes.saturating_sub(job.size);
            }
            job
        };
        if let Some(job) = removed {
            let size = job.size;
            let mut totals = self.inner.totals.lock().unwrap_or_else(|p| p.into_inner());
            totals.0 = totals.0.saturating_sub(1);
            totals.1 = totals.1.saturating_sub(size);
        }
    }

    /// The delivery record of a message.
    pub async fn status(&self, id: &MessageId) -> Result<Option<MessageRecord>, JournalError> {
        self.inner.journal.get(id).await
    }

    /// The session was deleted: its waiting messages fail with `SESSION_DELETED` and leave the
    /// queue's bounds (the lane's worker does it, so a send in progress finishes first).
    pub fn close_session(&self, session: &SessionId) {
        if let Some((_, lane)) = self.inner.lanes.remove(session) {
            lane.closed.store(true, std::sync::atomic::Ordering::SeqCst);
            lane.added.notify_one();
        }
    }

    /// (waiting messages, waiting bytes) of one session.
    pub fn depth(&self, session: &SessionId) -> (usize, u64) {
        self.inner.lanes.get(session).map_or((0, 0), |lane| {
            let state = lane.value().lock();
            (state.jobs.len(), state.bytes)
        })
    }

    /// (session, waiting messages, waiting bytes) of every lane.
    pub fn depths(&self) -> Vec<(SessionId, usize, u64)> {
        self.inner
            .lanes
            .iter()
            .map(|lane| {
                let state = lane.value().lock();
                (lane.key().clone(), state.jobs.len(), state.bytes)
            })
            .collect()
    }

    /// Remembers when a message was acknowledged, for the sent→delivered histogram. Bounded: past
    /// the cap, new sends are simply not timed.
    fn note_sent(&self, id: &str) {
        if self.inner.sent_at.len() < SENT_TIMES_CAP {
            self.inner.sent_at.insert(id.to_owned(), std::time::Instant::now());
        }
    }

    /// Consumes acks and receipts from every session until shutdown.
    /// In a fleet: when a session connects on this gateway (it took the session's lease), its
    /// lane picks up what the shared journal holds for it, whoever accepted it. Until shutdown.
    pub async fn follow_sessions(self, mut events: tokio::sync::broadcast::Receiver<crate::session::SessionEvent>) {
        let cancel = self.inner.shutdown.token();
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                event = events.recv() => event,
            };
            match event {
                // Connected here, not seen connected on another gateway.
                Ok(crate::session::SessionEvent {
                    session,
                    kind: crate::session::SessionEventKind::Connected { .. },
                    mirrored: false,
                }) => {
                    let lane = self.lane(&session);
                    self.resync(&session, &lane).await;
                }
                Ok(_) => {}
                // Missed events: the workers' own polls catch up.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// In a fleet: when another gateway accepted a message for a session this one runs, its lane
    /// picks it up now (the journal poll is the fallback for a notice lost). Until shutdown.
    pub async fn follow_queued(self, mut queued: tokio::sync::broadcast::Receiver<SessionId>) {
        let cancel = self.inner.shutdown.token();
        loop {
            let session = tokio::select! {
                _ = cancel.cancelled() => return,
                session = queued.recv() => session,
            };
            match session {
                Ok(session) => {
                    if self.inner.sessions.connected_client(&session).is_some() {
                        let lane = self.lane(&session);
                        self.resync(&session, &lane).await;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    pub async fn track_deliveries(self, mut events: mpsc::Receiver<DeliveryEvent>) {
        let cancel = self.inner.shutdown.token();
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                event = events.recv() => match event { Some(e) => e, None => return },
            };
            match event {
                // Acks and receipts are facts: written whoever holds the session's lease now
                // (statuses only move up), so that no `sent` or `delivered` event is lost in a
                // handoff.
                DeliveryEvent::Ack { message_id, error } => {
                    if error.is_none() {
                        self.note_sent(&message_id);
                    }
                    if let Some((_, waiter)) = self.inner.acks.remove(&message_id) {
                        let _ = waiter.send(error);
                    } else if error.is_none() {
                        // A late ack for a send we stopped waiting for: it did arrive.
                        self.set_status(&MessageId::from_stored(message_id), DeliveryStatus::Sent, None).await;
                    }
                }
                DeliveryEvent::Receipt { message_ids, read } => {
                    let status = if read { DeliveryStatus::Read } else { DeliveryStatus::Delivered };
                    for id in message_ids {
                        if let Some((_, sent)) = self.inner.sent_at.remove(&id) {
                            metrics::histogram!(crate::metrics::SENT_TO_DELIVERED).record(sent.elapsed().as_secs_f64());
                        }
                        self.set_status(&MessageId::from_stored(id), status, None).await;
                    }
                }
            }
        }
    }

    /// Best-effort status update: unknown ids (not ours) are ignored by the journal.
    pub(crate) async fn set_status(&self, id: &MessageId, status: DeliveryStatus, error: Option<String>) {
        self.write_status(id, status, error, None).await;
    }

    /// A status that decides who sends: the claim of a message to send (`sending`), or its
    /// failure by the gateway that tried. In a fleet it is written under this gateway's lease
    /// of the session, so a gateway that lost the number changes nothing; `false` when it was
    /// refused so (this gateway no longer runs the session).
    pub(crate) async fn record_status(
        &self,
        session: &SessionId,
        id: &MessageId,
        status: DeliveryStatus,
        error: Option<String>,
    ) -> bool {
        match self.inner.sessions.writes(session) {
            Writes::Alone => self.write_status(id, status, error, None).await,
            Writes::Fenced(fence) => self.write_status(id, status, error, Some(&fence)).await,
            Writes::NotHeld => {
                metrics::counter!(crate::metrics::FENCING_REFUSALS, "store" => "journal").increment(1);
                tracing::info!(session = %session, message_id = %id, status = status.as_str(), "not recorded: another gateway runs the session now");
                false
            }
        }
    }

    /// Writes a status, under `fence` when given; `false` when the fence refused it.
    async fn write_status(
        &self,
        id: &MessageId,
        status: DeliveryStatus,
        error: Option<String>,
        fence: Option<&WriteFence>,
    ) -> bool {
        // The journal records the `message.status` event in the same transaction
        // (`app::relay::drain_status_events` hands it on). While the shared database cannot be
        // reached, the lane waits here rather than running ahead of what is recorded: a status
        // lost now would send the message again after a restart.
        let mut pause = Duration::from_millis(200);
        loop {
            let written = match fence {
                None => self.inner.journal.set_status(id, status, error.clone()).await,
                // This gateway's own view first: a gateway past its deadline does not ask. (A
                // refusal by Postgres is counted by the journal.)
                Some(fence) if !fence.holds() => {
                    metrics::counter!(crate::metrics::FENCING_REFUSALS, "store" => "journal").increment(1);
                    Err(JournalError::Fenced)
                }
                Some(fence) => self.inner.journal.set_status_under(id, status, error.clone(), fence.lease()).await,
            };
            match written {
                Ok(_) => return true,
                Err(JournalError::Fenced) => {
                    tracing::warn!(message_id = %id, status = status.as_str(), "not recorded: this gateway's lease of the session is gone");
                    return false;
                }
                Err(e) if e.is_unavailable() && !self.inner.shutdown.is_cancelled() => {
                    tracing::warn!(message_id = %id, error = %e, ?pause, "cannot record a delivery status yet; retrying");
                    tokio::select! {
                        () = self.inner.shutdown.cancelled() => return true,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(message_id = %id, error = %e, "cannot record a delivery status");
                    return true;
                }
            }
        }
    }

    /// Prunes the journal every hour: idempotency keys after 24 h, finished records after 7 days.
    pub async fn prune_periodically(self) {
        let cancel = self.inner.shutdown.token();
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
            let day = Duration::from_secs(24 * 3600);
            if let Err(e) = self.inner.journal.prune(day, day * 7).await {
                tracing::warn!(error = %e, "journal prune failed");
            }
        }
    }

    fn lane(&self, session: &SessionId) -> Arc<Lane> {
        if let Some(lane) = self.inner.lanes.get(session) {
            return lane.clone();
        }
        let entry = self.inner.lanes.entry(session.clone()).or_insert_with(|| {
            let lane = Arc::new(Lane::default());
            let worker =
                worker::Worker { session: session.clone(), lane: lane.clone(), queue: self.clone(), last_send: None };
            self.inner.shutdown.spawn(worker.run());
            lane
        });
        entry.clone()
    }

    pub(crate) fn sessions(&self) -> &dyn Connections {
        self.inner.sessions.as_ref()
    }

    pub(crate) fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    pub(crate) fn settings(&self) -> QueueSettings {
        self.inner.settings
    }

    pub(crate) fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    /// Registers interest in the server's ack for `id` before sending it.
    pub(crate) fn expect_ack(&self, id: &MessageId) -> oneshot::Receiver<Option<String>> {
        let (tx, rx) = oneshot::channel();
        self.inner.acks.insert(id.as_str().to_owned(), tx);
        rx
    }

    pub(crate) fn forget_ack(&self, id: &MessageId) {
        self.inner.acks.remove(id.as_str());
    }

    pub(crate) fn known_on_whatsapp(&self, to: &PhoneNumber) -> Option<bool> {
        self.inner.on_whatsapp.lock().unwrap_or_else(|p| p.into_inner()).get(to.digits()).copied()
    }

    pub(crate) fn remember_on_whatsapp(&self, to: &PhoneNumber, registered: bool) {
        self.inner.on_whatsapp.lock().unwrap_or_else(|p| p.into_inner()).insert(to.digits().to_owned(), registered);
    }
}
