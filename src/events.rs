//! The gateway's event bus: what `/ws/events` pushes (and what webhooks will post), one shape
//! for every event: `{"id","event","sessionId","timestamp","data"}`.
//!
//! A bounded broadcast: a subscriber that falls behind loses the oldest events and learns how
//! many (`lagged`), so a slow reader never costs unbounded memory.
//!
//! In a fleet the bus also hands this gateway's own message events to the fan-out
//! (`app::fanout`), which sends them to the other gateways' buses through Postgres; what arrives
//! from them is published here live only ([`EventBus::publish_live`]), never handed on again.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use crate::domain::EventKind;

/// Events a subscriber may fall behind by before it is told it lagged.
const CAPACITY: usize = 1024;

/// Own events the fan-out may fall behind by (it sends them in batches of up to 256).
const FLEET_CAPACITY: usize = 4096;

/// How many event ids a gateway of a fleet remembers, to show an event that reaches it twice
/// once.
pub const RECENT_IDS: usize = 8192;

/// One event.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// An event on its way to the webhook outbox, and who waits for it to be written there: a
/// received message is acknowledged to WhatsApp only then (until then WhatsApp keeps it, and
/// delivers it again after a crash).
#[derive(Debug)]
pub struct ToOutbox {
    pub event: Arc<GatewayEvent>,
    /// Told whether the outbox has it.
    pub written: Option<oneshot::Sender<bool>>,
}

/// Cheap to clone; every clone publishes to the same subscribers.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<GatewayEvent>>,
    /// Where every event also goes, losslessly: the webhook outbox.
    sink: Arc<OnceLock<mpsc::UnboundedSender<ToOutbox>>>,
    /// In a fleet: what the fan-out needs (see [`EventBus::own_events`]).
    fleet: Arc<OnceLock<Fleetwide>>,
    /// How many live subscribers here want `message.status` events.
    statuses_wanted: Arc<watch::Sender<usize>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::channel(CAPACITY).0,
            sink: Arc::default(),
            fleet: Arc::default(),
            statuses_wanted: Arc::new(watch::channel(0).0),
        }
    }
}

/// What the bus keeps in a fleet.
struct Fleetwide {
    /// This gateway's own message events, for the other gateways.
    own: broadcast::Sender<Arc<GatewayEvent>>,
    /// The ids last shown here: the journal's `message.status` events are handed over by
    /// whichever gateway drains them first, sometimes by two.
    recent: Mutex<RecentIds>,
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
        self.publish_written(event, None);
    }

    /// Publishes an event whose id its producer chose, and tells `written` (if any) once the
    /// webhook outbox has it (at once when there is none).
    pub fn publish_written(&self, event: Arc<GatewayEvent>, written: Option<oneshot::Sender<bool>>) {
        self.to_outbox(Arc::clone(&event), written);
        self.show(event, true);
    }

    /// Hands an event to the webhook outbox only (it was shown here already), and tells
    /// `written` once the outbox has it (dropped unanswered if it cannot). The outbox keeps one
    /// delivery per event id.
    pub fn to_outbox(&self, event: Arc<GatewayEvent>, written: Option<oneshot::Sender<bool>>) {
        match self.sink.get() {
            Some(sink) => {
                let _ = sink.send(ToOutbox { event, written });
            }
            None => {
                if let Some(written) = written {
                    let _ = written.send(true);
                }
            }
        }
    }

    /// Publishes an event already written to the webhook outbox by its producer (the journal's
    /// `message.status` events) to live subscribers and, in a fleet, to the other gateways:
    /// once, however many times it is handed over.
    pub fn publish_recorded(&self, event: Arc<GatewayEvent>) {
        if self.first_time(&event.id) {
            self.show(event, true);
        }
    }

    /// Publishes an event to live subscribers only (`/ws/events`), not to the webhook outbox: in
    /// a fleet, for what another gateway saw happen and wrote to the shared outbox itself.
    pub fn publish_here(&self, event: EventKind, session_id: &str, data: Value) {
        self.show(
            Arc::new(GatewayEvent {
                id: new_event_id(),
                event,
                session_id: session_id.to_owned(),
                timestamp: crate::domain::now_ms(),
                data,
            }),
            false,
        );
    }

    /// Publishes an event to live subscribers here only (`/ws/events`), neither to the webhook
    /// outbox nor to the fleet: for what another gateway of the fleet published. Once, like
    /// [`EventBus::publish_recorded`].
    pub fn publish_live(&self, event: Arc<GatewayEvent>) {
        if self.first_time(&event.id) {
            self.show(event, false);
        }
    }

    /// To live subscribers, and with `share` to the other gateways of a fleet. Session events
    /// are never shared: the others show them from the state the number's gateway records (they
    /// would arrive twice).
    fn show(&self, event: Arc<GatewayEvent>, share: bool) {
        if share
            && !event.event.is_session()
            && let Some(fleet) = self.fleet.get()
        {
            let _ = fleet.own.send(Arc::clone(&event));
        }
        let _ = self.sender.send(event);
    }

    /// Whether the event `id` was not shown here yet (always, outside a fleet).
    fn first_time(&self, id: &str) -> bool {
        self.fleet.get().is_none_or(|fleet| fleet.recent.lock().unwrap_or_else(PoisonError::into_inner).insert(id))
    }

    /// Sends every event from now on to `sink` as well, without loss (not bounded: its reader
    /// only writes them to disk).
    pub fn attach_sink(&self, sink: mpsc::UnboundedSender<ToOutbox>) {
        let _ = self.sink.set(sink);
    }

    /// This gateway's own message events from now on, for the other gateways of a fleet (the
    /// fan-out's). Bounded like the bus: a reader that falls behind learns how many it lost.
    /// From the first call on, an event handed over twice ([`EventBus::publish_recorded`],
    /// [`EventBus::publish_live`]) is shown once, if its first showing is among the last
    /// [`RECENT_IDS`].
    pub fn own_events(&self) -> broadcast::Receiver<Arc<GatewayEvent>> {
        self.fleet
            .get_or_init(|| Fleetwide {
                own: broadcast::channel(FLEET_CAPACITY).0,
                recent: Mutex::new(RecentIds::with_capacity(RECENT_IDS)),
            })
            .own
            .subscribe()
    }

    /// Counts a live subscriber that wants `message.status` events until the guard drops: in a
    /// fleet, the others record theirs while one does.
    pub fn want_statuses(&self) -> StatusesWanted {
        self.statuses_wanted.send_modify(|wanted| *wanted += 1);
        StatusesWanted { wanted: Arc::clone(&self.statuses_wanted) }
    }

    /// How many live subscribers here want `message.status` events, as it changes.
    pub fn statuses_wanted(&self) -> watch::Receiver<usize> {
        self.statuses_wanted.subscribe()
    }

    /// Whether anybody listens (so that events costly to build can be skipped).
    pub fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<GatewayEvent>> {
        self.sender.subscribe()
    }
}

