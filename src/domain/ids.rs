//! Identifiers: [`SessionId`], the validated name of one linked WhatsApp number
//! (`tienda_lima`), and [`MessageId`], the id of an outgoing message.
//!
//! A session id becomes a directory name under `SESSIONS_DIR` and a URL path segment, so the rule
//! is strict: `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`. That excludes `.`, `/` and `\`, so an id can
//! never escape the sessions directory (`../x`), and needs no escaping in a URL.

use std::fmt;
use std::str::FromStr;

use rand::RngExt as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted session id, in bytes (all accepted characters are ASCII).
pub const MAX_LEN: usize = 64;

/// A session id that passed [`SessionId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

/// Why a string is not a [`SessionId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid session id: expected 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-', \
     starting with a letter or digit"
)]
pub struct InvalidSessionId;

impl SessionId {
    /// Validates `raw` against `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`. No trimming: `" a"` is invalid.
    pub fn parse(raw: &str) -> Result<SessionId, InvalidSessionId> {
        let bytes = raw.as_bytes();
        let Some((first, rest)) = bytes.split_first() else {
            return Err(InvalidSessionId);
        };
        let valid = bytes.len() <= MAX_LEN
            && first.is_ascii_alphanumeric()
            && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
        if valid { Ok(SessionId(raw.to_owned())) } else { Err(InvalidSessionId) }
    }

    /// The id as text, e.g. for a directory name or a log field.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The session of an identity named elsewhere (a JWT's `sub`, an e-mail address), as a
    /// valid id, deterministically and without two identities ever sharing one:
    ///
    /// * a value that is already a valid id and has no `--` in it is used as it is (a UUID
    ///   `sub` such as `3f1c2b9e-…` names its session directly);
    /// * any other value becomes up to 16 of its characters (ASCII letters and digits kept,
    ///   everything else `_`, leading `_` dropped, `u` if nothing is left), then `--`, then the
    ///   first 32 hex digits of its SHA-256: `ana@example.com` → `ana_example_com--<hash>`.
    ///
    /// The two forms never meet, since only the second has `--`; two values of the second form
    /// differ in their hashes. `None` for an empty value.
    pub fn from_identity(raw: &str) -> Option<SessionId> {
        if raw.is_empty() {
            return None;
        }
        if !raw.contains("--")
            && let Ok(id) = SessionId::parse(raw)
        {
            return Some(id);
        }
        let readable: String = raw.chars().take(16).map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let readable = readable.trim_start_matches('_');
        let readable = if readable.is_empty() { "u" } else { readable };
        let digest = <sha2::Sha256 as sha2::Digest>::digest(raw.as_bytes());
        let hash: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Some(SessionId(format!("{readable}--{hash}")))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        SessionId::parse(raw)
    }
}

impl TryFrom<String> for SessionId {
    type Error = InvalidSessionId;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        SessionId::parse(&raw)
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    /// Validates like [`SessionId::parse`], so `sessions.config.json` cannot smuggle in `../x`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        SessionId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The id returned to the caller; it is also the WhatsApp message id of every attempt, so a
/// resend after a crash is the same message to the recipient.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId(String);

impl MessageId {
    /// A fresh id in WhatsApp Web's own shape: `3EB0` and 20 hex digits.
    pub fn generate() -> Self {
        let raw: [u8; 10] = rand::rng().random();
        let hex: String = raw.iter().map(|b| format!("{b:02X}")).collect();
        Self(format!("3EB0{hex}"))
    }

    /// Wraps an id read back from our own journal or from WhatsApp.
    pub fn from_stored(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A new event id, `evt_` and 32 hex digits: the `webhook-id` of its deliveries.
pub fn new_event_id() -> String {
    let raw: [u8; 16] = rand::random();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    format!("evt_{hex}")
}

/// The id of the `message.received` event of `session`'s received message `message_id`, in the
/// shape of [`new_event_id`]: the same every time the message is handed over (WhatsApp
/// redelivers what it has no ack for), so that the webhook outbox keeps one delivery of it.
pub fn received_event_id(session: &str, message_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("message.received\0{session}\0{message_id}"));
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("evt_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_typical_ids() {
        for ok in ["tienda_lima", "soporte-tecnico", "a", "0", "A1_b-2", "9_"] {
            assert_eq!(SessionId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn length_limit_is_64() {
        let max = "a".repeat(64);
        assert!(SessionId::parse(&max).is_ok());
        assert_eq!(SessionId::parse(&"a".repeat(65)), Err(InvalidSessionId));
    }

    #[test]
    fn rejects_bad_first_char_and_bad_chars() {
        for bad in [
            "",
            "_a",
            "-a",
            "../x",
            "a/b",
            "a\\b",
            "a.b",
            ".",
            "..",
            " a",
            "a ",
            "tienda lima",
            "ñandú",
            "a\0",
            "a\n",
            "a%2F",
        ] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn serde_round_trip_and_validating_deserialize() {
        let id = SessionId::parse("tienda_lima").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"tienda_lima\"");
        let back: SessionId = serde_json::from_str("\"tienda_lima\"").unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<SessionId>("\"../etc\"").is_err());
        assert!(serde_json::from_str::<SessionId>("42").is_err());
    }

    #[test]
    fn identities_that_are_ids_name_their_session_directly() {
        for id in ["3f1c2b9e-7d4a-4e1b-9c55-0a1b2c3d4e5f", "user_42", "A", "9"] {
            assert_eq!(SessionId::from_identity(id).unwrap().as_str(), id);
        }
        assert_eq!(SessionId::from_identity(""), None);
    }

    #[test]
    fn other_identities_are_mapped_deterministically_to_valid_distinct_ids() {
        let mapped = |raw: &str| SessionId::from_identity(raw).unwrap().as_str().to_owned();
        let ana = mapped("ana@example.com");
        assert!(ana.starts_with("ana_example_com--"), "{ana}");
        assert_eq!(ana.len(), "ana_example_com--".len() + 32);
        assert_eq!(mapped("ana@example.com"), ana, "the same identity, the same session");
        // Same readable part, different identities: different sessions.
        assert_ne!(mapped("ana.example.com"), ana);
        assert_ne!(mapped("ana#example#com"), ana);
        // A valid id that looks like a mapped one is mapped too, so it cannot take another's session.
        assert_ne!(mapped(&ana), ana);
        for raw in ["_lead", "--", "a--b", "ñandú", "../etc/passwd", "x".repeat(65).as_str(), "🙂", "a b", "\0"] {
            let id = mapped(raw);
            assert!(SessionId::parse(&id).is_ok(), "{raw:?} → {id:?}");
            assert!(id.len() <= MAX_LEN);
        }
        assert!(mapped("🙂").starts_with("u--"));
        assert!(mapped("_lead").starts_with("lead--"));
    }

    #[test]
    fn display_and_ordering() {
        let a = SessionId::parse("a").unwrap();
        let b = SessionId::parse("b").unwrap();
        assert_eq!(a.to_string(), "a");
        assert!(a < b);
        assert_eq!("b".parse::<SessionId>().unwrap(), b);
    }
}
