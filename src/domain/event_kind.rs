//! The names of the events the gateway publishes (`/ws/events`, webhooks, `WEBHOOK_EVENTS`),
//! spelled once.

use serde::{Deserialize, Serialize};

/// The events we publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventKind {
    #[serde(rename = "session.status")]
    SessionStatus,
    #[serde(rename = "session.qr")]
    SessionQr,
    #[serde(rename = "session.connected")]
    SessionConnected,
    #[serde(rename = "session.logged_out")]
    SessionLoggedOut,
    #[serde(rename = "message.received")]
    MessageReceived,
    #[serde(rename = "message.status")]
    MessageStatus,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::SessionStatus,
        EventKind::SessionQr,
        EventKind::SessionConnected,
        EventKind::SessionLoggedOut,
        EventKind::MessageReceived,
        EventKind::MessageStatus,
    ];

    /// The one place each event name is spelled.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionStatus => "session.status",
            EventKind::SessionQr => "session.qr",
            EventKind::SessionConnected => "session.connected",
            EventKind::SessionLoggedOut => "session.logged_out",
            EventKind::MessageReceived => "message.received",
            EventKind::MessageStatus => "message.status",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Whether it tells of a session itself (its status, QR, link, logout) rather than of a
    /// message.
    pub fn is_session(self) -> bool {
        match self {
            EventKind::SessionStatus
            | EventKind::SessionQr
            | EventKind::SessionConnected
            | EventKind::SessionLoggedOut => true,
            EventKind::MessageReceived | EventKind::MessageStatus => false,
        }
    }
}
