//! The embedded default: SQLite files under `DATA_DIR`, opened by one helper with the settings
//! every store needs, and the Node service's `sessions.config.json` as the registry.

mod credentials;
pub mod export;
mod inbox;
pub mod journal;
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

/// Process-wide SQLite settings for a process that holds one store per session. Call it first
/// thing in `main`, before anything opens a database: SQLite accepts global settings only
/// before its first use (a later call is refused with SQLITE_MISUSE and changes nothing).
///
/// It turns off SQLite's per-connection lookaside allocator (about 47 KiB each): with 1,000
/// session stores that was 418 → 373 KiB per linked idle session (`examples/bench_memory.rs`).
pub fn tune_sqlite_for_many_stores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config must not run concurrently with other SQLite calls; this runs
        // once, at start-up, before the process opens any database. Its only failure is
        // SQLITE_MISUSE when SQLite is already initialised, which leaves everything as it was.
        let rc = unsafe { rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_LOOKASIDE, 0i32, 0i32) };
        if rc != rusqlite::ffi::SQLITE_OK {
            tracing::debug!(rc, "SQLite was already initialised; lookaside left as it is");
        }
    });
}
