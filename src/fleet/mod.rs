//! Several gateways on one Postgres as one fleet: a number's WhatsApp client runs only on the
//! gateway that holds its lease ([`LeaseStore`]), so two gateways never hold one number's socket.
//!
//! * **Leases** ([`lease`]): a session's supervisor [`Fleet::claim`]s the lease before it starts
//!   a client. The [`HeldLease`] renews itself every third of the TTL; when a renewal is refused,
//!   or none has succeeded by the holder's own deadline, its [`HeldLease::lost`] token fires and
//!   the supervisor stops the client. The deadline is measured on this gateway's monotonic clock
//!   from when the last successful renewal was *sent*, less a margin for closing the client, so
//!   the client is gone before the database lets another gateway claim the number, whatever the
//!   two machines' clocks say.
//! * **Placement** ([`placement`]): each gateway claims up to its share of the numbers (the
//!   sessions over the live gateways, at most `MAX_SESSIONS_PER_GATEWAY`). A waiting supervisor
//!   claims again when the holder's lease would run out (with jitter), or at once when the
//!   database announces a release. A gateway over its share (another joined) hands numbers over
//!   one at a time, a bounded number per minute: it closes the client and releases the lease,
//!   and a gateway under its share, woken by the release, claims it.
//! * **Events** ([`events`]): each gateway's message events for the others' `/ws/events`, in
//!   numbered batches through `NOTIFY`, and which gateways want `message.status` events.
//!
//! On the embedded files there is no fleet: every session runs here, without a lease.

pub mod events;
mod forward;
mod lease;
mod placement;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use rand::RngExt as _;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::{GatewayId, Lease, SessionId};
use crate::storage::LeaseStore;
use crate::storage::credentials::WriteFence;

pub use forward::{ForwardError, Incoming, ReplyTo};
pub use lease::HeldLease;

/// How often a waiting gateway tries to claim a session another holds when it cannot tell when
/// that lease runs out, as a share of the TTL (with up to as much again of jitter).
const CLAIM_EVERY_TTL_DIVISOR: u32 = 4;

/// The jitter after a holder's lease would run out before claiming it, as a share of the TTL:
/// the orphans of a dead gateway are claimed in a wave spread over this, not all at one instant.
const ORPHAN_JITTER_TTL_DIVISOR: u32 = 10;

/// How many times a gateway over its share finds a session free before it claims it anyway: a
/// number nobody else takes (every other gateway full, or their count of the fleet stale) is not
/// left without a gateway.
const FREE_ROUNDS_BEFORE_OVER_SHARE: u32 = 2;

/// How soon a waiter looks again when this gateway's share was taken by claims in flight.
const BUSY_RETRY: Duration = Duration::from_millis(100);

/// State notices a follower may fall behind by before it reads every state again.
const STATE_NOTICES: usize = 1024;

/// This gateway in the fleet: its id, the shared leases, its share of the numbers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Fleet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    gateway: GatewayId,
    leases: Arc<dyn LeaseStore>,
    ttl: Duration,
    /// `MAX_SESSIONS_PER_GATEWAY`.
    max_sessions: Option<usize>,
    /// The sessions this gateway knows (the fleet's, from the shared registry).
    sessions: AtomicUsize,
    /// The live gateways, this one included, as last read.
    members: AtomicUsize,
    /// When `members` was last read (for a read on demand that is not repeated by every waiter).
    members_read: tokio::sync::Mutex<Option<Instant>>,
    /// The leases this gateway holds or is claiming.
    owned: AtomicUsize,
    /// The claims in flight (counted in `owned` until they fail).
    claiming: AtomicUsize,
    /// The leases this gateway holds.
    held: DashMap<SessionId, Held>,
    /// Per session: woken when the database announces that its lease was released.
    released: DashMap<SessionId, Arc<Notify>>,
    /// Woken when a session was added to or removed from the shared registry.
    sessions_changed: Notify,
    /// The sessions whose state their gateway recorded (`None`: any may have changed).
    states: tokio::sync::broadcast::Sender<Option<SessionId>>,
    /// Set once this gateway left the fleet (shutting down): no more heartbeats or claims.
    leaving: AtomicBool,
    /// Forwarded commands waiting for their answer, by id.
    awaiting: DashMap<String, tokio::sync::oneshot::Sender<serde_json::Value>>,
    /// Commands other gateways forwarded here, for the session manager.
    incoming: tokio::sync::mpsc::Sender<Incoming>,
    incoming_rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Incoming>>>,
    /// The sessions another gateway accepted a message for.
    queued: tokio::sync::broadcast::Sender<SessionId>,
    /// True once this gateway's listener listens (an answer sent before would be lost).
    listening: tokio::sync::watch::Sender<bool>,
    /// What the others send the event fan-out.
    from_fleet: tokio::sync::broadcast::Sender<events::FromFleet>,
}

