//! The credentials of a number, on SQLite and on Postgres, answer alike: one sequence of
//! whatsapp-rust store calls (device, identities, sessions, pre-keys, sender keys, app-state,
//! LID mappings, device lists, tokens, sent messages, secrets…) runs against each backend, checks
//! what whatsapp-rust relies on as it goes, and writes down every answer; the two transcripts
//! must be the same. Then two numbers in one store stay apart, and a wipe forgets one of them
//! for good.

use std::sync::Arc;

use bytes::Bytes;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::device::{CachedNoiseCert, CachedServerCertChain, account_serde};
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, Backend, DeviceInfo, DeviceListRecord, LidPnMappingEntry, MsgSecretEntry, PendingInboundKey,
    PendingInboundRow, TcTokenEntry,
};
use whatsapp_rust::waproto::whatsapp as wa;

use super::credentials::CredentialStore;
use super::now_ms;
use crate::domain::SessionId;

/// Every answer, in order, as text.
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    fn note(&mut self, what: &str, answer: impl std::fmt::Debug) {
        self.0.push(format!("{what}: {answer:?}"));
    }
}

fn id(name: &str) -> SessionId {
    SessionId::parse(name).expect("session id")
}

/// A linked device with every field set, built once so both backends store the same keys.
fn linked_device() -> Device {
    let mut device = Device::new();
    device.pn = Some("51900000001@s.whatsapp.net".parse().expect("pn"));
    device.lid = Some("100000012345678@lid".parse().expect("lid"));
    device.registration_id = 4321;
    device.signed_pre_key_id = 7;
    device.account = Some(Arc::new(wa::ADVSignedDeviceIdentity {
        details: Some(vec![1, 2, 3]),
        account_signature_key: Some(vec![4; 32]),
        account_signature: Some(vec![5; 64]),
        device_signature: Some(vec![6; 64]),
    }));
    device.push_name = "Tienda Cusco".into();
    (device.app_version_primary, device.app_version_secondary, device.app_version_tertiary) = (2, 3000, 1_017_000_000);
    device.app_version_last_fetched_ms = 1_700_000_000_123;
    device.edge_routing_info = Some(vec![9, 9, 9]);
    device.props_hash = Some("abc".into());
    device.next_pre_key_id = 812;
    device.first_unupload_pre_key_id = 800;
    device.server_has_prekeys = true;
    device.nct_salt = Some(vec![7; 16]);
    device.server_cert_chain = Some(CachedServerCertChain {
        intermediate: CachedNoiseCert { key: [0xab; 32], not_before: 1, not_after: 2_000_000_000 },
        leaf: CachedNoiseCert { key: [0xcd; 32], not_before: 3, not_after: 2_000_000_001 },
    });
    device.login_counter = 5;
    device.lid_migrated = true;
    device.last_signed_pre_key_rotation_ms = 1_700_000_000_000;
    device.read_receipts_disabled = true;
    device
}

/// What a stored device says, field by field (keys included).
fn describe(d: &Device) -> String {
    let pair = |p: &whatsapp_rust::wacore::libsignal::protocol::KeyPair| {
        (p.private_key.serialize().to_vec(), p.public_key.public_key_bytes().to_vec())
    };
    format!(
        "{:?}",
        (
            (d.pn.as_ref().map(ToString::to_string), d.lid.as_ref().map(ToString::to_string), d.registration_id),
            (pair(&d.noise_key), pair(&d.identity_key), pair(&d.signed_pre_key)),
            (d.signed_pre_key_id, d.signed_pre_key_signature.to_vec(), d.adv_secret_key),
            d.account.as_ref().map(|a| account_serde::to_bytes(a)),
            (&d.push_name, d.app_version_primary, d.app_version_secondary, d.app_version_tertiary),
            (d.app_version_last_fetched_ms, &d.edge_routing_info, &d.props_hash, d.next_pre_key_id),
            (d.first_unupload_pre_key_id, d.server_has_prekeys, &d.nct_salt, &d.server_cert_chain),
            (d.login_counter, d.lid_migrated, d.last_signed_pre_key_rotation_ms, d.read_receipts_disabled),
        )
    )
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

fn mapping(lid: &str, phone: &str, created_at: i64, updated_at: i64, source: &str) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: lid.into(),
        phone_number: phone.into(),
        created_at,
        updated_at,
        learning_source: source.into(),
    }
}

fn secret(chat: &str, sender: &str, msg: &str, byte: u8, expires_at: i64, message_ts: i64) -> MsgSecretEntry {
    MsgSecretEntry {
        chat: Arc::from(chat),
        sender: Arc::from(sender),
        msg_id: Arc::from(msg),
        secret: [byte; 32],
        expires_at,
        message_ts,
    }
}

