//! The Signal side of a "virtual phone": the server-held primary device 0 of a
//! phone number.
//!
//! Every account on the fake server gets one [`VirtualDevice`]. Its identity
//! key pair doubles as the ADV *account* key (the server signs `pair-success`
//! with it), and its registration id, signed prekey and one-time prekeys form
//! the bundle the server hands out for `<user jid="NUMBER@s.whatsapp.net"/>`
//! in `<iq xmlns="encrypt" type="get"><key>` requests.
//!
//! With that bundle a real whatsapp-rust client opens an ordinary Signal
//! session with device 0, so the server can
//! * decrypt what the client sends to device 0 ([`VirtualDevice::decrypt`]),
//!   including the DeviceSentMessage copy a client sends to its *own*
//!   device 0 (unwrap it with `wacore::messages::unwrap_device_sent`), and
//! * send messages *as the phone* to a companion
//!   ([`VirtualDevice::encrypt_for`]), e.g. an app-state key share or an
//!   inbound text/document.
//!
//! Everything here mirrors the client code exactly:
//! * Signal addresses come from `wacore::types::jid::JidExt::to_protocol_address`
//!   (`"{user}[:{device}]@{server}"` with `s.whatsapp.net` rendered as `c.us`,
//!   Signal device id always 0); see [`protocol_address`].
//! * Plaintexts are padded with `MessageUtils::encode_and_pad` and unpadded
//!   with `wacore::messages::decode_plaintext` (padding version 2, what
//!   `<enc v="2">` means).
//! * Session setup and ciphers are wacore-libsignal's `process_prekey_bundle`,
//!   `message_encrypt` and `message_decrypt_*` with `UsePQRatchet::No`, and
//!   every identity is trusted (TOFU), like WA Web and whatsapp-rust.
//!
//! Key formats: on the wire WhatsApp sends 32-byte raw Curve25519 keys, while
//! libsignal's `PublicKey::serialize` is 33 bytes with a leading `0x05`. The
//! bundle types here hold raw 32-byte keys; [`raw_public_key`] accepts either
//! form. Signed-prekey signatures are always over the 33-byte form.

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rand::RngExt;
use rand::rngs::StdRng;
use wacore::download::{DownloadUtils, MediaType};
use wacore::iq::prekeys::{OneTimePreKeyNode, PreKeyBundleUserNode, SignedPreKeyNode};
use wacore::messages::MessageUtils;
use wacore::types::jid::JidExt;
use wacore_binary::Jid;
use wacore_libsignal::protocol::{
    CiphertextMessage, DeviceId, Direction, GenericSignedPreKey, IdentityChange, IdentityKey, IdentityKeyPair,
    IdentityKeyStore, KeyPair, PreKeyBundle, PreKeyId, PreKeyRecord, PreKeySignalMessage, PreKeyStore, ProtocolAddress,
    PublicKey, SessionRecord, SessionStore, SignalMessage, SignalProtocolError, SignedPreKeyId, SignedPreKeyRecord,
    SignedPreKeyStore, Timestamp, UsePQRatchet, message_decrypt_prekey, message_decrypt_signal, message_encrypt,
    process_prekey_bundle,
};
use waproto::whatsapp as wa;

/// Boxed error carried as the source of a [`PhoneError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How many one-time prekeys a fresh device holds, and how many are added
/// whenever [`VirtualDevice::bundle`] finds the pool empty.
pub const ONE_TIME_PREKEY_BATCH: u32 = 50;

/// Prekey ids travel as 3 big-endian bytes.
const MAX_PREKEY_ID: u32 = 0x00FF_FFFF;

/// The only padding version the client writes with `<enc v="2">`.
const PADDING_VERSION: u8 = 2;

/// Everything that can go wrong in this module.
#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    /// The `<enc type=…>` attribute is neither `pkmsg` nor `msg`.
    #[error("unsupported <enc> type {0:?} (expected \"pkmsg\" or \"msg\")")]
    UnknownEncType(String),
    /// `encrypt_for` was asked to send to a peer with no session and no bundle.
    #[error("no Signal session with {0} and no prekey bundle to start one")]
    NoSession(String),
    /// A key or signature has the wrong length or prefix.
    #[error("invalid key material: {0}")]
    InvalidKey(String),
    /// A companion's bundle carries a signed prekey its identity did not sign.
    #[error("signed prekey signature does not verify against the identity key")]
    BadSignedPreKeySignature,
    /// Anything the Signal protocol layer rejected (bad MAC, unknown prekey, …).
    #[error("signal protocol: {0}")]
    Signal(#[from] SignalProtocolError),
    /// The decrypted plaintext has bad padding or is not a `waproto` Message.
    #[error("message plaintext: {0}")]
    Plaintext(#[source] BoxError),
    /// Media encryption or decryption failed (MAC, padding, length).
    #[error("media: {0}")]
    Media(#[source] BoxError),
    /// A media hash did not match the one announced in the message.
    #[error("media {0} mismatch")]
    MediaHash(&'static str),
}

impl From<wacore_libsignal::protocol::CurveError> for PhoneError {
    fn from(e: wacore_libsignal::protocol::CurveError) -> Self {
        Self::Signal(e.into())
    }
}

/// The Signal message kind of an `<enc v="2" type=…>` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncType {
    /// `type="pkmsg"`: a PreKeySignalMessage that can start a session.
    PkMsg,
    /// `type="msg"`: a SignalMessage on an established session.
    Msg,
}

impl EncType {
    /// The wire value of the `type` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            EncType::PkMsg => "pkmsg",
            EncType::Msg => "msg",
        }
    }

    /// Parse the wire value of the `type` attribute.
    pub fn from_wire(value: &str) -> Result<Self, PhoneError> {
        match value {
            "pkmsg" => Ok(EncType::PkMsg),
            "msg" => Ok(EncType::Msg),
            other => Err(PhoneError::UnknownEncType(other.to_owned())),
        }
    }
}

