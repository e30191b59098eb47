//! The inbox: everything the linked numbers receive, kept by an [`InboxStore`] (SQLite files
//! under `DATA_DIR` by default, or the shared Postgres), listed by the API and pushed on the
//! event bus.
//!
//! A message is stored once: WhatsApp redelivers what arrived while the gateway was down (and
//! may redeliver after a crash), and the store keys it by `(session, message id)`. Media is
//! downloaded and decrypted after the row is stored, within `INBOUND_MEDIA_MAX_BYTES`; a file
//! over it, or one that cannot be downloaded, is recorded without its bytes, with the reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

pub use crate::domain::ChatSummary;
use crate::domain::{IncomingMessage, SessionId, now_ms};
use crate::events::{EventBus, EventKind, GatewayEvent};
use crate::session::SessionManager;
use crate::session::upstream::Inbound;
use crate::shutdown::Shutdown;
use crate::storage::InboxStore;
pub use crate::storage::{MAX_PAGE, Page, StorageError as InboxError};

/// Received messages waiting to be stored before new ones are dropped (and counted).
pub(crate) const CHANNEL_CAPACITY: usize = 4096;

/// Longest a received file may take to download before it is recorded without its bytes.
const DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Inbox {
    store: Arc<dyn InboxStore>,
    max_media_bytes: u64,
}

impl Inbox {
    /// The inbox on `store`, keeping received files up to `max_media_bytes`.
    pub fn new(store: Arc<dyn InboxStore>, max_media_bytes: u64) -> Inbox {
        Inbox { store, max_media_bytes }
    }

    /// Stores `message` unless it is already stored; `true` when it is new.
    pub async fn insert(&self, message: &IncomingMessage) -> Result<bool, InboxError> {
        self.store.insert(message).await
    }

    /// The messages of `session` (of one `chat` if given), newest first, older than `before`.
    pub async fn list(
        &self,
        session: &SessionId,
        chat: Option<String>,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Page, InboxError> {
        self.store.list(session, chat.as_deref(), limit, before).await
    }

    /// Deletes the messages stored before `older_than` ago, and their files; returns how many.
    pub async fn prune(&self, older_than: std::time::Duration) -> Result<usize, InboxError> {
        let older_than = u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX);
        self.store.prune(now_ms().saturating_sub(older_than)).await
    }

    /// The chats of `session`, most recent first.
    pub async fn chats(&self, session: &SessionId) -> Result<Vec<ChatSummary>, InboxError> {
        self.store.chats(session).await
    }

    /// When each chat of `session` began: the send time of its oldest stored message, unix ms.
    pub async fn chat_starts(&self, session: &SessionId) -> Result<HashMap<String, u64>, InboxError> {
        self.store.chat_starts(session).await
    }

    /// Marks `chat` read up to its latest message; returns the ids (with their senders) that
    /// were unread, for read receipts. `None` if the chat has no messages.
    pub async fn mark_read(&self, session: &SessionId, chat: &str) -> Result<Option<Vec<IncomingMessage>>, InboxError> {
        self.store.mark_read(session, chat).await
    }

    /// A received message by id (the newest, should two sessions share an id).
    pub async fn get(&self, message_id: &str) -> Result<Option<IncomingMessage>, InboxError> {
        self.store.get(message_id).await
    }

    /// The kept bytes of a received message's file.
    pub async fn file(&self, message_id: &str) -> Result<Option<Bytes>, InboxError> {
        self.store.file(message_id).await
    }

    /// Downloads, checks and keeps the file of a newly stored media message; records why not
    /// when it cannot.
    async fn fetch_media(&self, sessions: &SessionManager, inbound: &Inbound, message: &mut IncomingMessage) {
        let Some(media) = &inbound.media else { return };
        let Some(details) = message.media.as_mut() else { return };
        if details.size.is_some_and(|size| size > self.max_media_bytes) {
            details.error = Some(format!("over the size limit ({} bytes)", self.max_media_bytes));
            return;
        }
        let Some(client) = sessions.connected_client(&inbound.session) else {
            details.error = Some("the session disconnected before the file was downloaded".into());
            return;
        };
        // Messages are stored in order, one at a time: a stuck download must not hold the rest.
        let bytes = match tokio::time::timeout(DOWNLOAD_TIMEOUT, client.download(media)).await {
            Ok(Ok(bytes)) => Bytes::from(bytes),
            Ok(Err(e)) => {
                details.error = Some(format!("download failed: {e}"));
                return;
            }
            Err(_) => {
                details.error = Some(format!("download took longer than {} s", DOWNLOAD_TIMEOUT.as_secs()));
                return;
            }
        };
        if bytes.len() as u64 > self.max_media_bytes {
            details.error = Some(format!("over the size limit ({} bytes)", self.max_media_bytes));
            return;
        }
        let sha256: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        details.size = Some(bytes.len() as u64);
        details.sha256 = Some(sha256);
        details.stored = true;
        if let Err(e) = self.store.update(message, Some(bytes)).await {
            tracing::error!(error = %e, "cannot keep a downloaded file");
            if let Some(details) = message.media.as_mut() {
                details.stored = false;
                details.error = Some("cannot store the file".into());
            }
        }
    }
}