async fn device_calls(store: &dyn Backend, device: &Device, t: &mut Transcript) {
    assert!(!store.exists().await.expect("exists"), "a new store has no device");
    assert!(store.load().await.expect("load").is_none());
    t.note("create", store.create().await.expect("create"));
    assert!(store.exists().await.expect("exists"));
    let fresh = store.load().await.expect("load").expect("created");
    t.note("fresh device", (fresh.pn.is_none(), &fresh.push_name, fresh.account.is_none(), fresh.login_counter));
    store.save(device).await.expect("save");
    let loaded = store.load().await.expect("load").expect("saved");
    assert_eq!(describe(&loaded), describe(device), "the device comes back whole");
    t.note("saved device", describe(&loaded));
    let mut changed = loaded.clone();
    changed.push_name = "Renamed".into();
    changed.server_cert_chain = None;
    changed.account = None;
    store.save(&changed).await.expect("save again");
    let again = store.load().await.expect("load").expect("saved");
    assert_eq!(describe(&again), describe(&changed), "a save replaces every field");
    t.note("resaved device", describe(&again));
    store.save(device).await.expect("save back");
}

async fn signal_calls(store: &dyn Backend, t: &mut Transcript) {
    let (a, b, c) = ("51911111111@s.whatsapp.net", "222@lid", "222:3@lid");
    // Identities, a batch naming one address twice: the last wins.
    store.put_identity(a, [1; 32]).await.expect("identity");
    let batch: Vec<(Arc<str>, [u8; 32])> = vec![(b.into(), [2; 32]), (c.into(), [3; 32]), (b.into(), [4; 32])];
    store.put_identities_batch(&batch).await.expect("identities");
    store.put_identities_batch(&[]).await.expect("an empty batch");
    assert_eq!(store.load_identity(b).await.expect("load"), Some([4; 32]));
    t.note("identities", [store.load_identity(a).await.ok(), store.load_identity(c).await.ok()]);
    store.delete_identity(a).await.expect("delete");
    assert_eq!(store.load_identity(a).await.expect("deleted"), None);

    // Sessions.
    assert_eq!(store.get_session(a).await.expect("none"), None);
    store.put_session(a, b"session a").await.expect("session");
    let batch: Vec<(Arc<str>, Bytes)> = vec![
        (b.into(), Bytes::from_static(b"b1")),
        ("333@lid".into(), Bytes::from_static(b"three")),
        (b.into(), Bytes::from_static(b"b2")),
    ];
    store.put_sessions_batch(&batch).await.expect("sessions");
    assert_eq!(store.get_session(b).await.expect("get").as_deref(), Some(&b"b2"[..]));
    t.note("session a", store.get_session(a).await.expect("get"));
    t.note("has", (store.has_session(a).await.ok(), store.has_session("nobody@lid").await.ok()));
    store.delete_session(a).await.expect("delete");
    assert!(!store.has_session(a).await.expect("has"));
    // Signal state per user: `user@…` or `user:device@…`, and a prefix of a user is not the user.
    let users = ["222", "333", "51911111111", "22", "2"];
    let mut state = Vec::new();
    for user in users {
        state.push(store.has_signal_state_for_user(user).await.expect("state"));
    }
    assert_eq!(state, [true, true, false, false, false]);
    t.note("signal state", state);

    // One-time pre-keys.
    assert_eq!(store.get_max_prekey_id().await.expect("max"), 0, "none yet");
    store.store_prekey(1, b"pk1", false).await.expect("prekey");
    let keys = vec![(2, Bytes::from_static(b"pk2")), (3, Bytes::from_static(b"pk3")), (2, Bytes::from_static(b"pk2b"))];
    store.store_prekeys_batch(&keys, false).await.expect("prekeys");
    assert_eq!(store.load_prekey(2).await.expect("load").as_deref(), Some(&b"pk2b"[..]));
    t.note("prekeys", sorted(store.load_prekeys_batch(&[3, 1, 99, 2]).await.expect("batch")));
    assert!(store.load_prekeys_batch(&[]).await.expect("empty").is_empty());
    store.remove_prekey(3).await.expect("remove");
    // Marking never brings back a key consumed since the upload.
    store.mark_prekeys_uploaded(&[1, 3, 77]).await.expect("mark");
    store.mark_prekeys_uploaded(&[]).await.expect("mark none");
    assert_eq!(store.load_prekey(3).await.expect("load"), None);
    assert_eq!(store.load_prekey(77).await.expect("load"), None);
    store.store_prekey(40, b"pk40", true).await.expect("uploaded already");
    t.note("max prekey", store.get_max_prekey_id().await.expect("max"));

    // Signed pre-keys.
    store.store_signed_prekey(1, b"s1").await.expect("signed");
    store.store_signed_prekey(2, b"s2").await.expect("signed");
    store.store_signed_prekey(1, b"s1b").await.expect("signed again");
    t.note("signed", (store.load_signed_prekey(1).await.ok(), store.load_signed_prekey(9).await.ok()));
    t.note("all signed", sorted(store.load_all_signed_prekeys().await.expect("all")));
    store.remove_signed_prekey(2).await.expect("remove");
    t.note("signed left", store.load_all_signed_prekeys().await.expect("all"));

    // Sender keys.
    store.put_sender_key("g1::a", b"k1").await.expect("sender key");
    let batch: Vec<(Arc<str>, Bytes)> =
        vec![("g1::b".into(), Bytes::from_static(b"kb")), ("g1::a".into(), Bytes::from_static(b"k1b"))];
    store.put_sender_keys_batch(&batch).await.expect("sender keys");
    t.note("sender keys", (store.get_sender_key("g1::a").await.ok(), store.get_sender_key("g1::b").await.ok()));
    store.delete_sender_key("g1::a").await.expect("delete");
    assert_eq!(store.get_sender_key("g1::a").await.expect("get"), None);
}

