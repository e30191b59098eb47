//! Several gateways on one Postgres as one fleet: a number's WhatsApp client runs only on the
//! gateway that holds its lease ([`LeaseStore`]), so two gateways never hold one number's socket.
//!
//! A session's supervisor [`Fleet::claim`]s the lease before it starts a client, and claims
//! again every [`Fleet::retry_in`] while another gateway holds it. The [`HeldLease`] renews itself every third of the TTL; when
//! a renewal is refused, or none has succeeded by the holder's own deadline, its
//! [`HeldLease::lost`] token fires and the supervisor stops the client. The deadline is measured
//! on this gateway's monotonic clock from when the last successful renewal was *sent*, less a
//! margin for closing the client, so the client is gone before the database lets another
//! gateway claim the number, whatever the two machines' clocks say.
//!
//! On the embedded files there is no fleet: every session runs here, without a lease.

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt as _;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::{GatewayId, Lease, SessionId};
use crate::storage::LeaseStore;
use crate::storage::credentials::WriteFence;

/// How often a waiting gateway tries to claim a session another holds, as a share of the TTL
/// (with up to as much again of jitter): a dead holder's numbers are picked up within
/// `ttl + ttl / 4` (plus the jitter), not all by the same gateway at the same instant.
const CLAIM_EVERY_TTL_DIVISOR: u32 = 4;

/// How long before its own deadline a holder gives up the client: time to close its socket.
const STOP_MARGIN_TTL_DIVISOR: u32 = 5;

/// This gateway in the fleet: its id, the shared leases and their TTL. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Fleet {
    gateway: GatewayId,
    leases: Arc<dyn LeaseStore>,
    ttl: Duration,
}

/// One claim's outcome.
pub enum Claim {
    /// The lease is ours until [`HeldLease::lost`] fires.
    Held(HeldLease),
    /// Another gateway holds it (`None` when it was released or ran out since the claim).
    Elsewhere(Option<Lease>),
    /// The database could not be asked.
    Failed(crate::storage::StorageError),
}

impl Fleet {
    pub fn new(gateway: GatewayId, leases: Arc<dyn LeaseStore>, ttl: Duration) -> Fleet {
        Fleet { gateway, leases, ttl }
    }

    pub fn gateway(&self) -> &GatewayId {
        &self.gateway
    }

    /// Tries once to take `session`'s lease.
    pub async fn claim(&self, session: &SessionId) -> Claim {
        let sent = Instant::now();
        match self.leases.claim(session, &self.gateway, self.ttl).await {
            Ok(Some(lease)) => {
                tracing::info!(session = %session, epoch = %lease.epoch, "lease claimed");
                metrics::counter!(crate::metrics::LEASE_CLAIMS, "outcome" => "claimed").increment(1);
                Claim::Held(HeldLease::keep(self.clone(), lease, sent))
            }
            Ok(None) => {
                metrics::counter!(crate::metrics::LEASE_CLAIMS, "outcome" => "held_elsewhere").increment(1);
                Claim::Elsewhere(self.leases.holder(session).await.ok().flatten())
            }
            Err(e) => {
                metrics::counter!(crate::metrics::LEASE_CLAIMS, "outcome" => "error").increment(1);
                Claim::Failed(e)
            }
        }
    }

    /// How long to wait before claiming again a session another gateway holds: a quarter of the
    /// TTL, plus up to as much again of jitter.
    pub fn retry_in(&self) -> Duration {
        let every = self.ttl / CLAIM_EVERY_TTL_DIVISOR;
        every + Duration::from_millis(rand::rng().random_range(0..=every.as_millis() as u64))
    }
}

