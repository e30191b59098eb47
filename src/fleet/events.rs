//! One gateway's events for the others' `/ws/events`, through Postgres `NOTIFY` on the channel
//! `fleet_events`: what each gateway sends, how a receiver puts it back together, and which
//! gateways want `message.status` events (channel `fleet_statuses_wanted`).
//!
//! A gateway sends its events in numbered **batches**. A batch is one JSON array of events, cut
//! into **parts** of at most [`MAX_PAYLOAD_BYTES`] (a `NOTIFY` payload holds under 8000 bytes,
//! less the schema prefix every fleet notice carries), each behind a header line:
//!
//! ```text
//! <gateway> <run> <seq> <part> <count>\n<piece of the array>
//! ```
//!
//! `run` is random at every start of the process, `seq` counts its batches from 0. The parts of
//! a batch are sent in one statement, so they reach a listener together and in order, or not at
//! all (its connection was down): a receiver counts the batches it never saw from the gaps in
//! `seq`. Nothing is kept or sent again; webhooks are the durable path.
//!
//! Only the wire format lives here, as pure values the fan-out (`app::fanout`) drives: this
//! layer knows events only as JSON.

use std::collections::HashMap;
use std::sync::Arc;

use super::Fleet;
use crate::domain::GatewayId;
use crate::storage::{MessageKind, StorageError};

/// The most events one batch carries.
pub const MAX_BATCH_EVENTS: usize = 256;
/// The most bytes of one payload, header included (Postgres refuses 8000 and more, and the
/// schema prefix, up to 64 bytes, comes on top).
pub const MAX_PAYLOAD_BYTES: usize = 7900;
/// A batch takes no more events once its JSON is this long (a single event may go over).
pub const MAX_BATCH_BYTES: usize = 64 * 1024;
/// An event whose JSON is longer is not sent (it would take more than 33 parts).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// How often a gateway with live subscribers of `message.status` events says so again.
pub const STATUSES_WANTED_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a gateway records its `message.status` events after another said it wants them
/// (three of its announcements: one lost is no gap).
pub const STATUSES_WANTED_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Notices the fan-out may fall behind by (its gaps are counted as missed).
pub(super) const FROM_FLEET: usize = 1024;

/// What the other gateways sent this gateway's fan-out.
#[derive(Debug, Clone)]
pub enum FromFleet {
    /// One part of a batch of another gateway's events (see [`Incoming::accept`]).
    Part(Arc<str>),
    /// That gateway has live subscribers of `message.status` events.
    StatusesWanted(GatewayId),
}

impl Fleet {
    /// What the other gateways send this one's fan-out, from now on.
    pub fn from_fleet(&self) -> tokio::sync::broadcast::Receiver<FromFleet> {
        self.inner.from_fleet.subscribe()
    }

    /// Sends the parts of one batch ([`Outgoing::encode`]) in one statement.
    pub async fn send_events(&self, parts: &[String]) -> Result<(), StorageError> {
        self.inner.leases.send_all(MessageKind::Events, parts).await
    }

    /// Tells the others that this gateway has live subscribers of `message.status` events: they
    /// record theirs for [`STATUSES_WANTED_FOR`] from now.
    pub async fn want_statuses(&self) {
        if let Err(e) = self.inner.leases.send(MessageKind::StatusesWanted, self.gateway().as_str()).await {
            tracing::warn!(error = %e, "cannot ask the fleet for message.status events");
        }
    }

    /// An events notice from the database, for the fan-out (nobody listening is fine).
    pub(super) fn on_fan_out(&self, kind: MessageKind, message: String) {
        let notice = match kind {
            MessageKind::Events => FromFleet::Part(Arc::from(message)),
            MessageKind::StatusesWanted => match GatewayId::parse(&message) {
                Ok(gateway) => FromFleet::StatusesWanted(gateway),
                Err(_) => return,
            },
            MessageKind::Command | MessageKind::Reply | MessageKind::Queued => return,
        };
        let _ = self.inner.from_fleet.send(notice);
    }
}

/// Numbers and cuts one gateway's batches, for one run of the process.
#[derive(Debug)]
pub struct Outgoing {
    gateway: GatewayId,
    run: u64,
    next_seq: u64,
}

impl Outgoing {
    /// The batches of `gateway` in the run `run` (random at every start).
    pub fn new(gateway: GatewayId, run: u64) -> Outgoing {
        Outgoing { gateway, run, next_seq: 0 }
    }

