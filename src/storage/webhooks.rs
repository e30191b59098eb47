//! The webhook outbox's store: the endpoints, and every delivery of an event to one of them
//! until it is delivered or a dead letter.

use std::time::Duration;

use async_trait::async_trait;

use super::StorageError;
use crate::domain::{
    Delivery, DeliveryOutcome, Endpoint, Enqueued, EnvEndpoint, EventKind, NewDelivery, Owner, Viewer,
    WebhookDeliveryStatus, WebhookFormat, WebhookSecret,
};

/// The id of the endpoint from `WEBHOOK_URL`.
pub const ENV_ENDPOINT: &str = "env";
/// The id of the endpoint from `BACKEND_URL` (a seed's callbacks).
pub const BACKEND_URL_ENDPOINT: &str = "env_backend_url";
/// The id of the endpoint from `BACKEND_BASE_URL` (seed 002's callbacks).
pub const BACKEND_BASE_URL_ENDPOINT: &str = "env_backend_base_url";

/// What a claimer may post now for one endpoint.
#[derive(Debug, Clone)]
pub struct Claim {
    pub endpoint: Endpoint,
    /// The endpoint's oldest pending deliveries that are due, in order; empty when the oldest is
    /// waiting for its retry or another claimer holds the endpoint.
    pub deliveries: Vec<Delivery>,
    /// When there are deliveries: the lease's end (unix ms), handed back to
    /// [`WebhookStore::settle`]. Otherwise: when the endpoint may next have something to claim
    /// (its oldest pending delivery's next attempt, or the end of another claimer's lease), `None`
    /// when nothing is pending.
    pub until: Option<u64>,
}

/// The endpoints and their outboxes. An endpoint's deliveries are posted in the order they were
/// written (and so in order per session): [`claim`](WebhookStore::claim) hands out the head of
/// its queue under a lease, to one claimer at a time, even across gateways sharing a store.
#[async_trait]
pub trait WebhookStore: Send + Sync + std::fmt::Debug + 'static {
    /// Creates, updates or removes the endpoint `id` of an environment variable (`WEBHOOK_URL`,
    /// `BACKEND_URL`, `BACKEND_BASE_URL`): the same id at every start, so a restart changes
    /// nothing but what the variable changed. Without a secret the one generated the first time
    /// stays. Updating enables it again.
    async fn sync_env_endpoint(&self, id: &str, env: Option<&EnvEndpoint>) -> Result<(), StorageError>;

    /// Stores a new endpoint.
    async fn create(&self, endpoint: &Endpoint) -> Result<(), StorageError>;

    /// The endpoints `viewer` sees, oldest first.
    async fn endpoints(&self, viewer: &Viewer) -> Result<Vec<Endpoint>, StorageError>;

    /// The endpoint `id`, if it exists.
    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, StorageError>;

    /// The endpoints `viewer` sees, oldest first, each with its count of pending deliveries.
    async fn endpoints_with_pending(&self, viewer: &Viewer) -> Result<Vec<(Endpoint, u64)>, StorageError>;

    /// Deletes the endpoint `id` and its deliveries if `viewer` sees it; `false` otherwise.
    async fn delete(&self, id: &str, viewer: &Viewer) -> Result<bool, StorageError>;

    /// Writes `deliveries` in one transaction, each once per (endpoint, event id), due at `now`.
    /// Beyond `max` pending for its endpoint, a delivery is written as failed (`outbox full`), so
    /// that it can still be replayed. Returns, per endpoint written to (in order of first
    /// appearance), its pending count and how many went to the dead letters.
    async fn enqueue(&self, deliveries: &[NewDelivery], max: u64, now: u64) -> Result<Vec<Enqueued>, StorageError>;

    /// Leases the oldest pending deliveries of `endpoint_id` that are due at `now` (at most
    /// `limit`, stopping at the first that is not) until `now + lease`. While a lease is live no
    /// other claim gets anything of the endpoint. `None` when the endpoint is unknown or
    /// disabled.
    async fn claim(
        &self,
        endpoint_id: &str,
        limit: usize,
        now: u64,
        lease: Duration,
    ) -> Result<Option<Claim>, StorageError>;

    /// Extends the lease `until` of a claim on `endpoint_id` to `now + lease` (never shortened),
    /// while its claimer still posts the batch. Only the claim's own lease is extended: `None`
    /// when it was ended or another claimer took the endpoint since (the batch is no longer this
    /// claimer's to post). A lease past its end that nobody took over is still the claim's.
    async fn extend(
        &self,
        endpoint_id: &str,
        until: u64,
        lease: Duration,
        now: u64,
    ) -> Result<Option<u64>, StorageError>;

    /// Records a claim's outcomes in one transaction: `delivered` (posted with a 2xx), then
    /// what stopped the batch, and ends the lease `until` (a lease taken over since is left
    /// alone). Deliveries of the claim not mentioned stay pending. A claim settled after its
    /// lease was taken over still records what it delivered (true, and one post fewer for the
    /// new claimer); what stopped it changes a delivery only while it is pending. Returns the
    /// endpoint's pending count.
    async fn settle(
        &self,
        endpoint_id: &str,
        until: u64,
        delivered: &[i64],
        stopped_at: Option<(i64, DeliveryOutcome)>,
        now: u64,
    ) -> Result<u64, StorageError>;

    /// The deliveries of `endpoint_id` (of one `status` if given), newest first, at most `limit`;
    /// `None` if `viewer` does not see the endpoint.
    async fn deliveries(
        &self,
        endpoint_id: &str,
        viewer: &Viewer,
        status: Option<WebhookDeliveryStatus>,
        limit: usize,
    ) -> Result<Option<Vec<Delivery>>, StorageError>;

    /// Deletes at most `limit` settled deliveries (delivered, or failed for good) last changed
    /// before `before` (unix ms); pending ones are never touched. Returns how many.
    /// The caller repeats while it gets `limit`, so that no one statement holds the table long.
    async fn prune(&self, before: u64, limit: usize) -> Result<u64, StorageError>;

    /// Makes failed deliveries of `endpoint_id` (one, or all when `delivery` is `None`) pending
    /// again, due at `now` and counted from `now` for their retry age, and enables the endpoint;
    /// returns how many, `None` if `viewer` does not see it.
    async fn retry(
        &self,
        endpoint_id: &str,
        viewer: &Viewer,
        delivery: Option<i64>,
        now: u64,
    ) -> Result<Option<u64>, StorageError>;
}

