//! Everything the fake server remembers: virtual phones, linked devices, pending QR refs and
//! pairing-code requests, live connections and what reached each phone.
//!
//! One `std::sync::Mutex` guards it; no lock is ever held across an `.await`. Each virtual
//! phone's Signal state lives behind its own async mutex because decrypting awaits its stores.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use wacore_binary::{Jid, Node};
use wacore_libsignal::protocol::KeyPair;
use waproto::whatsapp as wa;

use crate::phone::{PreKeyBundleData, VirtualDevice};

pub(crate) type ConnId = u64;

/// What a connection task is asked to do by someone else (admin API, routing).
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Encrypt and send this stanza.
    Node(Node),
    /// Send this stanza, then close the socket.
    NodeThenClose(Node),
    /// Drop the TCP connection without a goodbye (a network failure as the client sees it).
    Drop,
}

/// What became of a stanza for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Handed to its live connection; `again` when the device had been handed this message id
    /// before (a redelivery).
    Sent { again: bool },
    /// Kept for its next login.
    Queued,
    /// No such device (or nothing that could be sent).
    NoDevice,
}

/// A linked device's address: phone number digits plus device id (0 is the phone itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DeviceKey {
    pub(crate) phone: String,
    pub(crate) device: u16,
}

impl DeviceKey {
    pub(crate) fn jid(&self) -> Jid {
        Jid::pn_device(self.phone.clone(), self.device)
    }

    pub(crate) fn from_jid(jid: &Jid) -> Self {
        Self { phone: jid.user.to_string(), device: jid.device }
    }
}

/// The key material a companion registers when it first connects, and later refreshes.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub(crate) registration_id: u32,
    pub(crate) identity: [u8; 32],
    pub(crate) signed_prekey_id: u32,
    pub(crate) signed_prekey: [u8; 32],
    pub(crate) signed_prekey_signature: [u8; 64],
}

/// A companion device (a linked whatsapp-rust client).
pub(crate) struct Device {
    pub(crate) key: DeviceKey,
    pub(crate) lid: Jid,
    pub(crate) noise_key: [u8; 32],
    pub(crate) registration: Registration,
    pub(crate) prekeys: VecDeque<(u32, [u8; 32])>,
    /// The `ADVSignedDeviceIdentity` the device returned in `pair-device-sign`.
    pub(crate) adv_identity: Vec<u8>,
    pub(crate) key_index: u32,
    pub(crate) removed: bool,
    pub(crate) conn: Option<ConnId>,
    pub(crate) offline: VecDeque<Node>,
    /// The messages handed to its connections and not yet acknowledged.
    pub(crate) acks: AckTracker,
    /// True until the device has confirmed (with its `peer_msg` receipt) the app-state keys the
    /// phone shares after its first login. A share sent on a connection the client drops
    /// before reading it is sent again on the next login, as WhatsApp keeps a message until the
    /// device receipts it.
    pub(crate) needs_key_share: bool,
    /// The message id of the key share last sent, awaiting its receipt.
    pub(crate) key_share_id: Option<String>,
}

impl Device {
    /// What a new login receives before the offline marker: first the messages handed to an
    /// earlier connection that the device never acknowledged (WhatsApp keeps a message until
    /// the device acks it, and delivers it again on every login until then), then what queued
    /// while it was away. Each comes with whether this device had been handed its id before.
    pub(crate) fn take_login_backlog(&mut self) -> Vec<(Node, bool)> {
        let mut out: Vec<(Node, bool)> =
            std::mem::take(&mut self.acks.waiting).into_iter().map(|n| (n, true)).collect();
        for node in std::mem::take(&mut self.offline) {
            let again = self.acks.handed_before(&node);
            out.push((node, again));
        }
        for (node, _) in &out {
            self.acks.handed(node);
        }
        out
    }

    pub(crate) fn bundle(&mut self) -> PreKeyBundleData {
        let r = &self.registration;
        PreKeyBundleData {
            registration_id: r.registration_id,
            identity_key: r.identity,
            signed_prekey_id: r.signed_prekey_id,
            signed_prekey: r.signed_prekey,
            signed_prekey_signature: r.signed_prekey_signature,
            one_time_prekey: self.prekeys.pop_front(),
        }
    }
}

/// The messages a device has been handed and has not acknowledged, and the ids it was ever
/// handed (to tell a redelivery from a first delivery).
#[derive(Default)]
pub(crate) struct AckTracker {
    /// Handed to a connection, waiting for the device's receipt or `<ack class="message">`.
    waiting: VecDeque<Node>,
    ids: HashSet<String>,
    order: VecDeque<String>,
}

