//! In a fleet: this gateway's own message events go to the other gateways' buses, and theirs
//! come to this one's, through Postgres (the wire format is `fleet::events`'s). Two tasks, owned
//! by the shutdown tracker like the other relays: one sends, one receives.
//!
//! Session events do not travel here: every gateway shows them from the state the number's
//! gateway records. Received events go to live subscribers only (the webhooks got them from
//! their producer), so they are never sent on again. An event two gateways both handed over
//! (each drains the shared journal's `message.status` events) is shown once: the bus drops the
//! ids it has shown, its own included.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;

use crate::events::{EventBus, GatewayEvent};
use crate::fleet::Fleet;
use crate::fleet::events::{
    FromFleet, Incoming, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_EVENT_BYTES, Outgoing, STATUSES_WANTED_EVERY,
    STATUSES_WANTED_FOR,
};
use crate::journal::Journal;
use crate::shutdown::Shutdown;

/// Starts both tasks on `shutdown`. Subscribed before this returns: whatever is published after
/// (the sessions start later) is sent.
pub(crate) fn spawn(bus: &EventBus, fleet: &Fleet, journal: Journal, shutdown: &Shutdown) {
    let own = bus.own_events();
    let wanted = bus.statuses_wanted();
    let from_fleet = fleet.from_fleet();
    let outgoing = Outgoing::new(fleet.gateway().clone(), rand::random());
    shutdown.spawn(send_own(own, wanted, outgoing, fleet.clone(), shutdown.clone()));
    let incoming = Incoming::new(fleet.gateway().clone());
    shutdown.spawn(show_others(from_fleet, incoming, bus.clone(), journal, shutdown.clone()));
}

/// Sends this gateway's own message events, a batch at a time: whatever waits when the last
/// batch is sent goes in the next. Says so while live subscribers here want `message.status`.
async fn send_own(
    mut own: tokio::sync::broadcast::Receiver<Arc<GatewayEvent>>,
    mut wanted: tokio::sync::watch::Receiver<usize>,
    mut outgoing: Outgoing,
    fleet: Fleet,
    shutdown: Shutdown,
) {
    let mut again = tokio::time::interval(STATUSES_WANTED_EVERY);
    let mut was_wanted = false;
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            received = own.recv() => received,
            changed = wanted.changed() => {
                if changed.is_err() {
                    return;
                }
                let now_wanted = *wanted.borrow_and_update() > 0;
                if now_wanted && !was_wanted {
                    fleet.want_statuses().await;
                    again.reset();
                }
                was_wanted = now_wanted;
                continue;
            }
            _ = again.tick() => {
                if *wanted.borrow() > 0 {
                    fleet.want_statuses().await;
                }
                continue;
            }
        };
        let mut batch = Batch::default();
        match first {
            Ok(event) => batch.add(&event),
            Err(RecvError::Lagged(lost)) => unsent_behind(lost),
            Err(RecvError::Closed) => return,
        }
        while batch.events.len() < MAX_BATCH_EVENTS && batch.bytes < MAX_BATCH_BYTES {
            match own.try_recv() {
                Ok(event) => batch.add(&event),
                Err(TryRecvError::Lagged(lost)) => unsent_behind(lost),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        if batch.events.is_empty() {
            continue;
        }
        let parts = outgoing.encode(&batch.events);
        if let Err(e) = fleet.send_events(&parts).await {
            tracing::warn!(error = %e, events = batch.events.len(), "cannot send events to the fleet");
            unsent("error", batch.events.len() as u64);
        }
    }
}

/// One batch being gathered: each event's JSON, and their length together.
#[derive(Default)]
struct Batch {
    events: Vec<String>,
    bytes: usize,
}

impl Batch {
    fn add(&mut self, event: &GatewayEvent) {
        match serde_json::to_string(event) {
            Ok(json) if json.len() <= MAX_EVENT_BYTES => {
                self.bytes += json.len() + 1;
                self.events.push(json);
            }
            Ok(json) => {
                tracing::warn!(event = %event.id, bytes = json.len(), "an event too large for the fleet");
                unsent("too_large", 1);
            }
            Err(e) => {
                tracing::error!(event = %event.id, error = %e, "cannot encode an event for the fleet");
                unsent("error", 1);
            }
        }
    }
}

fn unsent_behind(lost: u64) {
    tracing::warn!(lost, "the fleet fan-out fell behind this gateway's events");
    unsent("backlog", lost);
}

fn unsent(reason: &'static str, count: u64) {
    metrics::counter!(crate::metrics::FLEET_EVENTS_UNSENT, "reason" => reason).increment(count);
}

/// Shows the other gateways' events here, once each, and records this gateway's
/// `message.status` events while another gateway wants them.
async fn show_others(
    mut from_fleet: tokio::sync::broadcast::Receiver<FromFleet>,
    mut incoming: Incoming,
    bus: EventBus,
    journal: Journal,
    shutdown: Shutdown,
) {
    let mut wanted_by: HashMap<crate::domain::GatewayId, Instant> = HashMap::new();
    let mut recording = None;
    let mut expire = tokio::time::interval(STATUSES_WANTED_EVERY);
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => return,
            received = from_fleet.recv() => received,
            _ = expire.tick() => {
                let now = Instant::now();
                wanted_by.retain(|_, until| *until > now);
                if wanted_by.is_empty() && recording.take().is_some() {
                    tracing::debug!("no gateway of the fleet wants message.status events any more");
                }
                continue;
            }
        };
        match received {
            Ok(FromFleet::Part(payload)) => {
                let arrived = incoming.accept(&payload);
                if arrived.missed > 0 {
                    tracing::warn!(batches = arrived.missed, "events of other gateways were missed");
                    metrics::counter!(crate::metrics::FLEET_EVENT_BATCHES_MISSED).increment(arrived.missed);
                }
                if let Some(batch) = arrived.batch {
                    show(&batch, &bus);
                }
            }
            Ok(FromFleet::StatusesWanted(gateway)) => {
                wanted_by.insert(gateway, Instant::now() + STATUSES_WANTED_FOR);
                recording.get_or_insert_with(|| journal.want_status_events());
            }
            // The gaps in the batches' numbers count what was lost.
            Err(RecvError::Lagged(lost)) => tracing::warn!(lost, "the fleet fan-out fell behind the fleet's notices"),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Publishes a batch's events here, live only (the bus drops those shown already).
fn show(batch: &str, bus: &EventBus) {
    let events: Vec<serde_json::Value> = match serde_json::from_str(batch) {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(error = %e, "an unreadable batch of events from the fleet");
            return;
        }
    };
    for event in events {
        let event: GatewayEvent = match serde_json::from_value(event) {
            Ok(event) => event,
            // From a newer gateway, perhaps: the others are still shown.
            Err(e) => {
                tracing::debug!(error = %e, "an unreadable event from the fleet");
                continue;
            }
        };
        bus.publish_live(Arc::new(event));
    }
}