impl std::fmt::Display for EncType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A prekey bundle in WhatsApp's wire shape (raw 32-byte keys).
///
/// Used both for the bundle this server serves for a virtual device 0
/// ([`VirtualDevice::bundle`]) and for a companion's bundle as it uploaded it
/// (registration data, `<skey>`, one `<key>` from its pool), which
/// [`VirtualDevice::encrypt_for`] needs to open a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreKeyBundleData {
    /// The device's registration id (`<registration>`, 4 bytes BE on the wire).
    pub registration_id: u32,
    /// Raw Curve25519 identity public key (`<identity>`).
    pub identity_key: [u8; 32],
    /// Signed prekey id (`<skey><id>`, 3 bytes BE on the wire).
    pub signed_prekey_id: u32,
    /// Raw signed prekey public key (`<skey><value>`).
    pub signed_prekey: [u8; 32],
    /// XEdDSA signature by the identity key over the 33-byte (`0x05`-prefixed)
    /// signed prekey (`<skey><signature>`).
    pub signed_prekey_signature: [u8; 64],
    /// Optional one-time prekey `(id, raw public key)` (`<key>`).
    pub one_time_prekey: Option<(u32, [u8; 32])>,
}

impl PreKeyBundleData {
    /// Build a bundle from wire bytes, accepting 32-byte raw or 33-byte
    /// `0x05`-prefixed keys and checking every length.
    pub fn from_wire(
        registration_id: u32,
        identity_key: &[u8],
        signed_prekey_id: u32,
        signed_prekey: &[u8],
        signed_prekey_signature: &[u8],
        one_time_prekey: Option<(u32, &[u8])>,
    ) -> Result<Self, PhoneError> {
        let signed_prekey_signature: [u8; 64] = signed_prekey_signature.try_into().map_err(|_| {
            PhoneError::InvalidKey(format!(
                "signed prekey signature is {} bytes, expected 64",
                signed_prekey_signature.len()
            ))
        })?;
        let one_time_prekey = match one_time_prekey {
            Some((id, key)) => Some((id, raw_public_key(key)?)),
            None => None,
        };
        Ok(Self {
            registration_id,
            identity_key: raw_public_key(identity_key)?,
            signed_prekey_id,
            signed_prekey: raw_public_key(signed_prekey)?,
            signed_prekey_signature,
            one_time_prekey,
        })
    }

    /// Whether the signed prekey signature verifies against the identity key,
    /// exactly as the client checks it in `process_prekey_bundle`.
    pub fn verify_signed_prekey(&self) -> bool {
        let Ok(identity) = PublicKey::from_djb_public_key_bytes(&self.identity_key) else {
            return false;
        };
        let Ok(spk) = PublicKey::from_djb_public_key_bytes(&self.signed_prekey) else {
            return false;
        };
        identity.verify_signature(&spk.serialize(), &self.signed_prekey_signature)
    }

    /// Convert to libsignal's bundle type, as the client's
    /// `PreKeyUtils::parse_prekeys_response` does (`device_id` is the JID's
    /// device; WhatsApp's Signal addresses ignore it).
    pub fn to_libsignal(&self, device_id: u16) -> Result<PreKeyBundle, PhoneError> {
        let pre_key = match self.one_time_prekey {
            Some((id, key)) => Some((PreKeyId::from(id), PublicKey::from_djb_public_key_bytes(&key)?)),
            None => None,
        };
        Ok(PreKeyBundle::new(
            self.registration_id,
            DeviceId::new(u32::from(device_id)),
            pre_key,
            SignedPreKeyId::from(self.signed_prekey_id),
            PublicKey::from_djb_public_key_bytes(&self.signed_prekey)?,
            self.signed_prekey_signature.to_vec(),
            IdentityKey::new(PublicKey::from_djb_public_key_bytes(&self.identity_key)?),
        )?)
    }

    /// The `<user jid=…>` node of an `encrypt`/`key` IQ result carrying this
    /// bundle (`device_identity` is the companion's ADVSignedDeviceIdentity;
    /// `None` for device 0). Call `wacore::protocol::ProtocolNode::into_node` on it.
    pub fn to_user_node(&self, jid: Jid, device_identity: Option<Vec<u8>>) -> PreKeyBundleUserNode {
        PreKeyBundleUserNode {
            jid,
            registration_id: self.registration_id,
            identity_key: self.identity_key.to_vec(),
            signed_pre_key: SignedPreKeyNode::new(
                self.signed_prekey_id,
                self.signed_prekey.to_vec(),
                self.signed_prekey_signature.to_vec(),
            ),
            one_time_pre_key: self.one_time_prekey.map(|(id, key)| OneTimePreKeyNode::new(id, key.to_vec())),
            device_identity,
        }
    }
}

