//! QR linking: `pair-device` refs for an unregistered client, the admin "scan" that turns a QR
//! string into `pair-success`, and the client's `pair-device-sign` that completes the link.
//!
//! [`offer_pair_success`] is the phone's last step for both ways of linking: the QR scan here
//! and the typed pairing code (`pair_code`) end in the same `pair-success`.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use buffa::Message as _;
use hmac::{KeyInit, Mac};
use rand::RngExt as _;
use tokio::sync::oneshot;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};
use waproto::whatsapp as wa;

use crate::conn::{Conn, ConnError};
use crate::shared::Shared;
use crate::stanza::{self, SERVER};
use crate::state::{
    ConnId, Device, DeviceKey, Outbound, PendingPair, PendingRef, Registration, Registry, Unpaired, unix_secs,
};

/// How many refs one connection gets, as WhatsApp does ("six refs buy 60 s + 5×20 s").
const REFS: usize = 6;
const FIRST_REF_TTL: Duration = Duration::from_secs(60);
const LATER_REF_TTL: Duration = Duration::from_secs(20);
/// How long the admin scan waits for the client's `pair-device-sign`.
const SIGN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an admin scan failed; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("malformed QR string: {0}")]
    Malformed(&'static str),
    #[error("malformed phone number: expected 5 to 15 digits")]
    BadPhone,
    #[error("unknown QR ref")]
    UnknownRef,
    #[error("QR ref expired or its connection is gone")]
    Expired,
    #[error("the QR's noise key does not match the connection that showed it")]
    KeyMismatch,
    #[error("the client did not confirm the pairing in time")]
    NoConfirmation,
}

/// The parts of a QR string a phone uses.
struct Qr {
    reference: String,
    noise: [u8; 32],
    identity: [u8; 32],
    adv_secret: Vec<u8>,
}

/// The link form of the QR that WhatsApp Web and other clients show: the QR fields follow the `#`.
const QR_LINK_PREFIX: &str = "https://wa.me/settings/linked_devices#";

fn parse_qr(qr: &str) -> Result<Qr, ScanError> {
    let qr = qr.trim();
    let qr = match qr.strip_prefix(QR_LINK_PREFIX) {
        Some(fields) => percent_decode(fields).ok_or(ScanError::Malformed("bad percent-encoding in the QR link"))?,
        None => qr.to_owned(),
    };
    let parts: Vec<&str> = qr.split(',').collect();
    if parts.len() < 4 {
        return Err(ScanError::Malformed("expected ref,noise,identity,adv-secret[,type]"));
    }
    let decode32 = |s: &str, what: &'static str| -> Result<[u8; 32], ScanError> {
        STANDARD.decode(s).ok().and_then(|b| b.try_into().ok()).ok_or(ScanError::Malformed(what))
    };
    let adv_secret = STANDARD.decode(parts[3]).map_err(|_| ScanError::Malformed("adv secret is not base64"))?;
    if adv_secret.is_empty() {
        return Err(ScanError::Malformed("empty adv secret"));
    }
    Ok(Qr {
        reference: parts[0].to_owned(),
        noise: decode32(parts[1], "noise key is not 32 bytes of base64")?,
        identity: decode32(parts[2], "identity key is not 32 bytes of base64")?,
        adv_secret,
    })
}

/// Undoes `%XX` escapes (a link may carry base64's `+`, `/` and `=` escaped).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn registration_from(payload: &wa::ClientPayload) -> Result<Registration, ConnError> {
    let bad = |what: &str| ConnError::Protocol(format!("pairing data: {what}"));
    let data = payload.device_pairing_data.as_option().ok_or_else(|| bad("missing"))?;
    Ok(Registration {
        registration_id: data.e_regid.as_deref().and_then(stanza::be_uint).ok_or_else(|| bad("e_regid"))?,
        identity: data.e_ident.as_deref().and_then(stanza::key32).ok_or_else(|| bad("e_ident"))?,
        signed_prekey_id: data.e_skey_id.as_deref().and_then(stanza::be_uint).ok_or_else(|| bad("e_skey_id"))?,
        signed_prekey: data.e_skey_val.as_deref().and_then(stanza::key32).ok_or_else(|| bad("e_skey_val"))?,
        signed_prekey_signature: data
            .e_skey_sig
            .as_deref()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("e_skey_sig"))?,
    })
}

