//! The fleet's vocabulary: which gateway a number runs on, and the fencing token of its lease.

use std::fmt;

use serde::Serialize;

use super::SessionId;

/// The longest [`GatewayId`].
pub const MAX_GATEWAY_ID_LEN: usize = 128;

/// A gateway's stable name in a fleet (`GATEWAY_ID`; by default the host name and the port): the
/// owner of the leases it holds, the same across its restarts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct GatewayId(String);

/// Why a string is not a [`GatewayId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gateway id: expected 1 to 128 characters from A-Z, a-z, 0-9, '.', '_', ':' and '-'")]
pub struct InvalidGatewayId;

impl GatewayId {
    /// Validates `raw`: a host name, an address and a port, or any such label.
    pub fn parse(raw: &str) -> Result<GatewayId, InvalidGatewayId> {
        let valid = !raw.is_empty()
            && raw.len() <= MAX_GATEWAY_ID_LEN
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if valid { Ok(GatewayId(raw.to_owned())) } else { Err(InvalidGatewayId) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lease's fencing token: it only goes up for a session, by one at every new claim, so a write
/// made under an older epoch can be told apart and refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One session's lease as the shared store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub session: SessionId,
    pub owner: GatewayId,
    pub epoch: Epoch,
    /// When it runs out, by the database's clock (milliseconds since the epoch). The holder does
    /// not compare it with its own clock: it stops by a deadline of its own (see `LeaseStore`).
    pub expires_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_ids_are_host_names_addresses_and_ports() {
        for ok in ["gw-1", "host.example.com:3000", "10.0.0.7:3000", "a", "node_2"] {
            assert!(GatewayId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", " gw", "gw 1", "gw/1", "é", &"x".repeat(MAX_GATEWAY_ID_LEN + 1)] {
            assert_eq!(GatewayId::parse(bad), Err(InvalidGatewayId), "{bad}");
        }
    }
}
