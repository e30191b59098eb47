//! Webhooks: every event of the bus, posted to each endpoint that wants it, signed as the
//! Standard Webhooks specification says, from a durable outbox.
//!
//! * A [`WebhookStore`] holds the endpoints and the deliveries: `DATA_DIR/webhooks.db` (SQLite,
//!   WAL, `synchronous=FULL`) by default, or the shared Postgres. The bus hands every event to
//!   [`run_outbox`] without loss; it writes a delivery per matching endpoint, many events per
//!   transaction.
//! * One worker per endpoint claims its due deliveries (under a lease, so that gateways sharing a
//!   store never post the same one at once) and posts them in order, one at a time, with a
//!   timeout (`WEBHOOK_TIMEOUT_MS`, 10 s); a slow or dead endpoint holds only its own queue.
//!   The lease is short and renewed while the worker posts, so the claim of a gateway that dies
//!   ends within seconds; in a fleet ([`Sharing::Fleet`]) every gateway runs a worker for every
//!   endpoint, and an idle one looks in the shared outbox every [`FLEET_POLL`], so another
//!   gateway resumes a dead one's deliveries where it stopped, under the same webhook-ids.
//! * A failed post is retried with exponential backoff and full jitter until
//!   `WEBHOOK_MAX_RETRY_SECS` (24 h) after the event; then it is a dead letter (`failed`), which
//!   the API lists and replays. A `410 Gone` disables the endpoint.
//! * An endpoint holds at most `WEBHOOK_OUTBOX_MAX` pending deliveries; events beyond are
//!   recorded as failed at once (`outbox full`), so they can still be replayed.
//! * Settled deliveries (delivered, or dead letters) are deleted `WEBHOOK_RETENTION_DAYS` (30)
//!   after they settled, at start-up and every hour, a thousand per statement.
//! * An endpoint belongs to the token that registered it. The admin's post anywhere; other
//!   tokens' post only to public addresses, checked at registration and at every connection
//!   (`destination.rs`).
//! * An endpoint has a format (`format.rs`): our events as they are, or a sibling service's
//!   callbacks (`seed000`, `seed002`) on paths below its URL, for a backend written for that
//!   service. `BACKEND_URL` and `BACKEND_BASE_URL` register one, as the seeds' own variables did.

mod destination;
mod format;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rand::RngExt as _;
use tokio::sync::{Notify, mpsc};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub use crate::domain::{
    Delivery, Endpoint, EnvEndpoint, Owner, SecretError, Viewer, WebhookDeliveryStatus, WebhookFormat, WebhookSecret,
    WebhookSettings, is_http_url,
};
pub use crate::storage::StorageError as StoreError;
pub use destination::{Destinations, NotAllowed, is_public};
pub use format::SessionFacts;

use crate::domain::{DeliveryOutcome, NewDelivery};
use crate::events::{EventKind, GatewayEvent};
use crate::shutdown::Shutdown;
use crate::storage::WebhookStore;
use crate::storage::webhooks::{BACKEND_BASE_URL_ENDPOINT, BACKEND_URL_ENDPOINT, ENV_ENDPOINT, PRUNE_BATCH};

/// What `POST /api/webhooks` registers.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    /// `None`: every event.
    pub events: Option<Vec<EventKind>>,
    /// `None`: every session.
    pub sessions: Option<Vec<String>>,
    /// Generated when absent.
    pub secret: Option<WebhookSecret>,
    pub owner: Owner,
    pub format: WebhookFormat,
}

/// Whether other gateways share this gateway's webhook store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Alone on its store (SQLite in `DATA_DIR`): only its own workers claim, and its own writes
    /// wake them.
    Alone,
    /// One gateway of a fleet on Postgres: an endpoint claim lasts `lease` unless renewed (the
    /// fleet's `LEASE_TTL_SECS`, so a dead gateway's endpoints move as fast as its numbers), and
    /// idle workers look in the shared outbox every [`FLEET_POLL`].
    Fleet { lease: Duration },
}