/// A fresh pairing ref, in the style of WhatsApp's (`2@` + base64).
pub(crate) fn new_ref() -> String {
    let raw: [u8; 18] = rand::rng().random();
    format!("2@{}", STANDARD.encode(raw))
}

/// An unregistered client connected: remember its keys and offer it QR refs.
pub(crate) async fn start(conn: &mut Conn, noise_key: [u8; 32], payload: &wa::ClientPayload) -> Result<(), ConnError> {
    let registration = registration_from(payload)?;
    let now = Instant::now();
    let refs: Vec<String> = (0..REFS).map(|_| new_ref()).collect();
    {
        let mut reg = conn.shared.lock();
        if let Some(entry) = reg.conns.get_mut(&conn.id) {
            entry.unpaired = Some(Unpaired { noise_key, registration });
        }
        for (i, r) in refs.iter().enumerate() {
            let ttl = FIRST_REF_TTL + LATER_REF_TTL * i as u32;
            reg.refs.insert(r.clone(), PendingRef { conn: conn.id, expires: now + ttl });
        }
    }
    let iq = NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "set")
        .attr("id", conn.shared.next_stanza_id())
        .attr("xmlns", "md")
        .children([NodeBuilder::new("pair-device")
            .children(refs.into_iter().map(|r| NodeBuilder::new("ref").bytes(r.into_bytes()).build()))
            .build()])
        .build();
    conn.send(&iq).await
}

/// What a successful scan linked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Linked {
    pub jid: String,
    pub lid: String,
}

/// Whether `phone` is a phone number as the admin API takes it: 5 to 15 digits.
pub(crate) fn valid_phone(phone: &str) -> bool {
    (5..=15).contains(&phone.len()) && phone.bytes().all(|b| b.is_ascii_digit())
}

/// The admin "scan": a virtual phone accepts the QR and links the device to its number.
pub(crate) async fn scan(shared: &Shared, qr: &str, phone: &str) -> Result<Linked, ScanError> {
    if !valid_phone(phone) {
        return Err(ScanError::BadPhone);
    }
    let qr = parse_qr(qr)?;
    shared.ensure_phone(phone);
    let offer = {
        let mut reg = shared.lock();
        let (conn_id, unpaired) = showing(&reg, &qr)?;
        let accepted = Accepted { conn: conn_id, unpaired, phone, adv_secret: &qr.adv_secret };
        offer_pair_success(shared, &mut reg, accepted).map_err(|e| match e {
            OfferError::Gone => ScanError::Expired,
            OfferError::CannotSign => ScanError::Malformed("cannot sign for this identity"),
        })?
    };
    offer.confirmed().await.ok_or(ScanError::NoConfirmation)
}

/// The unpaired connection that shows `qr`, while its ref is live and its keys match.
fn showing(reg: &Registry, qr: &Qr) -> Result<(ConnId, Unpaired), ScanError> {
    let pending = reg.refs.get(&qr.reference).ok_or(ScanError::UnknownRef)?;
    let conn_id = pending.conn;
    if pending.expires <= Instant::now() || reg.pairs.contains_key(&conn_id) {
        return Err(ScanError::Expired);
    }
    let unpaired = reg.conns.get(&conn_id).and_then(|c| c.unpaired.clone()).ok_or(ScanError::Expired)?;
    if unpaired.noise_key != qr.noise || unpaired.registration.identity != qr.identity {
        return Err(ScanError::KeyMismatch);
    }
    Ok((conn_id, unpaired))
}

