//! Linking by pairing code ("Link with phone number instead"), as WhatsApp's server relays it
//! between a companion and its phone:
//!
//! 1. The companion sends `<iq xmlns="md" type="set"><link_code_companion_reg
//!    stage="companion_hello" jid="NUMBER@s.whatsapp.net">` with its ephemeral key wrapped under
//!    the code it shows, its Noise key, and its platform. The server keeps the request by the
//!    number it names and answers with a `link_code_pairing_ref` ([`on_companion_reg`]).
//! 2. The phone of that number types the code ([`pair_code`], the admin operation): it unwraps
//!    the companion's key, and the companion gets a `link_code_companion_reg` notification,
//!    stage `primary_hello`, with the phone's wrapped ephemeral key and identity key.
//! 3. The companion answers with the `companion_finish` IQ: its key bundle, relayed to the phone.
//!    The phone opens it (a wrong code fails here, and only here) and derives the ADV secret.
//! 4. The phone links the companion exactly as after a QR scan
//!    ([`pairing::offer_pair_success`]): `pair-success`, `pair-device-sign`, 515, login.
//!
//! The phone-side cryptography is in [`crypto`].

mod crypto;

use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::oneshot;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use wacore_libsignal::protocol::KeyPair;

use crate::conn::{Conn, ConnError};
use crate::pairing::{self, Accepted, Linked, OfferError};
use crate::shared::Shared;
use crate::stanza::{self, SERVER};
use crate::state::{CodeRequest, CompanionFinish, ConnEntry, ConnId, Outbound, Unpaired, unix_secs};
use crypto::{PrimaryHello, WRAPPED_KEY_LEN};

/// How long a code stays enterable after `companion_hello` (WhatsApp's ~180 s).
const CODE_TTL: Duration = Duration::from_secs(180);
/// How long the phone waits for `companion_finish` after its `primary_hello` (the client's own
/// `companion_finish` request times out after 30 s).
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);
/// OS names accepted in `companion_platform_display` ("Browser (OS)"). WhatsApp refuses a
/// display whose OS is not a real OS name; its exact list is not public, so this is the set
/// that clients are known to send and WhatsApp is known to accept.
const DISPLAY_OSES: &[&str] =
    &["Windows", "Mac OS", "macOS", "Mac", "Linux", "Ubuntu", "Fedora", "Debian", "Chrome OS", "Android", "iOS"];

/// Why the phone could not link a companion by code; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum PairCodeError {
    #[error("malformed phone number: expected 5 to 15 digits")]
    BadPhone,
    #[error("malformed code: expected 8 characters of 1-9 and A-Z without I, O, U (a dash is allowed)")]
    BadCode,
    #[error("no pending pairing-code request for this number")]
    NoRequest,
    #[error("unknown code: the companion's key bundle does not open with it")]
    UnknownCode,
    #[error("another code is being entered for this number")]
    Busy,
    #[error("the requesting connection is gone or is already being linked")]
    Gone,
    #[error("the companion did not answer primary_hello in time")]
    NoFinish,
    #[error("the companion's keys are invalid: {0}")]
    BadBundle(String),
    #[error("the client did not confirm the pairing in time")]
    NoConfirmation,
}