/// Settled deliveries deleted per [`WebhookStore::prune`] statement: each round is short, so
/// the outbox's writers never wait long behind it.
pub(crate) const PRUNE_BATCH: usize = 1_000;

/// A lease's end as stored: `now + lease` in unix ms.
pub(crate) fn lease_end(now: u64, lease: Duration) -> u64 {
    now.saturating_add(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
}

/// An endpoint's columns as both backends store them: the secret and the format as text, the
/// event and session filters as JSON lists.
pub(crate) struct EndpointColumns {
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) secret: String,
    pub(crate) events: Option<String>,
    pub(crate) sessions: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) disabled: Option<String>,
    pub(crate) owner_name: String,
    pub(crate) owner_admin: bool,
    pub(crate) format: String,
}

impl EndpointColumns {
    /// The endpoint, or `None` for a row whose secret no longer parses or whose format this
    /// build does not know (a newer build's is not posted in the wrong one): never written by us.
    pub(crate) fn decode(self) -> Option<Endpoint> {
        let secret = WebhookSecret::parse(&self.secret).ok()?;
        let format = WebhookFormat::parse(&self.format)?;
        Some(Endpoint {
            id: self.id,
            url: self.url,
            secret,
            events: self
                .events
                .and_then(|e| serde_json::from_str::<Vec<String>>(&e).ok())
                .map(|names| names.iter().filter_map(|n| EventKind::parse(n)).collect()),
            sessions: self.sessions.and_then(|s| serde_json::from_str(&s).ok()),
            created_at: u64::try_from(self.created_at).unwrap_or(0),
            disabled: self.disabled,
            owner: Owner { name: self.owner_name, admin: self.owner_admin },
            format,
        })
    }
}