/// WhatsApp asks the companion that shows `qr` to prove a passkey before it links (the
/// SHORTCAKE flow, as when a passkey-protected account scans the code): a
/// `passkey_prologue_request` notification carrying the WebAuthn request options. Only the
/// request is modelled; the companion's prologue and the handshake that would follow are not
/// answered, so the ref stays pending until it expires or is scanned.
pub(crate) fn passkey_request(shared: &Shared, qr: &str) -> Result<(), ScanError> {
    let qr = parse_qr(qr)?;
    let reg = shared.lock();
    let (conn_id, _) = showing(&reg, &qr)?;
    let challenge: [u8; 32] = rand::rng().random();
    let options = serde_json::json!({
        "challenge": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(challenge),
        "rpId": "whatsapp.com",
        "timeout": 60000,
        "userVerification": "required",
        "allowCredentials": [],
    });
    let notification = NodeBuilder::new("notification")
        .attr("from", SERVER)
        .attr("type", "passkey_prologue_request")
        .attr("id", shared.next_stanza_id())
        .attr("t", unix_secs().to_string())
        .children([NodeBuilder::new("passkey_request_options").bytes(options.to_string().into_bytes()).build()])
        .build();
    if !reg.send_to_conn(conn_id, Outbound::Node(notification)) {
        return Err(ScanError::Expired);
    }
    Ok(())
}

/// A companion the phone has accepted, by QR scan or by typed code: the phone knows its
/// identity key (from the connection's registration) and shares an ADV secret with it.
pub(crate) struct Accepted<'a> {
    pub(crate) conn: ConnId,
    pub(crate) unpaired: Unpaired,
    pub(crate) phone: &'a str,
    pub(crate) adv_secret: &'a [u8],
}

/// Why the phone could not send `pair-success` to an accepted companion.
#[derive(Debug)]
pub(crate) enum OfferError {
    /// The companion's connection is gone, full, or already being linked.
    Gone,
    /// The phone's account key could not sign the companion's identity.
    CannotSign,
}

/// A `pair-success` sent, and the way to learn that the companion confirmed it.
pub(crate) struct Offer {
    done: oneshot::Receiver<()>,
    linked: Linked,
}

impl Offer {
    /// Waits (bounded) for the companion's `pair-device-sign`; `None` if it refused or never
    /// answered.
    pub(crate) async fn confirmed(self) -> Option<Linked> {
        match tokio::time::timeout(SIGN_TIMEOUT, self.done).await {
            Ok(Ok(())) => Some(self.linked),
            _ => None,
        }
    }
}

/// The phone links an accepted companion to its number: allocates the device id, key index and
/// LID, signs the companion's identity with the account key (HMAC'd with the ADV secret), sends
/// `pair-success`, and retires every other way this connection was waiting to be linked.
pub(crate) fn offer_pair_success(
    shared: &Shared,
    reg: &mut Registry,
    accepted: Accepted<'_>,
) -> Result<Offer, OfferError> {
    let Accepted { conn: conn_id, unpaired, phone, adv_secret } = accepted;
    if reg.pairs.contains_key(&conn_id) {
        return Err(OfferError::Gone);
    }
    let account = reg.phone(phone);
    let device_id = account.next_device;
    account.next_device += 1;
    let key_index = account.next_key_index;
    account.next_key_index += 1;
    let lid = Jid::lid_device(account.lid_user.clone(), device_id);
    let blob = device_identity(&account.account, &unpaired.registration.identity, adv_secret, key_index)
        .map_err(|_| OfferError::CannotSign)?;
    let key = DeviceKey { phone: phone.to_owned(), device: device_id };
    let iq_id = shared.next_stanza_id();
    let node = NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "set")
        .attr("id", iq_id.clone())
        .attr("xmlns", "md")
        .attr("t", unix_secs().to_string())
        .children([NodeBuilder::new("pair-success")
            .children([
                NodeBuilder::new("device-identity").bytes(blob).build(),
                NodeBuilder::new("device").attr("jid", key.jid()).attr("lid", lid.clone()).build(),
                NodeBuilder::new("platform").attr("name", "android").build(),
                NodeBuilder::new("biz").attr("name", format!("Phone {phone}")).build(),
            ])
            .build()])
        .build();
    if !reg.send_to_conn(conn_id, Outbound::Node(node)) {
        return Err(OfferError::Gone);
    }
    let (done, rx) = oneshot::channel();
    let linked = Linked { jid: key.jid().to_string(), lid: lid.to_string() };
    reg.pairs.insert(conn_id, PendingPair { iq_id, key, lid, key_index, unpaired, done });
    // The connection is spoken for: its QR refs and any pairing-code request die with it.
    reg.refs.retain(|_, r| r.conn != conn_id);
    reg.code_requests.retain(|_, r| r.conn != conn_id);
    Ok(Offer { done: rx, linked })
}