/// How many message ids a device remembers having been handed; a test sends far fewer.
const HANDED_IDS: usize = 4096;
/// How many unacknowledged messages a device keeps for redelivery.
const WAITING: usize = 1024;

impl AckTracker {
    /// Whether the device was handed this message's id before.
    pub(crate) fn handed_before(&self, node: &Node) -> bool {
        awaits_ack(node) && message_id(node).is_some_and(|id| self.ids.contains(id.as_ref()))
    }

    /// The message goes to the device's connection now: it waits for the ack.
    pub(crate) fn handed(&mut self, node: &Node) {
        if !awaits_ack(node) {
            return;
        }
        let Some(id) = message_id(node).map(|id| id.into_owned()) else { return };
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > HANDED_IDS
                && let Some(oldest) = self.order.pop_front()
            {
                self.ids.remove(&oldest);
            }
        }
        self.waiting.push_back(node.clone());
        if self.waiting.len() > WAITING {
            self.waiting.pop_front();
        }
    }

    /// The device acknowledged these message ids (a delivery or read receipt, or an ack).
    pub(crate) fn acknowledge(&mut self, ids: &[String]) {
        self.waiting.retain(|node| message_id(node).is_none_or(|id| !ids.iter().any(|a| *a == id)));
    }

    /// The phone removed the device: nothing waits for it any more.
    pub(crate) fn clear(&mut self) {
        self.waiting.clear();
    }

    /// How many messages wait for the device's ack.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

/// Whether WhatsApp keeps this stanza until the device acknowledges it: a `<message>`. The
/// primary's app-state key share (`category="peer"`) is left out: it has its own resend, a
/// fresh share on each login until its receipt (`needs_key_share`).
fn awaits_ack(node: &Node) -> bool {
    node.tag == "message" && crate::stanza::attr(node, "category").as_deref() != Some("peer")
}

fn message_id(node: &Node) -> Option<std::borrow::Cow<'_, str>> {
    crate::stanza::attr(node, "id")
}

/// A document as the virtual phone decrypted it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DocumentRecord {
    pub file_name: Option<String>,
    pub mimetype: Option<String>,
    /// Hex SHA-256 of the decrypted file.
    pub sha256: String,
    pub size: u64,
}

/// A media file (image, video, audio, document, sticker) as the virtual phone downloaded and
/// decrypted it from the media server.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MediaRecord {
    /// Hex SHA-256 of the decrypted file (empty if it could not be downloaded or decrypted).
    pub sha256: String,
    /// Size of the decrypted file in bytes (0 if it could not be downloaded or decrypted).
    pub size: u64,
    pub mimetype: Option<String>,
    pub file_name: Option<String>,
    pub caption: Option<String>,
    /// For audio: whether it came as a voice note (push to talk). Left out for other media.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ptt: Option<bool>,
    /// For audio and video: the length the message declares, in seconds. Left out when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u32>,
}

/// A shared location.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LocationRecord {
    pub latitude: f64,
    pub longitude: f64,
    pub name: Option<String>,
    pub address: Option<String>,
}

/// A reaction to an earlier message; an empty emoji takes the reaction back.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReactionRecord {
    /// The id of the message reacted to.
    pub message_id: Option<String>,
    pub emoji: String,
}

/// One message that reached a virtual phone, as the admin API reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReceivedMessage {
    pub id: String,
    /// The sending device's JID.
    pub from: String,
    /// The sending device's LID (`LID:device@lid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_lid: Option<String>,
    #[serde(rename = "type")]
    pub kind: MessageKind,
    /// The text of a text message, or the caption of a media message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentRecord>,
    /// The file of any media message (document included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reaction: Option<ReactionRecord>,
    /// Unix milliseconds.
    pub received_at: u64,
    /// How often the message arrived again under this id after the phone showed it (resends
    /// the phone ignored, as WhatsApp shows a message id once). Left out while 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub repeats: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What kind of content a recorded message carried.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    Text,
    Image,
    Video,
    Audio,
    Document,
    Sticker,
    Location,
    Reaction,
    Other,
}

/// A receipt a linked device sent for a message a virtual phone had sent it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReceiptRecord {
    pub id: String,
    pub from: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// A phone number with its server-held primary device 0.
pub(crate) struct Phone {
    pub(crate) lid_user: String,
    /// The ADV account key = the identity of device 0.
    pub(crate) account: KeyPair,
    pub(crate) device0: Arc<tokio::sync::Mutex<VirtualDevice>>,
    pub(crate) next_device: u16,
    pub(crate) next_key_index: u32,
    pub(crate) messages: Vec<ReceivedMessage>,
    pub(crate) receipts: Vec<ReceiptRecord>,
    /// Messages that arrived again with an id already shown (resends).
    pub(crate) duplicates: u64,
}

