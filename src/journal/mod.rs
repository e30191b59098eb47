//! The journal: the durable record of every accepted message, so that a 202 survives a crash.
//! Callers hold a [`Journal`] and see the [`JournalStore`] trait only; its SQLite
//! implementation ([`SqliteJournal`], `DATA_DIR`'s `journal.db` and segments) and its Postgres
//! one live in `storage/`.

use std::sync::Arc;

/// Kept for callers that still spell it `journal::now_ms` (the clock lives in `domain`).
pub use crate::domain::now_ms;
pub use crate::storage::journal::{
    Accepted, DeliveryStatus, IDEMPOTENCY_RETENTION, IdempotencyKey, JournalError, JournalStats, JournalStore,
    MessageRecord, NewMessage, PDF_MISSING, Pruned, StatusEvent, StatusEventsGuard,
};
pub use crate::storage::sqlite::journal::{PROBE_BYTES, SqliteJournal};

/// The journal the gateway runs on: [`SqliteJournal`] in `DATA_DIR` by default, the shared
/// Postgres's with `DATABASE_URL`.
pub type Journal = Arc<dyn JournalStore>;