/// Builds the `ADVSignedDeviceIdentityHMAC` a phone returns for an accepted companion.
fn device_identity(
    account: &wacore_libsignal::protocol::KeyPair,
    identity: &[u8; 32],
    adv_secret: &[u8],
    key_index: u32,
) -> Result<Vec<u8>, ()> {
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(rand::rng().random_range(1..u32::MAX)),
        timestamp: Some(unix_secs()),
        key_index: Some(key_index),
        account_type: Some(wa::ADVEncryptionType::E2EE),
        device_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let message = [&[6u8, 0][..], &details, identity].concat();
    let signature = account.private_key.calculate_signature(&message, &mut rand::rng()).map_err(|_| ())?;
    let signed = wa::ADVSignedDeviceIdentity {
        details: Some(details),
        account_signature_key: Some(account.public_key.public_key_bytes().to_vec()),
        account_signature: Some(signature.to_vec()),
        device_signature: None,
    }
    .encode_to_vec();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(adv_secret).map_err(|_| ())?;
    mac.update(&signed);
    Ok(wa::ADVSignedDeviceIdentityHMAC {
        details: Some(signed),
        hmac: Some(mac.finalize().into_bytes().to_vec()),
        account_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec())
}

/// The client answered our `pair-success` (or refused it). Returns true if `node` was that answer.
pub(crate) async fn on_iq_answer(conn: &mut Conn, node: &Node) -> Result<bool, ConnError> {
    let Some(id) = stanza::attr(node, "id") else { return Ok(false) };
    let pending = {
        let mut reg = conn.shared.lock();
        match reg.pairs.get(&conn.id) {
            Some(p) if p.iq_id == id => reg.pairs.remove(&conn.id),
            _ => None,
        }
    };
    let Some(pending) = pending else { return Ok(false) };
    let signed = node
        .get_optional_child("pair-device-sign")
        .and_then(|s| s.get_optional_child("device-identity"))
        .and_then(stanza::bytes);
    let Some(signed) = signed else {
        tracing::warn!(conn = conn.id, "client rejected pair-success");
        return Ok(true);
    };
    {
        let mut reg = conn.shared.lock();
        let key = pending.key.clone();
        reg.devices.insert(
            key.clone(),
            Device {
                key: key.clone(),
                lid: pending.lid,
                noise_key: pending.unpaired.noise_key,
                registration: pending.unpaired.registration,
                prekeys: VecDeque::new(),
                adv_identity: signed.to_vec(),
                key_index: pending.key_index,
                removed: false,
                conn: None,
                offline: VecDeque::new(),
                acks: Default::default(),
                needs_key_share: true,
                key_share_id: None,
            },
        );
        tracing::info!(device = %key.jid(), "device linked");
    }
    let _ = pending.done.send(());
    // 515: "restart the stream"; the client reconnects at once and logs in.
    // The client closes the socket itself when it reads this.
    conn.send(&stanza::stream_error_code("515")).await?;
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const QR: &str =
        "2@abc+/=,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=,Ag==,1";

    #[test]
    fn the_link_form_parses_like_the_bare_string() {
        for form in [
            QR.to_owned(),
            format!("{QR_LINK_PREFIX}{QR}"),
            format!("  {QR_LINK_PREFIX}{}\n", QR.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")),
        ] {
            let qr = parse_qr(&form).unwrap_or_else(|e| panic!("{form}: {e}"));
            assert_eq!(qr.reference, "2@abc+/=");
            assert_eq!((qr.noise, qr.identity), ([0; 32], [1; 32]));
            assert_eq!(qr.adv_secret, [2]);
        }
    }

    #[test]
    fn broken_links_are_malformed() {
        for bad in [
            format!("{QR_LINK_PREFIX}%zz{QR}"),
            format!("{QR_LINK_PREFIX}{QR}%2"),
            format!("{QR_LINK_PREFIX}%FF{QR}"),
            QR_LINK_PREFIX.to_owned(),
        ] {
            assert!(matches!(parse_qr(&bad), Err(ScanError::Malformed(_))), "{bad}");
        }
    }
}
