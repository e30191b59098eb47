//! [`JournalError`] and the classification of I/O and SQLite failures, in particular "the disk
//! is full", which the HTTP layer answers with 507 instead of 500.

use std::io;
use std::sync::Arc;

use rusqlite::ErrorCode;

/// `ENOSPC` on Linux and the BSDs; checked by number too, because older code paths and some
/// file systems surface it without the `StorageFull` kind.
const ENOSPC: i32 = 28;

/// Why a journal operation failed.
///
/// `Clone` (the sources sit behind `Arc`) because one failed group commit is reported to every
/// caller in the batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// No space (or quota) left on the journal's file system. Nothing half-written remains: the
    /// temp file is removed and the transaction rolled back; retry once space is freed.
    #[error("no space left for the journal")]
    DiskFull,
    /// Reading or writing a file (the outbox, its directory) failed.
    #[error("journal i/o failed: {0}")]
    Io(#[source] Arc<io::Error>),
    /// SQLite failed.
    #[error("journal database failed: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    /// The database exists but cannot be used by this build (not WAL, newer schema).
    #[error("journal database is incompatible: {0}")]
    Incompatible(String),
    /// The message id cannot name a file: 1–128 of `A-Z a-z 0-9 . _ -`, not starting with `.`.
    #[error("invalid message id")]
    InvalidMessageId,
    /// A message with this id was accepted before.
    #[error("message id already in the journal")]
    DuplicateMessageId,
    /// No message with this id (never accepted, or pruned): from [`super::JournalStore::record_attempt`].
    #[error("unknown message id")]
    NotFound,
    /// A stored PDF failed its checksum: the bytes on disk are not the ones accepted.
    #[error("stored pdf is damaged (checksum mismatch)")]
    Damaged,
    /// Another process (or another open handle) holds this journal directory.
    #[error("journal directory is in use")]
    Locked,
    /// The writer thread is gone (the journal is shutting down, or the thread panicked).
    #[error("journal writer stopped")]
    Closed,
    /// The shared database cannot be reached now (Postgres restarting, the network cut, every
    /// connection busy): nothing was changed, and the same call may succeed later.
    #[error("journal database unavailable: {0}")]
    Unavailable(String),
    /// In a fleet: the write was made under a lease that is no longer the session's live lease
    /// (another gateway runs it now). Nothing was changed.
    #[error("this gateway no longer holds the session's lease")]
    Fenced,
    /// The shared database failed otherwise.
    #[error("journal database failed: {0}")]
    Database(String),
}

impl JournalError {
    /// True for [`JournalError::DiskFull`]: the one failure a caller should report as
    /// "insufficient storage" rather than as an internal error.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, JournalError::DiskFull)
    }

    /// True when the store cannot be reached now and the same call may succeed later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, JournalError::Unavailable(_))
    }
}

impl From<crate::storage::StorageError> for JournalError {
    fn from(error: crate::storage::StorageError) -> Self {
        match error {
            crate::storage::StorageError::Unavailable(e) => JournalError::Unavailable(e),
            crate::storage::StorageError::Failed(e) => JournalError::Database(e),
        }
    }
}

impl From<io::Error> for JournalError {
    fn from(error: io::Error) -> Self {
        if is_storage_full(&error) { JournalError::DiskFull } else { JournalError::Io(Arc::new(error)) }
    }
}

impl From<rusqlite::Error> for JournalError {
    fn from(error: rusqlite::Error) -> Self {
        // SQLite's unix VFS turns a short write with ENOSPC into SQLITE_FULL, and a page count
        // beyond `max_page_count` is SQLITE_FULL too.
        if error.sqlite_error_code() == Some(ErrorCode::DiskFull) {
            JournalError::DiskFull
        } else {
            JournalError::Sqlite(Arc::new(error))
        }
    }
}

/// Whether an I/O error means "no space left": `StorageFull` / `QuotaExceeded`, or a raw
/// `ENOSPC` whatever kind it was given.
fn is_storage_full(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        || error.raw_os_error() == Some(ENOSPC)
}