/// Normalise a public key from the wire or from libsignal to its raw 32 bytes:
/// 32 bytes pass through, 33 bytes must start with `0x05` (the Curve25519
/// type byte), anything else is an error.
pub fn raw_public_key(bytes: &[u8]) -> Result<[u8; 32], PhoneError> {
    match bytes {
        [0x05, rest @ ..] if rest.len() == 32 => raw_array(rest),
        _ if bytes.len() == 32 => raw_array(bytes),
        _ => Err(PhoneError::InvalidKey(format!(
            "public key is {} bytes (expected 32, or 33 starting with 0x05)",
            bytes.len()
        ))),
    }
}

fn raw_array(bytes: &[u8]) -> Result<[u8; 32], PhoneError> {
    bytes.try_into().map_err(|_| PhoneError::InvalidKey(format!("expected 32 bytes, got {}", bytes.len())))
}

fn raw_of(key: &PublicKey) -> Result<[u8; 32], PhoneError> {
    raw_array(key.public_key_bytes())
}

/// The Signal address a whatsapp-rust client uses for `jid`
/// (`15550002:3@s.whatsapp.net` → name `15550002:3@c.us`, device id 0;
/// a device-0 JID has no `:0`). Both this module and the client key their
/// session stores this way.
pub fn protocol_address(jid: &Jid) -> ProtocolAddress {
    jid.to_protocol_address()
}

fn new_rng() -> StdRng {
    rand::make_rng::<StdRng>()
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The server-held primary device 0 of one phone number.
///
/// Holds the identity key pair (also the ADV account key), registration id,
/// one signed prekey, a pool of one-time prekeys and in-memory Signal stores
/// (sessions and peer identities keyed by [`protocol_address`]).
pub struct VirtualDevice {
    identity: KeyPair,
    stores: Stores,
    signed_prekey_id: u32,
    signed_prekey_public: [u8; 32],
    signed_prekey_signature: [u8; 64],
    /// One-time prekeys generated but not yet handed out in a bundle.
    unserved_prekeys: VecDeque<(u32, [u8; 32])>,
    next_prekey_id: u32,
}

impl std::fmt::Debug for VirtualDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualDevice")
            .field("registration_id", &self.stores.identity.registration_id)
            .field("signed_prekey_id", &self.signed_prekey_id)
            .field("sessions", &self.stores.sessions.0.len())
            .field("unserved_prekeys", &self.unserved_prekeys.len())
            .finish_non_exhaustive()
    }
}

impl Default for VirtualDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualDevice {
    /// A fresh device: new identity, registration id, signed prekey (id 1)
    /// and [`ONE_TIME_PREKEY_BATCH`] one-time prekeys.
    pub fn new() -> Self {
        Self::with_identity(KeyPair::generate(&mut new_rng()))
    }

    /// Like [`new`](Self::new) but with a given identity (= account) key pair.
    pub fn with_identity(identity: KeyPair) -> Self {
        let mut rng = new_rng();
        let registration_id = rng.random_range(1..=2_147_483_647u32);
        let signed_prekey = KeyPair::generate(&mut rng);
        let signed_prekey_public = signed_prekey.public_key;
        // XEdDSA over the 33-byte serialization, as libsignal and wacore's
        // `Device::new` sign it. Signing with a freshly generated Curve25519
        // key cannot fail; should it ever, the bundle simply fails the
        // client's verification instead of panicking here.
        let signed_prekey_signature =
            identity.private_key.calculate_signature(&signed_prekey_public.serialize(), &mut rng).unwrap_or([0u8; 64]);
        let signed_prekey_id = 1;
        let record = SignedPreKeyRecord::new(
            SignedPreKeyId::from(signed_prekey_id),
            Timestamp::from_epoch_millis(now_millis()),
            &signed_prekey,
            &signed_prekey_signature,
        );
        let mut signed = HashMap::new();
        signed.insert(signed_prekey_id, record);

        let mut public = [0u8; 32];
        public.copy_from_slice(signed_prekey_public.public_key_bytes());

        let mut device = Self {
            stores: Stores {
                sessions: Sessions(HashMap::new()),
                identity: Identities {
                    own: IdentityKeyPair::from(identity.clone()),
                    registration_id,
                    peers: HashMap::new(),
                },
                prekeys: PreKeys(HashMap::new()),
                signed_prekeys: SignedPreKeys(signed),
            },
            identity,
            signed_prekey_id,
            signed_prekey_public: public,
            signed_prekey_signature,
            unserved_prekeys: VecDeque::new(),
            next_prekey_id: 1,
        };
        device.refill_prekeys();
        device
    }

    /// The identity key pair; it is also the ADV account key this server signs
    /// `pair-success` (and key-index lists) with.
    pub fn identity_keypair(&self) -> &KeyPair {
        &self.identity
    }