    /// The payloads of the next batch: `events` (each one event's JSON) as one JSON array, cut
    /// into parts of at most [`MAX_PAYLOAD_BYTES`] each (at character boundaries).
    pub fn encode(&mut self, events: &[String]) -> Vec<String> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let body = format!("[{}]", events.join(","));
        // Room for the header at its longest: no part or count has more digits than the body
        // has bytes.
        let widest = header(&self.gateway, self.run, seq, body.len(), body.len());
        let room = MAX_PAYLOAD_BYTES.saturating_sub(widest.len()).max(4);
        let mut pieces = Vec::new();
        let mut rest = body.as_str();
        while !rest.is_empty() {
            let mut end = room.min(rest.len());
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let (piece, after) = rest.split_at(end);
            pieces.push(piece);
            rest = after;
        }
        let count = pieces.len();
        pieces
            .into_iter()
            .enumerate()
            .map(|(part, piece)| header(&self.gateway, self.run, seq, part, count) + piece)
            .collect()
    }
}

fn header(gateway: &GatewayId, run: u64, seq: u64, part: usize, count: usize) -> String {
    format!("{gateway} {run:016x} {seq} {part} {count}\n")
}

/// A payload's header, read.
struct Header<'a> {
    gateway: &'a str,
    run: u64,
    seq: u64,
    part: usize,
    count: usize,
}

fn parse(payload: &str) -> Option<(Header<'_>, &str)> {
    let (line, piece) = payload.split_once('\n')?;
    let mut fields = line.split(' ');
    let header = Header {
        gateway: fields.next()?,
        run: u64::from_str_radix(fields.next()?, 16).ok()?,
        seq: fields.next()?.parse().ok()?,
        part: fields.next()?.parse().ok()?,
        count: fields.next()?.parse().ok()?,
    };
    (fields.next().is_none() && header.part < header.count).then_some((header, piece))
}

/// What one payload brought.
#[derive(Debug, Default, PartialEq)]
pub struct Arrived {
    /// Batches of its sender now known to be lost (never seen, or seen in part).
    pub missed: u64,
    /// A whole batch, its last part being this payload: the JSON array of its events.
    pub batch: Option<String>,
}

/// Puts the other gateways' batches back together and counts what went missing.
#[derive(Debug)]
pub struct Incoming {
    own: GatewayId,
    peers: HashMap<String, Peer>,
}

/// What a receiver knows of one other gateway.
#[derive(Debug)]
struct Peer {
    run: u64,
    /// The batch expected next.
    next_seq: u64,
    /// The parts so far of batch `next_seq`: how many, of how many, and their text.
    partial: Option<(usize, usize, String)>,
}

impl Incoming {
    /// The receiver of gateway `own` (whose own payloads it skips).
    pub fn new(own: GatewayId) -> Incoming {
        Incoming { own, peers: HashMap::new() }
    }

    /// Takes one payload (its schema prefix taken off). Unreadable payloads and this gateway's
    /// own bring nothing.
    pub fn accept(&mut self, payload: &str) -> Arrived {
        let Some((header, piece)) = parse(payload) else { return Arrived::default() };
        if header.gateway == self.own.as_str() {
            return Arrived::default();
        }
        let mut arrived = Arrived::default();
        let peer = self
            .peers
            .entry(header.gateway.to_owned())
            // The first batch this gateway sees of a peer: what came before is not counted.
            .or_insert(Peer { run: header.run, next_seq: header.seq, partial: None });
        if peer.run != header.run {
            // The peer started again: its new run counts from 0.
            arrived.missed = u64::from(peer.partial.is_some()).saturating_add(header.seq);
            *peer = Peer { run: header.run, next_seq: header.seq, partial: None };
        }
        if header.seq < peer.next_seq {
            // Seen already, or given up on.
            return arrived;
        }
        if header.seq > peer.next_seq {
            arrived.missed += header.seq - peer.next_seq;
            peer.next_seq = header.seq;
            peer.partial = None;
        }
        let so_far = match peer.partial.take() {
            None if header.part == 0 => (1, header.count, piece.to_owned()),
            Some((parts, count, mut text)) if parts == header.part && count == header.count => {
                text.push_str(piece);
                (parts + 1, count, text)
            }
            // A part out of place: this batch cannot be put together.
            _ => {
                arrived.missed += 1;
                peer.next_seq += 1;
                return arrived;
            }
        };
        if so_far.0 == so_far.1 {
            peer.next_seq += 1;
            arrived.batch = Some(so_far.2);
        } else {
            peer.partial = Some(so_far);
        }
        arrived
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(name: &str) -> GatewayId {
        GatewayId::parse(name).expect("a gateway id")
    }

    fn event(n: usize, filler: usize) -> String {
        serde_json::json!({"id": format!("evt_{n}"), "text": "ñ".repeat(filler)}).to_string()
    }

    /// The events of a whole batch, as a receiver reads them.
    fn ids(batch: &str) -> Vec<String> {
        let events: Vec<serde_json::Value> = serde_json::from_str(batch).expect("a JSON array");
        events.iter().map(|e| e["id"].as_str().expect("an id").to_owned()).collect()
    }

    #[test]
    fn a_small_batch_is_one_payload_and_a_large_one_parts_that_put_back_the_same_events() {
        let mut out = Outgoing::new(gateway("gw-a"), 0xabc);
        let small: Vec<String> = (0..3).map(|n| event(n, 10)).collect();
        let parts = out.encode(&small);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].starts_with("gw-a 0000000000000abc 0 0 1\n"), "{}", parts[0]);