async fn app_sync_calls(store: &dyn Backend, t: &mut Transcript) {
    let key =
        |byte: u8, len: usize| AppStateSyncKey { key_data: vec![byte; len], fingerprint: vec![byte], timestamp: 42 };
    assert!(store.get_sync_key(b"k1").await.expect("none").is_none());
    assert_eq!(store.get_latest_sync_key_id().await.expect("none"), None);
    store.set_sync_key(b"k1", key(1, 32)).await.expect("key");
    store.set_sync_key(b"k2", key(2, 32)).await.expect("key");
    // Key material that is not 32 bytes reads as absent, and is never the latest.
    store.set_sync_key(b"k3", key(3, 16)).await.expect("short key");
    let got = store.get_sync_key(b"k2").await.expect("get").map(|k| (k.key_data, k.fingerprint, k.timestamp));
    assert_eq!(got, Some((vec![2; 32], vec![2], 42)));
    assert!(store.get_sync_key(b"k3").await.expect("get").is_none());
    t.note("sync key", got);
    t.note("latest sync key", store.get_latest_sync_key_id().await.expect("latest"));

    let default = store.get_version("regular").await.expect("default");
    t.note("default version", (default.version, default.hash == [0; 128], default.index_value_map.len()));
    let mut state = HashState { version: 17, mac_mismatch_fatal: true, ..HashState::default() };
    state.hash[5] = 5;
    state.index_value_map.insert("idx".into(), vec![1, 2]);
    state.index_value_map.insert("empty".into(), vec![]);
    store.set_version("regular", state.clone()).await.expect("version");
    let back = store.get_version("regular").await.expect("version");
    assert_eq!((back.version, back.hash, &back.index_value_map), (17, state.hash, &state.index_value_map));
    t.note("version", (back.version, back.mac_mismatch_fatal, sorted(back.index_value_map.into_iter().collect())));

    let mac = |index: u8, value: u8| AppStateMutationMAC { index_mac: vec![index; 32], value_mac: vec![value; 32] };
    store.put_mutation_macs("regular", 3, &[mac(1, 10), mac(2, 20), mac(1, 11)]).await.expect("macs");
    store.put_mutation_macs("regular_low", 3, &[mac(1, 99)]).await.expect("macs");
    store.put_mutation_macs("regular", 4, &[]).await.expect("no macs");
    t.note("mac", store.get_mutation_mac("regular", &[1; 32]).await.expect("mac"));
    let found = store.get_mutation_macs("regular", &[[1; 32], [2; 32], [9; 32]]).await.expect("macs");
    t.note("macs", sorted(found.into_iter().collect()));
    store.delete_mutation_macs("regular", &[vec![2; 32]]).await.expect("delete");
    store.delete_mutation_macs("regular", &[]).await.expect("delete none");
    t.note("after delete", store.get_mutation_mac("regular", &[2; 32]).await.expect("mac"));
    store.clear_mutation_macs("regular").await.expect("clear");
    t.note(
        "after clear",
        (
            store.get_mutation_mac("regular", &[1; 32]).await.expect("mac"),
            store.get_mutation_mac("regular_low", &[1; 32]).await.expect("another collection stays"),
        ),
    );
}

