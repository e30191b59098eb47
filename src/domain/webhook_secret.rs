//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{webhook-id}.{webhook-timestamp}.{body}">`, keyed with the secret `whsec_<base64>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit as _, Mac as _};

/// Secret bytes when we generate one (the specification asks for 24 to 64).
const GENERATED_LEN: usize = 32;

/// An endpoint's signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

/// Why a secret is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is 'whsec_' followed by the base64 of 24 to 64 random bytes")]
pub struct SecretError;

impl WebhookSecret {
    pub fn generate() -> WebhookSecret {
        let mut bytes = vec![0u8; GENERATED_LEN];
        rand::fill(&mut bytes[..]);
        WebhookSecret(bytes)
    }

    /// `whsec_` + base64 of 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<WebhookSecret, SecretError> {
        let encoded = text.trim().strip_prefix("whsec_").ok_or(SecretError)?;
        // Non-canonical trailing bits are taken, as most encoders' decoders do.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        let bytes = lenient.decode(encoded).map_err(|_| SecretError)?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(SecretError);
        }
        Ok(WebhookSecret(bytes))
    }

    /// `whsec_…`: shown once, when the endpoint is created.
    pub fn expose(&self) -> String {
        format!("whsec_{}", STANDARD.encode(&self.0))
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        // HMAC takes keys of any length.
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_the_standard_form() {
        let secret = WebhookSecret::generate();
        assert_eq!(WebhookSecret::parse(&secret.expose()), Ok(secret.clone()));
        for bad in ["", "whsec_", "whsec_!!!", "abc", &format!("whsec_{}", STANDARD.encode([1u8; 8]))] {
            assert_eq!(WebhookSecret::parse(bad), Err(SecretError), "{bad:?}");
        }
        assert!(!format!("{secret:?}").contains("whsec"), "never printed");
    }

    #[test]
    fn the_signature_matches_the_specification_example() {
        // From the Standard Webhooks specification's reference implementations.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
