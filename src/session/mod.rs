//! WhatsApp sessions: one linked number each, with its own credentials folder and its own
//! supervisor task.
//!
//! * `manager`: the registry of sessions ([`SessionManager`]), creation and shutdown.
//! * `actor`: the per-session supervisor that runs whatsapp-rust clients, restarts them, keeps
//!   the status true, and hands out fresh QR codes while someone watches.
//! * `store`: `sessions.config.json`, rewritten atomically.
//! * `upstream`: the only module that imports whatsapp-rust.

mod actor;
mod manager;
mod store;
pub(crate) mod upstream;

pub use manager::{SessionError, SessionManager, Watcher};
pub use store::{SessionEntry, SessionsFile, StoreError};

/// What WhatsApp said about a message we sent: the server's ack (or nack), or a receipt from
/// the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryEvent {
    Ack { message_id: String, error: Option<String> },
    Receipt { message_ids: Vec<String>, read: bool },
}

/// A session's connection status as watchers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A client is starting, or waiting for its QR to be scanned.
    Initializing,
    /// Linked and connected: messages can be sent.
    Connected,
    /// Not connected (network loss, logged out, replaced, or not linked and nobody watching).
    Disconnected,
}

impl Status {
    /// The lowercase name, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Initializing => "initializing",
            Status::Connected => "connected",
            Status::Disconnected => "disconnected",
        }
    }
}

/// What a session looks like right now: published on a `watch` channel, so watchers always
/// see the latest value and a slow one never holds anyone up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    pub status: Status,
    /// The QR code to show, while linking.
    pub qr: Option<String>,
    /// Why the session stopped, when it will not retry on its own.
    pub error: Option<String>,
}
