//! The phone's half of the pairing-code cryptography, written from WhatsApp's protocol (WA Web's
//! `Alt/DeviceLinking*`, which whatsmeow and Baileys implement too) rather than taken from the
//! client under test, so that the fake checks the client instead of mirroring it:
//!
//! * A code is 8 characters of Crockford base32 (`1-9`, `A-Z` without `I`, `O`, `U`). Each side
//!   wraps its ephemeral Curve25519 key as `salt(32) ‖ iv(16) ‖ AES-256-CTR(key)` under
//!   `PBKDF2-HMAC-SHA256(code, salt, 2^17 rounds)`.
//! * The companion's key bundle is `salt(32) ‖ nonce(12) ‖ AES-256-GCM(companion identity ‖
//!   primary identity ‖ random(32))` under `HKDF-SHA256(ephemeral DH, salt,
//!   "link_code_pairing_key_bundle_encryption_key")`.
//! * Both sides then hold the ADV secret `HKDF-SHA256(ephemeral DH ‖ identity DH ‖ random, no
//!   salt, "adv_secret")`, which keys the HMAC in `pair-success`.
//!
//! A wrong code cannot be told from the right one before the bundle: AES-CTR has no integrity,
//! so the phone unwraps a garbage key, derives a different shared secret, and only the GCM tag
//! of the companion's bundle fails.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use wacore_libsignal::crypto::{Aes256Ctr32, aes_256_gcm_decrypt};
use wacore_libsignal::protocol::{KeyPair, PublicKey};

/// Crockford base32 as WhatsApp spells pairing codes.
const ALPHABET: &[u8; 32] = b"123456789ABCDEFGHJKLMNPQRSTVWXYZ";
const CODE_LEN: usize = 8;
const PBKDF2_ROUNDS: u32 = 1 << 17;
/// `salt(32) ‖ iv(16) ‖ key(32)`.
pub(crate) const WRAPPED_KEY_LEN: usize = 80;
/// `salt(32) ‖ nonce(12) ‖ bundle(96) ‖ tag(16)`.
const WRAPPED_BUNDLE_LEN: usize = 32 + 12 + 96 + 16;
const BUNDLE_INFO: &[u8] = b"link_code_pairing_key_bundle_encryption_key";
const ADV_SECRET_INFO: &[u8] = b"adv_secret";

type HmacSha256 = Hmac<Sha256>;

/// Why the phone's side of the handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CryptoError {
    #[error("the key bundle does not open with this code")]
    Undecryptable,
    #[error("the key bundle is {0} bytes, not {WRAPPED_BUNDLE_LEN}")]
    BundleLength(usize),
    #[error("the key bundle names another companion identity")]
    CompanionIdentity,
    #[error("the key bundle names another primary identity")]
    PrimaryIdentity,
    #[error("a cryptographic primitive failed")]
    Primitive,
}