/// A lease this gateway holds, as the rest of the gateway sees it.
#[derive(Debug)]
struct Held {
    /// Fired by the rebalancer to move the number.
    handoff: CancellationToken,
    /// What writes for the number are fenced by.
    fence: WriteFence,
}

/// One claim's outcome.
pub enum Claim {
    /// The lease is ours until [`HeldLease::lost`] fires.
    Held(HeldLease),
    /// Another gateway holds it, for `Duration` more by the database's clock (`None` when it
    /// was released or ran out since the claim).
    Elsewhere(Option<(Lease, Duration)>),
    /// This gateway runs its share of the fleet's numbers already.
    Full,
    /// This gateway's share is taken by claims in flight, which may yet fail: look again soon.
    Busy,
    /// The database could not be asked.
    Failed(crate::storage::StorageError),
}

impl Claim {
    /// The outcome in a word, for logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Claim::Held(_) => "held",
            Claim::Elsewhere(Some(_)) => "held elsewhere",
            Claim::Elsewhere(None) => "free since",
            Claim::Full => "over share",
            Claim::Busy => "share taken by claims in flight",
            Claim::Failed(_) => "failed",
        }
    }
}

impl Fleet {
    pub fn new(gateway: GatewayId, leases: Arc<dyn LeaseStore>, ttl: Duration, max_sessions: Option<usize>) -> Fleet {
        let (incoming, incoming_rx) = tokio::sync::mpsc::channel(forward::INCOMING);
        Fleet {
            inner: Arc::new(Inner {
                gateway,
                leases,
                ttl,
                max_sessions,
                sessions: AtomicUsize::new(0),
                members: AtomicUsize::new(1),
                members_read: tokio::sync::Mutex::new(None),
                owned: AtomicUsize::new(0),
                claiming: AtomicUsize::new(0),
                held: DashMap::new(),
                released: DashMap::new(),
                sessions_changed: Notify::new(),
                states: tokio::sync::broadcast::channel(STATE_NOTICES).0,
                leaving: AtomicBool::new(false),
                awaiting: DashMap::new(),
                incoming,
                incoming_rx: std::sync::Mutex::new(Some(incoming_rx)),
                queued: tokio::sync::broadcast::channel(STATE_NOTICES).0,
                listening: tokio::sync::watch::channel(false).0,
                from_fleet: tokio::sync::broadcast::channel(events::FROM_FLEET).0,
            }),
        }
    }

    pub fn gateway(&self) -> &GatewayId {
        &self.inner.gateway
    }

    fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The numbers this gateway holds the lease of.
    pub fn owned(&self) -> usize {
        self.inner.owned.load(Ordering::Acquire)
    }

    /// How many numbers this gateway should run: the fleet's sessions over its live gateways,
    /// rounded up, and at most `MAX_SESSIONS_PER_GATEWAY`.
    pub fn share(&self) -> usize {
        let sessions = self.inner.sessions.load(Ordering::Acquire).max(1);
        let members = self.inner.members.load(Ordering::Acquire).max(1);
        let share = sessions.div_ceil(members);
        self.inner.max_sessions.map_or(share, |max| share.min(max))
    }

    /// Tells the fleet how many sessions there are (the manager, whenever it changes).
    pub fn set_sessions(&self, count: usize) {
        self.inner.sessions.store(count, Ordering::Release);
    }

    /// What the writes for `session` are fenced by while this gateway holds its lease; `None`
    /// when it does not.
    pub fn fence_of(&self, session: &SessionId) -> Option<WriteFence> {
        self.inner.held.get(session).map(|held| held.fence.clone())
    }

    /// What a waiting supervisor of `session` waits on besides its timer: the database's news
    /// that the session's lease was released.
    pub fn released_signal(&self, session: &SessionId) -> Arc<Notify> {
        self.inner.released.entry(session.clone()).or_default().clone()
    }

    /// Forgets `session` (deleted): nothing waits for its lease here any more.
    pub fn forget(&self, session: &SessionId) {
        self.inner.released.remove(session);
    }

    /// The sessions whose state the gateway that runs them recorded, from now on (`None`: any
    /// may have changed, notices were lost).
    pub fn state_changes(&self) -> tokio::sync::broadcast::Receiver<Option<SessionId>> {
        self.inner.states.subscribe()
    }

    /// Asks the followers of [`Fleet::state_changes`] to read `session`'s recorded state now (this
    /// gateway just learned that another runs it).
    pub fn look_at_state(&self, session: &SessionId) {
        let _ = self.inner.states.send(Some(session.clone()));
    }

    /// The state of `session` as the gateway that runs it last recorded it, with that gateway.
    pub async fn state_of(
        &self,
        session: &SessionId,
    ) -> Result<Option<crate::storage::RecordedState>, crate::storage::StorageError> {
        self.inner.leases.state_of(session).await
    }