    /// The raw 32-byte identity public key (`<identity>` on the wire, and the
    /// ADV `account_signature_key`).
    pub fn identity_public(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.identity.public_key.public_key_bytes());
        out
    }

    /// This device's registration id.
    pub fn registration_id(&self) -> u32 {
        self.stores.identity.registration_id
    }

    /// The next prekey bundle to serve for this device: identity, signed
    /// prekey and one fresh one-time prekey taken from the pool (the pool is
    /// refilled when empty, so every call returns a one-time prekey).
    pub fn bundle(&mut self) -> PreKeyBundleData {
        if self.unserved_prekeys.is_empty() {
            self.refill_prekeys();
        }
        let one_time_prekey = self.unserved_prekeys.pop_front();
        PreKeyBundleData { one_time_prekey, ..self.bundle_without_one_time_prekey() }
    }

    /// A bundle without a one-time prekey (signed prekey only; still valid for
    /// the client, which then runs X3DH without the optional DH4).
    pub fn bundle_without_one_time_prekey(&self) -> PreKeyBundleData {
        PreKeyBundleData {
            registration_id: self.registration_id(),
            identity_key: self.identity_public(),
            signed_prekey_id: self.signed_prekey_id,
            signed_prekey: self.signed_prekey_public,
            signed_prekey_signature: self.signed_prekey_signature,
            one_time_prekey: None,
        }
    }

    /// Number of one-time prekeys generated but not yet served.
    pub fn unserved_prekey_count(&self) -> usize {
        self.unserved_prekeys.len()
    }

    fn refill_prekeys(&mut self) {
        let mut rng = new_rng();
        let mut added = 0;
        // Bounded: at most the whole 24-bit id space is scanned once.
        let mut attempts = 0u32;
        while added < ONE_TIME_PREKEY_BATCH && attempts < MAX_PREKEY_ID {
            attempts += 1;
            let id = self.next_prekey_id;
            self.next_prekey_id = if id >= MAX_PREKEY_ID { 1 } else { id + 1 };
            if self.stores.prekeys.0.contains_key(&id) {
                continue;
            }
            let pair = KeyPair::generate(&mut rng);
            let mut public = [0u8; 32];
            public.copy_from_slice(pair.public_key.public_key_bytes());
            self.stores.prekeys.0.insert(id, PreKeyRecord::new(PreKeyId::from(id), &pair));
            self.unserved_prekeys.push_back((id, public));
            added += 1;
        }
    }

    /// Whether this device has a Signal session with `peer`.
    pub fn has_session(&self, peer: &Jid) -> bool {
        self.stores
            .sessions
            .0
            .get(protocol_address(peer).as_str())
            .is_some_and(|record| record.session_state().is_some())
    }

    /// Forget the session with `peer` (e.g. after the companion re-paired), so
    /// the next [`encrypt_for`](Self::encrypt_for) starts over from a bundle.
    pub fn delete_session(&mut self, peer: &Jid) {
        self.stores.sessions.0.remove(protocol_address(peer).as_str());
    }

    /// The identity key last seen for `peer`, as raw 32 bytes.
    pub fn peer_identity(&self, peer: &Jid) -> Option<[u8; 32]> {
        self.stores.identity.peers.get(protocol_address(peer).as_str()).and_then(|key| raw_of(key.public_key()).ok())
    }

    /// Decrypt an `<enc v="2" type="pkmsg"|"msg">` payload that `sender`
    /// (the stanza's device JID, e.g. `15550002:3@s.whatsapp.net`) sent to
    /// this device, strip WhatsApp's padding and decode the `waproto` Message.
    pub async fn decrypt(
        &mut self,
        sender: &Jid,
        enc_type: &str,
        ciphertext: &[u8],
    ) -> Result<wa::Message, PhoneError> {
        let padded = self.decrypt_padded(sender, enc_type, ciphertext).await?;
        wacore::messages::decode_plaintext(&padded, PADDING_VERSION).map_err(|e| PhoneError::Plaintext(e.into()))
    }

    /// Signal-decrypt only: returns the still-padded plaintext. A `pkmsg`
    /// establishes (or re-establishes) the session and consumes its one-time
    /// prekey.
    pub async fn decrypt_padded(
        &mut self,
        sender: &Jid,
        enc_type: &str,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, PhoneError> {
        let kind = EncType::from_wire(enc_type)?;
        let address = protocol_address(sender);
        let mut rng = new_rng();
        let Stores { sessions, identity, prekeys, signed_prekeys } = &mut self.stores;
        match kind {
            EncType::PkMsg => {
                let message = PreKeySignalMessage::try_from(ciphertext)?;
                let result = message_decrypt_prekey(
                    &message,
                    &address,
                    sessions,
                    identity,
                    prekeys,
                    signed_prekeys,
                    &mut rng,
                    UsePQRatchet::No,
                )
                .await?;
                // libsignal leaves deleting the consumed one-time prekey to the
                // caller (whatsapp-rust does it after persisting the session).
                // A duplicate pkmsg reuses the promoted session and does not
                // need it again.
                if let Some(id) = result.consumed_prekey_id {
                    prekeys.0.remove(&u32::from(id));
                }
                Ok(result.plaintext)
            }
            EncType::Msg => {
                let message = SignalMessage::try_from(ciphertext)?;
                let result = message_decrypt_signal(&message, &address, sessions, identity, &mut rng).await?;
                Ok(result.plaintext)
            }
        }
    }

    /// Encrypt `message` (padded like the client pads) for `recipient`, a
    /// companion device JID. Without a session, one is first established from
    /// `bundle_if_no_session` (the companion's uploaded registration id,
    /// identity, signed prekey and optionally one one-time prekey, which the
    /// caller must then consider used). Returns the `<enc v="2" type=…>` type
    /// and content exactly as a real phone would send them.
    pub async fn encrypt_for(
        &mut self,
        recipient: &Jid,
        bundle_if_no_session: Option<&PreKeyBundleData>,
        message: &wa::Message,
    ) -> Result<(EncType, Vec<u8>), PhoneError> {
        let padded = MessageUtils::encode_and_pad(message);
        self.encrypt_padded_for(recipient, bundle_if_no_session, &padded).await
    }

    /// [`encrypt_for`](Self::encrypt_for) with an already padded plaintext.
    pub async fn encrypt_padded_for(
        &mut self,
        recipient: &Jid,
        bundle_if_no_session: Option<&PreKeyBundleData>,
        padded_plaintext: &[u8],
    ) -> Result<(EncType, Vec<u8>), PhoneError> {
        let address = protocol_address(recipient);
        if !self.has_session(recipient) {
            let bundle = bundle_if_no_session.ok_or_else(|| PhoneError::NoSession(address.to_string()))?;
            if !bundle.verify_signed_prekey() {
                return Err(PhoneError::BadSignedPreKeySignature);
            }
            let libsignal_bundle = bundle.to_libsignal(recipient.device)?;
            let mut rng = new_rng();
            process_prekey_bundle(
                &address,
                &mut self.stores.sessions,
                &mut self.stores.identity,
                &libsignal_bundle,
                &mut rng,
                UsePQRatchet::No,
            )
            .await?;
        }
        let encrypted =
            message_encrypt(padded_plaintext, &address, &mut self.stores.sessions, &mut self.stores.identity).await?;
        match encrypted {
            CiphertextMessage::PreKeySignalMessage(m) => Ok((EncType::PkMsg, m.into_serialized().into_vec())),
            CiphertextMessage::SignalMessage(m) => Ok((EncType::Msg, m.into_serialized().into_vec())),
            other => Err(PhoneError::Signal(SignalProtocolError::InvalidArgument(format!(
                "unexpected ciphertext kind {:?}",
                other.message_type()
            )))),
        }
    }
}

