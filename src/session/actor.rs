//! The supervisor of one session: runs whatsapp-rust clients one generation after another,
//! publishes the session's state, takes commands (restart, logout, stop), and decides when to
//! restart, relink or stop.
//!
//! Nothing outside reaches into a running session: callers send a [`Command`] and wait for its
//! answer; the supervisor alone starts and stops clients and writes the state.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt as _;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use whatsapp_rust::Client;
use whatsapp_rust::bot::BotHandle;

use super::forwarded::{Answer, Forwarded};
use super::upstream::{self, Upstream, UpstreamEvent};
use super::{Account, PairingError, Qr, SessionEvent, SessionEventKind, SessionState, Status};
use crate::domain::{GatewayId, PhoneNumber, SessionId};
use crate::fleet::{Claim, Fleet, HeldLease};

/// How often the supervisor checks the client's own view of the connection: the library emits
/// no event for failed reconnect attempts or watchdog reconnects.
const POLL_EVERY: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A client still not connected (and showing no QR) after this is checked for reachability.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(3);
/// The most a first connect at boot waits before it gives its start-up slot back.
const STARTUP_SLOT: Duration = Duration::from_secs(15);
/// Linked sessions at boot start within this spread, so they do not all dial at once.
const STARTUP_JITTER_MS: u64 = 500;

/// What callers may ask of a running session.
#[derive(Debug)]
pub(crate) enum Command {
    /// Stop the client and start a new one at once.
    Restart,
    /// Unlink from the phone and delete the credentials; keep the session.
    Logout(oneshot::Sender<()>),
    /// Log out if linked, then end the supervisor (the session is being deleted).
    Stop(oneshot::Sender<()>),
    /// Ask WhatsApp for a pairing code for this phone (starting a client if none runs).
    PairCode(PhoneNumber, PairReply),
    /// Another gateway of the fleet deleted the session: end the supervisor without touching
    /// the phone or the store (that gateway did both).
    Forget(oneshot::Sender<()>),
}

/// Where a pairing code (or why there is none) goes.
pub(crate) type PairReply = oneshot::Sender<Result<String, PairingError>>;

/// The description and metadata a session was created with.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Labels {
    pub(crate) description: Option<String>,
    pub(crate) metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What the supervisor shares with watchers, the queue and the manager.
pub(crate) struct SessionShared {
    pub(crate) id: SessionId,
    pub(crate) state: watch::Sender<SessionState>,
    pub(crate) labels: Labels,
    commands: mpsc::Sender<Command>,
    /// Taken by the supervisor for its whole life (and again if it is restarted after a panic).
    inbox: tokio::sync::Mutex<mpsc::Receiver<Command>>,
    events: broadcast::Sender<SessionEvent>,
    client: Mutex<Option<Arc<Client>>>,
    watchers: AtomicUsize,
    /// Linking goes on until then without a watcher (QR over HTTP): each QR request extends it.
    link_until: Mutex<Option<Instant>>,
    wake: Notify,
    /// True while the supervisor waits for a watcher before it starts a client.
    idle: AtomicBool,
    /// Cancelled when the session is deleted: its watchers close.
    pub(crate) deleted: CancellationToken,
    /// In a fleet: true while another gateway holds the session's lease.
    pub(crate) elsewhere: AtomicBool,
    /// In a fleet: true while the state shown is the one the gateway that runs the session
    /// recorded.
    mirrored: AtomicBool,
    /// In a fleet: the gateway that runs the session, as far as this one knows.
    runs_on: Mutex<Option<GatewayId>>,
}

impl SessionShared {
    /// A session; `linked` when it holds credentials (see [`has_credentials`]).
    pub(crate) fn new(id: SessionId, linked: bool, labels: Labels, events: broadcast::Sender<SessionEvent>) -> Self {
        let (commands, inbox) = mpsc::channel(8);
        // The supervisor corrects this at once if it has nothing to start.
        let initial = if linked { Status::Connecting } else { Status::Disconnected };
        Self {
            id,
            state: watch::channel(SessionState::new(initial)).0,
            labels,
            commands,
            inbox: tokio::sync::Mutex::new(inbox),
            events,
            client: Mutex::new(None),
            watchers: AtomicUsize::new(0),
            link_until: Mutex::new(None),
            wake: Notify::new(),
            idle: AtomicBool::new(false),
            deleted: CancellationToken::new(),
            elsewhere: AtomicBool::new(false),
            mirrored: AtomicBool::new(false),
            runs_on: Mutex::new(None),
        }
    }

    /// Sends a command to the supervisor; `false` if it is gone.
    pub(crate) async fn send(&self, command: Command) -> bool {
        self.commands.send(command).await.is_ok()
    }

    /// The client while the session is connected.
    pub(crate) fn connected_client(&self) -> Option<Arc<Client>> {
        if self.state.borrow().status != Status::Connected {
            return None;
        }
        self.client.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_client(&self, client: Option<Arc<Client>>) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = client;
    }

    pub(crate) fn add_watcher(&self) {
        self.watchers.fetch_add(1, Ordering::SeqCst);
        self.starting_for_a_watcher();
    }