/// A message a virtual phone sent: who to, and its content, to encrypt again on a redelivery.
#[derive(Clone)]
pub(crate) struct PhoneSent {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) message: wa::Message,
}

/// A QR ref handed to an unregistered connection, waiting for a scan.
pub(crate) struct PendingRef {
    pub(crate) conn: ConnId,
    pub(crate) expires: Instant,
}

/// What an unregistered connection told us about itself.
#[derive(Clone)]
pub(crate) struct Unpaired {
    pub(crate) noise_key: [u8; 32],
    pub(crate) registration: Registration,
}

/// A pair-success sent and not yet answered with `pair-device-sign`.
pub(crate) struct PendingPair {
    pub(crate) iq_id: String,
    pub(crate) key: DeviceKey,
    pub(crate) lid: Jid,
    pub(crate) key_index: u32,
    pub(crate) unpaired: Unpaired,
    pub(crate) done: oneshot::Sender<()>,
}

/// A companion's `companion_hello`: it shows a pairing code and waits for the phone of the number
/// it named to type it.
pub(crate) struct CodeRequest {
    pub(crate) conn: ConnId,
    /// The `link_code_pairing_ref` the server minted; every later stage names it.
    pub(crate) reference: Vec<u8>,
    /// `salt(32) ‖ iv(16) ‖ AES-256-CTR(companion ephemeral public key)` under the code's key.
    pub(crate) wrapped_ephemeral: [u8; 80],
    pub(crate) expires: Instant,
    /// Set while the phone, having sent `primary_hello`, waits for `companion_finish`.
    pub(crate) finish: Option<oneshot::Sender<CompanionFinish>>,
}

/// What a companion's `companion_finish` carries to the phone.
pub(crate) struct CompanionFinish {
    /// `salt(32) ‖ nonce(12) ‖ AES-256-GCM(key bundle)`.
    pub(crate) wrapped_bundle: Vec<u8>,
    /// The companion's identity key, as it states it in the clear.
    pub(crate) identity: [u8; 32],
}

pub(crate) struct ConnEntry {
    pub(crate) tx: mpsc::Sender<Outbound>,
    pub(crate) device: Option<DeviceKey>,
    pub(crate) unpaired: Option<Unpaired>,
}

/// The whole mutable state of the fake server.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) phones: HashMap<String, Phone>,
    pub(crate) devices: HashMap<DeviceKey, Device>,
    pub(crate) refs: HashMap<String, PendingRef>,
    pub(crate) pairs: HashMap<ConnId, PendingPair>,
    /// Pairing-code requests, keyed by the phone number the companion named.
    pub(crate) code_requests: HashMap<String, CodeRequest>,
    pub(crate) conns: HashMap<ConnId, ConnEntry>,
    pub(crate) unregistered: HashSet<String>,
    pub(crate) refuse_until: Option<Instant>,
    /// What virtual phones sent linked devices, by message id, so it can be delivered again.
    pub(crate) phone_sent: HashMap<String, PhoneSent>,
    /// LID user → phone number, for every phone that has one (every phone does).
    lids: HashMap<String, String>,
    next_lid: u64,
}

impl Registry {
    pub(crate) fn new(unregistered: impl IntoIterator<Item = String>) -> Self {
        Self { unregistered: unregistered.into_iter().collect(), ..Default::default() }
    }

    pub(crate) fn is_registered(&self, phone: &str) -> bool {
        !self.unregistered.contains(phone)
    }

    /// The virtual phone for a number, created on first use (every number is "on WhatsApp"
    /// unless listed as unregistered). Creating one generates keys: callers on hot paths use
    /// `Shared::ensure_phone` first so that happens outside the registry lock.
    pub(crate) fn phone(&mut self, number: &str) -> &mut Phone {
        let (next_lid, lids) = (&mut self.next_lid, &mut self.lids);
        self.phones.entry(number.to_owned()).or_insert_with(|| new_phone(next_lid, lids, number, VirtualDevice::new()))
    }

    /// Adds a phone with an already generated device 0, unless the number has one.
    pub(crate) fn insert_phone(&mut self, number: &str, device: VirtualDevice) {
        let (next_lid, lids) = (&mut self.next_lid, &mut self.lids);
        self.phones.entry(number.to_owned()).or_insert_with(|| new_phone(next_lid, lids, number, device));
    }