/// Deletes what is older than `retention` every hour, until shutdown.
pub(crate) async fn prune_periodically(inbox: Inbox, retention: std::time::Duration, shutdown: Shutdown) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match inbox.prune(retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired received messages deleted"),
            Err(e) => tracing::warn!(error = %e, "inbox prune failed"),
        }
    }
}

/// Stores what the sessions receive and pushes it, until shutdown.
pub(crate) async fn run(
    inbox: Inbox,
    mut inbound: mpsc::Receiver<Inbound>,
    sessions: SessionManager,
    bus: EventBus,
    shutdown: Shutdown,
) {
    loop {
        let item = tokio::select! {
            () = shutdown.cancelled() => return,
            item = inbound.recv() => item,
        };
        let Some(mut item) = item else { return };
        let stored = item.stored.take();
        keep(&inbox, &item, &sessions, &bus, stored).await;
    }
}

/// Stores one received message and publishes its `message.received` event (under an id of its
/// own: see [`crate::domain::received_event_id`]). `stored`, when the client waits to ack the
/// message, goes with the event to the webhook outbox, which answers it once written; dropped
/// unanswered when the message could not be kept (the client does not ack it, and WhatsApp
/// delivers it again on the next login).
async fn keep(
    inbox: &Inbox,
    item: &Inbound,
    sessions: &SessionManager,
    bus: &EventBus,
    stored: Option<oneshot::Sender<bool>>,
) {
    let started = Instant::now();
    let mut message = item.message.clone();
    // A sender known only by its LID: the client's LID↔phone mapping may know its number.
    if message.from.is_none()
        && let Some(lid) = message.from_lid.clone()
        && let Some(client) = sessions.connected_client(&item.session)
    {
        message.from = client.phone_for_lid(&lid).await;
    }
    match inbox.insert(&message).await {
        Ok(true) => {}
        // A redelivery: stored once already, but perhaps not its event (a crash in between).
        Ok(false) => return again(inbox, &message, bus, stored).await,
        Err(e) => {
            metrics::counter!(crate::metrics::INBOUND_NOT_KEPT).increment(1);
            tracing::error!(session = %item.session, error = %e, "cannot store a received message; WhatsApp delivers it again on the next login");
            return;
        }
    }
    if message.kind.has_media() {
        inbox.fetch_media(sessions, item, &mut message).await;
        if message.media.as_ref().is_some_and(|m| m.error.is_some())
            && let Err(e) = inbox.store.update(&message, None).await
        {
            tracing::error!(error = %e, "cannot record why a file was not kept");
        }
    }
    metrics::counter!(crate::metrics::INBOUND_STORED, "type" => message.kind.as_str()).increment(1);
    tracing::info!(session = %item.session, message_id = %message.message_id, kind = message.kind.as_str(), "message received");
    bus.publish_written(received_event(&message), stored);
    metrics::histogram!(crate::metrics::INBOUND_LATENCY).record(started.elapsed().as_secs_f64());
}

/// The `message.received` event of a stored message.
fn received_event(message: &IncomingMessage) -> Arc<GatewayEvent> {
    Arc::new(GatewayEvent {
        id: crate::domain::received_event_id(&message.session_id, &message.message_id),
        event: EventKind::MessageReceived,
        session_id: message.session_id.clone(),
        timestamp: now_ms(),
        data: serde_json::to_value(message).unwrap_or_default(),
    })
}

/// A message stored before: its event goes to the webhook outbox again (kept once there, by its
/// id), not to live subscribers, who were shown it.
async fn again(inbox: &Inbox, redelivered: &IncomingMessage, bus: &EventBus, stored: Option<oneshot::Sender<bool>>) {
    let Some(stored) = stored else { return };
    match inbox.get(&redelivered.message_id).await {
        Ok(Some(message)) if message.session_id == redelivered.session_id => {
            bus.to_outbox(received_event(&message), Some(stored));
        }
        // Another session's message under the same id: the newest is shown; this one is stored.
        Ok(Some(_)) => bus.to_outbox(received_event(redelivered), Some(stored)),
        Ok(None) => {
            let _ = stored.send(true);
        }
        Err(e) => {
            metrics::counter!(crate::metrics::INBOUND_NOT_KEPT).increment(1);
            tracing::error!(session = %redelivered.session_id, error = %e, "cannot read a redelivered message");
        }
    }
}