async fn protocol_calls(store: &dyn Backend, t: &mut Transcript) {
    // Who holds our sender key.
    let entries = [("d1@lid", true), ("d2@lid", false), ("d1@lid", false)];
    store.set_sender_key_status("g1@g.us", &entries).await.expect("status");
    store.set_sender_key_status("g2@g.us", &[("d1@lid", true), ("d3@lid", true)]).await.expect("status");
    store.set_sender_key_status("g2@g.us", &[]).await.expect("no status");
    t.note("g1", sorted(store.get_sender_key_devices("g1@g.us").await.expect("devices")));
    store.delete_sender_key_device_rows(&["d1@lid"]).await.expect("rows");
    t.note(
        "without d1",
        (
            sorted(store.get_sender_key_devices("g1@g.us").await.expect("devices")),
            sorted(store.get_sender_key_devices("g2@g.us").await.expect("devices")),
        ),
    );
    store.clear_sender_key_devices("g1@g.us").await.expect("clear");
    t.note("g1 cleared", store.get_sender_key_devices("g1@g.us").await.expect("devices"));
    store.clear_all_sender_key_devices().await.expect("clear all");
    t.note("all cleared", store.get_sender_key_devices("g2@g.us").await.expect("devices"));

    // LID ↔ phone: learned again, a mapping keeps when it was first learned.
    store.put_lid_mapping(&mapping("L1", "P1", 100, 100, "usync")).await.expect("mapping");
    let batch = [mapping("L2", "P1", 200, 200, "peer"), mapping("L1", "P9", 300, 300, "peer")];
    store.put_lid_mappings(&batch).await.expect("mappings");
    store.put_lid_mappings(&[]).await.expect("no mappings");
    let l1 = store.get_lid_mapping("L1").await.expect("L1").expect("known");
    assert_eq!((l1.phone_number.as_str(), l1.created_at, l1.updated_at), ("P9", 100, 300));
    let show = |e: Option<LidPnMappingEntry>| {
        e.map(|e| (e.lid, e.phone_number, e.created_at, e.updated_at, e.learning_source))
    };
    t.note("by pn", show(store.get_pn_mapping("P1").await.expect("P1")));
    t.note(
        "unknown",
        (show(store.get_lid_mapping("L7").await.expect("L7")), show(store.get_pn_mapping("P7").await.expect("P7"))),
    );
    let all: Vec<_> = store.get_all_lid_mappings().await.expect("all").into_iter().map(|e| show(Some(e))).collect();
    t.note("all mappings", sorted(all));

    // Base keys.
    store.save_base_key("a@lid", "m1", b"base1").await.expect("base key");
    let same = |key: &'static [u8]| store.has_same_base_key("a@lid", "m1", key);
    t.note("same base", (same(b"base1").await.ok(), same(b"other").await.ok()));
    store.save_base_key("a@lid", "m1", b"base2").await.expect("base key again");
    t.note("same base", (same(b"base1").await.ok(), same(b"base2").await.ok()));
    store.delete_base_key("a@lid", "m1").await.expect("delete");
    t.note("same base", same(b"base2").await.ok());

    // Device lists.
    let record = |user: &str, devices: &[u32], timestamp: i64, raw_id: Option<u32>| DeviceListRecord {
        user: user.into(),
        devices: devices.iter().map(|&d| DeviceInfo::new(d, Some(d + 1)).with_hosting(d == 2)).collect(),
        timestamp,
        phash: Some(format!("h{timestamp}")),
        raw_id,
    };
    store.update_device_list(record("u1", &[0, 1], 1_700_000_000, Some(9))).await.expect("list");
    let batch = vec![record("u2", &[0], 1_700_000_001, None), record("u1", &[0, 2], 1_700_000_002, Some(10))];
    store.update_device_lists(batch).await.expect("lists");
    store.update_device_lists(Vec::new()).await.expect("no lists");
    let u1 = store.get_devices("u1").await.expect("u1").expect("known");
    assert_eq!((u1.devices.len(), u1.timestamp, u1.raw_id), (2, 1_700_000_002, Some(10)));
    t.note("u1", format!("{u1:?}"));
    t.note("u2", format!("{:?}", store.get_devices("u2").await.expect("u2")));
    store.delete_devices("u1").await.expect("delete");
    t.note("u1 deleted", store.get_devices("u1").await.expect("u1").is_none());

    // Group metadata.
    assert_eq!(store.get_group_metadata("g1@g.us").await.expect("none"), None);
    store.put_group_metadata("g1@g.us", b"info1").await.expect("put");
    store.put_group_metadata("g1@g.us", b"info2").await.expect("put again");
    t.note("group", store.get_group_metadata("g1@g.us").await.expect("get"));
    store.delete_group_metadata("g1@g.us").await.expect("delete");
    t.note("group deleted", store.get_group_metadata("g1@g.us").await.expect("get"));
}