    /// The phone number a user or device JID names: the digits of a phone-number JID, or the
    /// owner of a LID this server handed out. `None` for LIDs it never handed out and for
    /// anything else (groups, broadcast, server).
    pub(crate) fn phone_of(&self, jid: &Jid) -> Option<String> {
        if jid.is_pn() {
            Some(jid.user.to_string())
        } else if jid.is_lid() {
            self.lids.get(jid.user.as_str()).cloned()
        } else {
            None
        }
    }

    /// The device a JID names, whether it is phone-number (`15550001:3@s.whatsapp.net`) or LID
    /// (`100000000000001:3@lid`) addressed.
    pub(crate) fn device_key_of(&self, jid: &Jid) -> Option<DeviceKey> {
        self.phone_of(jid).map(|phone| DeviceKey { phone, device: jid.device })
    }

    /// The LID user of a phone number, if the number has a phone.
    pub(crate) fn lid_user(&self, phone: &str) -> Option<&str> {
        self.phones.get(phone).map(|p| p.lid_user.as_str())
    }

    /// A device's LID JID (`LID:device@lid`, or the bare LID for device 0).
    pub(crate) fn lid_jid(&self, key: &DeviceKey) -> Option<Jid> {
        self.lid_user(&key.phone).map(|lid| Jid::lid_device(lid.to_owned(), key.device))
    }

    /// A device's JID in the same namespace as `like`: LID when `like` is a LID, else its
    /// phone-number JID. WhatsApp never mixes the two within one conversation.
    pub(crate) fn jid_like(&self, key: &DeviceKey, like: &Jid) -> Jid {
        if like.is_lid()
            && let Some(lid) = self.lid_jid(key)
        {
            return lid;
        }
        key.jid()
    }

    /// The address a virtual phone's Signal store uses for a peer device: its LID, as WhatsApp
    /// keys sessions, whichever namespace the peer addressed the phone in.
    pub(crate) fn signal_address(&self, key: &DeviceKey) -> Jid {
        self.lid_jid(key).unwrap_or_else(|| key.jid())
    }

    /// Live companions of a phone (not removed), by device id.
    pub(crate) fn companions(&self, phone: &str) -> Vec<&Device> {
        let mut out: Vec<&Device> = self.devices.values().filter(|d| d.key.phone == phone && !d.removed).collect();
        out.sort_by_key(|d| d.key.device);
        out
    }

    /// Sends to a device now if it is connected, else queues it for its next login. A message
    /// handed to the connection waits for the device's ack (see [`Device::take_login_backlog`]).
    pub(crate) fn deliver(&mut self, key: &DeviceKey, node: Node) -> Delivery {
        let Some(device) = self.devices.get_mut(key) else { return Delivery::NoDevice };
        if let Some(conn) = device.conn
            && let Some(entry) = self.conns.get(&conn)
        {
            let again = device.acks.handed_before(&node);
            let copy = node.clone();
            match entry.tx.try_send(Outbound::Node(node)) {
                Ok(()) => {
                    device.acks.handed(&copy);
                    return Delivery::Sent { again };
                }
                Err(mpsc::error::TrySendError::Full(Outbound::Node(node))) => {
                    tracing::warn!(device = %key.jid(), "outbox full, queueing for next login");
                    device.offline.push_back(node);
                    return Delivery::Queued;
                }
                Err(mpsc::error::TrySendError::Full(_)) => return Delivery::NoDevice,
                Err(mpsc::error::TrySendError::Closed(Outbound::Node(node))) => {
                    device.offline.push_back(node);
                    return Delivery::Queued;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Delivery::NoDevice,
            }
        }
        device.offline.push_back(node);
        Delivery::Queued
    }

    pub(crate) fn send_to_conn(&self, conn: ConnId, out: Outbound) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.tx.try_send(out).is_ok())
    }

    /// Forgets a closed connection and everything that pointed at it.
    pub(crate) fn remove_conn(&mut self, conn: ConnId) {
        if let Some(entry) = self.conns.remove(&conn)
            && let Some(key) = entry.device
            && let Some(device) = self.devices.get_mut(&key)
            && device.conn == Some(conn)
        {
            device.conn = None;
        }
        self.refs.retain(|_, r| r.conn != conn);
        self.code_requests.retain(|_, r| r.conn != conn);
        self.pairs.remove(&conn);
    }
}