impl Sharing {
    /// How long a claim lasts unless renewed.
    fn lease(self) -> Duration {
        match self {
            Sharing::Alone => LEASE,
            Sharing::Fleet { lease } => lease,
        }
    }

    /// How often an idle worker looks again without being woken: only in a fleet, where other
    /// gateways write deliveries and end claims without waking this one.
    fn poll(self) -> Option<Duration> {
        match self {
            Sharing::Alone => None,
            Sharing::Fleet { .. } => Some(FLEET_POLL),
        }
    }
}

/// How long a claim on an endpoint lasts unless renewed, alone on a store. Short because the
/// worker renews it every third while it posts: the claim is held as long as the posts take, and
/// one left by a worker that died (or was paused) ends within seconds instead of blocking the
/// endpoint for a batch's worth of timeouts.
const LEASE: Duration = Duration::from_secs(15);

/// How often, in a fleet, an idle worker looks in the shared outbox (and the gateway at the
/// endpoints): another gateway may have written deliveries for the endpoint and died before
/// posting them, or ended its claim, and neither wakes this gateway.
pub const FLEET_POLL: Duration = Duration::from_secs(2);

/// How often settled deliveries past `WEBHOOK_RETENTION_DAYS` are deleted (the first round at
/// start-up).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The webhooks: cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn WebhookStore>,
    settings: WebhookSettings,
    sharing: Sharing,
    /// Whose `message.status` events we may want.
    journal: crate::journal::Journal,
    /// Held while an enabled endpoint wants `message.status`: the journal then records them.
    status_interest: Mutex<Option<crate::journal::StatusEventsGuard>>,
    /// A worker per enabled endpoint, with what wakes it and what stops it.
    workers: Mutex<HashMap<String, WorkerHandle>>,
    /// Whether workers may be started (set by [`Webhooks::start`]).
    shutdown: Mutex<Option<Shutdown>>,
    /// What a seed's callback says about a session beyond its event (see
    /// [`Webhooks::set_session_facts`]).
    facts: OnceLock<FactsLookup>,
}

/// What wakes an endpoint's worker, what stops it, and when it started.
struct WorkerHandle {
    notify: Arc<Notify>,
    cancel: CancellationToken,
    started: std::time::Instant,
}

/// Looks up [`SessionFacts`] by session id.
pub type FactsLookup = Arc<dyn Fn(&str) -> SessionFacts + Send + Sync>;

impl Webhooks {
    /// The webhooks on `store` (`DATA_DIR/webhooks.db` by default, or shared by a fleet as
    /// `sharing` says), with the environment's endpoints brought up to date.
    pub async fn open(
        store: Arc<dyn WebhookStore>,
        settings: WebhookSettings,
        sharing: Sharing,
        journal: crate::journal::Journal,
    ) -> Result<Webhooks, StoreError> {
        store.sync_env_endpoint(ENV_ENDPOINT, settings.env_endpoint.as_ref()).await?;
        store.sync_env_endpoint(BACKEND_URL_ENDPOINT, settings.backend_url.as_ref()).await?;
        store.sync_env_endpoint(BACKEND_BASE_URL_ENDPOINT, settings.backend_base_url.as_ref()).await?;
        let webhooks = Webhooks {
            inner: Arc::new(Inner {
                store,
                settings,
                sharing,
                journal,
                status_interest: Mutex::new(None),
                workers: Mutex::new(HashMap::new()),
                shutdown: Mutex::new(None),
                facts: OnceLock::new(),
            }),
        };
        webhooks.refresh_status_interest().await;
        Ok(webhooks)
    }

    /// Where the seeds' callbacks learn a session's number and credentials folder (set once,
    /// before the outbox runs; until then they go without).
    pub fn set_session_facts(&self, lookup: FactsLookup) {
        let _ = self.inner.facts.set(lookup);
    }