async fn token_calls(store: &dyn Backend, t: &mut Transcript) {
    let show = |e: Option<TcTokenEntry>| e.map(|e| (e.token, e.token_timestamp, e.sender_timestamp));
    assert!(store.get_tc_token("j1@lid").await.expect("none").is_none());
    let entry = TcTokenEntry { token: vec![1], token_timestamp: 100, sender_timestamp: None };
    store.put_tc_token("j1@lid", &entry).await.expect("put");
    // The sender bucket only moves forward, and leaves the token alone.
    store.touch_tc_token_sender_timestamp("j1@lid", 50).await.expect("touch");
    store.touch_tc_token_sender_timestamp("j1@lid", 40).await.expect("touch back");
    // A stale received token never replaces a fresher real one; a newer one does, keeping the bucket.
    store.store_received_tc_token("j1@lid", &[2], 90).await.expect("stale");
    let j1 = show(store.get_tc_token("j1@lid").await.expect("get"));
    assert_eq!(j1, Some((vec![1], 100, Some(50))));
    store.store_received_tc_token("j1@lid", &[3], 110).await.expect("newer");
    t.note("j1", show(store.get_tc_token("j1@lid").await.expect("get")));
    // A placeholder never blocks the first real token, however old.
    store.touch_tc_token_sender_timestamp("j2@lid", 500).await.expect("placeholder");
    t.note("placeholder", show(store.get_tc_token("j2@lid").await.expect("get")));
    store.store_received_tc_token("j2@lid", &[4], 1).await.expect("first real");
    t.note("j2", show(store.get_tc_token("j2@lid").await.expect("get")));
    store
        .put_tc_token("j3@lid", &TcTokenEntry { token: vec![], token_timestamp: 5, sender_timestamp: None })
        .await
        .expect("put");
    t.note("jids", sorted(store.get_all_tc_token_jids().await.expect("jids")));
    // Only rows with nothing live left go: j3 (no token, no bucket).
    t.note("expired", store.delete_expired_tc_tokens(50, 10).await.expect("expire"));
    t.note("expired again", store.delete_expired_tc_tokens(1_000, 1_000).await.expect("expire all"));
    store.delete_tc_token("j1@lid").await.expect("delete");
    t.note("jids left", sorted(store.get_all_tc_token_jids().await.expect("jids")));

    // Sent messages, taken once.
    store.store_sent_message("c@s.whatsapp.net", "m1", b"p1").await.expect("sent");
    store.store_sent_message("c@s.whatsapp.net", "m1", b"p2").await.expect("sent again");
    t.note("take", store.take_sent_message("c@s.whatsapp.net", "m1").await.expect("take"));
    t.note("take again", store.take_sent_message("c@s.whatsapp.net", "m1").await.expect("take"));
    store.store_sent_message("c@s.whatsapp.net", "m2", b"p3").await.expect("sent");
    let now = whatsapp_rust::wacore::time::now_secs();
    t.note("sent expired", store.delete_expired_sent_messages(now - 3_600).await.expect("none old"));
    t.note("sent expired", store.delete_expired_sent_messages(now + 3_600).await.expect("all old"));

    // The inbound buffer of the durability hook.
    store.store_pending_inbound("c", "s", "i1", b"one").await.expect("pending");
    let rows = [
        PendingInboundRow { chat: "c", sender: "s", id: "i2", message: b"two" },
        PendingInboundRow { chat: "c", sender: "s", id: "i1", message: b"one again" },
    ];
    store.store_pending_inbound_batch(&rows).await.expect("pending batch");
    t.note(
        "pending",
        (store.get_pending_inbound("c", "s", "i1").await.ok(), store.get_pending_inbound("c", "x", "i1").await.ok()),
    );
    store
        .delete_pending_inbound_batch(&[PendingInboundKey { chat: "c", sender: "s", id: "i1" }])
        .await
        .expect("delete");
    store.delete_pending_inbound("c", "s", "nope").await.expect("delete none");
    t.note(
        "pending left",
        (store.get_pending_inbound("c", "s", "i1").await.ok(), store.get_pending_inbound("c", "s", "i2").await.ok()),
    );
    t.note("pending expired", store.delete_expired_pending_inbound(now + 3_600).await.expect("expire"));

    // Message secrets: 0 is never, the later deadline and the known parent time win.
    store.put_msg_secret("c", "me", "m0", &[1; 32]).await.expect("secret");
    let batch = vec![
        secret("c", "me", "m3", 3, 100, 5),
        secret("c", "me", "m3", 4, 200, 0),
        secret("c", "me", "m2", 2, 50, 0),
        secret("c", "me", "m0", 9, 70, 8),
    ];
    t.note("secrets stored", store.put_msg_secrets(batch).await.expect("secrets"));
    t.note("secrets stored", store.put_msg_secrets(Vec::new()).await.expect("none"));
    let m3 = store.get_msg_secret_with_ts("c", "me", "m3").await.expect("m3");
    assert_eq!(m3, Some((vec![4; 32], 5)));
    t.note("m0", store.get_msg_secret_with_ts("c", "me", "m0").await.expect("m0"));
    t.note("other sender", store.get_msg_secret("c", "you", "m3").await.expect("none"));
    t.note("secrets expired", store.delete_expired_msg_secrets(150).await.expect("expire"));
    t.note("secrets expired", store.delete_expired_msg_secrets(250).await.expect("expire"));
    t.note(
        "secrets left",
        (store.get_msg_secret("c", "me", "m0").await.ok(), store.get_msg_secret("c", "me", "m3").await.ok()),
    );
}

