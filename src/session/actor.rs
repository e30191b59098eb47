//! The supervisor of one session: runs whatsapp-rust clients one generation after another,
//! publishes the session's state, and decides when to restart, relink or stop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use whatsapp_rust::Client;
use whatsapp_rust::bot::BotHandle;

use super::upstream::{self, STORE_FILE, Upstream, UpstreamEvent};
use super::{SessionState, Status};
use crate::domain::SessionId;

/// How often the supervisor checks the client's own view of the connection: the library emits
/// no event for failed reconnect attempts or watchdog reconnects.
const POLL_EVERY: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the supervisor shares with watchers, the queue and the manager.
pub(crate) struct SessionShared {
    pub(crate) id: SessionId,
    pub(crate) dir: PathBuf,
    pub(crate) state: watch::Sender<SessionState>,
    client: Mutex<Option<Arc<Client>>>,
    watchers: AtomicUsize,
    wake: Notify,
    /// True while the supervisor waits for a watcher before it starts a client.
    idle: AtomicBool,
}

impl SessionShared {
    pub(crate) fn new(id: SessionId, dir: PathBuf) -> Self {
        // The supervisor corrects this at once if it has nothing to start.
        let initial = SessionState { status: Status::Initializing, qr: None, error: None };
        Self {
            id,
            dir,
            state: watch::channel(initial).0,
            client: Mutex::new(None),
            watchers: AtomicUsize::new(0),
            wake: Notify::new(),
            idle: AtomicBool::new(false),
        }
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
        if self.idle.load(Ordering::SeqCst) {
            // This watcher is what starts the session: it begins linking now, so a watcher
            // must not first be told "disconnected".
            self.publish(|s| {
                s.status = Status::Initializing;
                s.qr = None;
            });
        }
        self.wake.notify_one();
    }