    pub(crate) fn remove_watcher(&self) {
        self.watchers.fetch_sub(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Keeps linking going for `window` without a watcher (a QR polled over HTTP).
    pub(crate) fn extend_link_window(&self, window: Duration) {
        *self.link_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + window);
        self.starting_for_a_watcher();
    }

    fn starting_for_a_watcher(&self) {
        let idle = self.idle.load(Ordering::SeqCst);
        // This watcher is what starts the session: it begins linking now, so a watcher must not
        // first be told "disconnected".
        self.publish(|s| {
            if idle || matches!(s.status, Status::Disconnected | Status::LoggedOut | Status::Error) {
                s.status = Status::Connecting;
                s.qr = None;
                s.reason = None;
            }
        });
        self.wake.notify_one();
    }

    /// Linking is done (or was undone): a QR poller's window does not carry over.
    fn close_link_window(&self) {
        *self.link_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn watched(&self) -> bool {
        if self.watchers.load(Ordering::SeqCst) > 0 {
            return true;
        }
        let until = *self.link_until.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|until| Instant::now() < until)
    }

    /// Applies `f` to the state; watchers hear of it only if something changed.
    fn publish(&self, f: impl FnOnce(&mut SessionState)) {
        let mut announce = None;
        self.state.send_if_modified(|state| {
            let before = state.clone();
            f(state);
            if *state == before {
                return false;
            }
            state.updated_at = crate::domain::now_ms();
            if state.status != before.status || state.reason != before.reason {
                announce = Some(SessionEventKind::Status { status: state.status, reason: state.reason.clone() });
            }
            true
        });
        if let Some(kind) = announce {
            self.announce(kind);
        }
    }

    fn announce(&self, kind: SessionEventKind) {
        // Nobody listening is fine.
        let _ = self.events.send(SessionEvent { session: self.id.clone(), kind, mirrored: false });
    }

    /// In a fleet: the gateway that runs the session, as far as this one knows.
    pub(crate) fn runs_on(&self) -> Option<GatewayId> {
        self.runs_on.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_runs_on(&self, gateway: Option<GatewayId>) {
        *self.runs_on.lock().unwrap_or_else(|p| p.into_inner()) = gateway;
    }

    /// This gateway took the session's lease: it shows its own state from now on.
    fn runs_here(&self, gateway: &GatewayId) {
        let mut runs_on = self.runs_on.lock().unwrap_or_else(|p| p.into_inner());
        self.elsewhere.store(false, Ordering::Release);
        self.mirrored.store(false, Ordering::Release);
        *runs_on = Some(gateway.clone());
    }

    /// In a fleet: shows `state`, what the gateway that runs the session recorded, to this
    /// gateway's watchers, with the events it implies (marked as mirrored: that gateway feeds
    /// the webhooks). Ignored once this gateway runs the session itself.
    pub(crate) fn mirror(&self, state: SessionState, runs_on: Option<GatewayId>) {
        // Under the lock that taking the lease here takes too: a mirror read before this gateway
        // took the session never lands after.
        let mut shown_on = self.runs_on.lock().unwrap_or_else(|p| p.into_inner());
        if !self.elsewhere.load(Ordering::Acquire) {
            return;
        }
        *shown_on = runs_on;
        self.mirrored.store(true, Ordering::Release);
        let mut events = Vec::new();
        self.state.send_if_modified(|current| {
            if *current == state {
                return false;
            }
            if current.status != state.status || current.reason != state.reason {
                events.push(SessionEventKind::Status { status: state.status, reason: state.reason.clone() });
            }
            if let Some(qr) = state.qr.as_ref().filter(|qr| current.qr.as_ref() != Some(*qr)) {
                events.push(SessionEventKind::Qr(qr.clone()));
            }
            if state.status == Status::Connected
                && current.status != Status::Connected
                && let Some(account) = &state.me
            {
                events.push(SessionEventKind::Connected { account: account.clone(), new_link: false });
            }
            if state.status == Status::LoggedOut && current.status != Status::LoggedOut {
                events.push(SessionEventKind::LoggedOut);
            }
            *current = state;
            true
        });
        drop(shown_on);
        for kind in events {
            let _ = self.events.send(SessionEvent { session: self.id.clone(), kind, mirrored: true });
        }
    }

    /// While another gateway runs the session: says so, unless that gateway's own account of
    /// the session is shown (see [`SessionShared::mirror`]), and without an event (the session
    /// did not change; this gateway only learned where it runs).
    fn show_elsewhere(&self, reason: String) {
        if self.mirrored.load(Ordering::Acquire) {
            return;
        }
        self.state.send_if_modified(|state| {
            if state.status == Status::Disconnected && state.reason.as_deref() == Some(reason.as_str()) {
                return false;
            }
            state.status = Status::Disconnected;
            state.reason = Some(reason);
            state.qr = None;
            state.pairing_code = None;
            state.updated_at = crate::domain::now_ms();
            true
        });
    }

    /// Moves to `status` with `reason`; a QR or pairing code only survives in its own status.
    fn set_status(&self, status: Status, reason: Option<String>) {
        self.publish(|s| {
            s.status = status;
            s.reason = reason;
            if status != Status::QrReady {
                s.qr = None;
            }
            if status != Status::PairingCode {
                s.pairing_code = None;
            }
            if status == Status::Connected {
                s.error = None;
            }
        });
    }

    /// Clears the QR unless someone watches, in one step with the check: a watcher that arrives
    /// after it can never be shown the QR of a client that is stopping.
    fn release_if_unwatched(&self) -> bool {
        let mut released = false;
        self.state.send_if_modified(|state| {
            if self.watched() {
                return false;
            }
            released = true;
            state.qr.take().is_some()
        });
        released
    }
}

/// Whether the session holds credentials. When the store cannot say, it is taken to: a client
/// is then started, fails on the store, and retries with backoff, where "not linked" would leave
/// a linked number waiting for a QR scan nobody makes.
async fn has_credentials(upstream: &Upstream, id: &SessionId) -> bool {
    upstream.credentials().has_credentials(id).await.unwrap_or_else(|e| {
        tracing::warn!(session = %id, error = %e, "cannot tell whether the session has credentials; assuming it has");
        true
    })
}

/// How one client generation ended.
enum Exit {
    Cancelled,
    LoggedOut {
        reply: Option<oneshot::Sender<()>>,
    },
    Stopped(oneshot::Sender<()>),
    Restart,
    QrExhausted,
    NobodyWatching,
    Terminal(String),
    Died,
    /// The number's lease was lost (taken over, or not renewed in time): the client is closed.
    LeaseLost,
    /// The fleet moves the number to another gateway: the client is closed.
    Handoff,
}

/// Runs the session until the gateway shuts down or the session is deleted.
pub(crate) async fn supervise(
    shared: Arc<SessionShared>,
    upstream: Upstream,
    fleet: Option<Fleet>,
    cancel: CancellationToken,
    startup: Arc<Semaphore>,
) {
    let mut inbox = shared.inbox.lock().await;
    let mut backoff = Duration::from_secs(1);
    // Set when running a client without a watcher is pointless: it stopped for a reason it
    // will not recover from by itself, or it holds no credentials (only a watcher can link it).
    let mut wait_for_watcher = !has_credentials(&upstream, &shared.id).await;
    let mut first_start = true;
    // A pairing-code request that arrived while no client ran: the next client serves it.
    let mut pending_pair: Option<(PhoneNumber, PairReply)> = None;
    // In a fleet: the lease a restart keeps for the next client (a restart does not move the
    // number to another gateway).
    let mut kept: Option<HeldLease> = None;
    loop {
        if cancel.is_cancelled() {
            release(kept.take()).await;
            break;
        }
        if wait_for_watcher && !shared.watched() {
            release(kept.take()).await;
            let status = shared.state.borrow().status;
            // In a fleet, a session another gateway ran shows what that gateway recorded.
            if !matches!(status, Status::LoggedOut | Status::Error) && !shared.elsewhere.load(Ordering::Acquire) {
                shared.set_status(Status::Disconnected, None);
            }
            shared.idle.store(true, Ordering::SeqCst);
            // A watcher may have arrived between the check and the flag.
            if !shared.watched() {
                match pause(&shared, &upstream, fleet.as_ref(), &mut inbox, &cancel, None, &mut pending_pair).await {
                    Pause::Cancelled => break,
                    Pause::Stopped => return,
                    Pause::Over | Pause::LoggedOut => {}
                    Pause::Restart => wait_for_watcher = !has_credentials(&upstream, &shared.id).await,
                    Pause::PairCode => wait_for_watcher = false,
                }
            }
            shared.idle.store(false, Ordering::SeqCst);
            continue;
        }
        wait_for_watcher = false;
        // In a fleet, the client runs only under this number's lease.
        if kept.as_ref().is_some_and(|lease| lease.lost().is_cancelled()) {
            kept = None;
        }
        let lease = match &fleet {
            None => None,
            Some(_) if kept.as_ref().is_some_and(|lease| !lease.lost().is_cancelled()) => kept.take(),
            Some(fleet) => {
                match wait_for_lease(&shared, &upstream, fleet, &mut inbox, &cancel, &mut pending_pair).await {
                    LeaseWait::Held(mut lease) => {
                        lease.mirror(shared.state.subscribe());
                        Some(lease)
                    }
                    LeaseWait::Unlinked => {
                        wait_for_watcher = true;
                        continue;
                    }
                    LeaseWait::Cancelled => break,
                    LeaseWait::Stopped => return,
                }
            }
        };
        shared.publish(|s| {
            s.status = Status::Connecting;
            s.qr = None;
            s.pairing_code = None;
        });
        // At boot, linked sessions take turns (a bounded number at once, with jitter) so a
        // restart of many numbers is no thundering herd on WhatsApp.
        let slot = if std::mem::take(&mut first_start) && has_credentials(&upstream, &shared.id).await {
            let jitter = Duration::from_millis(rand::rng().random_range(0..=STARTUP_JITTER_MS));
            match pause(&shared, &upstream, fleet.as_ref(), &mut inbox, &cancel, Some(jitter), &mut pending_pair).await
            {
                Pause::Cancelled => {
                    release(lease).await;
                    break;
                }
                Pause::Stopped => {
                    release(lease).await;
                    return;
                }
                Pause::LoggedOut => {
                    release(lease).await;
                    wait_for_watcher = true;
                    continue;
                }
                Pause::Over | Pause::Restart | Pause::PairCode => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => {
                    release(lease).await;
                    break;
                }
                permit = startup.clone().acquire_owned() => permit.ok(),
            }
        } else {
            None
        };
        let (handle, client, events, tasks) = match upstream
            .start(&shared.id, lease.as_ref().map(HeldLease::fence))
            .await
        {
            Ok(started) => started,
            Err(e) => {
                release(lease).await;
                tracing::error!(session = %shared.id, error = %e, "cannot start the WhatsApp client");
                shared.publish(|s| {
                    s.status = Status::Error;
                    s.error = Some("the session could not start; see the server log".into());
                    s.reason = s.error.clone();
                });
                match pause(&shared, &upstream, fleet.as_ref(), &mut inbox, &cancel, Some(backoff), &mut pending_pair)
                    .await
                {
                    Pause::Cancelled => break,
                    Pause::Stopped => return,
                    Pause::LoggedOut => wait_for_watcher = true,
                    Pause::Over | Pause::Restart | Pause::PairCode => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if !upstream::is_linked(&client) && !shared.watched() && pending_pair.is_none() {
            client.disconnect().await;
            handle.await;
            tasks.retire();
            release(lease).await;
            wait_for_watcher = true;
            continue;
        }
        shared.set_client(Some(client.clone()));
        if let Some((phone, reply)) = pending_pair.take() {
            request_pair_code(&client, phone, reply);
        }
        let lost = lease.as_ref().map(|lease| lease.lost().clone()).unwrap_or_default();
        let handoff = lease.as_ref().map(|lease| lease.handoff().clone()).unwrap_or_default();
        let exit = Drive {
            shared: &shared,
            upstream: &upstream,
            client: &client,
            slot,
            paired: false,
            lost: lost.clone(),
            handoff,
        }
        .run(handle, events, &mut inbox, &cancel, &mut backoff)
        .await;
        // A client that ended on its own after the lease was lost (WhatsApp closed it as
        // `replaced` when the new holder logged in, say) ended because another gateway runs the
        // number now: this one waits for the lease again, it does not stop for good.
        // (A process resumed after a pause hears the `replaced` close before its renewal task
        // has noticed the lease is gone: the deadline says so at once.)
        let lease_gone = lease.as_ref().is_some_and(|lease| !lease.is_held());
        let exit = match exit {
            Exit::Terminal(_) | Exit::Died | Exit::QrExhausted | Exit::NobodyWatching if lease_gone => Exit::LeaseLost,
            exit => exit,
        };
        shared.set_client(None);
        // An unlinked generation's leftovers (its QR rotation) would hold the client and its
        // store for minutes; a linked one's are left to finish their writes.
        if !upstream::is_linked(&client) {
            tasks.retire();
        }
        drop(client);
        // The client is closed: another gateway may take the number now. A logout's wipe below
        // runs under the lease still (it is released after it).
        let logging_out = matches!(exit, Exit::LoggedOut { .. });
        let mut lease = lease;
        if lease.is_some() {
            let reason = match exit {
                Exit::Cancelled => Some("shutdown"),
                Exit::LeaseLost => Some("lost"),
                Exit::Handoff => Some("rebalance"),
                _ => None,
            };
            if let Some(reason) = reason {
                metrics::counter!(crate::metrics::LEASE_HANDOFFS, "reason" => reason).increment(1);
            }
        }
        if matches!(exit, Exit::Restart) {
            kept = lease.take();
        } else if lease.is_some() {
            shared.set_runs_on(None);
        }
        if !logging_out {
            release(lease.take()).await;
        }
        match exit {
            Exit::Cancelled => break,
            Exit::Stopped(reply) => {
                retire(&shared, reply);
                return;
            }
            Exit::LoggedOut { reply } => {
                shared.close_link_window();
                let reason = if reply.is_some() { "logged out through the API" } else { "logged out from the phone" };
                // In a fleet, only the lease's holder may wipe: a gateway that lost the number
                // (and with it, this logout's news) must not erase the new holder's keys.
                if lease.as_ref().is_none_or(HeldLease::is_held) {
                    tracing::warn!(session = %shared.id, reason, "logged out: deleting its credentials");
                    delete_credentials(&shared, &upstream, lease.as_ref()).await;
                } else {
                    tracing::warn!(session = %shared.id, reason, "logged out, but the lease is lost: credentials left to its holder");
                }
                shared.set_status(Status::LoggedOut, Some(reason.into()));
                shared.announce(SessionEventKind::LoggedOut);
                release(lease.take()).await;
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
                wait_for_watcher = true;
            }
            Exit::LeaseLost => {
                shared.set_status(Status::Disconnected, Some("another gateway runs this number now".into()));
            }
            Exit::Handoff => {
                shared.set_status(Status::Disconnected, Some("handed over to another gateway of the fleet".into()));
            }
            Exit::Restart => {
                backoff = Duration::from_secs(1);
                wait_for_watcher = !has_credentials(&upstream, &shared.id).await;
            }
            Exit::QrExhausted => shared.set_status(Status::Disconnected, None),
            Exit::NobodyWatching => {
                shared.set_status(Status::Disconnected, None);
                wait_for_watcher = true;
            }
            Exit::Terminal(reason) => {
                tracing::warn!(session = %shared.id, %reason, "session stopped; it will not retry on its own");
                shared.publish(|s| {
                    s.status = Status::Error;
                    s.qr = None;
                    s.pairing_code = None;
                    s.error = Some(reason.clone());
                    s.reason = Some(reason);
                });
                wait_for_watcher = true;
            }
            Exit::Died => {
                let reason = format!("the WhatsApp client stopped; restarting in {} s", backoff.as_secs());
                shared.set_status(Status::Connecting, Some(reason));
                tracing::warn!(session = %shared.id, ?backoff, "client stopped unexpectedly; restarting");
                match pause(&shared, &upstream, fleet.as_ref(), &mut inbox, &cancel, Some(backoff), &mut pending_pair)
                    .await
                {
                    Pause::Cancelled => break,
                    Pause::Stopped => return,
                    Pause::LoggedOut => wait_for_watcher = true,
                    Pause::Over | Pause::Restart | Pause::PairCode => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    shared.set_status(Status::Disconnected, None);
}

/// One client generation, driven until it ends.
struct Drive<'a> {
    shared: &'a SessionShared,
    upstream: &'a Upstream,
    client: &'a Arc<Client>,
    /// The boot-time start-up slot, given back once connected (or after [`STARTUP_SLOT`]).
    slot: Option<OwnedSemaphorePermit>,
    /// A phone linked this generation's client (QR or pairing code): its connection is a new
    /// link, not a reconnection.
    paired: bool,
    /// In a fleet: fires when the number's lease is lost.
    lost: CancellationToken,
    /// In a fleet: fires when the fleet moves the number to another gateway.
    handoff: CancellationToken,
}

impl Drive<'_> {
    async fn run(
        mut self,
        mut handle: BotHandle,
        mut events: mpsc::Receiver<UpstreamEvent>,
        inbox: &mut mpsc::Receiver<Command>,
        cancel: &CancellationToken,
        backoff: &mut Duration,
    ) -> Exit {
        let (shared, client) = (self.shared, self.client);
        let (lease_lost, handoff) = (self.lost.clone(), self.handoff.clone());
        let mut poll = tokio::time::interval(POLL_EVERY);
        let started = Instant::now();
        let mut ending: Option<Exit> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    client.disconnect().await;
                    (&mut handle).await;
                    return Exit::Cancelled;
                }
                _ = lease_lost.cancelled() => {
                    tracing::warn!(session = %shared.id, "lease lost: closing the client");
                    client.disconnect().await;
                    (&mut handle).await;
                    return Exit::LeaseLost;
                }
                _ = handoff.cancelled() => {
                    tracing::info!(session = %shared.id, "handing the number over to another gateway");
                    client.disconnect().await;
                    (&mut handle).await;
                    return Exit::Handoff;
                }
                _ = &mut handle => {
                    // Events dispatched before the run loop ended are already queued: read them.
                    while let Ok(event) = events.try_recv() {
                        match event {
                            UpstreamEvent::LoggedOut => ending = Some(Exit::LoggedOut { reply: None }),
                            UpstreamEvent::Terminal(reason) => ending = Some(Exit::Terminal(reason)),
                            UpstreamEvent::QrExhausted if ending.is_none() => {
                                ending = Some(if shared.watched() { Exit::QrExhausted } else { Exit::NobodyWatching });
                            }
                            _ => {}
                        }
                    }
                    return ending.unwrap_or(Exit::Died);
                }
                command = inbox.recv() => match command {
                    None | Some(Command::Restart) => {
                        client.disconnect().await;
                        (&mut handle).await;
                        return Exit::Restart;
                    }
                    Some(Command::Logout(reply)) => {
                        shared.publish(|s| s.qr = None);
                        client.logout().await;
                        (&mut handle).await;
                        return Exit::LoggedOut { reply: Some(reply) };
                    }
                    Some(Command::PairCode(phone, reply)) => request_pair_code(client, phone, reply),
                    Some(Command::Stop(reply)) => {
                        shared.publish(|s| s.qr = None);
                        if upstream::is_linked(client) {
                            client.logout().await;
                        } else {
                            client.disconnect().await;
                        }
                        (&mut handle).await;
                        return Exit::Stopped(reply);
                    }
                    Some(Command::Forget(reply)) => {
                        client.disconnect().await;
                        (&mut handle).await;
                        return Exit::Stopped(reply);
                    }
                },
                Some(event) = events.recv() => {
                    if let Some(exit) = self.on_event(event, backoff) {
                        ending = Some(exit);
                    }
                }
                _ = shared.wake.notified() => {
                    if !upstream::is_linked(client) && shared.release_if_unwatched() {
                        return self.stop_unwatched(&mut handle).await;
                    }
                }
                _ = poll.tick() => {
                    if started.elapsed() > STARTUP_SLOT {
                        self.slot = None;
                    }
                    if !upstream::is_linked(client) && shared.release_if_unwatched() {
                        return self.stop_unwatched(&mut handle).await;
                    }
                    self.poll(started).await;
                }
            }
        }
    }

    async fn stop_unwatched(&self, handle: &mut BotHandle) -> Exit {
        tracing::debug!(session = %self.shared.id, "nobody is watching any more: stop linking");
        self.client.disconnect().await;
        handle.await;
        Exit::NobodyWatching
    }

    fn on_event(&mut self, event: UpstreamEvent, backoff: &mut Duration) -> Option<Exit> {
        let shared = self.shared;
        match event {
            UpstreamEvent::Qr { code, valid_for } => {
                tracing::debug!(session = %shared.id, "new QR code");
                self.upstream.show_qr(&shared.id, &code);
                let valid_ms = u64::try_from(valid_for.as_millis()).unwrap_or(u64::MAX);
                let qr = Qr { code, expires_at: crate::domain::now_ms().saturating_add(valid_ms) };
                shared.publish(|s| {
                    s.status = Status::QrReady;
                    s.qr = Some(qr.clone());
                    s.reason = None;
                    s.error = None;
                });
                shared.announce(SessionEventKind::Qr(qr));
            }
            UpstreamEvent::QrExhausted => {
                // Its refs are dead: nobody may be shown them any more.
                shared.publish(|s| s.qr = None);
                return Some(if shared.watched() { Exit::QrExhausted } else { Exit::NobodyWatching });
            }
            UpstreamEvent::PairingCode(code) => {
                shared.publish(|s| {
                    s.status = Status::PairingCode;
                    s.pairing_code = Some(code);
                    s.qr = None;
                    s.reason =
                        Some("type the pairing code on the phone: Linked devices > Link with phone number".into());
                });
            }
            UpstreamEvent::PairSuccess => {
                tracing::info!(session = %shared.id, "linked; logging in");
                self.paired = true;
            }
            UpstreamEvent::PasskeyRequest => {
                let reason = "WhatsApp asks for a passkey to link this device: confirm it on the phone \
                              (screen lock or passkey), then link again if nothing happens";
                shared.publish(|s| {
                    s.reason = Some(reason.into());
                    s.error = Some(reason.into());
                });
            }
            UpstreamEvent::PasskeyConfirmation(code) => {
                shared.publish(|s| {
                    s.status = Status::PairingCode;
                    s.pairing_code = Some(code);
                    s.reason = Some("confirm this code on the phone to finish linking".into());
                });
            }
            UpstreamEvent::PasskeyError(error) => {
                let reason = format!("passkey linking failed ({error}); link again with a QR code");
                shared.publish(|s| {
                    s.reason = Some(reason.clone());
                    s.error = Some(reason);
                });
            }
            UpstreamEvent::Connected => {
                tracing::info!(session = %shared.id, "connected");
                *backoff = Duration::from_secs(1);
                self.connected();
            }
            UpstreamEvent::Disconnected => {
                shared.set_status(Status::Connecting, Some("connection lost; reconnecting".into()))
            }
            UpstreamEvent::LoggedOut => return Some(Exit::LoggedOut { reply: None }),
            UpstreamEvent::Terminal(reason) => return Some(Exit::Terminal(reason)),
        }
        None
    }

    /// The session is connected (the client's event, or its own view when the event was missed):
    /// the account, the time, the status, and the event for followers.
    fn connected(&mut self) {
        let shared = self.shared;
        if shared.state.borrow().status == Status::Connected {
            return;
        }
        if shared.state.borrow().connected_at.is_some() {
            metrics::counter!(crate::metrics::RECONNECTS, "session" => shared.id.as_str().to_owned()).increment(1);
        }
        self.slot = None;
        shared.close_link_window();
        let me = upstream::account(self.client);
        shared.publish(|s| {
            s.me = me.clone().or(s.me.take());
            s.connected_at = Some(crate::domain::now_ms());
        });
        shared.set_status(Status::Connected, None);
        let new_link = std::mem::take(&mut self.paired);
        if let Some(account) = me {
            shared.announce(SessionEventKind::Connected { account, new_link });
        }
    }

    /// Corrects the status from the client's own view, and names an unreachable WhatsApp.
    async fn poll(&mut self, started: Instant) {
        let (shared, client) = (self.shared, self.client);
        let connected = upstream::is_connected(client);
        let state = shared.state.borrow().clone();
        if connected && state.status != Status::Connected {
            self.connected();
        } else if !connected && state.status == Status::Connected {
            shared.set_status(Status::Connecting, Some("connection lost; reconnecting".into()));
        } else if !connected && state.status == Status::Connecting && started.elapsed() >= UNREACHABLE_AFTER {
            match self.upstream.probe().await {
                Err(why) => {
                    let error = format!("cannot reach WhatsApp ({why})");
                    shared.publish(|s| {
                        s.reason = Some(format!("{error}; retrying"));
                        s.error = Some(error);
                    });
                }
                Ok(()) => shared.publish(|s| {
                    if s.error.as_deref().is_some_and(|e| e.starts_with("cannot reach WhatsApp")) {
                        s.error = None;
                        s.reason = Some("WhatsApp is reachable again; connecting".into());
                    }
                }),
            }
        }
    }
}

/// The session is deleted: it says so, its watchers close, and the caller hears it is done.
fn retire(shared: &SessionShared, reply: oneshot::Sender<()>) {
    shared.set_status(Status::Disconnected, Some("the session was deleted".into()));
    shared.deleted.cancel();
    let _ = reply.send(());
}

/// Asks for a pairing code on a task of its own (it waits for the socket, then for WhatsApp),
/// so the supervisor keeps handling events meanwhile; the task ends with its answer.
fn request_pair_code(client: &Arc<Client>, phone: PhoneNumber, reply: PairReply) {
    let client = client.clone();
    tokio::spawn(async move {
        let answer = upstream::request_pair_code(&client, &phone).await;
        let _ = reply.send(answer);
    });
}

/// How a [`pause`] ended.
enum Pause {
    /// The time ran out, or (while idle) a watcher came.
    Over,
    Cancelled,
    /// The session was deleted: the supervisor ends.
    Stopped,
    /// Logged out: the credentials are gone.
    LoggedOut,
    Restart,
    /// A pairing-code request is waiting for a client.
    PairCode,
}

/// Waits `duration` (or, with `None`, until a watcher wakes the session) while still answering
/// commands, so a delete or a logout never waits out a backoff.
async fn pause(
    shared: &SessionShared,
    upstream: &Upstream,
    fleet: Option<&Fleet>,
    inbox: &mut mpsc::Receiver<Command>,
    cancel: &CancellationToken,
    duration: Option<Duration>,
    pending_pair: &mut Option<(PhoneNumber, PairReply)>,
) -> Pause {
    let sleep = async {
        match duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => shared.wake.notified().await,
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => Pause::Cancelled,
        _ = sleep => Pause::Over,
        command = inbox.recv() => match command {
            None => Pause::Cancelled,
            Some(Command::Stop(reply) | Command::Forget(reply)) => {
                shared.idle.store(false, Ordering::SeqCst);
                retire(shared, reply);
                Pause::Stopped
            }
            Some(Command::Logout(reply)) => {
                // No client runs: deleting the store is the whole logout. In a fleet, only under
                // the number's lease: another gateway may be running it.
                let lease = match fleet {
                    None => None,
                    // A logout is a user's wish, whatever this gateway's share.
                    Some(fleet) => match fleet.claim(&shared.id, true).await {
                        Claim::Held(lease) => Some(lease),
                        Claim::Elsewhere(_) | Claim::Full | Claim::Busy | Claim::Failed(_) => {
                            tracing::warn!(session = %shared.id, "logout refused: this gateway cannot take the number's lease");
                            return Pause::Over;
                        }
                    },
                };
                if has_credentials(upstream, &shared.id).await {
                    delete_credentials(shared, upstream, lease.as_ref()).await;
                    shared.set_status(Status::LoggedOut, Some("logged out through the API".into()));
                }
                release(lease).await;
                let _ = reply.send(());
                Pause::LoggedOut
            }
            Some(Command::Restart) => Pause::Restart,
            Some(Command::PairCode(phone, reply)) => {
                *pending_pair = Some((phone, reply));
                Pause::PairCode
            }
        },
    }
}

/// How the wait for a number's lease ended.
enum LeaseWait {
    Held(HeldLease),
    /// The number has no credentials any more (logged out on the gateway that ran it) and
    /// nobody is linking it: there is nothing to run until someone does.
    Unlinked,
    Cancelled,
    Stopped,
}

/// Claims the session's lease, and while another gateway holds it (or this one runs its share
/// already), says so and claims again when [`Fleet::retry_in`] says, or at once when the
/// database announces the lease's release; commands are served meanwhile: a stop retires the
/// session here; a restart claims again at once; a pairing code waits for the lease. A logout
/// cannot be served by a gateway that does not run the number: it is refused (its credentials
/// are not touched).
async fn wait_for_lease(
    shared: &SessionShared,
    upstream: &Upstream,
    fleet: &Fleet,
    inbox: &mut mpsc::Receiver<Command>,
    cancel: &CancellationToken,
    pending_pair: &mut Option<(PhoneNumber, PairReply)>,
) -> LeaseWait {
    let released = fleet.released_signal(&shared.id);
    // Rounds in which this gateway, over its share, found the number free.
    let mut free_rounds = 0;
    let mut over_share = false;
    loop {
        let watched = shared.watched();
        if !watched && pending_pair.is_none() && !has_credentials(upstream, &shared.id).await {
            return LeaseWait::Unlinked;
        }
        // Someone waits for its QR here: this gateway links it, whatever its share.
        let claim = fleet.claim(&shared.id, over_share || watched).await;
        let retry_in = fleet.retry_in(&claim);
        tracing::debug!(
            session = %shared.id,
            gateway = %fleet.gateway(),
            outcome = claim.describe(),
            ?retry_in,
            "lease claim"
        );
        match claim {
            Claim::Held(lease) => {
                shared.runs_here(fleet.gateway());
                return LeaseWait::Held(lease);
            }
            Claim::Elsewhere(holder) => {
                if !shared.elsewhere.swap(true, Ordering::AcqRel) {
                    // Show what the gateway that runs it recorded.
                    fleet.look_at_state(&shared.id);
                }
                // Someone takes it: what earlier rounds saw is no evidence any more.
                (free_rounds, over_share) = (0, false);
                let reason = match holder {
                    Some((lease, _)) => {
                        // Watched here while that gateway links it: it keeps linking as long.
                        if watched && !has_credentials(upstream, &shared.id).await {
                            keep_linking_on(fleet, &shared.id, &lease.owner, cancel).await;
                        }
                        let reason = format!("running on gateway {}", lease.owner);
                        shared.set_runs_on(Some(lease.owner));
                        reason
                    }
                    None => {
                        shared.set_runs_on(None);
                        "waiting for this number's lease".to_owned()
                    }
                };
                shared.show_elsewhere(reason);
            }
            Claim::Full => {
                // Another gateway should take it; if none does, this one will.
                over_share = fleet.nobody_takes(&shared.id, &mut free_rounds).await;
                if !shared.elsewhere.swap(true, Ordering::AcqRel) {
                    fleet.look_at_state(&shared.id);
                }
                let reason = if watched {
                    // No room here for a number someone wants to link: the gateway with the most
                    // room links it, and its QR and status are shown here.
                    match fleet.least_loaded_other().await {
                        Some(gateway) if keep_linking_on(fleet, &shared.id, &gateway, cancel).await => {
                            format!(
                                "this gateway runs MAX_SESSIONS_PER_GATEWAY numbers already: gateway {gateway} links it"
                            )
                        }
                        _ => "this gateway runs MAX_SESSIONS_PER_GATEWAY numbers already, and no other gateway \
                              can link it now"
                            .into(),
                    }
                } else {
                    "waiting for a gateway of the fleet with room".into()
                };
                shared.show_elsewhere(reason);
            }
            Claim::Failed(e) => {
                tracing::warn!(session = %shared.id, error = %e, "cannot claim the lease; trying again");
                shared.show_elsewhere("the database cannot be reached".into());
            }
            Claim::Busy => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return LeaseWait::Cancelled,
            _ = tokio::time::sleep(retry_in) => {}
            // A holder just gave it up (perhaps this gateway, handing it over): the number was
            // taken until now, and the others are woken too; it is free only if it stays so
            // over rounds from here, not counting those before.
            _ = released.notified() => (free_rounds, over_share) = (0, false),
            command = inbox.recv() => match command {
                None => return LeaseWait::Cancelled,
                Some(Command::Stop(reply) | Command::Forget(reply)) => {
                    retire(shared, reply);
                    return LeaseWait::Stopped;
                }
                // Dropped unanswered: the caller hears the session cannot do it now.
                Some(Command::Logout(_reply)) => {
                    tracing::warn!(session = %shared.id, "logout refused: another gateway runs this number");
                }
                Some(Command::Restart) => {}
                Some(Command::PairCode(phone, reply)) => *pending_pair = Some((phone, reply)),
            },
        }
    }
}

/// How long another gateway keeps linking a number watched here, from each ask; asked again
/// every round while the watcher stays.
const LINK_ELSEWHERE_FOR: Duration = Duration::from_secs(30);

/// How long a round waits for that gateway's answer.
const LINK_ELSEWHERE_WAIT: Duration = Duration::from_secs(2);

/// Asks `gateway` to link `session` (keep its linking window open) for [`LINK_ELSEWHERE_FOR`];
/// `true` once it said it does.
async fn keep_linking_on(fleet: &Fleet, session: &SessionId, gateway: &GatewayId, cancel: &CancellationToken) -> bool {
    let window_ms = u64::try_from(LINK_ELSEWHERE_FOR.as_millis()).unwrap_or(u64::MAX);
    let link = Forwarded::Link { window_ms };
    let asked = fleet.forward::<Answer>(gateway, session, &link, LINK_ELSEWHERE_WAIT);
    let answer = tokio::select! {
        () = cancel.cancelled() => return false,
        answer = asked => answer,
    };
    match answer {
        Ok(Answer::Done) => true,
        Ok(other) => {
            tracing::debug!(session = %session, %gateway, answer = ?other, "the other gateway does not link the number");
            false
        }
        Err(e) => {
            tracing::debug!(session = %session, %gateway, error = %e, "cannot ask another gateway to link the number");
            false
        }
    }
}

/// Gives a held lease up once its client is closed.
async fn release(lease: Option<HeldLease>) {
    if let Some(lease) = lease {
        lease.release().await;
    }
}

/// Logout leaves the keys in the store; a stale store would only earn `failure 401` on the next
/// start, so the session's credentials go. One that cannot be wiped now is wiped on that 401.
/// In a fleet, under `lease`, checked by the database in the wipe's own transaction.
async fn delete_credentials(shared: &SessionShared, upstream: &Upstream, lease: Option<&HeldLease>) {
    let wiped = match lease {
        None => upstream.credentials().wipe(&shared.id).await.map(|()| true),
        Some(lease) => upstream.credentials().wipe_under_lease(&shared.id, &lease.lease()).await,
    };
    match wiped {
        Ok(true) => {}
        Ok(false) => tracing::warn!(session = %shared.id, "credentials not deleted: the lease was lost meanwhile"),
        Err(e) => tracing::error!(session = %shared.id, error = %e, "cannot delete credentials"),
    }
}

impl Account {
    /// An account from the linked client's identity (`None` before pairing).
    pub(crate) fn new(phone: String, jid: String, lid: Option<String>, push_name: Option<String>) -> Account {
        Account { phone, jid, lid, push_name }
    }
}
