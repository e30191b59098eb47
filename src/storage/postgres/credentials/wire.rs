//! The three values whatsapp-rust's SQLite store keeps as protobuf blobs (an app-state sync key,
//! an app-state hash state, the server's certificate chain), in the same encoding: the bytes of a
//! row copied from a `whatsapp.db` decode here, and ours decode there.
//!
//! Its `proto/wire.proto`, which these follow field for field:
//!
//! ```text
//! message NoiseCert { bytes key = 1; int64 not_before = 2; int64 not_after = 3; }
//! message ServerCertChain { NoiseCert intermediate = 1; NoiseCert leaf = 2; }
//! message AppStateSyncKeyWire { bytes key_data = 1; bytes fingerprint = 2; int64 timestamp = 3; }
//! message HashStateWire { uint64 version = 1; bytes hash = 2; map<string, bytes> index_value_map = 3;
//!                         bool mac_mismatch_fatal = 4; }
//! ```
//!
//! proto3: a field at its default value is left out, unknown fields are skipped, the last of a
//! repeated scalar wins.

use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::store::device::{CachedNoiseCert, CachedServerCertChain};
use whatsapp_rust::wacore::store::traits::AppStateSyncKey;

/// A blob that is not what it claims to be.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct WireError(String);

fn bad(what: impl Into<String>) -> WireError {
    WireError(what.into())
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    fn uint(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.tag(field, VARINT);
            self.varint(value);
        }
    }

    fn int(&mut self, field: u32, value: i64) {
        // int64: two's complement as an unsigned varint.
        self.uint(field, value as u64);
    }

    fn bytes(&mut self, field: u32, value: &[u8]) {
        if !value.is_empty() {
            self.message(field, value);
        }
    }

    /// A length-delimited field written even when empty (an embedded message is present).
    fn message(&mut self, field: u32, value: &[u8]) {
        self.tag(field, LEN);
        self.varint(value.len() as u64);
        self.0.extend_from_slice(value);
    }
}

/// One field as read: its number and its value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first().ok_or_else(|| bad("truncated varint"))?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(bad("truncated field"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// The next field, `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, WireError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let value = match (tag & 7) as u8 {
            VARINT => Value::Varint(self.varint()?),
            LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| bad("length out of range"))?;
                Value::Bytes(self.take(len)?)
            }
            FIXED64 => {
                self.take(8)?;
                Value::Fixed
            }
            FIXED32 => {
                self.take(4)?;
                Value::Fixed
            }
            other => return Err(bad(format!("unsupported wire type {other}"))),
        };
        Ok(Some((tag >> 3, value)))
    }
}

fn fixed<const N: usize>(what: &str, bytes: Vec<u8>) -> Result<[u8; N], WireError> {
    let got = bytes.len();
    bytes.try_into().map_err(|_| bad(format!("{what}: expected {N} bytes, got {got}")))
}

// --- app-state sync key ---

pub(super) fn encode_sync_key(key: &AppStateSyncKey) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(1, &key.key_data);
    w.bytes(2, &key.fingerprint);
    w.int(3, key.timestamp);
    w.0
}

/// Rejects key material that is not a 32-byte master key, as the SQLite store does: a caller
/// treats the key as absent and asks the phone for it again.
pub(super) fn decode_sync_key(bytes: &[u8]) -> Result<AppStateSyncKey, WireError> {
    let mut key = AppStateSyncKey::default();
    let mut r = Reader(bytes);
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => key.key_data = b.to_vec(),
            (2, Value::Bytes(b)) => key.fingerprint = b.to_vec(),
            (3, Value::Varint(v)) => key.timestamp = v as i64,
            (1..=3, _) => return Err(bad("app_state_sync_key: wrong wire type")),
            _ => {}
        }
    }
    if key.key_data.len() != 32 {
        return Err(bad(format!("app_state_sync_key.key_data: expected 32 bytes, got {}", key.key_data.len())));
    }
    Ok(key)
}

// --- app-state hash state ---

pub(super) fn encode_hash_state(state: &HashState) -> Vec<u8> {
    let mut w = Writer::default();
    w.uint(1, state.version);
    w.bytes(2, &state.hash);
    // Sorted, so that one state always encodes to the same bytes.
    let mut entries: Vec<_> = state.index_value_map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (index, value) in entries {
        let mut entry = Writer::default();
        entry.bytes(1, index.as_bytes());
        entry.bytes(2, value);
        w.message(3, &entry.0);
    }
    w.uint(4, u64::from(state.mac_mismatch_fatal));
    w.0
}