pub(crate) fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn new_phone(next_lid: &mut u64, lids: &mut HashMap<String, String>, number: &str, device: VirtualDevice) -> Phone {
    *next_lid += 1;
    let lid_user = (100_000_000_000_000 + *next_lid).to_string();
    lids.insert(lid_user.clone(), number.to_owned());
    Phone {
        lid_user,
        account: device.identity_keypair().clone(),
        device0: Arc::new(tokio::sync::Mutex::new(device)),
        next_device: 1,
        next_key_index: 1,
        messages: Vec::new(),
        receipts: Vec::new(),
        duplicates: 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use wacore_binary::builder::NodeBuilder;

    fn message(id: &str) -> Node {
        NodeBuilder::new("message").attr("id", id).attr("from", "100000000000001@lid").build()
    }

    fn device() -> Device {
        Device {
            key: DeviceKey { phone: "15550001".into(), device: 3 },
            lid: Jid::lid_device("100000000000001".to_owned(), 3),
            noise_key: [0; 32],
            registration: Registration {
                registration_id: 1,
                identity: [0; 32],
                signed_prekey_id: 1,
                signed_prekey: [0; 32],
                signed_prekey_signature: [0; 64],
            },
            prekeys: VecDeque::new(),
            adv_identity: Vec::new(),
            key_index: 1,
            removed: false,
            conn: None,
            offline: VecDeque::new(),
            acks: AckTracker::default(),
            needs_key_share: false,
            key_share_id: None,
        }
    }

    fn ids(backlog: &[(Node, bool)]) -> Vec<(String, bool)> {
        backlog.iter().map(|(n, again)| (crate::stanza::attr(n, "id").unwrap().into_owned(), *again)).collect()
    }

    #[test]
    fn a_message_comes_again_on_every_login_until_the_device_acks_it() {
        let mut device = device();
        device.offline.push_back(message("A"));
        device.offline.push_back(message("B"));
        let first = device.take_login_backlog();
        assert_eq!(ids(&first), [("A".into(), false), ("B".into(), false)], "first delivery");
        assert_eq!(device.acks.waiting(), 2);

        // The device receipts A only, then logs in again: B comes again, marked as a repeat,
        // before what queued meanwhile.
        device.acks.acknowledge(&["A".into()]);
        device.offline.push_back(message("C"));
        let second = device.take_login_backlog();
        assert_eq!(ids(&second), [("B".into(), true), ("C".into(), false)]);

        device.acks.acknowledge(&["B".into(), "C".into()]);
        assert!(device.take_login_backlog().is_empty(), "nothing once everything is acknowledged");
        // A message queued under an id the device had (a resend) is a repeat.
        device.offline.push_back(message("A"));
        assert_eq!(ids(&device.take_login_backlog()), [("A".into(), true)]);
    }

    #[test]
    fn only_messages_wait_for_an_ack_and_the_key_share_has_its_own_resend() {
        let mut acks = AckTracker::default();
        acks.handed(&NodeBuilder::new("receipt").attr("id", "R").build());
        let share = NodeBuilder::new("message").attr("id", "K").attr("category", "peer").build();
        acks.handed(&share);
        assert_eq!(acks.waiting(), 0);
        assert!(!acks.handed_before(&share));
        acks.handed(&message("M"));
        assert!(acks.handed_before(&message("M")));
        acks.clear();
        assert_eq!(acks.waiting(), 0);
    }

    #[test]
    fn a_device_is_found_by_phone_number_or_by_lid() {
        let mut reg = Registry::new(Vec::new());
        let lid = reg.phone("15550001").lid_user.clone();
        let other = reg.phone("15550002").lid_user.clone();
        assert_ne!(lid, other, "one LID per phone");
        let key = DeviceKey { phone: "15550001".into(), device: 3 };

        let by_pn: Jid = "15550001:3@s.whatsapp.net".parse().unwrap();
        let by_lid = Jid::lid_device(lid.clone(), 3);
        assert_eq!(reg.device_key_of(&by_pn), Some(key.clone()));
        assert_eq!(reg.device_key_of(&by_lid), Some(key.clone()));
        assert_eq!(reg.phone_of(&Jid::lid(lid.clone())).as_deref(), Some("15550001"));
        assert_eq!(reg.device_key_of(&Jid::lid("999")), None, "a LID never handed out names nobody");
        assert_eq!(reg.device_key_of(&"123@g.us".parse().unwrap()), None);

        assert_eq!(reg.jid_like(&key, &by_lid), by_lid);
        assert_eq!(reg.jid_like(&key, &by_pn), by_pn);
        assert_eq!(reg.signal_address(&key), by_lid, "sessions are keyed by LID");
        // Inserting a phone that exists keeps its LID.
        reg.insert_phone("15550001", VirtualDevice::new());
        assert_eq!(reg.lid_user("15550001"), Some(lid.as_str()));
    }
}