/// The whole sequence on one number, then a second number beside it, then the wipe.
async fn suite(credentials: &dyn CredentialStore, device: &Device) -> Transcript {
    let mut t = Transcript::default();
    let (shop, other) = (id("tienda"), id("otra"));
    assert!(!credentials.has_credentials(&shop).await.expect("has"), "nothing yet");
    let store = credentials.backend(&shop).await.expect("backend");
    device_calls(&*store, device, &mut t).await;
    assert!(credentials.has_credentials(&shop).await.expect("has"));
    signal_calls(&*store, &mut t).await;
    app_sync_calls(&*store, &mut t).await;
    protocol_calls(&*store, &mut t).await;
    token_calls(&*store, &mut t).await;

    // A second handle on the same number sees the same store.
    let again = credentials.backend(&shop).await.expect("backend again");
    assert_eq!(again.load_identity("222@lid").await.expect("identity"), Some([4; 32]));

    // Another number, in the same store: nothing of the first shows through.
    let second = credentials.backend(&other).await.expect("other backend");
    assert!(!second.exists().await.expect("exists"), "its own device");
    second.create().await.expect("create");
    assert_eq!(second.load_identity("222@lid").await.expect("identity"), None);
    assert_eq!(second.get_session("222@lid").await.expect("session"), None);
    assert_eq!(second.get_max_prekey_id().await.expect("max"), 0);
    assert!(second.get_all_lid_mappings().await.expect("mappings").is_empty());
    assert!(second.get_latest_sync_key_id().await.expect("sync key").is_none());
    assert!(second.get_all_tc_token_jids().await.expect("tokens").is_empty());
    second.put_identity("222@lid", [8; 32]).await.expect("identity");
    second.put_session("222@lid", b"theirs").await.expect("session");
    assert_eq!(store.load_identity("222@lid").await.expect("identity"), Some([4; 32]), "each number its own");
    let both = credentials.with_credentials(&[shop.clone(), other.clone(), id("nadie")]).await.expect("which");
    t.note("with credentials", sorted(both.into_iter().map(|s| s.as_str().to_owned()).collect()));

    // A wipe forgets the first number, whatever a store handed out before still tries to write.
    credentials.wipe(&shop).await.expect("wipe");
    assert!(!credentials.has_credentials(&shop).await.expect("has"));
    let _ = store.save(device).await;
    let _ = store.put_identity("222@lid", [1; 32]).await;
    assert!(!credentials.has_credentials(&shop).await.expect("has"), "nothing came back");
    let fresh = credentials.backend(&shop).await.expect("backend after the wipe");
    assert!(!fresh.exists().await.expect("exists"), "no device after a wipe");
    assert_eq!(fresh.load_identity("222@lid").await.expect("identity"), None);
    assert_eq!(fresh.get_session("222@lid").await.expect("session"), None);
    assert!(fresh.get_all_lid_mappings().await.expect("mappings").is_empty());
    assert_eq!(fresh.get_max_prekey_id().await.expect("max"), 0);
    // The other number is untouched.
    assert_eq!(second.load_identity("222@lid").await.expect("identity"), Some([8; 32]));
    assert_eq!(second.get_session("222@lid").await.expect("session").as_deref(), Some(&b"theirs"[..]));
    assert!(credentials.has_credentials(&other).await.expect("has"));
    // A wipe of nothing, and a removal, are fine.
    credentials.wipe(&id("nadie")).await.expect("wipe nothing");
    credentials.remove(&other).await.expect("remove");
    assert!(!credentials.has_credentials(&other).await.expect("has"));
    t
}

