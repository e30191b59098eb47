//! WhatsApp sessions: one linked number each, with its own credentials (kept by a
//! [`CredentialStore`](crate::storage::CredentialStore): a SQLite file per number, or Postgres)
//! and its own supervisor task.
//!
//! * `manager`: the registry of sessions ([`SessionManager`]), creation and shutdown.
//! * `actor`: the per-session supervisor that runs whatsapp-rust clients, restarts them, keeps
//!   the status true, and hands out fresh QR codes while someone watches.
//! * `client`: the [`SessionClient`] handle other components get for a connected session, and
//!   the [`Connections`] the queue waits on.
//! * `qr`: a QR code drawn as a PNG (or a data URL of one).
//! * `upstream`: the only module that imports whatsapp-rust.

mod actor;
mod client;
pub mod contacts;
mod forwarded;
mod manager;
mod qr;
pub(crate) mod upstream;

use crate::domain::SessionId;

pub use crate::domain::SessionEntry;
pub use crate::storage::sqlite::{SessionsFile, StoreError};
pub(crate) use client::{Connections, SessionClient, SessionOps, Writes};
pub use manager::{SessionError, SessionManager, SessionSummary, Watcher};
pub(crate) use qr::{png_data_url, qr_data_url, qr_png};

/// What WhatsApp said about a message we sent: the server's ack (or nack), or a receipt from
/// the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryEvent {
    Ack { message_id: String, error: Option<String> },
    Receipt { message_ids: Vec<String>, read: bool },
}

/// A session's status, in the vocabulary of seeds 000 and 002.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Status {
    /// Not running: not linked and nobody is linking it, or stopped.
    Disconnected,
    /// A client is starting or reconnecting.
    Connecting,
    /// Waiting for a QR code to be scanned.
    QrReady,
    /// Waiting for a pairing code to be typed on the phone.
    PairingCode,
    /// Linked and connected: messages can be sent.
    Connected,
    /// The phone (or an API call) logged it out; its credentials are gone. Link it again.
    LoggedOut,
    /// Stopped for a reason it will not recover from by itself (`reason` says which).
    Error,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 7] = [
        Status::Disconnected,
        Status::Connecting,
        Status::QrReady,
        Status::PairingCode,
        Status::Connected,
        Status::LoggedOut,
        Status::Error,
    ];

    /// The snake_case name: in the session object, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Disconnected => "disconnected",
            Status::Connecting => "connecting",
            Status::QrReady => "qr_ready",
            Status::PairingCode => "pairing_code",
            Status::Connected => "connected",
            Status::LoggedOut => "logged_out",
            Status::Error => "error",
        }
    }

    /// Linking or connecting: the seed's WebSocket says `initializing`.
    pub fn is_starting(self) -> bool {
        matches!(self, Status::Connecting | Status::QrReady | Status::PairingCode)
    }
}

impl serde::Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown session status {name:?}")))
    }
}

/// The WhatsApp account a session is linked to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// The number, digits only.
    #[schema(example = "51987654321")]
    pub phone: String,
    /// The phone-number JID of this linked device.
    #[schema(example = "51987654321:3@s.whatsapp.net")]
    pub jid: String,
    /// The account's LID, when known.
    #[schema(example = "123456789012345:3@lid")]
    pub lid: Option<String>,
    /// The name the account shows.
    pub push_name: Option<String>,
}

/// A QR code to show: its text and when the next one replaces it.
/// A QR code's text and when it stops being valid. Serialized only to share it with the other
/// gateways of a fleet (the API spells its own fields).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Qr {
    pub code: String,
    /// Unix ms.
    pub expires_at: u64,
}

/// What a session looks like right now: published on a `watch` channel, so watchers always
/// see the latest value and a slow one never holds anyone up.
/// What a session looks like now. Serialized only to share it with the other gateways of a fleet
/// (the API spells its own fields).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionState {
    pub status: Status,
    /// The QR code to show, only while the client that made it runs.
    pub qr: Option<Qr>,
    /// The pairing code to type on the phone, while one is live.
    pub pairing_code: Option<String>,
    /// A problem a person should act on (the seed's `error` frame): stable text, so it is shown
    /// once, not once per retry.
    pub error: Option<String>,
    /// Why the session is in its status, in words a person can act on; may change on every retry.
    pub reason: Option<String>,
    /// The linked account, once known.
    pub me: Option<Account>,
    /// When it last connected, unix ms.
    pub connected_at: Option<u64>,
    /// When this state last changed, unix ms.
    pub updated_at: u64,
}

impl SessionState {
    pub(crate) fn new(status: Status) -> Self {
        SessionState {
            status,
            qr: None,
            pairing_code: None,
            error: None,
            reason: None,
            me: None,
            connected_at: None,
            updated_at: crate::domain::now_ms(),
        }
    }
}

/// Why no pairing code could be had. Serialized only to answer a gateway of the fleet that
/// forwarded the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum PairingError {
    #[error("the session is already linked; log it out to link another phone")]
    AlreadyLinked,
    #[error("invalid phone number for a pairing code: {0}")]
    InvalidPhone(String),
    #[error("WhatsApp limits pairing-code requests for this number; retry later")]
    RateLimited { retry_after: Option<std::time::Duration> },
    #[error("a pairing code is already live for this session ({remaining_secs} s left); type that one")]
    Outstanding { remaining_secs: u64 },
    #[error("WhatsApp refused the pairing code request: {0}")]
    Rejected(String),
    #[error("cannot ask WhatsApp for a pairing code: {0}")]
    Unavailable(String),
}

/// What happened to a session, for whoever follows every session at once (webhooks, later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub session: SessionId,
    pub kind: SessionEventKind,
    /// In a fleet: the event happened on the gateway that runs the session, and this one only
    /// shows it (to its own watchers, never to webhooks, which that gateway feeds).
    pub mirrored: bool,
}

/// The kinds of [`SessionEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEventKind {
    /// The status changed (with its reason).
    Status { status: Status, reason: Option<String> },
    /// A new QR code to show.
    Qr(Qr),
    /// Connected, as this account; `new_link` when a phone has just linked it (a QR scanned or a
    /// pairing code typed), not for a reconnection of a linked session.
    Connected { account: Account, new_link: bool },
    /// Logged out: the credentials are gone.
    LoggedOut,
}