    /// The facts of `session`, for rendering.
    fn facts(&self) -> impl Fn(&str) -> SessionFacts + use<> {
        let lookup = self.inner.facts.get().cloned();
        move |session: &str| lookup.as_ref().map(|f| f(session)).unwrap_or_default()
    }

    /// Asks the journal for `message.status` events while an enabled endpoint wants them.
    async fn refresh_status_interest(&self) {
        let wanted = match self.inner.store.endpoints(&Viewer::Admin).await {
            Ok(endpoints) => wants_status(&endpoints),
            // Unknown: keep recording rather than lose events.
            Err(_) => true,
        };
        self.set_status_interest(wanted);
    }

    fn set_status_interest(&self, wanted: bool) {
        let mut interest = self.inner.status_interest.lock().unwrap_or_else(PoisonError::into_inner);
        match (wanted, interest.is_some()) {
            (true, false) => *interest = Some(self.inner.journal.want_status_events()),
            (false, true) => *interest = None,
            _ => {}
        }
    }

    /// Starts a worker for every enabled endpoint; later endpoints get theirs when created (in a
    /// fleet, also when another gateway creates them: see [`watch_endpoints`]).
    pub async fn start(&self, shutdown: &Shutdown) -> Result<(), StoreError> {
        *self.inner.shutdown.lock().unwrap_or_else(PoisonError::into_inner) = Some(shutdown.clone());
        let listed_at = std::time::Instant::now();
        let endpoints = self.inner.store.endpoints(&Viewer::Admin).await?;
        self.adopt(&endpoints, listed_at);
        if matches!(self.inner.sharing, Sharing::Fleet { .. }) {
            shutdown.spawn(watch_endpoints(self.clone(), shutdown.token()));
        }
        if let Some(retention) = self.inner.settings.retention {
            shutdown.spawn(prune_periodically(self.clone(), retention, shutdown.token()));
        }
        Ok(())
    }

    /// Deletes the deliveries settled more than `retention` ago, [`PRUNE_BATCH`] at a time,
    /// until none is left or `cancel` fires; returns how many.
    async fn prune(&self, retention: Duration, cancel: &CancellationToken) -> Result<u64, StoreError> {
        let before = crate::domain::now_ms().saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
        let mut deleted = 0;
        while !cancel.is_cancelled() {
            let round = self.inner.store.prune(before, PRUNE_BATCH).await?;
            deleted += round;
            if round < PRUNE_BATCH as u64 {
                break;
            }
        }
        Ok(deleted)
    }