pub(super) fn decode_hash_state(bytes: &[u8]) -> Result<HashState, WireError> {
    let mut state = HashState::default();
    let mut hash = Vec::new();
    let mut r = Reader(bytes);
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Varint(v)) => state.version = v,
            (2, Value::Bytes(b)) => hash = b.to_vec(),
            (3, Value::Bytes(b)) => {
                let (mut index, mut value) = (String::new(), Vec::new());
                let mut entry = Reader(b);
                while let Some((field, v)) = entry.field()? {
                    match (field, v) {
                        (1, Value::Bytes(b)) => {
                            index = String::from_utf8(b.to_vec()).map_err(|_| bad("index is not UTF-8"))?
                        }
                        (2, Value::Bytes(b)) => value = b.to_vec(),
                        (1 | 2, _) => return Err(bad("hash_state map entry: wrong wire type")),
                        _ => {}
                    }
                }
                state.index_value_map.insert(index, value);
            }
            (4, Value::Varint(v)) => state.mac_mismatch_fatal = v != 0,
            (1..=4, _) => return Err(bad("hash_state: wrong wire type")),
            _ => {}
        }
    }
    state.hash = fixed("hash_state.hash", hash)?;
    Ok(state)
}

// --- server certificate chain ---

fn encode_cert(cert: &CachedNoiseCert) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(1, &cert.key);
    w.int(2, cert.not_before);
    w.int(3, cert.not_after);
    w.0
}

pub(super) fn encode_cert_chain(chain: &CachedServerCertChain) -> Vec<u8> {
    let mut w = Writer::default();
    w.message(1, &encode_cert(&chain.intermediate));
    w.message(2, &encode_cert(&chain.leaf));
    w.0
}

fn decode_cert(bytes: &[u8]) -> Result<CachedNoiseCert, WireError> {
    let (mut key, mut not_before, mut not_after) = (Vec::new(), 0, 0);
    let mut r = Reader(bytes);
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => key = b.to_vec(),
            (2, Value::Varint(v)) => not_before = v as i64,
            (3, Value::Varint(v)) => not_after = v as i64,
            (1..=3, _) => return Err(bad("noise_cert: wrong wire type")),
            _ => {}
        }
    }
    Ok(CachedNoiseCert { key: fixed("noise_cert.key", key)?, not_before, not_after })
}

