//! The gateway's event bus: what `/ws/events` pushes (and what webhooks will post), one shape
//! for every event: `{"id","event","sessionId","timestamp","data"}`.
//!
//! A bounded broadcast: a subscriber that falls behind loses the oldest events and learns how
//! many (`lagged`), so a slow reader never costs unbounded memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// Events a subscriber may fall behind by before it is told it lagged.
const CAPACITY: usize = 1024;

/// The events we publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventKind {
    #[serde(rename = "session.status")]
    SessionStatus,
    #[serde(rename = "session.qr")]
    SessionQr,
    #[serde(rename = "session.connected")]
    SessionConnected,
    #[serde(rename = "message.received")]
    MessageReceived,
    #[serde(rename = "message.status")]
    MessageStatus,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::SessionStatus,
        EventKind::SessionQr,
        EventKind::SessionConnected,
        EventKind::MessageReceived,
        EventKind::MessageStatus,
    ];

    /// The one place each event name is spelled.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionStatus => "session.status",
            EventKind::SessionQr => "session.qr",
            EventKind::SessionConnected => "session.connected",
            EventKind::MessageReceived => "message.received",
            EventKind::MessageStatus => "message.status",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayEvent {
    /// Increasing within this process.
    pub id: u64,
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
    next_id: Arc<AtomicU64>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus { sender: broadcast::channel(CAPACITY).0, next_id: Arc::new(AtomicU64::new(1)) }
    }
}

impl EventBus {
    /// Publishes an event (nobody listening is fine).
    pub fn publish(&self, event: EventKind, session_id: &str, data: Value) {
        let event = GatewayEvent {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            event,
            session_id: session_id.to_owned(),
            timestamp: crate::journal::now_ms(),
            data,
        };
        let _ = self.sender.send(Arc::new(event));
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
            Kind::Qr(qr) => bus.publish(EventKind::SessionQr, session, serde_json::json!({"qr": qr})),
            Kind::Connected(account) => {
                bus.publish(EventKind::SessionConnected, session, serde_json::json!({"me": account}))
            }
            Kind::LoggedOut => bus.publish(
                EventKind::SessionStatus,
                session,
                serde_json::json!({"status": crate::session::Status::LoggedOut, "reason": "logged out"}),
            ),
        }
    }
}
