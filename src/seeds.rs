//! The sibling Node.js services' vocabularies (the "seeds" whose clients the gateway serves with
//! `COMPAT_API`): their session statuses and their timestamps, spelled once here for both their
//! routes (`api::compat`) and their callbacks (`webhooks`).

use serde::Serialize;

use crate::session::Status;

/// A session's status as seed 000 (`/status/:sessionId`, `/init`, `/qr-code/:sessionId`) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Seed000Status {
    /// No connection: nothing running, logged out, or stopped for good.
    Disconnected,
    /// Starting, reconnecting, or waiting for a pairing code.
    Connecting,
    /// A QR code is waiting to be scanned.
    QrReady,
    Connected,
}

impl From<Status> for Seed000Status {
    fn from(status: Status) -> Self {
        match status {
            Status::Disconnected | Status::LoggedOut | Status::Error => Seed000Status::Disconnected,
            Status::Connecting | Status::PairingCode => Seed000Status::Connecting,
            Status::QrReady => Seed000Status::QrReady,
            Status::Connected => Seed000Status::Connected,
        }
    }
}

/// A session's status as seed 002 names it (its `whatsapp_session_status` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Seed002Status {
    Connected,
    /// Nothing running, or logged out.
    Disconnected,
    /// Starting, reconnecting, or waiting for a QR code or a pairing code.
    Connecting,
    /// Stopped for a reason it will not recover from by itself.
    Error,
}

impl From<Status> for Seed002Status {
    fn from(status: Status) -> Self {
        match status {
            Status::Connected => Seed002Status::Connected,
            Status::Disconnected | Status::LoggedOut => Seed002Status::Disconnected,
            Status::Connecting | Status::QrReady | Status::PairingCode => Seed002Status::Connecting,
            Status::Error => Seed002Status::Error,
        }
    }
}

/// Unix ms as seed 000 writes times: `2024-01-15T10:30:00Z` (UTC, whole seconds).
pub fn iso_seconds(unix_ms: u64) -> String {
    iso(unix_ms, chrono::SecondsFormat::Secs)
}

/// Unix ms as seed 002 writes times, JavaScript's `toISOString()`: `2024-01-15T10:30:00.000Z`.
pub fn iso_millis(unix_ms: u64) -> String {
    iso(unix_ms, chrono::SecondsFormat::Millis)
}

fn iso(unix_ms: u64, format: chrono::SecondsFormat) -> String {
    let ms = i64::try_from(unix_ms).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(format, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_each_seed_writes_them() {
        assert_eq!(iso_seconds(1_705_314_600_123), "2024-01-15T10:30:00Z");
        assert_eq!(iso_millis(1_705_314_600_123), "2024-01-15T10:30:00.123Z");
        assert_eq!(iso_millis(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn every_status_has_a_name_in_each_seed() {
        let names = |s: Status| {
            (
                serde_json::to_value(Seed000Status::from(s)).unwrap(),
                serde_json::to_value(Seed002Status::from(s)).unwrap(),
            )
        };
        assert_eq!(names(Status::QrReady), ("qr_ready".into(), "connecting".into()));
        assert_eq!(names(Status::Connected), ("connected".into(), "connected".into()));
        assert_eq!(names(Status::LoggedOut), ("disconnected".into(), "disconnected".into()));
        assert_eq!(names(Status::Error), ("disconnected".into(), "error".into()));
        assert_eq!(names(Status::PairingCode), ("connecting".into(), "connecting".into()));
    }
}