pub(super) fn decode_cert_chain(bytes: &[u8]) -> Result<CachedServerCertChain, WireError> {
    let (mut intermediate, mut leaf) = (None, None);
    let mut r = Reader(bytes);
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => intermediate = Some(decode_cert(b)?),
            (2, Value::Bytes(b)) => leaf = Some(decode_cert(b)?),
            (1 | 2, _) => return Err(bad("server_cert_chain: wrong wire type")),
            _ => {}
        }
    }
    Ok(CachedServerCertChain {
        intermediate: intermediate.ok_or_else(|| bad("server_cert_chain.intermediate missing"))?,
        leaf: leaf.ok_or_else(|| bad("server_cert_chain.leaf missing"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_keys_round_trip_and_short_keys_are_refused() {
        let key = AppStateSyncKey { key_data: vec![7; 32], fingerprint: vec![9, 8, 7], timestamp: -5 };
        let back = decode_sync_key(&encode_sync_key(&key)).expect("decodes");
        assert_eq!((back.key_data, back.fingerprint, back.timestamp), (key.key_data, key.fingerprint, -5));
        let short = AppStateSyncKey { key_data: vec![0; 16], ..AppStateSyncKey::default() };
        assert!(decode_sync_key(&encode_sync_key(&short)).is_err());
        assert!(decode_sync_key(&[0x0a, 0x05, 1]).is_err(), "truncated");
    }

    #[test]
    fn hash_states_round_trip_with_empty_values_and_the_latch() {
        let mut state = HashState { version: 42, mac_mismatch_fatal: true, ..HashState::default() };
        state.hash[0] = 0xff;
        state.hash[127] = 0x11;
        state.index_value_map.insert("a".into(), vec![1, 2, 3]);
        state.index_value_map.insert("b".into(), vec![]);
        let back = decode_hash_state(&encode_hash_state(&state)).expect("decodes");
        assert_eq!((back.version, back.hash, back.mac_mismatch_fatal), (42, state.hash, true));
        assert_eq!(back.index_value_map, state.index_value_map);
        let default = decode_hash_state(&encode_hash_state(&HashState::default())).expect("default");
        assert_eq!((default.version, default.hash, default.index_value_map.len()), (0, [0; 128], 0));
    }

    #[test]
    fn cert_chains_round_trip_and_unknown_fields_are_skipped() {
        let chain = CachedServerCertChain {
            intermediate: CachedNoiseCert { key: [0xab; 32], not_before: 1, not_after: 2 },
            leaf: CachedNoiseCert { key: [0xcd; 32], not_before: 3, not_after: 4 },
        };
        let mut bytes = encode_cert_chain(&chain);
        // Field 9, a varint a newer writer added.
        bytes.extend_from_slice(&[9 << 3, 1]);
        assert_eq!(decode_cert_chain(&bytes).expect("decodes"), chain);
        assert!(decode_cert_chain(&[]).is_err(), "both certificates are required");
    }

    /// The blobs of a real `whatsapp.db` decode here, and ours are read back by its store: rows
    /// copy between the two backends as they are.
    #[tokio::test]
    async fn the_sqlite_stores_blobs_and_ours_are_the_same_encoding() {
        use whatsapp_rust::store::SqliteStore;
        use whatsapp_rust::wacore::store::traits::{AppSyncStore, DeviceStore};

        let dir = std::env::temp_dir().join(format!("wg-wire-{}-{}", std::process::id(), crate::storage::now_ms()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("whatsapp.db");
        let store = SqliteStore::new(path.to_str().expect("utf-8")).await.expect("store");
        let mut state = HashState { version: 9, mac_mismatch_fatal: true, ..HashState::default() };
        state.hash[1] = 1;
        state.index_value_map.insert("k".into(), vec![4, 5]);
        store.set_version("regular", state.clone()).await.expect("version");
        let key = AppStateSyncKey { key_data: vec![3; 32], fingerprint: vec![1, 2], timestamp: 77 };
        store.set_sync_key(b"id", key).await.expect("key");
        store.create().await.expect("device");
        let mut device = store.load().await.expect("load").expect("device");
        let chain = CachedServerCertChain {
            intermediate: CachedNoiseCert { key: [1; 32], not_before: 10, not_after: 20 },
            leaf: CachedNoiseCert { key: [2; 32], not_before: 30, not_after: 40 },
        };
        device.server_cert_chain = Some(chain.clone());
        store.save(&device).await.expect("save");

        // Theirs, decoded here.
        let conn = rusqlite::Connection::open(&path).expect("open");
        let blob = |sql: &str| conn.query_row(sql, [], |row| row.get::<_, Vec<u8>>(0)).expect(sql);
        let theirs = decode_hash_state(&blob("SELECT state_data FROM app_state_versions")).expect("hash state");
        assert_eq!((theirs.version, theirs.hash, theirs.mac_mismatch_fatal), (9, state.hash, true));
        assert_eq!(theirs.index_value_map, state.index_value_map);
        let theirs = decode_sync_key(&blob("SELECT key_data FROM app_state_keys")).expect("sync key");
        assert_eq!((theirs.key_data, theirs.fingerprint, theirs.timestamp), (vec![3; 32], vec![1, 2], 77));
        assert_eq!(decode_cert_chain(&blob("SELECT server_cert_chain FROM device")).expect("chain"), chain);

        // Ours, read by their store.
        let mut ours = state.clone();
        ours.version = 10;
        ours.index_value_map.insert("empty".into(), vec![]);
        conn.execute("UPDATE app_state_versions SET state_data = ?1", [encode_hash_state(&ours)]).expect("write");
        let key = AppStateSyncKey { key_data: vec![8; 32], fingerprint: vec![], timestamp: -1 };
        conn.execute("UPDATE app_state_keys SET key_data = ?1", [encode_sync_key(&key)]).expect("write");
        let mut other_chain = chain.clone();
        other_chain.leaf.not_after = 99;
        conn.execute("UPDATE device SET server_cert_chain = ?1", [encode_cert_chain(&other_chain)]).expect("write");
        drop(conn);
        let back = store.get_version("regular").await.expect("version");
        assert_eq!((back.version, back.index_value_map), (10, ours.index_value_map));
        let back = store.get_sync_key(b"id").await.expect("key").expect("decodes there");
        assert_eq!((back.key_data, back.timestamp), (vec![8; 32], -1));
        let back = store.load().await.expect("load").expect("device");
        assert_eq!(back.server_cert_chain, Some(other_chain));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