    /// Runs a worker for each enabled endpoint of `endpoints` (listed at `listed_at`) and stops
    /// those of endpoints no longer there (not those started since: their endpoints are newer
    /// than the list).
    fn adopt(&self, endpoints: &[Endpoint], listed_at: std::time::Instant) {
        for endpoint in endpoints.iter().filter(|e| e.disabled.is_none()) {
            self.spawn_worker(&endpoint.id);
        }
        let gone: Vec<String> = {
            let workers = self.inner.workers.lock().unwrap_or_else(PoisonError::into_inner);
            workers
                .iter()
                .filter(|(id, worker)| worker.started < listed_at && !endpoints.iter().any(|e| &e.id == *id))
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in gone {
            self.stop_worker(&id);
        }
    }

    /// Starts the worker of endpoint `id`, or wakes it if it runs: one per endpoint.
    fn spawn_worker(&self, id: &str) {
        let Some(shutdown) = self.inner.shutdown.lock().unwrap_or_else(PoisonError::into_inner).clone() else {
            return;
        };
        let mut workers = self.inner.workers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(worker) = workers.get(id) {
            worker.notify.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        let cancel = shutdown.token().child_token();
        let started = std::time::Instant::now();
        workers.insert(id.to_owned(), WorkerHandle { notify: Arc::clone(&notify), cancel: cancel.clone(), started });
        drop(workers);
        shutdown.spawn(deliver(self.clone(), id.to_owned(), notify, cancel));
    }

    fn wake(&self, id: &str) {
        if let Some(worker) = self.inner.workers.lock().unwrap_or_else(PoisonError::into_inner).get(id) {
            worker.notify.notify_one();
        }
    }

    fn stop_worker(&self, id: &str) {
        if let Some(worker) = self.inner.workers.lock().unwrap_or_else(PoisonError::into_inner).remove(id) {
            worker.cancel.cancel();
        }
    }

    /// Where the endpoints of `owner` may post.
    pub fn destinations(&self, owner: &Owner) -> Destinations {
        destinations(&self.inner.settings, owner)
    }

    /// `Ok` if an endpoint of `owner` may post to `url`: for other tokens than the admin, its
    /// host resolves (within `WEBHOOK_TIMEOUT_MS`) to public addresses only.
    pub async fn check_destination(&self, owner: &Owner, url: &str) -> Result<(), NotAllowed> {
        destination::check_url(self.destinations(owner), url, self.inner.settings.timeout).await
    }

    /// Adds an endpoint (a secret is generated when none is given) and starts its worker.
    pub async fn create(&self, new: NewEndpoint) -> Result<Endpoint, StoreError> {
        let NewEndpoint { url, events, sessions, secret, owner, format } = new;
        let endpoint = Endpoint {
            id: Endpoint::new_id(),
            url,
            secret: secret.unwrap_or_else(WebhookSecret::generate),
            events,
            sessions,
            created_at: crate::domain::now_ms(),
            disabled: None,
            owner,
            format,
        };
        self.inner.store.create(&endpoint).await?;
        self.refresh_status_interest().await;
        self.spawn_worker(&endpoint.id);
        Ok(endpoint)
    }

    /// The endpoints `viewer` sees, each with its count of pending deliveries.
    pub async fn list(&self, viewer: &Viewer) -> Result<Vec<(Endpoint, u64)>, StoreError> {
        self.inner.store.endpoints_with_pending(viewer).await
    }

    /// Deletes an endpoint and its deliveries; `false` if unknown or not `viewer`'s.
    pub async fn delete(&self, id: &str, viewer: &Viewer) -> Result<bool, StoreError> {
        let deleted = self.inner.store.delete(id, viewer).await?;
        // Stopped only once it is gone: a refused delete leaves its owner's worker alone.
        if deleted {
            self.stop_worker(id);
            self.refresh_status_interest().await;
        }
        Ok(deleted)
    }

    /// An endpoint's deliveries, newest first; `None` if unknown or not `viewer`'s.
    pub async fn deliveries(
        &self,
        endpoint: &str,
        viewer: &Viewer,
        status: Option<WebhookDeliveryStatus>,
        limit: usize,
    ) -> Result<Option<Vec<Delivery>>, StoreError> {
        self.inner.store.deliveries(endpoint, viewer, status, limit).await
    }

    /// Writes `events` to the outbox of every endpoint that wants them, now (one transaction),
    /// and wakes those endpoints. An event already there (same id) is not written twice.
    pub async fn enqueue(&self, events: Vec<Arc<GatewayEvent>>) -> Result<(), StoreError> {
        let endpoints = self.inner.store.endpoints(&Viewer::Admin).await?;
        let deliveries = render(&endpoints, &events, &self.facts());
        let written =
            self.inner.store.enqueue(&deliveries, self.inner.settings.outbox_max, crate::domain::now_ms()).await?;
        for enqueued in written {
            if enqueued.outbox_full > 0 {
                metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => "outbox_full")
                    .increment(enqueued.outbox_full);
            }
            metrics::gauge!(crate::metrics::WEBHOOK_OUTBOX, "endpoint" => enqueued.endpoint_id.clone())
                .set(enqueued.pending as f64);
            self.wake(&enqueued.endpoint_id);
        }
        Ok(())
    }

    /// Makes failed deliveries of `endpoint` pending again (one, or all when `delivery` is
    /// `None`); returns how many, `None` if the endpoint is unknown or not `viewer`'s. A disabled
    /// endpoint is enabled again: replaying is how an operator says it is back.
    pub async fn retry(
        &self,
        endpoint: &str,
        viewer: &Viewer,
        delivery: Option<i64>,
    ) -> Result<Option<u64>, StoreError> {
        let retried = self.inner.store.retry(endpoint, viewer, delivery, crate::domain::now_ms()).await?;
        if retried.is_some() {
            self.refresh_status_interest().await;
            self.spawn_worker(endpoint);
        }
        Ok(retried)
    }
}

/// Whether an enabled endpoint of `endpoints` wants `message.status` events.
fn wants_status(endpoints: &[Endpoint]) -> bool {
    endpoints.iter().any(|e| e.wants_kind(EventKind::MessageStatus))
}

/// In a fleet, every [`FLEET_POLL`] until cancelled: runs a worker for each endpoint another
/// gateway registered or enabled again (so that its deliveries go out when that gateway dies),
/// stops those of endpoints deleted elsewhere, and keeps the journal's `message.status` events
/// while an endpoint wants them.
async fn watch_endpoints(webhooks: Webhooks, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(FLEET_POLL) => {}
        }
        let listed_at = std::time::Instant::now();
        match webhooks.inner.store.endpoints(&Viewer::Admin).await {
            Ok(endpoints) => {
                webhooks.adopt(&endpoints, listed_at);
                webhooks.set_status_interest(wants_status(&endpoints));
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the webhook endpoints; looking again later"),
        }
    }
}

