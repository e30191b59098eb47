//! Leases: which gateway of a fleet runs each number, fenced by an epoch that only goes up. Only
//! the shared store (Postgres) has them; a gateway on the embedded files is a fleet of one and
//! runs every session without a lease.
//!
//! Every time is the database's: expiry is `now() + ttl` by its clock, so gateways whose clocks
//! disagree still agree on who holds what. A holder never compares `expires_at_ms` with its own
//! clock; it keeps a deadline of its own, measured from when it *sent* the claim or renewal that
//! succeeded (`sent + ttl`, which is never later than the database's expiry), and stops the
//! session's client before that deadline unless a later renewal succeeded.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::StorageError;
use crate::domain::{Epoch, GatewayId, Lease, SessionId};

/// The leases of every session and the heartbeats of the gateways of a fleet.
#[async_trait]
pub trait LeaseStore: Send + Sync + std::fmt::Debug + 'static {
    /// Takes `session` for `gateway` for `ttl` when nobody holds it, its lease has run out, or it
    /// was released; the epoch goes up by one (the first claim of a session is epoch 1). `None`
    /// when another gateway holds a live lease. A gateway claiming a lease it still holds gets a
    /// new epoch too: whatever it ran under the old one is over.
    async fn claim(
        &self,
        session: &SessionId,
        gateway: &GatewayId,
        ttl: Duration,
    ) -> Result<Option<Lease>, StorageError>;

    /// Extends `lease` to `now() + ttl` if it is still held, by its owner, at its epoch, and has
    /// not run out. `None` when it was lost (run out, taken over, released): the holder must stop
    /// at once and must not claim it back without a new epoch.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, StorageError>;

    /// Gives `lease` up (its owner, at its epoch), so that another gateway can claim it at once;
    /// `false` when it was no longer held. Wakes the gateways that wait for free sessions.
    async fn release(&self, lease: &Lease) -> Result<bool, StorageError>;

    /// Whether a write fenced by (`session`, `owner`, `epoch`) may go ahead now: the lease is live
    /// and is exactly that one.
    async fn is_current(&self, session: &SessionId, owner: &GatewayId, epoch: Epoch) -> Result<bool, StorageError>;

    /// The live lease of `session`, if any.
    async fn holder(&self, session: &SessionId) -> Result<Option<Lease>, StorageError>;

    /// The live lease of `session` and how long it has left by the database's clock, if any.
    async fn remaining(&self, session: &SessionId) -> Result<Option<(Lease, Duration)>, StorageError>;

    /// Every live lease, by session.
    async fn live(&self) -> Result<Vec<Lease>, StorageError>;

    /// Records that `gateway` is alive for `ttl` more (it counts in the fleet until then); the
    /// first heartbeat of a run is announced to the others.
    async fn heartbeat(&self, gateway: &GatewayId, ttl: Duration) -> Result<(), StorageError>;

    /// The gateways whose heartbeat has not run out, by id, less those that let a lease run out
    /// without releasing it (presumed dead: their heartbeat runs out next).
    async fn live_gateways(&self) -> Result<Vec<GatewayId>, StorageError>;

    /// Removes `gateway` from the fleet at once (a clean stop, before it releases its leases, so
    /// that the others count without it when they take them), and tells the others.
    async fn leave(&self, gateway: &GatewayId) -> Result<(), StorageError>;

    /// Records `state` as what `lease`'s session looks like, if `lease` is still live and no
    /// state of a later epoch is recorded; `false` when refused. Announced to the others.
    async fn publish_state(&self, lease: &Lease, state: &serde_json::Value) -> Result<bool, StorageError>;

    /// The state last recorded for `session`.
    async fn state_of(&self, session: &SessionId) -> Result<Option<RecordedState>, StorageError>;

    /// Sends `message` (JSON, under 8000 bytes) to the gateways that listen: a command for the
    /// gateway that runs a session, or the answer to one. Not kept: a gateway whose listener is
    /// reconnecting misses it, and its sender times out.
    async fn send(&self, kind: MessageKind, message: &str) -> Result<(), StorageError>;

    /// [`LeaseStore::send`] of every one of `messages`, in order, in one statement: they reach a
    /// listener together or not at all.
    async fn send_all(&self, kind: MessageKind, messages: &[String]) -> Result<(), StorageError>;

    /// Forwards what the gateways announce (releases, arrivals and departures, sessions added or
    /// removed, sessions' states) to
    /// `to` until `cancel` fires or `to` closes. Notices are lost while the connection is down:
    /// [`FleetNotice::Missed`] says so (and is sent first, for whatever came before).
    async fn listen(&self, to: mpsc::Sender<FleetNotice>, cancel: CancellationToken);
}

/// A session's state as the gateway that ran it recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedState {
    /// The gateway that recorded it.
    pub owner: GatewayId,
    pub state: serde_json::Value,
    /// Whether that gateway still holds the lease it recorded it under (else nobody may be
    /// running the number: the state is what it was when it stopped).
    pub live: bool,
}

/// What a gateway sends another through [`LeaseStore::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A command for the gateway that runs a session.
    Command,
    /// The answer to a command.
    Reply,
    /// A message for a session was accepted (its id is the whole message): the gateway that
    /// runs the session picks it up now rather than at its next poll.
    Queued,
    /// A part of a batch of one gateway's events, for the others' `/ws/events` (see
    /// `fleet::events`).
    Events,
    /// A gateway has live subscribers of `message.status` events (its id is the whole message):
    /// the others record theirs for a while.
    StatusesWanted,
}

/// What one gateway of a fleet tells the others through the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetNotice {
    /// A session's lease was released: it may be claimed now.
    Released(SessionId),
    /// A gateway joined or left the fleet.
    Members(GatewayId),
    /// A session was added to or removed from the registry.
    SessionsChanged(SessionId),
    /// The gateway that runs a session recorded a new state of it.
    StateChanged(SessionId),
    /// A message one gateway sent another (see [`LeaseStore::send`]), as it was sent.
    Message(MessageKind, String),
    /// Notices may have been lost (the listener connected again): look for yourself.
    Missed,
}