/// Decrypt a downloaded WhatsApp media blob (AES-256-CBC + 10-byte HMAC) with
/// wacore's own `DownloadUtils::verify_and_decrypt`. When given, the
/// `file_enc_sha256` (of `enc`) and `file_sha256` (of the plaintext) from the
/// message are checked too.
pub fn decrypt_media(
    enc: &[u8],
    media_key: &[u8],
    media_type: MediaType,
    file_enc_sha256: Option<&[u8]>,
    file_sha256: Option<&[u8]>,
) -> Result<Vec<u8>, PhoneError> {
    use sha2::{Digest, Sha256};
    if let Some(expected) = file_enc_sha256
        && Sha256::digest(enc).as_slice() != expected
    {
        return Err(PhoneError::MediaHash("file_enc_sha256"));
    }
    let plain =
        DownloadUtils::verify_and_decrypt(enc, media_key, media_type).map_err(|e| PhoneError::Media(Box::new(e)))?;
    if let Some(expected) = file_sha256
        && Sha256::digest(&plain).as_slice() != expected
    {
        return Err(PhoneError::MediaHash("file_sha256"));
    }
    Ok(plain)
}

/// Encrypt a file for upload the way the client does
/// (`wacore::upload::encrypt_media`): fresh media key, AES-256-CBC, 10-byte
/// HMAC; the result carries the key and both SHA-256 hashes for the message.
pub fn encrypt_media(plaintext: &[u8], media_type: MediaType) -> Result<wacore::upload::EncryptedMedia, PhoneError> {
    wacore::upload::encrypt_media(plaintext, media_type).map_err(|e| PhoneError::Media(e.into()))
}

// ---------------------------------------------------------------------------
// Minimal in-memory Signal stores.

struct Stores {
    sessions: Sessions,
    identity: Identities,
    prekeys: PreKeys,
    signed_prekeys: SignedPreKeys,
}

/// Sessions keyed by `ProtocolAddress::as_str()`.
struct Sessions(HashMap<String, SessionRecord>);

struct Identities {
    own: IdentityKeyPair,
    registration_id: u32,
    peers: HashMap<String, IdentityKey>,
}

struct PreKeys(HashMap<u32, PreKeyRecord>);

struct SignedPreKeys(HashMap<u32, SignedPreKeyRecord>);

type SignalResult<T> = Result<T, SignalProtocolError>;

#[async_trait]
impl SessionStore for Sessions {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        Ok(self.0.get(address.as_str()).cloned())
    }

    async fn has_session(&self, address: &ProtocolAddress) -> SignalResult<bool> {
        Ok(self.0.get(address.as_str()).is_some_and(|r| r.session_state().is_some()))
    }

    async fn store_session(&mut self, address: &ProtocolAddress, record: SessionRecord) -> SignalResult<()> {
        self.0.insert(address.as_str().to_owned(), record);
        Ok(())
    }
}

#[async_trait]
impl IdentityKeyStore for Identities {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(self.own.clone())
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        let previous = self.peers.insert(address.as_str().to_owned(), *identity);
        Ok(IdentityChange::from_changed(previous.is_some_and(|p| &p != identity)))
    }

    /// Trust on first use, and on every later use, like WA Web and whatsapp-rust.
    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        _identity: &IdentityKey,
        _direction: Direction,
    ) -> SignalResult<bool> {
        Ok(true)
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        Ok(self.peers.get(address.as_str()).copied())
    }
}

#[async_trait]
impl PreKeyStore for PreKeys {
    async fn get_pre_key(&self, prekey_id: PreKeyId) -> SignalResult<PreKeyRecord> {
        self.0.get(&u32::from(prekey_id)).cloned().ok_or(SignalProtocolError::InvalidPreKeyId)
    }