/// The two transcripts, line by line, so that a difference names the call.
fn assert_same(sqlite: &Transcript, postgres: &Transcript) {
    for (line, (s, p)) in sqlite.0.iter().zip(&postgres.0).enumerate() {
        assert_eq!(s, p, "answer {line} differs (left SQLite, right Postgres)");
    }
    assert_eq!(sqlite.0.len(), postgres.0.len(), "as many answers");
}

#[tokio::test]
async fn credentials_answer_alike_on_sqlite_and_postgres() {
    let device = linked_device();
    let dir = std::env::temp_dir().join(format!("wg-credentials-{}-{}", std::process::id(), now_ms()));
    let sqlite = super::sqlite::SqliteCredentials::new(&dir);
    let on_sqlite = suite(&sqlite, &device).await;
    assert!(!dir.join("otra").exists(), "removing a session removes its folder");
    let _ = std::fs::remove_dir_all(&dir);

    let test = super::postgres::testing::fresh(4).await;
    let on_postgres = suite(&test.db.credentials(), &device).await;
    assert_same(&on_sqlite, &on_postgres);
    assert!(on_sqlite.0.len() > 50, "the suite ran: {} answers", on_sqlite.0.len());
}

#[tokio::test]
async fn a_store_whose_postgres_is_gone_answers_errors_not_empty_values() {
    let test = super::postgres::testing::fresh(2).await;
    let credentials = test.db.credentials();
    let shop = id("tienda");
    let store = credentials.backend(&shop).await.expect("backend");
    store.create().await.expect("create");
    store.put_identity("a@lid", [1; 32]).await.expect("identity");
    test.db.close().await;
    assert!(store.exists().await.is_err(), "not `false`");
    assert!(store.load_identity("a@lid").await.is_err(), "not `None`");
    assert!(store.put_session("a@lid", b"s").await.is_err(), "a write is not taken as done");
    assert!(store.put_sessions_batch(&[("a@lid".into(), Bytes::from_static(b"s"))]).await.is_err());
    assert!(store.store_prekeys_batch(&[(1, Bytes::from_static(b"k"))], false).await.is_err());
    assert!(store.put_sender_key("g::a", b"k").await.is_err());
    assert!(credentials.has_credentials(&shop).await.is_err_and(|e| e.is_unavailable()));
}

/// What whatsapp-rust reads back from a number's store, as text.
async fn reads(store: &dyn Backend) -> Vec<String> {
    vec![
        format!("device: {:?}", store.load().await.expect("load").as_ref().map(describe)),
        format!("identity: {:?}", store.load_identity("222@lid").await.expect("identity")),
        format!("session: {:?}", store.get_session("222@lid").await.expect("session")),
        format!("high prekey: {:?}", store.load_prekey(u32::MAX - 1).await.expect("prekey")),
        format!("mappings: {}", store.get_all_lid_mappings().await.expect("mappings").len()),
    ]
}