/// A delivery of each event for each endpoint that wants it, rendered in the endpoint's format
/// (`facts` completes a seed's callback; a seed's format has no callback for some events of a
/// kind it posts).
fn render(
    endpoints: &[Endpoint],
    events: &[Arc<GatewayEvent>],
    facts: &dyn Fn(&str) -> SessionFacts,
) -> Vec<NewDelivery> {
    let mut out = Vec::new();
    for endpoint in endpoints {
        for event in events.iter().filter(|e| endpoint.wants(e.event, &e.session_id)) {
            let Some(rendered) = endpoint.format.render(event, facts) else { continue };
            out.push(NewDelivery {
                endpoint_id: endpoint.id.clone(),
                event_id: event.id.clone(),
                event: event.event,
                session_id: event.session_id.clone(),
                body: rendered.body,
                path: rendered.path.to_owned(),
            });
        }
    }
    out
}

/// Deletes settled deliveries older than `retention` every [`PRUNE_EVERY`], until `cancel`. In a
/// fleet every gateway does: the deletes are idempotent, and whichever comes first finds them.
async fn prune_periodically(webhooks: Webhooks, retention: Duration, cancel: CancellationToken) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        match webhooks.prune(retention, &cancel).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "settled webhook deliveries past their retention deleted"),
            Err(e) => tracing::warn!(error = %e, "webhook delivery prune failed"),
        }
    }
}

/// Writes a delivery per matching endpoint for every event of the bus, many per transaction,
/// until shutdown (then what is already buffered is written too).
pub async fn run_outbox(
    webhooks: Webhooks,
    mut events: mpsc::UnboundedReceiver<crate::events::ToOutbox>,
    shutdown: Shutdown,
) {
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => match events.try_recv() {
                Ok(event) => event,
                Err(_) => return,
            },
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let mut batch = vec![first];
        while let Ok(more) = events.try_recv() {
            batch.push(more);
            if batch.len() >= 512 {
                break;
            }
        }
        let (events_of, waiting): (Vec<_>, Vec<_>) = batch.into_iter().map(|t| (t.event, t.written)).unzip();
        let written = match webhooks.enqueue(events_of).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "webhook outbox write failed; events not queued");
                false
            }
        };
        for waiter in waiting.into_iter().flatten() {
            let _ = waiter.send(written);
        }
    }
}

