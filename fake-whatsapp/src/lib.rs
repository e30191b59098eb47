//! A fake WhatsApp Web server that the real, unmodified whatsapp-rust client links to.
//!
//! * [`server`]: listeners, start-up and shutdown; `shared`: the state all of them share and
//!   the events tests wait on; the WebSocket speaks WhatsApp's Noise
//!   handshake ([`noise`]) and binary stanzas, one task per connection (`conn`).
//! * `pairing` (QR refs, scan, `pair-success`), `pair_code` (linking by pairing code:
//!   `companion_hello`, the phone's `primary_hello`, `companion_finish`), `login` (`<success>`, offline marker, app-state
//!   key share), `handlers` (IQ dispatch), `keys` (prekeys, bundles, usync), `routing`
//!   (messages and receipts between linked devices and virtual phones).
//! * [`phone`]: the Signal side of a virtual phone (its primary device 0), which decrypts what
//!   is sent to it and encrypts what it sends.
//! * [`media`]: the HTTPS media server with its self-made CA.
//! * [`admin`]: the admin API (HTTP and in-process) that tests drive.
//!
//! Clients must be built with whatsapp-rust's `danger-skip-cert-chain-verify` feature: the
//! Noise certificate chain cannot be signed by WhatsApp's root.

pub mod admin;
mod conn;
mod handlers;
mod keys;
mod login;
pub mod media;
mod noise;
mod pair_code;
mod pairing;
pub mod phone;
mod routing;
mod server;
mod shared;
mod stanza;
mod state;

pub use admin::{Admin, DeviceInfo, DeviceOpError};
pub use pair_code::PairCodeError;
pub use pairing::{Linked, ScanError};
pub use routing::SendError;
pub use server::{Addresses, FakeConfig, FakeWhatsApp, StartError};
pub use shared::FakeEvent;
pub use state::{
    DocumentRecord, LocationRecord, MediaRecord, MessageKind, ReactionRecord, ReceiptRecord, ReceivedMessage,
};