/// A refused stage: `<error code="400" text="bad-request"/>`, the refusal WhatsApp's parsers
/// accept for both stages.
struct BadRequest(&'static str);

/// `<iq xmlns="md" type="set"><link_code_companion_reg stage=…>` from a companion.
pub(crate) async fn on_companion_reg(conn: &mut Conn, reg_node: &Node, id: &str) -> Result<(), ConnError> {
    let stage = stanza::attr(reg_node, "stage").map(|s| s.into_owned()).unwrap_or_default();
    let outcome = match stage.as_str() {
        "companion_hello" => companion_hello(&conn.shared, conn.id, reg_node).map(|r| Some(hello_answer(&r))),
        "companion_finish" => companion_finish(&conn.shared, conn.id, reg_node).map(|()| None),
        _ => Err(BadRequest("unknown stage")),
    };
    let reply = match outcome {
        Ok(child) => stanza::iq_result(id, child.into_iter().collect()),
        Err(BadRequest(why)) => {
            tracing::info!(conn = conn.id, stage, why, "pairing-code stage refused");
            stanza::iq_error(id, 400, "bad-request")
        }
    };
    conn.send(&reply).await
}

/// The `companion_hello` answer's payload: the ref that ties the stages together.
fn hello_answer(reference: &[u8]) -> Node {
    NodeBuilder::new("link_code_companion_reg")
        .attr("stage", "companion_hello")
        .children([NodeBuilder::new("link_code_pairing_ref").bytes(reference.to_vec()).build()])
        .build()
}

/// Stage 1: validate the request, keep it under the number it names, mint its ref.
fn companion_hello(shared: &Shared, conn: ConnId, reg_node: &Node) -> Result<Vec<u8>, BadRequest> {
    let phone = named_phone(reg_node)?;
    let wrapped: [u8; WRAPPED_KEY_LEN] =
        child_array(reg_node, "link_code_pairing_wrapped_companion_ephemeral_pub").ok_or(BadRequest("wrapped key"))?;
    let auth_key: [u8; 32] = child_array(reg_node, "companion_server_auth_key_pub").ok_or(BadRequest("auth key"))?;
    check_platform(reg_node)?;
    let reference = pairing::new_ref().into_bytes();
    let mut reg = shared.lock();
    let unpaired = unpaired(&reg.conns, conn).ok_or(BadRequest("connection is not waiting to be linked"))?;
    if unpaired.noise_key != auth_key {
        return Err(BadRequest("auth key is not this connection's noise key"));
    }
    if !reg.is_registered(&phone) {
        return Err(BadRequest("number is not on WhatsApp"));
    }
    let request = CodeRequest {
        conn,
        reference: reference.clone(),
        wrapped_ephemeral: wrapped,
        expires: Instant::now() + CODE_TTL,
        finish: None,
    };
    tracing::info!(conn, phone, "pairing code requested");
    // A newer request for the same number replaces the older one, as the phone can only be
    // reached by number.
    reg.code_requests.insert(phone, request);
    Ok(reference)
}

/// Stage 2, the companion's side: relay its key bundle to the phone waiting for it.
fn companion_finish(shared: &Shared, conn: ConnId, reg_node: &Node) -> Result<(), BadRequest> {
    let phone = named_phone(reg_node)?;
    let reference = stanza::child_bytes(reg_node, "link_code_pairing_ref").ok_or(BadRequest("ref"))?;
    let wrapped_bundle =
        stanza::child_bytes(reg_node, "link_code_pairing_wrapped_key_bundle").ok_or(BadRequest("key bundle"))?;
    let identity: [u8; 32] = child_array(reg_node, "companion_identity_public").ok_or(BadRequest("identity"))?;
    let mut reg = shared.lock();
    let request = reg
        .code_requests
        .get_mut(&phone)
        .filter(|r| r.conn == conn && r.reference == reference)
        .ok_or(BadRequest("no such pairing-code request"))?;
    if let Some(phone_side) = request.finish.take() {
        let _ = phone_side.send(CompanionFinish { wrapped_bundle: wrapped_bundle.to_vec(), identity });
    }
    Ok(())
}

/// The phone number in the stage's `jid` attribute.
fn named_phone(reg_node: &Node) -> Result<String, BadRequest> {
    let jid = stanza::jid_attr(reg_node, "jid").ok_or(BadRequest("jid"))?;
    let phone = jid.user.to_string();
    if !jid.is_pn() || !pairing::valid_phone(&phone) {
        return Err(BadRequest("jid is not a phone number"));
    }
    Ok(phone)
}

/// `companion_platform_id` is one of WA Web's client-type codes; `companion_platform_display`
/// is "Browser (OS)" with a real OS name.
fn check_platform(reg_node: &Node) -> Result<(), BadRequest> {
    let id = stanza::child_bytes(reg_node, "companion_platform_id").ok_or(BadRequest("platform id"))?;
    if !matches!(id, [b'1'..=b'9' | b'a'..=b'f']) {
        return Err(BadRequest("platform id"));
    }
    let display = stanza::child_bytes(reg_node, "companion_platform_display")
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or(BadRequest("platform display"))?;
    let os = display
        .strip_suffix(')')
        .and_then(|d| d.split_once(" ("))
        .filter(|(browser, _)| !browser.trim().is_empty())
        .map(|(_, os)| os);
    match os {
        Some(os) if DISPLAY_OSES.contains(&os) => Ok(()),
        _ => Err(BadRequest("platform display is not \"Browser (OS)\"")),
    }
}

fn child_array<const N: usize>(node: &Node, tag: &str) -> Option<[u8; N]> {
    stanza::child_bytes(node, tag).and_then(|b| b.try_into().ok())
}

/// What the connection registered when it connected unpaired, if it still waits to be linked.
fn unpaired(conns: &HashMap<ConnId, ConnEntry>, conn: ConnId) -> Option<Unpaired> {
    conns.get(&conn).and_then(|c| c.unpaired.clone())
}

/// What the phone needs from a pending request to answer it.
struct Pending {
    conn: ConnId,
    reference: Vec<u8>,
    wrapped_ephemeral: [u8; WRAPPED_KEY_LEN],
    account: KeyPair,
}

/// The admin "type the code": the phone of `phone` enters `typed` for the companion that asked
/// for a code for this number, and links it. Resolves once the client confirmed the link.
pub(crate) async fn pair_code(shared: &Shared, phone: &str, typed: &str) -> Result<Linked, PairCodeError> {
    if !pairing::valid_phone(phone) {
        return Err(PairCodeError::BadPhone);
    }
    let code = crypto::normalize_code(typed).ok_or(PairCodeError::BadCode)?;
    shared.ensure_phone(phone);
    let pending = pending(shared, phone)?;
    let wrapped = pending.wrapped_ephemeral;
    let hello = tokio::task::spawn_blocking(move || crypto::primary_hello(&code, &wrapped))
        .await
        .map_err(|_| PairCodeError::Gone)?
        .map_err(|e| PairCodeError::BadBundle(e.to_string()))?;
    let finish = send_primary_hello(shared, phone, &pending, &hello)?;
    let finish = match tokio::time::timeout(FINISH_TIMEOUT, finish).await {
        Ok(Ok(finish)) => finish,
        Ok(Err(_)) => return Err(PairCodeError::Gone),
        Err(_) => return Err(PairCodeError::NoFinish),
    };
    let adv_secret = crypto::open_key_bundle(&hello, &finish.wrapped_bundle, &finish.identity, &pending.account)
        .map_err(|e| {
            tracing::info!(phone, error = %e, "the phone could not open the companion's key bundle");
            match e {
                crypto::CryptoError::Undecryptable => PairCodeError::UnknownCode,
                other => PairCodeError::BadBundle(other.to_string()),
            }
        })?;
    link(shared, phone, &pending, &finish, &adv_secret)?.confirmed().await.ok_or(PairCodeError::NoConfirmation)
}

/// The live request for `phone`, unless none is pending or the phone is already answering it.
fn pending(shared: &Shared, phone: &str) -> Result<Pending, PairCodeError> {
    let mut reg = shared.lock();
    if reg.code_requests.get(phone).is_some_and(|r| r.expires <= Instant::now()) {
        reg.code_requests.remove(phone);
    }
    let request = reg.code_requests.get(phone).ok_or(PairCodeError::NoRequest)?;
    if request.finish.as_ref().is_some_and(|f| !f.is_closed()) {
        return Err(PairCodeError::Busy);
    }
    let (conn, reference, wrapped_ephemeral) = (request.conn, request.reference.clone(), request.wrapped_ephemeral);
    let account = reg.phone(phone).account.clone();
    Ok(Pending { conn, reference, wrapped_ephemeral, account })
}

/// Sends the companion the phone's `primary_hello` and returns where its `companion_finish` lands.
fn send_primary_hello(
    shared: &Shared,
    phone: &str,
    pending: &Pending,
    hello: &PrimaryHello,
) -> Result<oneshot::Receiver<CompanionFinish>, PairCodeError> {
    let mut reg = shared.lock();
    let request = reg
        .code_requests
        .get_mut(phone)
        .filter(|r| r.reference == pending.reference && r.expires > Instant::now())
        .ok_or(PairCodeError::NoRequest)?;
    if request.finish.as_ref().is_some_and(|f| !f.is_closed()) {
        return Err(PairCodeError::Busy);
    }
    let (tx, rx) = oneshot::channel();
    request.finish = Some(tx);
    let node = primary_hello_node(shared, pending, hello);
    if !reg.send_to_conn(pending.conn, Outbound::Node(node)) {
        reg.code_requests.remove(phone);
        return Err(PairCodeError::Gone);
    }
    Ok(rx)
}

fn primary_hello_node(shared: &Shared, pending: &Pending, hello: &PrimaryHello) -> Node {
    NodeBuilder::new("notification")
        .attr("from", SERVER)
        .attr("type", "link_code_companion_reg")
        .attr("id", shared.next_stanza_id())
        .attr("t", unix_secs().to_string())
        .children([NodeBuilder::new("link_code_companion_reg")
            .attr("stage", "primary_hello")
            .children([
                NodeBuilder::new("link_code_pairing_wrapped_primary_ephemeral_pub")
                    .bytes(hello.wrapped_ephemeral.to_vec())
                    .build(),
                NodeBuilder::new("primary_identity_pub")
                    .bytes(pending.account.public_key.public_key_bytes().to_vec())
                    .build(),
                NodeBuilder::new("link_code_pairing_ref").bytes(pending.reference.clone()).build(),
            ])
            .build()])
        .build()
}

/// The bundle opened: link the companion as after a QR scan.
fn link(
    shared: &Shared,
    phone: &str,
    pending: &Pending,
    finish: &CompanionFinish,
    adv_secret: &[u8; 32],
) -> Result<pairing::Offer, PairCodeError> {
    let mut reg = shared.lock();
    let unpaired = unpaired(&reg.conns, pending.conn).ok_or(PairCodeError::Gone)?;
    if unpaired.registration.identity != finish.identity {
        return Err(PairCodeError::BadBundle("identity differs from the one the companion registered".into()));
    }
    let accepted = Accepted { conn: pending.conn, unpaired, phone, adv_secret };
    pairing::offer_pair_success(shared, &mut reg, accepted).map_err(|e| match e {
        OfferError::Gone => PairCodeError::Gone,
        OfferError::CannotSign => PairCodeError::BadBundle("cannot sign for this identity".into()),
    })
}