    pub(crate) fn remove_watcher(&self) {
        self.watchers.fetch_sub(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn watched(&self) -> bool {
        self.watchers.load(Ordering::SeqCst) > 0
    }

    fn publish(&self, f: impl FnOnce(&mut SessionState)) {
        self.state.send_if_modified(|state| {
            let before = state.clone();
            f(state);
            *state != before
        });
    }

    fn set_status(&self, status: Status) {
        self.publish(|s| {
            s.status = status;
            if status != Status::Initializing {
                s.qr = None;
            }
            if status == Status::Connected {
                s.error = None;
            }
        });
    }
}

/// How one client generation ended.
enum Exit {
    Cancelled,
    LoggedOut,
    QrExhausted,
    NobodyWatching,
    Terminal(String),
    Died,
}

/// Runs the session until the gateway shuts down.
pub(crate) async fn supervise(shared: Arc<SessionShared>, upstream: Upstream, cancel: CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    // Set when running a client without a watcher is pointless: it stopped for a reason it
    // will not recover from by itself, or it holds no credentials (only a watcher can link it).
    let mut wait_for_watcher = !shared.dir.join(STORE_FILE).exists();
    loop {
        if cancel.is_cancelled() {
            break;
        }
        if wait_for_watcher && !shared.watched() {
            shared.set_status(Status::Disconnected);
            shared.idle.store(true, Ordering::SeqCst);
            // A watcher may have arrived between the check and the flag.
            if !shared.watched() {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = shared.wake.notified() => {}
                }
            }
            shared.idle.store(false, Ordering::SeqCst);
            continue;
        }
        wait_for_watcher = false;
        shared.publish(|s| {
            s.status = Status::Initializing;
            s.qr = None;
        });
        let (handle, client, events) = match upstream.start(&shared.dir).await {
            Ok(started) => started,
            Err(e) => {
                tracing::error!(session = %shared.id, error = %e, "cannot start the WhatsApp client");
                shared.publish(|s| {
                    s.status = Status::Disconnected;
                    s.error = Some("the session could not start; see the server log".into());
                });
                if !sleep_or_cancel(&cancel, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if !upstream::is_linked(&client) && !shared.watched() {
            client.disconnect().await;
            handle.await;
            wait_for_watcher = true;
            continue;
        }
        shared.set_client(Some(client.clone()));
        let exit = drive(&shared, &upstream, &client, handle, events, &cancel, &mut backoff).await;
        shared.set_client(None);
        drop(client);
        match exit {
            Exit::Cancelled => break,
            Exit::LoggedOut => {
                tracing::warn!(session = %shared.id, "logged out from the phone: deleting its credentials");
                delete_credentials(&shared);
                shared.set_status(Status::Disconnected);
                wait_for_watcher = true;
            }
            Exit::QrExhausted => shared.set_status(Status::Disconnected),
            Exit::NobodyWatching => {
                shared.set_status(Status::Disconnected);
                wait_for_watcher = true;
            }
            Exit::Terminal(reason) => {
                tracing::warn!(session = %shared.id, %reason, "session stopped; it will not retry on its own");
                shared.publish(|s| {
                    s.status = Status::Disconnected;
                    s.qr = None;
                    s.error = Some(reason);
                });
                wait_for_watcher = true;
            }
            Exit::Died => {
                shared.set_status(Status::Disconnected);
                tracing::warn!(session = %shared.id, ?backoff, "client stopped unexpectedly; restarting");
                if !sleep_or_cancel(&cancel, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    shared.set_status(Status::Disconnected);
}

async fn drive(
    shared: &SessionShared,
    upstream: &Upstream,
    client: &Arc<Client>,
    mut handle: BotHandle,
    mut events: mpsc::Receiver<UpstreamEvent>,
    cancel: &CancellationToken,
    backoff: &mut Duration,
) -> Exit {
    let mut poll = tokio::time::interval(POLL_EVERY);
    let mut ending: Option<Exit> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                client.disconnect().await;
                (&mut handle).await;
                return Exit::Cancelled;
            }
            _ = &mut handle => {
                // Events dispatched before the run loop ended are already queued: read them.
                while let Ok(event) = events.try_recv() {
                    match event {
                        UpstreamEvent::LoggedOut => ending = Some(Exit::LoggedOut),
                        UpstreamEvent::Terminal(reason) => ending = Some(Exit::Terminal(reason)),
                        UpstreamEvent::QrExhausted if ending.is_none() => {
                            ending = Some(if shared.watched() { Exit::QrExhausted } else { Exit::NobodyWatching });
                        }
                        _ => {}
                    }
                }
                return ending.unwrap_or(Exit::Died);
            }
            Some(event) = events.recv() => match event {
                UpstreamEvent::Qr(code) => {
                    tracing::debug!(session = %shared.id, "new QR code");
                    upstream.show_qr(&shared.id, &code);
                    shared.publish(|s| { s.status = Status::Initializing; s.qr = Some(code); });
                }
                UpstreamEvent::QrExhausted => {
                    ending = Some(if shared.watched() { Exit::QrExhausted } else { Exit::NobodyWatching });
                }
                UpstreamEvent::PairSuccess => tracing::info!(session = %shared.id, "QR scanned; linking"),
                UpstreamEvent::Connected => {
                    tracing::info!(session = %shared.id, "connected");
                    if shared.state.borrow().status == Status::Disconnected {
                        metrics::counter!(crate::metrics::RECONNECTS).increment(1);
                    }
                    *backoff = Duration::from_secs(1);
                    shared.set_status(Status::Connected);
                }
                UpstreamEvent::Disconnected => shared.set_status(Status::Disconnected),
                UpstreamEvent::LoggedOut => ending = Some(Exit::LoggedOut),
                UpstreamEvent::Terminal(reason) => ending = Some(Exit::Terminal(reason)),
            },
            _ = shared.wake.notified() => {
                if !shared.watched() && !upstream::is_linked(client) {
                    tracing::debug!(session = %shared.id, "nobody is watching any more: stop linking");
                    client.disconnect().await;
                    (&mut handle).await;
                    return Exit::NobodyWatching;
                }
            }
            _ = poll.tick() => {
                let connected = upstream::is_connected(client);
                let status = shared.state.borrow().status;
                if connected && status != Status::Connected {
                    shared.set_status(Status::Connected);
                } else if !connected && status == Status::Connected {
                    shared.set_status(Status::Disconnected);
                }
            }
        }
    }
}

async fn sleep_or_cancel(cancel: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

/// Logout leaves the keys on disk; a stale store would only earn `failure 401` on the next
/// start, so the session's store files go.
fn delete_credentials(shared: &SessionShared) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = shared.dir.join(format!("{STORE_FILE}{suffix}"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(session = %shared.id, path = %path.display(), error = %e, "cannot delete credentials")
            }
        }
    }
}
