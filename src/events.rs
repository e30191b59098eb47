//! The gateway's event bus: what `/ws/events` pushes (and what webhooks will post), one shape
//! for every event: `{"id","event","sessionId","timestamp","data"}`.
//!
//! A bounded broadcast: a subscriber that falls behind loses the oldest events and learns how
//! many (`lagged`), so a slow reader never costs unbounded memory.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

/// Events a subscriber may fall behind by before it is told it lagged.
const CAPACITY: usize = 1024;

pub use crate::domain::EventKind;

/// One event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayEvent {
    /// Unique (`evt_` and 32 hex digits): also the `webhook-id` of every delivery of it.
    pub id: String,
    pub event: EventKind,
    pub session_id: String,
    /// Unix milliseconds.
    pub timestamp: u64,
    pub data: Value,
}

/// Cheap to clone; every clone publishes to the same subscribers.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<GatewayEvent>>,
    /// Where every event also goes, losslessly: the webhook outbox.
    sink: Arc<OnceLock<mpsc::UnboundedSender<Arc<GatewayEvent>>>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus { sender: broadcast::channel(CAPACITY).0, sink: Arc::default() }
    }
}

pub(crate) use crate::domain::new_event_id;

impl EventBus {
    /// Publishes an event (nobody listening is fine).
    pub fn publish(&self, event: EventKind, session_id: &str, data: Value) {
        let event = Arc::new(GatewayEvent {
            id: new_event_id(),
            event,
            session_id: session_id.to_owned(),
            timestamp: crate::journal::now_ms(),
            data,
        });
        if let Some(sink) = self.sink.get() {
            let _ = sink.send(Arc::clone(&event));
        }
        let _ = self.sender.send(event);
    }

    /// Publishes an event to live subscribers only (`/ws/events`): for events already written to
    /// the webhook outbox by their producer.
    pub fn publish_live(&self, event: Arc<GatewayEvent>) {
        let _ = self.sender.send(event);
    }

    /// Sends every event from now on to `sink` as well, without loss (not bounded: its reader
    /// only writes them to disk).
    pub fn attach_sink(&self, sink: mpsc::UnboundedSender<Arc<GatewayEvent>>) {
        let _ = self.sink.set(sink);
    }

    /// Whether anybody listens (so that events costly to build can be skipped).
    pub fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<GatewayEvent>> {
        self.sender.subscribe()
    }
}

/// Publishes the sessions' own events (status, QR, connected) on the bus until shutdown.
pub async fn forward_session_events(
    bus: EventBus,
    mut events: broadcast::Receiver<crate::session::SessionEvent>,
    sessions: crate::session::SessionManager,
    shutdown: crate::shutdown::Shutdown,
) {
    use crate::session::SessionEventKind as Kind;
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "event bus fell behind the sessions' events");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let session = event.session.as_str();
        match event.kind {
            Kind::Status { status, reason } => {
                bus.publish(EventKind::SessionStatus, session, serde_json::json!({"status": status, "reason": reason}))
            }
            Kind::Qr(qr) => {
                let png = crate::api::sessions::qr_data_url(&qr.code).ok();
                bus.publish(
                    EventKind::SessionQr,
                    session,
                    serde_json::json!({"qr": qr.code, "qrPng": png, "expiresAt": qr.expires_at}),
                );
            }
            Kind::Connected { account, new_link } => bus.publish(
                EventKind::SessionConnected,
                session,
                serde_json::json!({
                    "me": account,
                    "phone": account.phone,
                    "jid": account.jid,
                    "lid": account.lid,
                    "pushName": account.push_name,
                    "connectedAt": crate::journal::now_ms(),
                    "newLink": new_link,
                    "metadata": sessions.get(&event.session).and_then(|s| s.metadata),
                }),
            ),
            Kind::LoggedOut => bus.publish(EventKind::SessionLoggedOut, session, serde_json::json!({})),
        }
    }
}

/// How long the status drain lets commits gather before handing their events over.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(20);

/// Hands the journal's `message.status` events (written in the same transaction as the status
/// they report) to the webhook outbox and to live subscribers, then deletes them from the
/// journal. A crash between the two hands them over again: at least once, same event id (the
/// outbox ignores an event it already has).
pub async fn drain_status_events(
    journal: crate::journal::Journal,
    webhooks: crate::webhooks::Webhooks,
    bus: EventBus,
    shutdown: crate::shutdown::Shutdown,
) {
    loop {
        let recorded = match journal.status_events(0, 512).await {
            Ok(recorded) => recorded,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read message.status events");
                Vec::new()
            }
        };
        let Some(last) = recorded.last().map(|e| e.seq) else {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = journal.committed() => {
                    // Let a few commits gather: one hand-over for many events, not one per
                    // commit (at thousands of messages a second this is what keeps it cheap).
                    tokio::time::sleep(COALESCE).await;
                    continue;
                }
                // A fallback should a wake-up be missed after an error.
                () = tokio::time::sleep(std::time::Duration::from_secs(5)) => continue,
            }
        };
        let events: Vec<Arc<GatewayEvent>> = recorded
            .into_iter()
            .map(|e| {
                Arc::new(GatewayEvent {
                    id: e.event_id,
                    event: EventKind::MessageStatus,
                    session_id: e.session_id,
                    timestamp: e.at,
                    data: serde_json::json!({
                        "messageId": e.message_id,
                        "status": e.status,
                        "type": e.kind,
                        "lastError": e.last_error,
                    }),
                })
            })
            .collect();
        if let Err(e) = webhooks.enqueue(events.clone()).await {
            tracing::error!(error = %e, "cannot write message.status events to the webhook outbox");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
            }
        }
        for event in events {
            bus.publish_live(event);
        }
        if let Err(e) = journal.delete_status_events(last).await {
            tracing::warn!(error = %e, "cannot delete handed-over message.status events");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }
}
