//! How a gateway finds its place in the fleet: its heartbeat, its count of the live gateways,
//! the database's notices (releases, arrivals and departures, sessions added or removed), and hand-overs while
//! it runs more than its share.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Fleet;
use crate::storage::FleetNotice;

/// How often a gateway over its share hands one number over: at most 30 moves a minute each, so
/// a gateway joining a fleet takes its share gradually, each move a clean hand-over.
const HANDOFF_EVERY: Duration = Duration::from_secs(2);

/// A read of the live gateways on demand is skipped when the last one is this recent.
const MEMBERS_FRESH_FOR: Duration = Duration::from_secs(1);

/// Notices waiting to be handled; the listener waits when this is full (none is dropped).
const NOTICES: usize = 1024;

impl Fleet {
    /// Keeps this gateway in the fleet until `cancel` fires: heartbeats every third of the TTL
    /// (each followed by a read of the live gateways), the database's notices, and one hand-over
    /// every [`HANDOFF_EVERY`] while over its share.
    pub async fn run(self, cancel: CancellationToken) {
        let (tx, mut notices) = mpsc::channel(NOTICES);
        let listening = cancel.child_token();
        let listener = tokio::spawn({
            let (leases, listening) = (self.inner.leases.clone(), listening.clone());
            async move { leases.listen(tx, listening).await }
        });
        let mut beat = tokio::time::interval(self.ttl() / 3);
        let mut rebalance = tokio::time::interval(HANDOFF_EVERY);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = beat.tick() => self.heartbeat().await,
                Some(notice) = notices.recv() => self.on_notice(notice).await,
                _ = rebalance.tick() => self.rebalance().await,
            }
        }
        listening.cancel();
        let _ = listener.await;
    }

    /// Leaves the fleet (a clean stop), before the sessions close and release their leases: the
    /// others count without this gateway when they take its numbers, and claim nothing here any
    /// more.
    pub async fn leave(&self) {
        self.inner.leaving.store(true, Ordering::Release);
        if let Err(e) = self.inner.leases.leave(&self.inner.gateway).await {
            tracing::warn!(error = %e, "cannot leave the fleet; its heartbeat runs out by itself");
        }
    }

    async fn heartbeat(&self) {
        if self.inner.leaving.load(Ordering::Acquire) {
            return;
        }
        match self.inner.leases.heartbeat(&self.inner.gateway, self.ttl()).await {
            Ok(()) => self.read_members().await,
            Err(e) => tracing::warn!(error = %e, "fleet heartbeat failed"),
        }
    }

    /// Reads the live gateways (this one always counts).
    async fn read_members(&self) {
        match self.inner.leases.live_gateways().await {
            Ok(live) => {
                let members = live.len() + usize::from(!live.contains(&self.inner.gateway));
                let before = self.inner.members.swap(members, Ordering::AcqRel);
                if before != members {
                    tracing::info!(gateways = members, share = self.share(), "the fleet changed");
                }
                metrics::gauge!(crate::metrics::FLEET_GATEWAYS).set(members as f64);
                *self.inner.members_read.lock().await = Some(Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the fleet's gateways"),
        }
    }

    /// Reads the live gateways unless that was done within [`MEMBERS_FRESH_FOR`]; `true` when
    /// it read them.
    pub(super) async fn read_members_if_stale(&self) -> bool {
        {
            let read = self.inner.members_read.lock().await;
            if read.is_some_and(|at| at.elapsed() < MEMBERS_FRESH_FOR) {
                return false;
            }
        }
        self.read_members().await;
        true
    }

    async fn on_notice(&self, notice: FleetNotice) {
        match notice {
            FleetNotice::Released(session) => {
                if let Some(released) = self.inner.released.get(&session) {
                    released.notify_one();
                }
                // Its recorded state is no longer live.
                let _ = self.inner.states.send(Some(session));
            }
            FleetNotice::Members(gateway) => {
                if gateway != self.inner.gateway {
                    tracing::info!(%gateway, "a gateway joined or left the fleet");
                }
                self.read_members().await;
            }
            FleetNotice::SessionsChanged(_) => self.inner.sessions_changed.notify_one(),
            FleetNotice::StateChanged(session) => {
                let _ = self.inner.states.send(Some(session));
            }
            FleetNotice::Message(kind, message) => self.on_message(kind, message).await,
            FleetNotice::Missed => {
                // Sent once the listener listens (and again after it listens anew).
                self.inner.listening.send_replace(true);
                // Whatever was announced meanwhile: every waiter looks for itself.
                self.read_members().await;
                for released in self.inner.released.iter() {
                    released.notify_one();
                }
                self.inner.sessions_changed.notify_one();
                let _ = self.inner.states.send(None);
            }
        }
    }

    /// Hands one number over when this gateway runs more than its share and another live
    /// gateway runs less than its own.
    async fn rebalance(&self) {
        metrics::gauge!(crate::metrics::FLEET_SESSIONS_OWNED).set(self.owned() as f64);
        if self.inner.leaving.load(Ordering::Acquire) {
            return;
        }
        let share = self.share();
        let moving = self.inner.held.iter().filter(|held| held.value().handoff.is_cancelled()).count();
        if self.owned().saturating_sub(moving) <= share {
            return;
        }
        if !self.someone_has_room(share).await {
            return;
        }
        let Some(session) = self.inner.held.iter().find(|held| !held.value().handoff.is_cancelled()).map(|held| {
            held.value().handoff.cancel();
            held.key().clone()
        }) else {
            return;
        };
        tracing::info!(session = %session, owned = self.owned(), share, "over this gateway's share: handing the number over");
    }

    /// The live gateway other than this one that holds the fewest leases: where a number this
    /// gateway has no room for is linked instead.
    pub async fn least_loaded_other(&self) -> Option<crate::domain::GatewayId> {
        self.others_loads().await?.into_iter().min_by_key(|(_, held)| *held).map(|(gateway, _)| gateway)
    }

    /// Whether a live gateway other than this one holds fewer than `share` leases.
    async fn someone_has_room(&self, share: usize) -> bool {
        self.others_loads().await.is_some_and(|loads| loads.iter().any(|(_, held)| *held < share))
    }

    /// Each live gateway other than this one, with how many leases it holds; `None` when the
    /// database cannot say.
    async fn others_loads(&self) -> Option<Vec<(crate::domain::GatewayId, usize)>> {
        let (Ok(live), Ok(leases)) = (self.inner.leases.live_gateways().await, self.inner.leases.live().await) else {
            return None;
        };
        let loads = live
            .into_iter()
            .filter(|gateway| *gateway != self.inner.gateway)
            .map(|gateway| {
                let held = leases.iter().filter(|lease| lease.owner == gateway).count();
                (gateway, held)
            })
            .collect();
        Some(loads)
    }
}
