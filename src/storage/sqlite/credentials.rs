//! Credentials on SQLite, as the gateway always kept them: one whatsapp-rust store per number in
//! `SESSIONS_DIR/<id>/whatsapp.db`, created 0600 in a 0700 folder before SQLite opens it (so its
//! `-wal` and `-shm` stay private too).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use whatsapp_rust::store::{SqliteStore, SqliteStoreConfig};

use crate::domain::SessionId;
use crate::storage::StorageError;
use crate::storage::credentials::{CredentialBackend, CredentialStore};
use crate::storage::sqlite::export;
use crate::storage::transfer::{CREDENTIAL_TABLES, Rows, quote};

/// File name of a session's SQLite store inside its folder.
pub const STORE_FILE: &str = "whatsapp.db";

/// SQLite page cache per session store, in KiB (whatsapp-rust's default is 512). A linked
/// store is a few hundred KiB that the OS page cache holds anyway; a full 512 KiB heap cache per
/// session was the largest share of an idle session's memory. `examples/bench_memory.rs`, 300
/// linked idle sessions: 793 KiB per session at 512, 572 at 128, 513 at 64, 478 at 32; at 1,000
/// sessions 740 at 512 and 418 at 32.
const STORE_CACHE_KIB: u32 = 32;

/// The store file and what SQLite keeps beside it.
const STORE_FILES: [&str; 4] = ["", "-wal", "-shm", "-journal"];

/// One folder per session under `SESSIONS_DIR`.
#[derive(Debug, Clone)]
pub struct SqliteCredentials {
    dir: PathBuf,
}

impl SqliteCredentials {
    /// Credentials under `sessions_dir` (`SESSIONS_DIR`).
    pub fn new(sessions_dir: impl Into<PathBuf>) -> SqliteCredentials {
        SqliteCredentials { dir: sessions_dir.into() }
    }

    /// The session's folder.
    pub fn folder(&self, session: &SessionId) -> PathBuf {
        self.dir.join(session.as_str())
    }

    fn store_path(&self, session: &SessionId) -> PathBuf {
        self.folder(session).join(STORE_FILE)
    }

    /// The session's rows of `table` (one of [`CREDENTIAL_TABLES`]' SQLite names), `columns`
    /// picked, without the device column; `None` when the session has no store or the store no
    /// such table. For `whatsapp-gateway migrate`, with no client running on the store.
    pub async fn export(
        &self,
        session: &SessionId,
        table: &'static str,
        columns: Vec<String>,
    ) -> Result<Option<Rows>, StorageError> {
        if !CREDENTIAL_TABLES.iter().any(|(name, _)| *name == table) {
            return Err(StorageError::Failed(format!("{table} is not a credentials table")));
        }
        let path = self.store_path(session);
        let read = tokio::task::spawn_blocking(move || {
            let Some(conn) = export::open_read_only(&path)? else { return Ok(None) };
            if !export::has_table(&conn, table)? {
                return Ok(None);
            }
            // whatsapp-rust keeps one device per store, id 1; its own row is `device.id`.
            let device = if table == "device" { "id" } else { "device_id" };
            let picked: Vec<String> = columns.iter().map(|c| quote(c)).collect();
            let sql = format!("SELECT {} FROM {} WHERE {device} = 1 ORDER BY rowid", picked.join(", "), quote(table));
            export::select(&conn, &sql, []).map(Some)
        })
        .await;
        read.map_err(StorageError::failed)?
    }
}

#[async_trait]
impl CredentialStore for SqliteCredentials {
    async fn backend(&self, session: &SessionId) -> Result<CredentialBackend, StorageError> {
        crate::files::private_dir(&self.folder(session))?;
        let path = self.store_path(session);
        // Created 0600 before SQLite opens it, so the store and its -wal/-shm stay private.
        crate::files::private_file(&path)?;
        let path = path.to_str().ok_or_else(|| StorageError::Failed("path is not UTF-8".into()))?;
        let config = SqliteStoreConfig { cache_size_kib: STORE_CACHE_KIB, ..SqliteStoreConfig::default() };
        let store = SqliteStore::with_config(path, config).await.map_err(StorageError::failed)?;
        Ok(Arc::new(store))
    }

    async fn has_credentials(&self, session: &SessionId) -> Result<bool, StorageError> {
        Ok(self.store_path(session).exists())
    }

    async fn wipe(&self, session: &SessionId) -> Result<(), StorageError> {
        // Every file is tried; the first failure is the answer. A client still holding the store
        // writes to a file that is no longer there: nothing it does brings the keys back.
        let mut failed = None;
        for suffix in STORE_FILES {
            let path = self.folder(session).join(format!("{STORE_FILE}{suffix}"));
            if let Err(e) = remove_file(&path) {
                failed.get_or_insert(StorageError::Failed(format!("cannot delete {}: {e}", path.display())));
            }
        }
        failed.map_or(Ok(()), Err)
    }

    fn location(&self, session: &SessionId) -> String {
        self.folder(session).display().to_string()
    }

    async fn remove(&self, session: &SessionId) -> Result<(), StorageError> {
        let folder = self.folder(session);
        // A whole tree: keep it off the async workers.
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&folder) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StorageError::Failed(format!("cannot delete {}: {e}", folder.display())))
            }
            _ => Ok(()),
        })
        .await;
        removed.map_err(StorageError::failed)?
    }
}

/// Deletes `path`; one that is not there is fine.
fn remove_file(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