fn destinations(settings: &WebhookSettings, owner: &Owner) -> Destinations {
    if owner.admin || settings.allow_private { Destinations::Any } else { Destinations::PublicOnly }
}

/// The HTTP client of one endpoint; its connections are kept alive between deliveries. No
/// redirects: a receiver cannot send a post on somewhere else.
fn http_client(settings: &WebhookSettings, destinations: Destinations) -> ureq::Agent {
    let config = ureq::config::Config::builder()
        .http_status_as_error(false)
        .timeout_global(Some(settings.timeout))
        .max_redirects(0);
    match destinations {
        Destinations::Any => ureq::Agent::new_with_config(config.build()),
        // Direct connections only: through an `HTTP(S)_PROXY` the proxy would resolve the host,
        // and the check would see the proxy's address instead of the receiver's.
        Destinations::PublicOnly => ureq::Agent::with_parts(
            config.proxy(None).build(),
            ureq::unversioned::transport::DefaultConnector::new(),
            destination::CheckedResolver::new(ureq::unversioned::resolver::DefaultResolver::default()),
        ),
    }
}

/// What a post got.
enum Posted {
    Delivered,
    Gone,
    Failed(String),
}

/// Posts one endpoint's deliveries, in order, until cancelled.
async fn deliver(webhooks: Webhooks, endpoint_id: String, notify: Arc<Notify>, cancel: CancellationToken) {
    let store = webhooks.inner.store.clone();
    let settings = webhooks.inner.settings.clone();
    let (lease, poll) = (webhooks.inner.sharing.lease(), webhooks.inner.sharing.poll());
    // Made with the first batch, once the endpoint's owner is known; it never changes.
    let mut client: Option<ureq::Agent> = None;
    loop {
        let claim = match store.claim(&endpoint_id, BATCH, crate::domain::now_ms(), lease).await {
            Ok(Some(claim)) => claim,
            // Unknown or disabled: a replay wakes it (in a fleet, one on another gateway too).
            Ok(None) => {
                if idle(&cancel, &notify, poll, None).await {
                    continue;
                } else {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(endpoint = %endpoint_id, error = %e, "webhook outbox read failed");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                }
            }
        };
        let (endpoint, batch) = (claim.endpoint, claim.deliveries);
        let Some(until) = claim.until else {
            // Nothing pending.
            if idle(&cancel, &notify, poll, None).await { continue } else { return }
        };
        if batch.is_empty() {
            // The head is waiting for its retry, and everything behind it (order); or another
            // claimer holds the endpoint until then, unless it ends its claim sooner.
            let wait = Duration::from_millis(until.saturating_sub(crate::domain::now_ms()));
            if idle(&cancel, &notify, poll, Some(wait)).await { continue } else { return }
        }
        let agent = client.get_or_insert_with(|| http_client(&settings, destinations(&settings, &endpoint.owner)));
        let worker = Worker { store: &*store, settings: &settings, endpoint_id: &endpoint_id, lease, cancel: &cancel };
        let posted = post_batch(&worker, until, agent, &endpoint, &batch).await;
        let gone = matches!(posted.stopped_at, Some((_, DeliveryOutcome::Gone)));
        // Until the outcomes are recorded the lease holds the endpoint: try again rather than
        // wait for the lease to end and post them all again.
        loop {
            let now = crate::domain::now_ms();
            match store.settle(&endpoint_id, posted.until, &posted.delivered, posted.stopped_at.clone(), now).await {
                Ok(pending) => {
                    metrics::gauge!(crate::metrics::WEBHOOK_OUTBOX, "endpoint" => endpoint_id.clone())
                        .set(pending as f64);
                    break;
                }
                Err(e) => {
                    tracing::error!(endpoint = %endpoint_id, error = %e, "cannot record webhook delivery outcomes");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        if gone {
            webhooks.stop_worker(&endpoint_id);
            webhooks.refresh_status_interest().await;
            return;
        }
        if cancel.is_cancelled() {
            return;
        }
    }
}

/// Waits until `notify` wakes the worker, `wait` passes, or (in a fleet) the next `poll`:
/// `false` when cancelled instead.
async fn idle(cancel: &CancellationToken, notify: &Notify, poll: Option<Duration>, wait: Option<Duration>) -> bool {
    let wait = match (wait, poll) {
        (Some(wait), Some(poll)) => Some(wait.min(poll)),
        (wait, poll) => wait.or(poll),
    };
    tokio::select! {
        () = cancel.cancelled() => false,
        () = notify.notified() => true,
        () = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        } => true,
    }
}

/// What posting a claimed batch came to, for [`WebhookStore::settle`].
struct BatchOutcome {
    /// The lease as last renewed.
    until: u64,
    delivered: Vec<i64>,
    stopped_at: Option<(i64, DeliveryOutcome)>,
}

/// What an endpoint's worker posts with.
struct Worker<'a> {
    store: &'a dyn WebhookStore,
    settings: &'a WebhookSettings,
    endpoint_id: &'a str,
    /// How long a claim lasts unless renewed.
    lease: Duration,
    cancel: &'a CancellationToken,
}

/// Posts `batch` one by one, in order, renewing the claim's lease (ending at `until`) every
/// third of it while the posts take. Stops at the first failure, when cancelled, and when the
/// lease is lost (taken over, or not renewed in time): what is left is posted again by whoever
/// claims next, under the same webhook-ids (at least once).
async fn post_batch(
    worker: &Worker<'_>,
    mut until: u64,
    agent: &ureq::Agent,
    endpoint: &Endpoint,
    batch: &[Delivery],
) -> BatchOutcome {
    let Worker { store, settings, endpoint_id, lease, cancel } = *worker;
    let every = lease / 3;
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut delivered = Vec::new();
    'batch: for delivery in batch {
        if crate::domain::now_ms() >= until {
            // Not renewed in time (the store unreachable, the process paused): another claimer
            // may hold the endpoint now.
            tracing::warn!(endpoint = %endpoint_id, "webhook claim ran out; leaving the rest of the batch");
            break;
        }
        let started = std::time::Instant::now();
        let post = post(agent, endpoint, delivery);
        tokio::pin!(post);
        let posted = loop {
            tokio::select! {
                () = cancel.cancelled() => break 'batch,
                posted = &mut post => break posted,
                _ = renew.tick() => match store.extend(endpoint_id, until, lease, crate::domain::now_ms()).await {
                    Ok(Some(extended)) => until = extended,
                    Ok(None) => {
                        tracing::warn!(endpoint = %endpoint_id, "webhook claim taken over; leaving the rest of the batch");
                        break 'batch;
                    }
                    // Posting goes on while the lease lasts; the next tick tries again.
                    Err(e) => tracing::warn!(endpoint = %endpoint_id, error = %e, "cannot renew the webhook claim"),
                },
            }
        };
        metrics::histogram!(crate::metrics::WEBHOOK_SECONDS).record(started.elapsed().as_secs_f64());
        match posted {
            Posted::Delivered => {
                metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => "delivered").increment(1);
                delivered.push(delivery.id);
            }
            other => {
                let stopped_at = Some((delivery.id, failure(other, delivery, settings, endpoint_id)));
                return BatchOutcome { until, delivered, stopped_at };
            }
        }
    }
    BatchOutcome { until, delivered, stopped_at: None }
}

