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
    fn display_and_ordering() {
        let a = SessionId::parse("a").unwrap();
        let b = SessionId::parse("b").unwrap();
        assert_eq!(a.to_string(), "a");
        assert!(a < b);
        assert_eq!("b".parse::<SessionId>().unwrap(), b);
    }
}

/// A new event id, `evt_` and 32 hex digits: the `webhook-id` of its deliveries.
pub fn new_event_id() -> String {
    let raw: [u8; 16] = rand::random();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    format!("evt_{hex}")
}
