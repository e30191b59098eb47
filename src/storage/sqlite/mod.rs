//! The embedded default: SQLite files under `DATA_DIR`, opened by one helper with the settings
//! every store needs, and the Node service's `sessions.config.json` as the registry.

mod credentials;
pub mod export;
mod inbox;
mod registry;
mod webhooks;

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

pub use credentials::{STORE_FILE, SqliteCredentials};
pub use inbox::{InboxExport, SqliteInbox};
pub use registry::{SessionsFile, StoreError};
pub use webhooks::SqliteWebhooks;

use super::StorageError;

/// How long a statement waits for another connection's write lock.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a SQLite file could not be opened as a store.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("journal_mode is {0}, not wal")]
    NotWal(String),
    /// A newer build's schema.
    #[error("{0}")]
    Incompatible(String),
}

/// Opens (creating) `path`, 0600 before SQLite touches it so that its `-wal` and `-shm` files get
/// the same mode, in WAL mode with `synchronous=FULL` (a commit survives power loss, not only a
/// crash of the process) and a busy timeout.
pub(crate) fn open(path: &Path) -> Result<Connection, OpenError> {
    crate::files::private_file(path)?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal(mode));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl From<rusqlite::Error> for StorageError {
    fn from(error: rusqlite::Error) -> StorageError {
        match error {
            // Another connection held the lock past the busy timeout: try again later.
            rusqlite::Error::SqliteFailure(e, _)
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
            {
                StorageError::Unavailable(error.to_string())
            }
            other => StorageError::failed(other),
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(error: std::io::Error) -> StorageError {
        StorageError::failed(error)
    }
}