        // Two-byte characters, so that some cuts fall inside one: parts end at boundaries.
        let large: Vec<String> = (0..MAX_BATCH_EVENTS).map(|n| event(n, 100)).collect();
        let parts = out.encode(&large);
        assert!(parts.len() > 5, "{}", parts.len());
        assert!(parts.iter().all(|p| p.len() <= MAX_PAYLOAD_BYTES), "every payload fits a NOTIFY");
        assert!(parts[1].starts_with(&format!("gw-a 0000000000000abc 1 1 {}\n", parts.len())));

        let mut receiver = Incoming::new(gateway("gw-b"));
        assert_eq!(receiver.accept(&out.encode(&small)[0]).batch.map(|b| ids(&b).len()), Some(3));
        let mut receiver = Incoming::new(gateway("gw-b"));
        let mut whole = None;
        for (i, part) in parts.iter().enumerate() {
            let arrived = receiver.accept(part);
            assert_eq!(arrived.missed, 0);
            assert_eq!(arrived.batch.is_some(), i == parts.len() - 1, "whole only at its last part");
            whole = whole.or(arrived.batch);
        }
        let expected: Vec<String> = (0..MAX_BATCH_EVENTS).map(|n| format!("evt_{n}")).collect();
        assert_eq!(ids(&whole.expect("the batch")), expected);
    }

    #[test]
    fn one_event_larger_than_a_payload_is_cut_and_put_back() {
        let mut out = Outgoing::new(gateway("gw-a"), 1);
        let huge = vec![event(7, 20_000)];
        let parts = out.encode(&huge);
        assert!(parts.len() >= 6, "{}", parts.len());
        let mut receiver = Incoming::new(gateway("gw-b"));
        let batch = parts.iter().filter_map(|p| receiver.accept(p).batch).next().expect("the batch");
        assert_eq!(batch, format!("[{}]", huge[0]));
    }

    #[test]
    fn gaps_in_the_sequence_and_broken_batches_are_counted_as_missed_and_a_new_run_starts_over() {
        let mut out = Outgoing::new(gateway("gw-a"), 1);
        let one = vec![event(1, 1)];
        let big: Vec<String> = (0..50).map(|n| event(n, 200)).collect();
        let batches: Vec<Vec<String>> = (0..6).map(|n| out.encode(if n == 3 { &big } else { &one })).collect();
        let mut receiver = Incoming::new(gateway("gw-b"));

        // The first batch seen of a gateway counts nothing before it.
        assert_eq!(receiver.accept(&batches[1][0]).missed, 0);
        // 2 lost; 3 arrives without its first part: both counted at once, the rest of 3 ignored.
        assert_eq!(batches[3].len(), 3);
        assert_eq!(receiver.accept(&batches[3][1]), Arrived { missed: 2, batch: None });
        assert_eq!(receiver.accept(&batches[3][2]), Arrived::default());
        let arrived = receiver.accept(&batches[4][0]);
        assert_eq!((arrived.missed, arrived.batch.is_some()), (0, true));
        // A repeat of something seen is ignored.
        assert_eq!(receiver.accept(&batches[4][0]), Arrived::default());

        // The gateway starts again: its new run counts from 0, so 2 batches were lost before it.
        let mut again = Outgoing::new(gateway("gw-a"), 2);
        let restarted: Vec<Vec<String>> = (0..3).map(|_| again.encode(&one)).collect();
        let arrived = receiver.accept(&restarted[2][0]);
        assert_eq!((arrived.missed, arrived.batch.is_some()), (2, true));

        // Its own payloads and unreadable ones bring nothing.
        let mut own = Incoming::new(gateway("gw-a"));
        assert_eq!(own.accept(&batches[0][0]), Arrived::default());
        assert_eq!(receiver.accept("gw-a zz 1 0 1\n[]"), Arrived::default());
        assert_eq!(receiver.accept("gw-a 1 9 3 3\n[]"), Arrived::default(), "a part beyond its count");
    }
}