    /// Wakes when a session was added to or removed from the shared registry (by any gateway).
    pub async fn sessions_changed(&self) {
        self.inner.sessions_changed.notified().await;
    }

    /// Tries once to take `session`'s lease. `over_share` lets it past this gateway's share
    /// (still within `MAX_SESSIONS_PER_GATEWAY`): for a number nobody else has taken.
    pub async fn claim(&self, session: &SessionId, over_share: bool) -> Claim {
        if self.inner.leaving.load(Ordering::Acquire) {
            return Claim::Full;
        }
        let slot = match self.reserve(over_share) {
            Some(slot) => slot,
            // Perhaps a gateway is gone and this one's count of the fleet is stale.
            None if self.read_members_if_stale().await => match self.reserve(over_share) {
                Some(slot) => slot,
                None => return self.full(),
            },
            None => return self.full(),
        };
        let sent = Instant::now();
        self.inner.claiming.fetch_add(1, Ordering::AcqRel);
        let claimed = self.inner.leases.claim(session, &self.inner.gateway, self.inner.ttl).await;
        self.inner.claiming.fetch_sub(1, Ordering::AcqRel);
        match claimed {
            Ok(Some(lease)) => {
                tracing::info!(session = %session, epoch = %lease.epoch, "lease claimed");
                metrics::counter!(crate::metrics::LEASE_CLAIMS, "outcome" => "claimed").increment(1);
                let handoff = CancellationToken::new();
                let held = HeldLease::keep(self.clone(), lease, sent, slot, handoff.clone());
                self.inner.held.insert(session.clone(), Held { handoff, fence: held.fence() });
                Claim::Held(held)
            }
            Ok(None) => {
                metrics::counter!(crate::metrics::LEASE_CLAIMS, "outcome" => "held_elsewhere").increment(1);
                drop(slot);
                Claim::Elsewhere(self.inner.leases.remaining(session).await.ok().flatten())
            }
            Err(e) => {
                metrics::counter!(crate::metrics::LEASE_CLAIMS, "outcome" => "error").increment(1);
                Claim::Failed(e)
            }
        }
    }

    fn full(&self) -> Claim {
        if self.inner.claiming.load(Ordering::Acquire) > 0 {
            return Claim::Busy;
        }
        metrics::counter!(crate::metrics::LEASE_CLAIMS, "outcome" => "over_share").increment(1);
        Claim::Full
    }

    /// Counts one more owned lease if this gateway has room for it.
    fn reserve(&self, over_share: bool) -> Option<Slot> {
        let limit = if over_share { self.inner.max_sessions.unwrap_or(usize::MAX) } else { self.share() };
        self.inner
            .owned
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owned| (owned < limit).then_some(owned + 1))
            .ok()
            .map(|_| Slot { fleet: self.inner.clone() })
    }

    /// How long to wait before claiming again after `claim` said so: until just after the
    /// holder's lease would run out (a dead holder's numbers are picked up then, spread by the
    /// jitter), else a quarter of the TTL plus up to as much again.
    pub fn retry_in(&self, claim: &Claim) -> Duration {
        let ttl = self.inner.ttl;
        let jitter = |upto: Duration| Duration::from_millis(rand::rng().random_range(0..=upto.as_millis() as u64));
        match claim {
            Claim::Elsewhere(Some((_, left))) => {
                (*left).min(ttl) + jitter(ttl / ORPHAN_JITTER_TTL_DIVISOR) + Duration::from_millis(20)
            }
            Claim::Elsewhere(None) => jitter(ttl / ORPHAN_JITTER_TTL_DIVISOR),
            Claim::Busy => BUSY_RETRY + jitter(BUSY_RETRY),
            Claim::Held(_) | Claim::Full | Claim::Failed(_) => {
                let every = ttl / CLAIM_EVERY_TTL_DIVISOR;
                every + jitter(every)
            }
        }
    }

    /// Whether a gateway over its share should claim `session` anyway: it found it free
    /// [`FREE_ROUNDS_BEFORE_OVER_SHARE`] times in a row. `free_rounds` is the caller's count.
    pub async fn nobody_takes(&self, session: &SessionId, free_rounds: &mut u32) -> bool {
        match self.inner.leases.remaining(session).await {
            Ok(None) => *free_rounds += 1,
            Ok(Some(_)) | Err(_) => *free_rounds = 0,
        }
        *free_rounds >= FREE_ROUNDS_BEFORE_OVER_SHARE
    }
}

/// One lease counted in [`Fleet::owned`], from the claim until it is given up.
#[derive(Debug)]
struct Slot {
    fleet: Arc<Inner>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.fleet.owned.fetch_sub(1, Ordering::AcqRel);
    }
}