/// Deliveries posted between two writes of their outcomes.
const BATCH: usize = 64;

/// What a failed post does to its delivery: retried later, dead, or its endpoint gone.
fn failure(posted: Posted, delivery: &Delivery, settings: &WebhookSettings, endpoint_id: &str) -> DeliveryOutcome {
    let error = match posted {
        Posted::Gone => {
            metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => "gone").increment(1);
            tracing::warn!(endpoint = %endpoint_id, "the endpoint answered 410 Gone: disabled");
            return DeliveryOutcome::Gone;
        }
        Posted::Failed(error) => error,
        Posted::Delivered => String::new(),
    };
    let now = crate::domain::now_ms();
    let age = Duration::from_millis(now.saturating_sub(delivery.created_at));
    if age >= settings.max_retry_age {
        metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => "dead").increment(1);
        return DeliveryOutcome::Dead(error);
    }
    metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => "retry").increment(1);
    let attempts = delivery.attempts + 1;
    let ceiling = settings.retry_base.saturating_mul(1 << attempts.min(20)).min(Duration::from_secs(3600));
    let delay = rand::rng().random_range(0..=u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX));
    DeliveryOutcome::Retry { error, next_attempt_at: now + delay }
}

/// One signed POST of a delivery.
async fn post(agent: &ureq::Agent, endpoint: &Endpoint, delivery: &Delivery) -> Posted {
    let timestamp = crate::domain::now_ms() / 1000;
    let signature = endpoint.secret.sign(&delivery.event_id, timestamp, delivery.body.as_bytes());
    let url = format::join(&endpoint.url, &delivery.path);
    let (id, body) = (delivery.event_id.clone(), delivery.body.clone());
    let agent = agent.clone();
    let sent = tokio::task::spawn_blocking(move || {
        agent
            .post(&url)
            .header("content-type", "application/json")
            .header("user-agent", "whatsapp-gateway-webhooks")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .send(body.as_bytes())
            .map(|response| response.status().as_u16())
    })
    .await;
    match sent {
        Ok(Ok(status)) if (200..300).contains(&status) => Posted::Delivered,
        Ok(Ok(410)) => Posted::Gone,
        Ok(Ok(status)) => Posted::Failed(format!("the endpoint answered {status}")),
        // The refusal alone: which address the name resolved to is not the token's to learn.
        Ok(Err(e)) if destination::is_refusal(&e) => Posted::Failed(NotAllowed.to_string()),
        Ok(Err(e)) => Posted::Failed(e.to_string()),
        Err(_) => Posted::Failed("the request task failed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_format_writes_only_its_callbacks_with_their_paths() {
        let seed = Endpoint {
            id: Endpoint::new_id(),
            url: "http://b:3000".into(),
            secret: WebhookSecret::generate(),
            events: None,
            sessions: None,
            created_at: 1,
            disabled: None,
            owner: Owner::admin(),
            format: WebhookFormat::Seed000,
        };
        let event = |kind: EventKind, data: serde_json::Value| {
            Arc::new(GatewayEvent {
                id: crate::events::new_event_id(),
                event: kind,
                session_id: "a".into(),
                timestamp: 1,
                data,
            })
        };
        let events = [
            event(EventKind::MessageStatus, serde_json::json!({"messageId":"x","status":"sent"})),
            event(EventKind::SessionStatus, serde_json::json!({"status":"qr_ready","reason":null})),
            event(EventKind::SessionStatus, serde_json::json!({"status":"logged_out","reason":"x"})),
        ];
        let endpoints = [seed.clone()];
        let written = render(&endpoints, &events, &|_| SessionFacts::default());
        assert_eq!(written.len(), 1, "only the log-out has a seed 000 callback");
        assert_eq!(
            (written[0].endpoint_id.as_str(), written[0].path.as_str(), written[0].event),
            (seed.id.as_str(), "/whatsapp-qr/webhook", EventKind::SessionStatus)
        );
        assert_eq!(written[0].event_id, events[2].id);
        assert!(render(&endpoints, &events[..2], &|_| SessionFacts::default()).is_empty(), "nothing to wake");
    }
}