    async fn save_pre_key(&mut self, prekey_id: PreKeyId, record: &PreKeyRecord) -> SignalResult<()> {
        self.0.insert(u32::from(prekey_id), record.clone());
        Ok(())
    }

    async fn remove_pre_key(&mut self, prekey_id: PreKeyId) -> SignalResult<()> {
        self.0.remove(&u32::from(prekey_id));
        Ok(())
    }
}

#[async_trait]
impl SignedPreKeyStore for SignedPreKeys {
    async fn get_signed_pre_key(&self, signed_prekey_id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        self.0.get(&u32::from(signed_prekey_id)).cloned().ok_or(SignalProtocolError::InvalidSignedPreKeyId)
    }

    async fn save_signed_pre_key(
        &mut self,
        signed_prekey_id: SignedPreKeyId,
        record: &SignedPreKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(u32::from(signed_prekey_id), record.clone());
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! The other party in these tests is the real client code: whatsapp-rust's
    //! `SignalProtocolStoreAdapter` over an in-memory backend, wacore's bundle
    //! parser, padding and media helpers, and the same libsignal calls the
    //! client's send/receive paths make.

    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;
    use wacore::prekeys::PreKeyUtils;
    use wacore::protocol::ProtocolNode;
    use wacore_binary::builder::NodeBuilder;
    use wacore_libsignal::protocol::message_decrypt;
    use whatsapp_rust::store::persistence_manager::PersistenceManager;
    use whatsapp_rust::store::signal_adapter::SignalProtocolStoreAdapter;
    use whatsapp_rust::store::signal_cache::SignalStoreCache;

    const PHONE: &str = "15550001@s.whatsapp.net";
    const COMPANION: &str = "15550002:3@s.whatsapp.net";

    fn jid(s: &str) -> Jid {
        s.parse().expect("valid jid")
    }

    fn text(s: &str) -> wa::Message {
        wa::Message { conversation: Some(s.to_owned()), ..Default::default() }
    }

    /// A whatsapp-rust client device with the store stack the client uses.
    struct Client {
        adapter: SignalProtocolStoreAdapter,
        pm: PersistenceManager,
    }

    impl Client {
        async fn new() -> Self {
            let backend = Arc::new(wacore::store::InMemoryBackend::new());
            let pm = PersistenceManager::new(backend).await.expect("persistence");
            let adapter = SignalProtocolStoreAdapter::new(pm.get_device_arc().await, Arc::new(SignalStoreCache::new()));
            Self { adapter, pm }
        }

        /// The bundle this client would have uploaded, plus one one-time prekey
        /// saved in its own prekey store (as its upload path does).
        async fn uploaded_bundle(&mut self, prekey_id: u32) -> PreKeyBundleData {
            let device = self.pm.get_device_arc().await;
            let device = device.read().await;
            let otk = KeyPair::generate(&mut new_rng());
            let record = PreKeyRecord::new(PreKeyId::from(prekey_id), &otk);
            self.adapter.pre_key_store.save_pre_key(PreKeyId::from(prekey_id), &record).await.expect("save prekey");
            PreKeyBundleData::from_wire(
                device.registration_id,
                // 33-byte libsignal form on purpose: from_wire must strip 0x05.
                &device.identity_key.public_key.serialize(),
                device.signed_pre_key_id,
                device.signed_pre_key.public_key.public_key_bytes(),
                &device.signed_pre_key_signature,
                Some((prekey_id, otk.public_key.public_key_bytes())),
            )
            .expect("valid client bundle")
        }

        /// Client send path: parse the server's `<user>` bundle node with
        /// wacore's parser, then `process_prekey_bundle` like `ensure_sessions_for_devices`.
        async fn start_session_from_node(&mut self, peer: &Jid, user_node: PreKeyBundleUserNode) {
            let response = NodeBuilder::new("iq")
                .children([NodeBuilder::new("list").children([user_node.into_node()]).build()])
                .build();
            let outcome = PreKeyUtils::parse_prekeys_response(&response.as_node_ref(), &HashMap::new())
                .expect("client parses bundle");
            let bundle = outcome.bundles.get(peer).expect("bundle for peer");
            process_prekey_bundle(
                &peer.to_protocol_address(),
                &mut self.adapter.session_store,
                &mut self.adapter.identity_store,
                bundle,
                &mut new_rng(),
                UsePQRatchet::No,
            )
            .await
            .expect("client accepts the phone's bundle");
        }

        /// Client send path: pad, `message_encrypt`, `extract_ciphertext`.
        async fn encrypt(&mut self, peer: &Jid, msg: &wa::Message) -> (&'static str, Vec<u8>) {
            let padded = MessageUtils::encode_and_pad(msg);
            let ct = message_encrypt(
                &padded,
                &peer.to_protocol_address(),
                &mut self.adapter.session_store,
                &mut self.adapter.identity_store,
            )
            .await
            .expect("client encrypt");
            let (enc_type, _, bytes) = wacore::send::extract_ciphertext(ct).expect("pkmsg or msg");
            (enc_type, bytes.into_vec())
        }

        /// Client receive path (`decrypt_session_message` + `decode_plaintext`).
        async fn decrypt(&mut self, sender: &Jid, enc_type: EncType, bytes: &[u8]) -> wa::Message {
            let parsed = match enc_type {
                EncType::PkMsg => {
                    CiphertextMessage::PreKeySignalMessage(PreKeySignalMessage::try_from(bytes).expect("pkmsg parses"))
                }
                EncType::Msg => CiphertextMessage::SignalMessage(SignalMessage::try_from(bytes).expect("msg parses")),
            };
            let result = message_decrypt(
                &parsed,
                &sender.to_protocol_address(),
                &mut self.adapter.session_store,
                &mut self.adapter.identity_store,
                &mut self.adapter.pre_key_store,
                &self.adapter.signed_pre_key_store,
                &mut new_rng(),
                UsePQRatchet::No,
            )
            .await
            .expect("client decrypts");
            wacore::messages::decode_plaintext(&result.plaintext, 2).expect("client unpads")
        }
    }

    #[test]
    fn address_matches_client_derivation() {
        assert_eq!(protocol_address(&jid(COMPANION)).as_str(), "15550002:3@c.us.0");
        assert_eq!(protocol_address(&jid(PHONE)).as_str(), "15550001@c.us.0");
        assert_eq!(protocol_address(&jid("200000000000002:3@lid")).as_str(), "200000000000002:3@lid.0");
        assert_eq!(u32::from(protocol_address(&jid(COMPANION)).device_id()), 0);
    }

    #[tokio::test]
    async fn client_opens_session_with_phone_and_both_sides_talk() {
        let mut phone = VirtualDevice::new();
        let phone_jid = jid(PHONE);
        let companion = jid(COMPANION);
        let mut client = Client::new().await;

        let bundle = phone.bundle();
        let (otk_id, _) = bundle.one_time_prekey.expect("one-time prekey served");
        assert!(bundle.verify_signed_prekey());
        client.start_session_from_node(&phone_jid, bundle.to_user_node(phone_jid.clone(), None)).await;

        // Two pkmsgs before any reply (what a real client does when sending twice).
        let (t1, c1) = client.encrypt(&phone_jid, &text("hi")).await;
        let (t2, c2) = client.encrypt(&phone_jid, &text("hi again")).await;
        assert_eq!((t1, t2), ("pkmsg", "pkmsg"));
        assert!(!phone.has_session(&companion));
        let m1 = phone.decrypt(&companion, t1, &c1).await.expect("phone decrypts pkmsg");
        assert_eq!(m1.conversation.as_deref(), Some("hi"));
        assert!(phone.has_session(&companion));
        assert!(!phone.stores.prekeys.0.contains_key(&otk_id), "one-time prekey consumed");
        let m2 = phone.decrypt(&companion, t2, &c2).await.expect("second pkmsg reuses session");
        assert_eq!(m2.conversation.as_deref(), Some("hi again"));
        assert_eq!(
            phone.peer_identity(&companion),
            Some(
                raw_public_key(&client.pm.get_device_arc().await.read().await.identity_key.public_key.serialize())
                    .unwrap()
            )
        );

        // Phone answers on the session the client opened: a plain msg.
        let (rt, rc) = phone.encrypt_for(&companion, None, &text("pong")).await.expect("reply");
        assert_eq!(rt, EncType::Msg);
        let reply = client.decrypt(&phone_jid, rt, &rc).await;
        assert_eq!(reply.conversation.as_deref(), Some("pong"));

        // Now the session is acknowledged, so the client sends type="msg".
        let (t3, c3) = client.encrypt(&phone_jid, &text("third")).await;
        assert_eq!(t3, "msg");
        let m3 = phone.decrypt(&companion, t3, &c3).await.expect("phone decrypts msg");
        assert_eq!(m3.conversation.as_deref(), Some("third"));

        // Replaying a consumed message fails cleanly.
        assert!(phone.decrypt(&companion, t3, &c3).await.is_err());
    }

    #[tokio::test]
    async fn phone_opens_session_with_client_and_client_decrypts() {
        let mut phone = VirtualDevice::new();
        let phone_jid = jid(PHONE);
        let companion = jid(COMPANION);
        let mut client = Client::new().await;
        let bundle = client.uploaded_bundle(7).await;

        let (t1, c1) = phone
            .encrypt_for(&companion, Some(&bundle), &text("hello from phone"))
            .await
            .expect("phone encrypts to companion");
        assert_eq!(t1, EncType::PkMsg);
        assert!(phone.has_session(&companion));
        // Still unacknowledged: the next one is a pkmsg as well, bundle not needed.
        let (t2, c2) = phone.encrypt_for(&companion, None, &text("second")).await.unwrap();
        assert_eq!(t2, EncType::PkMsg);

        assert_eq!(client.decrypt(&phone_jid, t1, &c1).await.conversation.as_deref(), Some("hello from phone"));
        assert_eq!(client.decrypt(&phone_jid, t2, &c2).await.conversation.as_deref(), Some("second"));

        // A protocol message (the app-state key share the client waits for).
        let share = wa::Message {
            protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
                r#type: Some(wa::message::protocol_message::Type::APP_STATE_SYNC_KEY_SHARE),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (t3, c3) = phone.encrypt_for(&companion, None, &share).await.unwrap();
        let got = client.decrypt(&phone_jid, t3, &c3).await;
        assert_eq!(
            got.protocol_message.as_option().and_then(|p| p.r#type),
            Some(wa::message::protocol_message::Type::APP_STATE_SYNC_KEY_SHARE)
        );

        // Client replies; after that the phone sends plain msgs.
        let (rt, rc) = client.encrypt(&phone_jid, &text("ack")).await;
        assert_eq!(rt, "msg");
        let m = phone.decrypt(&companion, rt, &rc).await.expect("phone decrypts reply");
        assert_eq!(m.conversation.as_deref(), Some("ack"));
        let (t4, c4) = phone.encrypt_for(&companion, None, &text("fourth")).await.unwrap();
        assert_eq!(t4, EncType::Msg);
        assert_eq!(client.decrypt(&phone_jid, t4, &c4).await.conversation.as_deref(), Some("fourth"));

        // Forgetting the session requires a bundle again.
        phone.delete_session(&companion);
        assert!(matches!(phone.encrypt_for(&companion, None, &text("x")).await, Err(PhoneError::NoSession(_))));
    }

    #[test]
    fn media_round_trip_with_wacore_encrypt() {
        let pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n".repeat(300);
        let enc = encrypt_media(&pdf, MediaType::Document).unwrap();
        let plain = decrypt_media(
            &enc.data_to_upload,
            &enc.media_key,
            MediaType::Document,
            Some(&enc.file_enc_sha256),
            Some(&enc.file_sha256),
        )
        .unwrap();
        assert_eq!(plain, pdf);

        // Straight from wacore's encryptor too (what `client.upload` runs).
        let direct = wacore::upload::encrypt_media(b"short", MediaType::Document).unwrap();
        let plain = decrypt_media(&direct.data_to_upload, &direct.media_key, MediaType::Document, None, None).unwrap();
        assert_eq!(plain, b"short");

        assert!(matches!(
            decrypt_media(&enc.data_to_upload, &enc.media_key, MediaType::Document, Some(&[0u8; 32]), None),
            Err(PhoneError::MediaHash("file_enc_sha256"))
        ));
        assert!(matches!(
            decrypt_media(&enc.data_to_upload, &enc.media_key, MediaType::Document, None, Some(&[0u8; 32])),
            Err(PhoneError::MediaHash("file_sha256"))
        ));
        let mut tampered = enc.data_to_upload.clone();
        tampered[0] ^= 1;
        assert!(matches!(
            decrypt_media(&tampered, &enc.media_key, MediaType::Document, None, None),
            Err(PhoneError::Media(_))
        ));
        // Wrong media type derives different keys.
        assert!(decrypt_media(&enc.data_to_upload, &enc.media_key, MediaType::Image, None, None).is_err());
        // Degenerate inputs are errors, not panics.
        assert!(decrypt_media(&[], &enc.media_key, MediaType::Document, None, None).is_err());
        assert!(decrypt_media(&[1, 2, 3], &[], MediaType::Document, None, None).is_err());
    }

    #[tokio::test]
    async fn bad_inputs_are_errors() {
        let mut phone = VirtualDevice::new();
        let peer = jid(COMPANION);
        assert!(matches!(phone.decrypt(&peer, "skmsg", &[1, 2, 3]).await, Err(PhoneError::UnknownEncType(_))));
        assert!(phone.decrypt(&peer, "pkmsg", &[]).await.is_err());
        assert!(phone.decrypt(&peer, "pkmsg", &[0x33; 200]).await.is_err());
        assert!(phone.decrypt(&peer, "msg", &[0x33; 80]).await.is_err());
        assert!(matches!(phone.encrypt_for(&peer, None, &text("x")).await, Err(PhoneError::NoSession(_))));
        let mut bad = VirtualDevice::new().bundle();
        bad.signed_prekey_signature[0] ^= 1;
        assert!(matches!(
            phone.encrypt_for(&peer, Some(&bad), &text("x")).await,
            Err(PhoneError::BadSignedPreKeySignature)
        ));
        assert!(!phone.has_session(&peer));

        assert!(raw_public_key(&[5u8; 33]).is_ok());
        assert!(raw_public_key(&[6u8; 33]).is_err());
        assert!(raw_public_key(&[1u8; 31]).is_err());
        assert!(PreKeyBundleData::from_wire(1, &[1; 32], 1, &[2; 32], &[0; 63], None).is_err());
    }

    #[test]
    fn bundles_pop_distinct_prekeys_and_refill() {
        let mut phone = VirtualDevice::new();
        assert_eq!(phone.unserved_prekey_count(), ONE_TIME_PREKEY_BATCH as usize);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(ONE_TIME_PREKEY_BATCH * 2 + 1) {
            let b = phone.bundle();
            let (id, _) = b.one_time_prekey.expect("always a one-time prekey");
            assert!((1..=MAX_PREKEY_ID).contains(&id));
            assert!(seen.insert(id), "prekey id {id} served twice");
            assert!(b.verify_signed_prekey());
            assert_eq!(b.identity_key, phone.identity_public());
        }
        // The signed prekey is signed by the identity = ADV account key.
        let b = phone.bundle_without_one_time_prekey();
        let spk = PublicKey::from_djb_public_key_bytes(&b.signed_prekey).unwrap();
        assert!(phone.identity_keypair().public_key.verify_signature(&spk.serialize(), &b.signed_prekey_signature));
    }

    #[test]
    fn device_and_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let mut phone = VirtualDevice::new();
        assert_send(&phone);
        let peer = jid(COMPANION);
        let msg = text("x");
        assert_send(&phone.decrypt(&peer, "msg", &[]));
        assert_send(&phone.encrypt_for(&peer, None, &msg));
    }
}