/// A code as a person types it (a dash anywhere, any case), or `None` when it cannot be one.
pub(crate) fn normalize_code(typed: &str) -> Option<String> {
    let code: String = typed.trim().chars().filter(|c| *c != '-').map(|c| c.to_ascii_uppercase()).collect();
    (code.len() == CODE_LEN && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

/// The phone's `primary_hello`, and the secret it keeps for the companion's answer.
pub(crate) struct PrimaryHello {
    /// The phone's ephemeral public key wrapped under the typed code.
    pub(crate) wrapped_ephemeral: [u8; WRAPPED_KEY_LEN],
    /// ECDH(phone ephemeral, the companion's ephemeral as the typed code unwraps it).
    shared_ephemeral: [u8; 32],
}

/// The phone types `code`: unwraps the companion's ephemeral key with it, makes its own ephemeral
/// key and wraps that under the same code. Slow on purpose (two PBKDF2 runs): call it off the
/// async workers.
pub(crate) fn primary_hello(
    code: &str,
    companion_wrapped: &[u8; WRAPPED_KEY_LEN],
) -> Result<PrimaryHello, CryptoError> {
    let companion_ephemeral = unwrap_key(companion_wrapped, code)?;
    let ephemeral = KeyPair::generate(&mut rand::rng());
    let public: [u8; 32] = ephemeral.public_key.public_key_bytes().try_into().map_err(|_| CryptoError::Primitive)?;
    let companion = PublicKey::from_djb_public_key_bytes(&companion_ephemeral).map_err(|_| CryptoError::Primitive)?;
    let shared_ephemeral = ephemeral.private_key.calculate_agreement(&companion).map_err(|_| CryptoError::Primitive)?;
    Ok(PrimaryHello { wrapped_ephemeral: wrap_key(&public, code)?, shared_ephemeral })
}

/// Opens the companion's key bundle, checks that it binds both identities, and derives the ADV
/// secret the companion derived.
pub(crate) fn open_key_bundle(
    hello: &PrimaryHello,
    wrapped_bundle: &[u8],
    companion_identity: &[u8; 32],
    primary: &KeyPair,
) -> Result<[u8; 32], CryptoError> {
    if wrapped_bundle.len() != WRAPPED_BUNDLE_LEN {
        return Err(CryptoError::BundleLength(wrapped_bundle.len()));
    }
    let (salt, rest) = wrapped_bundle.split_at(32);
    let (nonce, sealed) = rest.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| CryptoError::Primitive)?;
    let key = hkdf_sha256(&hello.shared_ephemeral, salt, BUNDLE_INFO)?;
    let mut bundle = Vec::with_capacity(96);
    aes_256_gcm_decrypt(&key, &nonce, b"", sealed, &mut bundle).map_err(|_| CryptoError::Undecryptable)?;
    let (bundle_companion, rest) = bundle.split_at(32);
    let (bundle_primary, random) = rest.split_at(32);
    if bundle_primary != primary.public_key.public_key_bytes() {
        return Err(CryptoError::PrimaryIdentity);
    }
    if bundle_companion != companion_identity {
        return Err(CryptoError::CompanionIdentity);
    }
    let companion = PublicKey::from_djb_public_key_bytes(companion_identity).map_err(|_| CryptoError::Primitive)?;
    let shared_identity = primary.private_key.calculate_agreement(&companion).map_err(|_| CryptoError::Primitive)?;
    hkdf_sha256(&[&hello.shared_ephemeral[..], &shared_identity, random].concat(), &[], ADV_SECRET_INFO)
}

/// `salt ‖ iv ‖ AES-256-CTR(key)` under the code-derived key, with fresh salt and iv.
fn wrap_key(key: &[u8; 32], code: &str) -> Result<[u8; WRAPPED_KEY_LEN], CryptoError> {
    use rand::RngExt as _;
    let salt: [u8; 32] = rand::rng().random();
    let iv: [u8; 16] = rand::rng().random();
    let mut sealed = *key;
    aes256_ctr(&pbkdf2_sha256(code.as_bytes(), &salt, PBKDF2_ROUNDS)?, &iv, &mut sealed)?;
    let mut wrapped = [0u8; WRAPPED_KEY_LEN];
    wrapped[..32].copy_from_slice(&salt);
    wrapped[32..48].copy_from_slice(&iv);
    wrapped[48..].copy_from_slice(&sealed);
    Ok(wrapped)
}

/// The inverse of [`wrap_key`]. Any code "succeeds": a wrong one yields a wrong key.
fn unwrap_key(wrapped: &[u8; WRAPPED_KEY_LEN], code: &str) -> Result<[u8; 32], CryptoError> {
    let (salt, rest) = wrapped.split_at(32);
    let (iv, sealed) = rest.split_at(16);
    let iv: [u8; 16] = iv.try_into().map_err(|_| CryptoError::Primitive)?;
    let mut key: [u8; 32] = sealed.try_into().map_err(|_| CryptoError::Primitive)?;
    aes256_ctr(&pbkdf2_sha256(code.as_bytes(), salt, PBKDF2_ROUNDS)?, &iv, &mut key)?;
    Ok(key)
}

/// AES-256-CTR with a 128-bit big-endian counter starting at `iv`. libsignal's AES-CTR counts
/// in 32 bits, so each block gets its own full counter and the carry stays exact.
fn aes256_ctr(key: &[u8; 32], iv: &[u8; 16], data: &mut [u8]) -> Result<(), CryptoError> {
    let start = u128::from_be_bytes(*iv);
    for (i, block) in data.chunks_mut(16).enumerate() {
        let counter = start.wrapping_add(i as u128).to_be_bytes();
        let (nonce, low) = counter.split_at(12);
        let low = u32::from_be_bytes(low.try_into().map_err(|_| CryptoError::Primitive)?);
        Aes256Ctr32::from_key(key, nonce, low).map_err(|_| CryptoError::Primitive)?.process(block);
    }
    Ok(())
}

fn keyed_mac(key: &[u8]) -> Result<HmacSha256, CryptoError> {
    HmacSha256::new_from_slice(key).map_err(|_| CryptoError::Primitive)
}

/// PBKDF2-HMAC-SHA256 with a 32-byte output (a single block).
fn pbkdf2_sha256(password: &[u8], salt: &[u8], rounds: u32) -> Result<[u8; 32], CryptoError> {
    let keyed = keyed_mac(password)?;
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..rounds {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        out.iter_mut().zip(u).for_each(|(o, x)| *o ^= x);
    }
    Ok(out)
}

/// HKDF-SHA256 with a 32-byte output; an empty `salt` is RFC 5869's "no salt".
fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8]) -> Result<[u8; 32], CryptoError> {
    let mut extract = keyed_mac(salt)?;
    extract.update(ikm);
    let prk = extract.finalize().into_bytes();
    let mut expand = keyed_mac(&prk)?;
    expand.update(info);
    expand.update(&[1]);
    Ok(expand.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wacore::pair_code::PairCodeUtils;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn codes_are_normalized_or_refused() {
        assert_eq!(normalize_code("abcd-efgh").as_deref(), Some("ABCDEFGH"));
        assert_eq!(normalize_code(" ABCDEFGH ").as_deref(), Some("ABCDEFGH"));
        assert_eq!(normalize_code("ABCD-EFG"), None);
        assert_eq!(normalize_code("ABCD-EFGO"), None, "O is not in the alphabet");
        assert_eq!(normalize_code("ABCD0EFG"), None, "0 is not in the alphabet");
    }

    #[test]
    fn pbkdf2_matches_published_vectors() {
        let one = hex("120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b");
        let two = hex("ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43");
        assert_eq!(pbkdf2_sha256(b"password", b"salt", 1).unwrap().to_vec(), one);
        assert_eq!(pbkdf2_sha256(b"password", b"salt", 2).unwrap().to_vec(), two);
    }

    #[test]
    fn hkdf_matches_rfc5869() {
        let ikm = [0x0b; 22];
        let case1 = hkdf_sha256(&ikm, &hex("000102030405060708090a0b0c"), &hex("f0f1f2f3f4f5f6f7f8f9")).unwrap();
        assert_eq!(case1.to_vec(), hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"));
        let case3 = hkdf_sha256(&ikm, &[], &[]).unwrap();
        assert_eq!(case3.to_vec(), hex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"));
    }

    /// The companion's half from the client library, the phone's half from this module.
    #[test]
    fn interoperates_with_the_client_and_refuses_a_wrong_code() {
        let code = "ABCD2345";
        let primary = KeyPair::generate(&mut rand::rng());
        let companion_identity = KeyPair::generate(&mut rand::rng());
        let companion_ephemeral = KeyPair::generate(&mut rand::rng());
        let ephemeral_pub: [u8; 32] = companion_ephemeral.public_key.public_key_bytes().try_into().unwrap();
        let identity_pub: [u8; 32] = companion_identity.public_key.public_key_bytes().try_into().unwrap();
        let primary_pub: [u8; 32] = primary.public_key.public_key_bytes().try_into().unwrap();
        let companion_wrapped = PairCodeUtils::encrypt_ephemeral_pub(&ephemeral_pub, code);

        for typed in [code, "ZZZZ9999"] {
            let hello = primary_hello(typed, &companion_wrapped).unwrap();
            let primary_ephemeral =
                PairCodeUtils::decrypt_primary_ephemeral_pub(&hello.wrapped_ephemeral, code).unwrap();
            let (bundle, adv_secret) = PairCodeUtils::prepare_key_bundle(
                &companion_ephemeral,
                &primary_ephemeral,
                &primary_pub,
                &companion_identity,
            )
            .unwrap();
            let opened = open_key_bundle(&hello, &bundle, &identity_pub, &primary);
            if typed == code {
                assert_eq!(opened.unwrap(), adv_secret);
            } else {
                assert!(matches!(opened, Err(CryptoError::Undecryptable)), "{opened:?}");
            }
        }
    }
}
