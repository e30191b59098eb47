//! The server-wide state every connection, the admin API and the routing share ([`Shared`]),
//! and the events tests wait on ([`FakeEvent`]).
//!
//! This module depends only on the leaf modules (`state`, `phone`, `media`, `noise`, `stanza`), so
//! that the modules serving the protocol can all use it without depending on `server`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rand::RngExt as _;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::media::MediaStore;
use crate::noise::ServerIdentity;
use crate::state::{Delivery, DeviceKey, ReceivedMessage, Registry};

/// Something that happened, for tests that wait on events instead of polling.
// A few events per test: boxing the message would only change the pattern tests match on.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum FakeEvent {
    /// A virtual phone recorded a message.
    MessageReceived { phone: String, message: ReceivedMessage },
    /// A linked device finished its login (`<success>` sent).
    DeviceLoggedIn { jid: String },
    /// A linked device's connection ended.
    DeviceDisconnected { jid: String },
    /// A connection that never logged in as a device (a client showing QR codes) ended.
    UnlinkedDisconnected,
    /// A newly linked device confirmed (by its receipt) the phone's app-state key share: it can
    /// now sync contacts and chats, as a real companion can after linking.
    KeyShareConfirmed { jid: String },
    /// A message went to a linked device's connection again, under an id the device had already
    /// been handed: after a login that had not acknowledged it, or redelivered through the admin
    /// API.
    MessageRedelivered { jid: String, id: String },
    /// A device logged in while its credentials already had a connection: the older one got
    /// `<stream:error><conflict type="replaced"/>` and was closed, as on WhatsApp.
    Replaced { jid: String },
}

/// State shared by every connection and the admin API.
pub(crate) struct Shared {
    pub(crate) identity: ServerIdentity,
    registry: Mutex<Registry>,
    pub(crate) media: MediaStore,
    pub(crate) media_host: String,
    pub(crate) media_auth: String,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) events: broadcast::Sender<FakeEvent>,
    next_conn: AtomicU64,
    next_stanza: AtomicU64,
    /// Logins that replaced a live connection of the same device (`conflict type="replaced"`).
    replaced: AtomicU64,
}

impl Shared {
    pub(crate) fn new(parts: SharedParts) -> Self {
        let SharedParts { identity, unregistered, media, media_host, media_auth, cancel } = parts;
        Self {
            identity,
            registry: Mutex::new(Registry::new(unregistered)),
            media,
            media_host,
            media_auth,
            cancel,
            tasks: TaskTracker::new(),
            events: broadcast::channel(1024).0,
            next_conn: AtomicU64::new(1),
            next_stanza: AtomicU64::new(1),
            replaced: AtomicU64::new(0),
        }
    }

    /// The registry lock. Poisoning is ignored: the state stays usable for everyone else.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn next_stanza_id(&self) -> String {
        format!("fake-{}", self.next_stanza.fetch_add(1, Ordering::Relaxed))
    }

    /// A message id in WhatsApp's style (`3EB0` + hex).
    pub(crate) fn next_message_id(&self) -> String {
        let raw: [u8; 8] = rand::rng().random();
        format!("3EB0{}", crate::stanza::hex(&raw).to_uppercase())
    }

    /// Makes sure the number has a virtual phone, generating its keys outside the registry lock.
    pub(crate) fn ensure_phone(&self, number: &str) {
        if self.lock().phones.contains_key(number) {
            return;
        }
        let device = crate::phone::VirtualDevice::new();
        self.lock().insert_phone(number, device);
    }

    /// [`Registry::deliver`], announcing a redelivery to a live connection.
    pub(crate) fn deliver(&self, key: &DeviceKey, node: wacore_binary::Node) -> Delivery {
        let id = crate::stanza::attr(&node, "id").map(|id| id.into_owned()).unwrap_or_default();
        let delivery = self.lock().deliver(key, node);
        if delivery == (Delivery::Sent { again: true }) {
            self.announce_redelivery(key, id);
        }
        delivery
    }

    pub(crate) fn announce_redelivery(&self, key: &DeviceKey, id: String) {
        tracing::info!(device = %key.jid(), id, "message delivered again");
        self.emit(FakeEvent::MessageRedelivered { jid: key.jid().to_string(), id });
    }

    pub(crate) fn count_replaced(&self) {
        self.replaced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn replaced(&self) -> u64 {
        self.replaced.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn emit(&self, event: FakeEvent) {
        let _ = self.events.send(event);
    }

    pub(crate) fn refusing(&self) -> bool {
        self.lock().refuse_until.is_some_and(|until| until > Instant::now())
    }
}

/// What [`Shared::new`] needs from start-up.
pub(crate) struct SharedParts {
    pub(crate) identity: ServerIdentity,
    pub(crate) unregistered: Vec<String>,
    pub(crate) media: MediaStore,
    pub(crate) media_host: String,
    pub(crate) media_auth: String,
    pub(crate) cancel: CancellationToken,
}
