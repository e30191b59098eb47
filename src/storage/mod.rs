//! The bottom floor: every piece of state the gateway keeps, behind one trait per kind, named for
//! what it holds. Callers see the traits and domain types only; SQL lives in one folder per
//! backend, and no `rusqlite` or `sqlx` appears above this module.
//!
//! * [`JournalStore`]: every accepted message with its bytes until it is final, the idempotency
//!   keys, and the `message.status` events written with their statuses.
//! * [`InboxStore`]: what the linked numbers receive (stored once per session and message id),
//!   their chats and read marks, and the bytes of received files.
//! * [`CredentialStore`]: the credentials of each linked number, the store its whatsapp-rust
//!   client is built on (keys, Signal sessions, app-state).
//! * [`SessionRegistry`]: which sessions exist, with their description and metadata.
//! * [`LeaseStore`]: which gateway of a fleet runs each number (Postgres only), fenced by an
//!   epoch, and the gateways' heartbeats.
//! * [`WebhookStore`]: the webhook endpoints and their outbox: deliveries written once per
//!   event, claimed in order under a lease, retried, dead letters replayed.
//! * [`transfer`]: rows in transit from SQLite to Postgres (`whatsapp-gateway migrate`).
//! * [`sqlite`]: the embedded default, today's files under `DATA_DIR`.
//! * [`postgres`]: the shared store, chosen by `DATABASE_URL=postgres://…`: one bounded pool,
//!   embedded migrations run under an advisory lock.
//!
//! Every backend passes the same conformance suite (`conformance`), run against SQLite and
//! against a real Postgres in its own schema.

pub mod credentials;
mod error;
mod inbox;
pub mod journal;
mod leases;
pub mod postgres;
mod registry;
pub mod sqlite;
pub mod transfer;
pub mod webhooks;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod conformance;
#[cfg(test)]
mod credentials_conformance;
#[cfg(test)]
mod leases_conformance;
#[cfg(test)]
mod webhooks_conformance;

pub use credentials::CredentialStore;
pub use error::StorageError;
pub use inbox::{InboxStore, MAX_PAGE, Page};
pub use journal::JournalStore;
pub use leases::{FleetNotice, LeaseStore, MessageKind, RecordedState};
pub use registry::SessionRegistry;
pub use webhooks::WebhookStore;

pub(crate) use crate::domain::now_ms;

/// A count or time as the signed 64-bit integer both databases store.
pub(crate) fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