/// A lease this gateway holds, renewed by a task of its own until it is lost or released.
pub struct HeldLease {
    fleet: Fleet,
    current: watch::Receiver<Lease>,
    lost: CancellationToken,
    /// The holder's own deadline, read by [`HeldLease::fence`] on every store call.
    deadline: Arc<Deadline>,
    /// Stops the renewals (on release and on drop).
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl HeldLease {
    fn keep(fleet: Fleet, lease: Lease, sent: Instant) -> HeldLease {
        let (tx, current) = watch::channel(lease);
        let (lost, stop) = (CancellationToken::new(), CancellationToken::new());
        let deadline = Arc::new(Deadline::new(sent + fleet.ttl - fleet.ttl / STOP_MARGIN_TTL_DIVISOR));
        let task = tokio::spawn(renew(fleet.clone(), tx, sent, deadline.clone(), lost.clone(), stop.clone()));
        HeldLease { fleet, current, lost, deadline, stop, task }
    }

    /// What the number's credential store asks before every call: the lease is neither lost
    /// nor past this gateway's own deadline. It reads the monotonic clock itself, so a gateway
    /// resumed after a long pause refuses at once, before its renewal task has even run.
    pub fn fence(&self) -> WriteFence {
        let (lost, deadline) = (self.lost.clone(), self.deadline.clone());
        Arc::new(move || !lost.is_cancelled() && deadline.is_ahead())
    }

    /// Fires when the lease is lost: the client must stop now.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// The lease as last claimed or renewed.
    pub fn lease(&self) -> Lease {
        self.current.borrow().clone()
    }

    /// Stops renewing and gives the lease up, so that another gateway can claim it at once
    /// (after this gateway closed the client).
    pub async fn release(self) {
        self.stop.cancel();
        let lease = self.current.borrow().clone();
        if self.lost.is_cancelled() {
            return;
        }
        match self.fleet.leases.release(&lease).await {
            Ok(true) => tracing::info!(session = %lease.session, epoch = %lease.epoch, "lease released"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(session = %lease.session, error = %e, "cannot release the lease; it runs out by itself")
            }
        }
        // Given up: nothing more is written under it.
        self.lost.cancel();
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// Renews every third of the TTL; fires `lost` when a renewal is refused or when none has
/// succeeded by the deadline (the last success's send time + TTL − margin).
async fn renew(
    fleet: Fleet,
    tx: watch::Sender<Lease>,
    sent: Instant,
    shared_deadline: Arc<Deadline>,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let ttl = fleet.ttl;
    let margin = ttl / STOP_MARGIN_TTL_DIVISOR;
    let mut deadline = sent + ttl - margin;
    let mut next = sent + ttl / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let lease = tx.borrow().clone();
        let sent = Instant::now();
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(deadline) => None,
            outcome = fleet.leases.renew(&lease, ttl) => Some(outcome),
        };
        let latency = sent.elapsed();
        metrics::histogram!(crate::metrics::LEASE_RENEWAL_SECONDS).record(latency.as_secs_f64());
        match outcome {
            Some(Ok(Some(renewed))) => {
                metrics::counter!(crate::metrics::LEASE_RENEWALS, "outcome" => "renewed").increment(1);
                let _ = tx.send(renewed);
                deadline = sent + ttl - margin;
                shared_deadline.set(deadline);
                next = sent + ttl / 3;
            }
            Some(Ok(None)) => {
                metrics::counter!(crate::metrics::LEASE_RENEWALS, "outcome" => "lost").increment(1);
                tracing::warn!(session = %lease.session, epoch = %lease.epoch, "lease lost: another gateway holds the number now");
                lost.cancel();
                return;
            }
            Some(Err(e)) if Instant::now() < deadline => {
                metrics::counter!(crate::metrics::LEASE_RENEWALS, "outcome" => "error").increment(1);
                tracing::warn!(session = %lease.session, error = %e, "cannot renew the lease; trying again");
                // Again soon, but within what is left.
                next = Instant::now() + (ttl / 10).min(deadline.saturating_duration_since(Instant::now()));
            }
            Some(Err(_)) | None => {
                metrics::counter!(crate::metrics::LEASE_RENEWALS, "outcome" => "expired").increment(1);
                tracing::warn!(
                    session = %lease.session,
                    epoch = %lease.epoch,
                    "no lease renewal in time: stopping the client before the lease runs out"
                );
                lost.cancel();
                return;
            }
        }
    }
}

/// An instant on the monotonic clock that another task moves forward, read without a lock.
#[derive(Debug)]
struct Deadline {
    base: Instant,
    /// Nanoseconds after `base`.
    after_base: std::sync::atomic::AtomicU64,
}

impl Deadline {
    fn new(at: Instant) -> Deadline {
        let base = Instant::now();
        let deadline = Deadline { base, after_base: std::sync::atomic::AtomicU64::new(0) };
        deadline.set(at);
        deadline
    }

    fn set(&self, at: Instant) {
        let nanos = u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        self.after_base.store(nanos, std::sync::atomic::Ordering::Release);
    }

    fn is_ahead(&self) -> bool {
        let nanos = self.after_base.load(std::sync::atomic::Ordering::Acquire);
        Instant::now() < self.base + Duration::from_nanos(nanos)
    }
}
