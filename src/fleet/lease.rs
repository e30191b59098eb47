//! A lease this gateway holds: renewed by a task of its own, given up on release or on loss.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Fleet, Slot};
use crate::domain::Lease;
use crate::storage::credentials::WriteFence;

/// How long a release waits for the session's last state to be recorded.
const FLUSH_WITHIN: Duration = Duration::from_secs(2);

/// How long before its own deadline a holder gives up the client: time to close its socket.
const STOP_MARGIN_TTL_DIVISOR: u32 = 5;

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
    /// Fired by the rebalancer: hand the number over to another gateway.
    handoff: CancellationToken,
    /// Counts this lease in the gateway's share until it is dropped.
    _slot: Slot,
    /// Records the session's state for the other gateways while the lease is held.
    mirror: Option<tokio::task::JoinHandle<()>>,
}

impl HeldLease {
    pub(super) fn keep(fleet: Fleet, lease: Lease, sent: Instant, slot: Slot, handoff: CancellationToken) -> HeldLease {
        let (tx, current) = watch::channel(lease);
        let (lost, stop) = (CancellationToken::new(), CancellationToken::new());
        let ttl = fleet.ttl();
        let deadline = Arc::new(Deadline::new(sent + ttl - ttl / STOP_MARGIN_TTL_DIVISOR));
        let task = tokio::spawn(renew(fleet.clone(), tx, sent, deadline.clone(), lost.clone(), stop.clone()));
        HeldLease { fleet, current, lost, deadline, stop, task, handoff, _slot: slot, mirror: None }
    }

    /// Records every state of the session `states` sees, under this lease, for the other
    /// gateways of the fleet to show, until the lease is released or lost. Coalesced: a state
    /// replaced before it was written is skipped.
    pub fn mirror<T>(&mut self, mut states: watch::Receiver<T>)
    where
        T: serde::Serialize + Send + Sync + 'static,
    {
        let (fleet, current, stop) = (self.fleet.clone(), self.current.clone(), self.stop.clone());
        let lost = self.lost.clone();
        self.mirror = Some(tokio::spawn(async move {
            let mut flushing = false;
            loop {
                let state = serde_json::to_value(&*states.borrow_and_update());
                let lease = current.borrow().clone();
                match state {
                    Ok(state) => match fleet.inner.leases.publish_state(&lease, &state).await {
                        Ok(true) if flushing => return,
                        Ok(true) => {}
                        Ok(false) => {
                            metrics::counter!(crate::metrics::FENCING_REFUSALS, "store" => "session_state")
                                .increment(1);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(session = %lease.session, error = %e, "cannot record the session's state for the fleet")
                        }
                    },
                    Err(e) => {
                        tracing::error!(session = %lease.session, error = %e, "cannot encode the session's state")
                    }
                }
                tokio::select! {
                    // Released: one last write if the state changed since.
                    () = stop.cancelled() => if !states.has_changed().unwrap_or(false) { return },
                    () = lost.cancelled() => return,
                    changed = states.changed() => if changed.is_err() { return },
                }
                if stop.is_cancelled() {
                    flushing = true;
                }
            }
        }));
    }

    /// Fires when the fleet asks this gateway to hand the number over (it runs more than its
    /// share): close the client, then release.
    pub fn handoff(&self) -> &CancellationToken {
        &self.handoff
    }

    /// What the number's writes are fenced by (its credential store's, its messages' statuses):
    /// this lease, checked by the database, and this gateway's own view of it, asked before
    /// every call. That view reads the monotonic clock itself, so a gateway resumed after a long
    /// pause refuses at once, before its renewal task has even run.
    pub fn fence(&self) -> WriteFence {
        let (lost, deadline) = (self.lost.clone(), self.deadline.clone());
        WriteFence::new(self.lease(), Arc::new(move || !lost.is_cancelled() && deadline.is_ahead()))
    }

    /// Whether the lease is still this gateway's: not lost, and its own deadline not past (read
    /// on the monotonic clock now, so it is right at once after a pause, before the renewal task
    /// has run).
    pub fn is_held(&self) -> bool {
        !self.lost.is_cancelled() && self.deadline.is_ahead()
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
    pub async fn release(mut self) {
        self.stop.cancel();
        let lease = self.current.borrow().clone();
        if self.lost.is_cancelled() {
            return;
        }
        // The last state (logged out, say) is recorded while the lease is still this one's.
        if let Some(mirror) = self.mirror.take()
            && tokio::time::timeout(FLUSH_WITHIN, mirror).await.is_err()
        {
            tracing::debug!(session = %lease.session, "the session's last state was not recorded in time");
        }
        match self.fleet.inner.leases.release(&lease).await {
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
        if let Some(mirror) = self.mirror.take() {
            mirror.abort();
        }
        // A supervisor holds one lease of its number at a time: nothing newer is there yet.
        let session = self.current.borrow().session.clone();
        self.fleet.inner.held.remove(&session);
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
    let ttl = fleet.ttl();
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
            outcome = fleet.inner.leases.renew(&lease, ttl) => Some(outcome),
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