#[tokio::test]
async fn a_number_copied_by_migrate_reads_back_the_same_on_postgres() {
    let device = linked_device();
    let dir = std::env::temp_dir().join(format!("wg-credentials-copy-{}-{}", std::process::id(), now_ms()));
    let sqlite = super::sqlite::SqliteCredentials::new(&dir);
    let shop = id("tienda");
    let store = sqlite.backend(&shop).await.expect("backend");
    let mut t = Transcript::default();
    device_calls(&*store, &device, &mut t).await;
    signal_calls(&*store, &mut t).await;
    app_sync_calls(&*store, &mut t).await;
    protocol_calls(&*store, &mut t).await;
    token_calls(&*store, &mut t).await;
    // SQLite keeps it as a negative i32.
    store.store_prekeys_batch(&[(u32::MAX - 1, Bytes::from_static(b"high"))], false).await.expect("high prekey");
    let before = reads(&*store).await;
    drop(store);

    let test = super::postgres::testing::fresh(2).await;
    let mut report = crate::migrate::Report::default();
    crate::migrate::copy_credentials(&dir, &[], &test.db, &mut report).await.expect("copy");
    assert_eq!(report.numbers.moved, 1);
    assert!(report.credential_rows.moved > 10, "{report:?}");
    let copied = test.db.credentials().backend(&shop).await.expect("backend");
    assert_eq!(reads(&*copied).await, before);
    assert!(before[3].contains("high"), "{before:?}");
    // SQLite's MAX runs over the signed ids it stores, so it misses this one; Postgres does not.
    assert_eq!(copied.get_max_prekey_id().await.expect("max"), u32::MAX - 1);

    let mut again = crate::migrate::Report::default();
    crate::migrate::copy_credentials(&dir, &[], &test.db, &mut again).await.expect("copy again");
    assert_eq!((again.credential_rows.found, again.credential_rows.moved), (report.credential_rows.found, 0));

    // Every table of the SQLite store is one the copy knows.
    let conn = rusqlite::Connection::open(dir.join("tienda").join(super::sqlite::STORE_FILE)).expect("open");
    let mut stmt = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name NOT LIKE '__diesel%' ORDER BY name",
        )
        .expect("tables");
    let tables: Vec<String> = stmt.query_map([], |r| r.get(0)).expect("tables").map(|t| t.expect("name")).collect();
    let mut known: Vec<&str> = super::transfer::CREDENTIAL_TABLES.iter().map(|(sqlite, _)| *sqlite).collect();
    known.sort_unstable();
    assert_eq!(tables, known, "whatsapp-rust's SQLite store changed its tables: update CREDENTIAL_TABLES");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fleet's fences on a number's credentials: a wipe only under the live lease (checked by the
/// database), no store call once the gateway's own view says the lease is gone, and no write
/// once the database says so, whatever that view still says (a gateway whose clock ran slow).
#[tokio::test]
async fn a_fleets_credentials_are_wiped_only_under_the_live_lease_and_fenced_calls_are_refused() {
    use crate::domain::GatewayId;
    use crate::storage::LeaseStore;
    use crate::storage::credentials::WriteFence;
    use std::sync::atomic::{AtomicBool, Ordering};
    let test = super::postgres::testing::fresh(4).await;
    let (credentials, leases) = (test.db.credentials(), test.db.leases());
    let shop = id("tienda");
    let (a, b) = (GatewayId::parse("gw-a").expect("id"), GatewayId::parse("gw-b").expect("id"));
    let ttl = std::time::Duration::from_secs(60);

    // A holds the lease at epoch 1 and writes under it.
    let old = leases.claim(&shop, &a, ttl).await.expect("claim").expect("free");
    let holds = Arc::new(AtomicBool::new(true));
    let fence = {
        let holds = holds.clone();
        WriteFence::new(old.clone(), Arc::new(move || holds.load(Ordering::SeqCst)))
    };
    let store = credentials.fenced_backend(&shop, fence).await.expect("backend");
    store.create().await.expect("create under the lease");
    store.put_identity("a@lid", [1; 32]).await.expect("identity under the lease");
    store.put_session("a@lid", b"a's").await.expect("session under the lease");

    // A's own view says the lease is gone: every call is refused before it reaches the database.
    holds.store(false, Ordering::SeqCst);
    assert!(store.put_identity("a@lid", [2; 32]).await.is_err(), "a fenced write is refused");
    assert!(store.get_session("a@lid").await.is_err(), "every call is");
    holds.store(true, Ordering::SeqCst);

    // A's lease is released and B claims it (epoch 2). A still believes it holds the number: the
    // database refuses its writes, and B's keys stay as B wrote them.
    assert!(leases.release(&old).await.expect("release"));
    let current = leases.claim(&shop, &b, ttl).await.expect("claim").expect("released");
    let b_store =
        credentials.fenced_backend(&shop, WriteFence::new(current.clone(), Arc::new(|| true))).await.expect("backend");
    b_store.put_session("a@lid", b"b's").await.expect("the holder writes");
    assert!(store.put_session("a@lid", b"stale").await.is_err(), "a stale epoch's write is refused");
    assert!(store.put_identity("a@lid", [3; 32]).await.is_err(), "a stale epoch's identity is refused");
    assert!(store.remove_prekey(1).await.is_err(), "a stale epoch's delete is refused");
    assert_eq!(b_store.get_session("a@lid").await.expect("read").as_deref(), Some(&b"b's"[..]), "B's session stands");
    assert_eq!(b_store.load_identity("a@lid").await.expect("read"), Some([1; 32]), "the identity is A's last good one");
    assert!(store.get_session("a@lid").await.is_ok(), "reads are not fenced by the database");

    assert!(!credentials.wipe_under_lease(&shop, &old).await.expect("wipe"), "a stale lease wipes nothing");
    assert!(credentials.has_credentials(&shop).await.expect("has"), "still linked for B");
    assert!(credentials.wipe_under_lease(&shop, &current).await.expect("wipe"), "the holder wipes");
    assert!(!credentials.has_credentials(&shop).await.expect("has"));
}
