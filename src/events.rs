//! The gateway's event bus: what `/ws/events` pushes (and what webhooks will post), one shape
//! for every event: `{"id","event","sessionId","timestamp","data"}`.
//!
//! A bounded broadcast: a subscriber that falls behind loses the oldest events and learns how
//! many (`lagged`), so a slow reader never costs unbounded memory.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

pub use crate::domain::EventKind;

/// Events a subscriber may fall behind by before it is told it lagged.
const CAPACITY: usize = 1024;

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
            timestamp: crate::domain::now_ms(),
            data,
        });
        if let Some(sink) = self.sink.get() {
            let _ = sink.send(Arc::clone(&event));
        }
        let _ = self.sender.send(event);
    }

    /// Publishes an event to live subscribers only (`/ws/events`), not to the webhook outbox: in
    /// a fleet, for what another gateway saw happen and wrote to the shared outbox itself.
    pub fn publish_here(&self, event: EventKind, session_id: &str, data: Value) {
        self.publish_live(Arc::new(GatewayEvent {
            id: new_event_id(),
            event,
            session_id: session_id.to_owned(),
            timestamp: crate::domain::now_ms(),
            data,
        }));
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