/// A live subscriber that wants `message.status` events (see [`EventBus::want_statuses`]).
#[derive(Debug)]
pub struct StatusesWanted {
    wanted: Arc<watch::Sender<usize>>,
}

impl Drop for StatusesWanted {
    fn drop(&mut self) {
        self.wanted.send_modify(|wanted| *wanted = wanted.saturating_sub(1));
    }
}

/// The ids of the last events seen, up to a capacity: the oldest is forgotten first.
#[derive(Debug)]
pub struct RecentIds {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl RecentIds {
    pub fn with_capacity(capacity: usize) -> RecentIds {
        RecentIds { seen: HashSet::with_capacity(capacity), order: VecDeque::with_capacity(capacity), capacity }
    }

    /// Remembers `id`; `false` when it was remembered already.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_event(id: &str) -> Arc<GatewayEvent> {
        Arc::new(GatewayEvent {
            id: id.to_owned(),
            event: EventKind::MessageStatus,
            session_id: "s".into(),
            timestamp: 1,
            data: Value::Null,
        })
    }

    #[test]
    fn recent_ids_drop_a_repeat_and_forget_the_oldest_beyond_their_capacity() {
        let mut recent = RecentIds::with_capacity(3);
        assert!(recent.insert("a"));
        assert!(!recent.insert("a"));
        for id in ["b", "c", "d"] {
            assert!(recent.insert(id));
        }
        assert!(recent.insert("a"), "forgotten: the oldest of four with room for three");
        assert!(!recent.insert("d"));
    }

    #[test]
    fn in_a_fleet_own_message_events_are_shared_once_and_received_or_session_ones_never() {
        let bus = EventBus::default();
        let mut live = bus.subscribe();
        let mut own = bus.own_events();
        bus.publish(EventKind::MessageReceived, "s", Value::Null);
        bus.publish(EventKind::SessionStatus, "s", Value::Null);
        bus.publish_recorded(status_event("evt_1"));
        // The same journal event handed over again, here or by another gateway: shown once.
        bus.publish_recorded(status_event("evt_1"));
        bus.publish_live(status_event("evt_1"));
        bus.publish_live(status_event("evt_2"));
        bus.publish_here(EventKind::SessionStatus, "s", Value::Null);

        let mut shared = Vec::new();
        while let Ok(event) = own.try_recv() {
            shared.push(event.event);
        }
        assert_eq!(shared, [EventKind::MessageReceived, EventKind::MessageStatus]);
        let mut shown = Vec::new();
        while let Ok(event) = live.try_recv() {
            shown.push(event.id.clone());
        }
        assert_eq!(shown.len(), 5, "{shown:?}");
        assert_eq!(shown.iter().filter(|id| *id == "evt_1").count(), 1);
    }

    #[test]
    fn alone_every_handing_over_is_shown_as_before() {
        let bus = EventBus::default();
        let mut live = bus.subscribe();
        bus.publish_recorded(status_event("evt_1"));
        bus.publish_recorded(status_event("evt_1"));
        assert!(live.try_recv().is_ok() && live.try_recv().is_ok());
    }
}
