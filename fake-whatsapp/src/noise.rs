//! The server (responder) side of WhatsApp's Noise handshake, and the transport cipher that
//! follows it.
//!
//! The client always starts with `XX` (see `select_pattern` in the client) because the certificate
//! chain we hand out has no validity window; an `IK` hello is answered with `XXfallback`, which
//! makes the client finish exactly like `XX`.

use buffa::Message as _;
use wacore_binary::consts::{NOISE_PATTERN_XX, NOISE_PATTERN_XXFALLBACK, WA_CONN_HEADER};
use wacore_libsignal::protocol::KeyPair;
use wacore_noise::{NoiseCipher, NoiseHandshake};
use waproto::whatsapp as wa;

/// Why a handshake or a transport frame was rejected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NoiseFailure {
    #[error("handshake message is not a valid protobuf: {0}")]
    Decode(String),
    #[error("handshake message lacks {0}")]
    Missing(&'static str),
    #[error("noise crypto failed: {0}")]
    Crypto(String),
}

fn crypto(e: impl std::fmt::Display) -> NoiseFailure {
    NoiseFailure::Crypto(e.to_string())
}

fn public_bytes(kp: &KeyPair) -> Result<[u8; 32], NoiseFailure> {
    kp.public_key.public_key_bytes().try_into().map_err(|_| NoiseFailure::Crypto("public key is not 32 bytes".into()))
}

/// The server's long-lived Noise identity and the self-made certificate chain that names it.
pub(crate) struct ServerIdentity {
    keypair: KeyPair,
    public: [u8; 32],
    cert_chain: Vec<u8>,
}

impl ServerIdentity {
    pub(crate) fn generate() -> Result<Self, NoiseFailure> {
        let keypair = KeyPair::generate(&mut rand::rng());
        let public = public_bytes(&keypair)?;
        Ok(Self { keypair, public, cert_chain: cert_chain(&public) })
    }
}

/// A certificate chain with zero signatures and no `not_before`/`not_after`: clients built with
/// `danger-skip-cert-chain-verify` accept it, and with no validity window they never try `IK`.
fn cert_chain(server_static: &[u8; 32]) -> Vec<u8> {
    use wa::cert_chain::{NoiseCertificate, noise_certificate::Details};
    let intermediate =
        Details { serial: Some(1), issuer_serial: Some(0), key: Some(vec![0xCC; 32]), ..Default::default() }
            .encode_to_vec();
    let leaf =
        Details { serial: Some(2), issuer_serial: Some(1), key: Some(server_static.to_vec()), ..Default::default() }
            .encode_to_vec();
    wa::CertChain {
        leaf: buffa::MessageField::some(NoiseCertificate { details: Some(leaf), signature: Some(vec![0; 64]) }),
        intermediate: buffa::MessageField::some(NoiseCertificate {
            details: Some(intermediate),
            signature: Some(vec![0; 64]),
        }),
    }
    .encode_to_vec()
}

/// A handshake in progress: the server hello has been sent, the client finish is awaited.
pub(crate) struct Responder {
    noise: NoiseHandshake,
    ephemeral: KeyPair,
}

/// Answers a client hello (the first frame, without the `WA` header). Returns the responder
/// state and the server hello to frame and send.
pub(crate) fn answer_hello(server: &ServerIdentity, hello_frame: &[u8]) -> Result<(Responder, Vec<u8>), NoiseFailure> {
    let message =
        wa::HandshakeMessage::decode_from_slice(hello_frame).map_err(|e| NoiseFailure::Decode(e.to_string()))?;
    let hello = message.client_hello.into_option().ok_or(NoiseFailure::Missing("client_hello"))?;
    let client_ephemeral: [u8; 32] = hello
        .ephemeral
        .as_deref()
        .and_then(|e| e.try_into().ok())
        .ok_or(NoiseFailure::Missing("a 32-byte client ephemeral key"))?;
    // An IK hello carries the client's static key: we ignore it and fall back to XX.
    let pattern = if hello.r#static.is_some() { NOISE_PATTERN_XXFALLBACK } else { NOISE_PATTERN_XX };

    let mut noise = NoiseHandshake::new(pattern, &WA_CONN_HEADER).map_err(crypto)?;
    noise.authenticate(&client_ephemeral);
    let ephemeral = KeyPair::generate(&mut rand::rng());
    let ephemeral_public = public_bytes(&ephemeral)?;
    noise.authenticate(&ephemeral_public);
    noise.mix_shared_secret(ephemeral.private_key.serialize(), &client_ephemeral).map_err(crypto)?;
    let encrypted_static = noise.encrypt(&server.public).map_err(crypto)?;
    noise.mix_shared_secret(server.keypair.private_key.serialize(), &client_ephemeral).map_err(crypto)?;
    let encrypted_cert = noise.encrypt(&server.cert_chain).map_err(crypto)?;
    let reply = wa::HandshakeMessage {
        server_hello: buffa::MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(ephemeral_public.to_vec()),
            r#static: Some(encrypted_static),
            payload: Some(encrypted_cert),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok((Responder { noise, ephemeral }, reply.encode_to_vec()))
}

/// What the client proved and said in its finish message.
pub(crate) struct Finished {
    pub(crate) client_static: [u8; 32],
    pub(crate) payload: wa::ClientPayload,
    pub(crate) transport: Transport,
}

/// Completes the handshake with the client finish frame.
pub(crate) fn finish(mut responder: Responder, finish_frame: &[u8]) -> Result<Finished, NoiseFailure> {
    let message =
        wa::HandshakeMessage::decode_from_slice(finish_frame).map_err(|e| NoiseFailure::Decode(e.to_string()))?;
    let finish = message.client_finish.into_option().ok_or(NoiseFailure::Missing("client_finish"))?;
    let encrypted_static = finish.r#static.ok_or(NoiseFailure::Missing("client static"))?;
    let encrypted_payload = finish.payload.ok_or(NoiseFailure::Missing("client payload"))?;
    let client_static: [u8; 32] = responder
        .noise
        .decrypt(&encrypted_static)
        .map_err(crypto)?
        .try_into()
        .map_err(|_| NoiseFailure::Missing("a 32-byte client static key"))?;
    responder.noise.mix_shared_secret(responder.ephemeral.private_key.serialize(), &client_static).map_err(crypto)?;
    let payload_bytes = responder.noise.decrypt(&encrypted_payload).map_err(crypto)?;
    let payload =
        wa::ClientPayload::decode_from_slice(&payload_bytes).map_err(|e| NoiseFailure::Decode(e.to_string()))?;
    // The first key encrypts what the initiator (client) writes: it is our read key.
    let (read, write) = responder.noise.finish().map_err(crypto)?;
    Ok(Finished { client_static, payload, transport: Transport { read, write, read_counter: 0, write_counter: 0 } })
}

/// Transport-phase ciphers with their per-direction frame counters.
pub(crate) struct Transport {
    read: NoiseCipher,
    write: NoiseCipher,
    read_counter: u32,
    write_counter: u32,
}

impl Transport {
    pub(crate) fn open(&mut self, frame: &mut bytes::BytesMut) -> Result<(), NoiseFailure> {
        let counter = self.read_counter;
        self.read_counter = self.read_counter.wrapping_add(1);
        self.read.decrypt_in_place_with_counter(counter, frame).map_err(crypto)
    }

    pub(crate) fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, NoiseFailure> {
        let counter = self.write_counter;
        self.write_counter = self.write_counter.wrapping_add(1);
        self.write.encrypt_with_counter(counter, plaintext).map_err(crypto)
    }
}
