//! The inbox in `DATA_DIR/inbox.db`, with the files under `DATA_DIR/media/` (0700 folders, 0600
//! files).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::{ChatSummary, IncomingMessage, SessionId};
use crate::storage::inbox::summary;
use crate::storage::sqlite::export;
use crate::storage::transfer::{Cell, Rows};
use crate::storage::{InboxStore, MAX_PAGE, Page, StorageError, int, now_ms};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS incoming (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    chat        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    timestamp   INTEGER NOT NULL,
    record      TEXT    NOT NULL,
    media_file  TEXT,
    stored_at   INTEGER NOT NULL,
    UNIQUE (session_id, message_id)
) STRICT;
CREATE INDEX IF NOT EXISTS incoming_by_chat ON incoming (session_id, chat, seq);
CREATE INDEX IF NOT EXISTS incoming_by_id ON incoming (message_id);
CREATE TABLE IF NOT EXISTS chat_reads (
    session_id  TEXT    NOT NULL,
    chat        TEXT    NOT NULL,
    read_seq    INTEGER NOT NULL,
    PRIMARY KEY (session_id, chat)
) STRICT, WITHOUT ROWID;
";

/// Cheap to clone.
#[derive(Clone)]
pub struct SqliteInbox {
    conn: Arc<Mutex<Connection>>,
    media_dir: PathBuf,
}

impl std::fmt::Debug for SqliteInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteInbox").field("media_dir", &self.media_dir).finish_non_exhaustive()
    }
}

impl SqliteInbox {
    /// Opens (creating) `dir/inbox.db` and `dir/media/`.
    pub fn open(dir: &Path) -> Result<SqliteInbox, super::OpenError> {
        crate::files::private_dir(dir)?;
        let conn = super::open(&dir.join("inbox.db"))?;
        conn.execute_batch(SCHEMA)?;
        let media_dir = dir.join("media");
        crate::files::private_dir(&media_dir)?;
        Ok(SqliteInbox { conn: Arc::new(Mutex::new(conn)), media_dir })
    }

    /// Runs `op` on the connection, on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // Statements leave no half-done state behind a panic: a poisoned lock is usable.
            let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            op(&conn)
        })
        .await
        .map_err(|_| StorageError::Failed("inbox task stopped".into()))?
    }
}

/// The inbox as `whatsapp-gateway migrate` copies it.
#[derive(Debug, Default)]
pub struct InboxExport {
    /// `session_id, message_id, chat, kind, timestamp, record, stored_at, file` in the order
    /// they were stored; `file` holds the bytes of a kept file.
    pub messages: Rows,
    /// `session_id, chat, message_id`: each chat's read mark, as the last message it covers.
    pub reads: Rows,
    /// Media files named by a row but no longer on disk.
    pub missing_files: usize,
}

impl SqliteInbox {
    /// Everything in `dir/inbox.db` and `dir/media/`, read without changing anything; empty when
    /// there is no inbox there.
    pub async fn export(dir: &Path) -> Result<InboxExport, StorageError> {
        let (path, media_dir) = (dir.join("inbox.db"), dir.join("media"));
        let read = tokio::task::spawn_blocking(move || {
            let Some(conn) = export::open_read_only(&path)? else { return Ok(InboxExport::default()) };
            let listed = export::select(
                &conn,
                "SELECT session_id, message_id, chat, kind, timestamp, record, stored_at, media_file \
                 FROM incoming ORDER BY seq",
                [],
            )?;
            let mut messages =
                Rows::new(&["session_id", "message_id", "chat", "kind", "timestamp", "record", "stored_at", "file"]);
            let mut missing_files = 0;
            for mut row in listed.rows {
                if let Some(Cell::Text(relative)) = row.pop() {
                    match std::fs::read(media_dir.join(relative)) {
                        Ok(bytes) => row.push(Cell::Blob(bytes)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            missing_files += 1;
                            row.push(Cell::Null);
                        }
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    row.push(Cell::Null);
                }
                messages.rows.push(row);
            }
            let reads = export::select(
                &conn,
                "SELECT r.session_id, r.chat, (SELECT i.message_id FROM incoming i WHERE i.session_id = r.session_id \
                 AND i.chat = r.chat AND i.seq <= r.read_seq ORDER BY i.seq DESC LIMIT 1) AS message_id \
                 FROM chat_reads r ORDER BY r.session_id, r.chat",
                [],
            )?;
            Ok(InboxExport { messages, reads, missing_files })
        })
        .await;
        read.map_err(StorageError::failed)?
    }
}

#[async_trait]
impl InboxStore for SqliteInbox {
    async fn insert(&self, message: &IncomingMessage) -> Result<bool, StorageError> {
        let record = serde_json::to_string(message).map_err(StorageError::failed)?;
        let (session, id, chat, kind, timestamp) = (
            message.session_id.clone(),
            message.message_id.clone(),
            message.chat.clone(),
            message.kind.as_str(),
            message.timestamp,
        );
        self.with(move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO incoming (session_id, message_id, chat, kind, timestamp, record, stored_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![session, id, chat, kind, int(timestamp), record, int(now_ms())])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn update(&self, message: &IncomingMessage, file: Option<Bytes>) -> Result<(), StorageError> {
        let record = serde_json::to_string(message).map_err(StorageError::failed)?;
        let (session, id) = (message.session_id.clone(), message.message_id.clone());
        let media_dir = self.media_dir.clone();
        self.with(move |conn| {
            let relative = match file {
                Some(bytes) => {
                    let relative = format!("{session}/{}", file_name_of(&id));
                    write_private(&media_dir.join(&relative), &bytes)?;
                    Some(relative)
                }
                None => None,
            };
            conn.prepare_cached(
                "UPDATE incoming SET record = ?3, media_file = COALESCE(?4, media_file) \
                 WHERE session_id = ?1 AND message_id = ?2",
            )?
            .execute(params![session, id, record, relative])?;
            Ok(())
        })
        .await
    }

    async fn list(
        &self,
        session: &SessionId,
        chat: Option<&str>,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Page, StorageError> {
        let session = session.as_str().to_owned();
        let chat = chat.map(str::to_owned);
        let limit = limit.clamp(1, MAX_PAGE);
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, record FROM incoming WHERE session_id = ?1 AND (?2 IS NULL OR chat = ?2) \
                 AND seq < ?3 ORDER BY seq DESC LIMIT ?4",
            )?;
            let before = before.map_or(i64::MAX, int);
            let rows = stmt.query_map(params![session, chat, before, (limit + 1) as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut items = Vec::new();
            let mut last_seq = None;
            for row in rows {
                let (seq, record) = row?;
                if items.len() == limit {
                    return Ok(Page { items, next: last_seq });
                }
                if let Ok(message) = serde_json::from_str(&record) {
                    items.push(message);
                }
                last_seq = u64::try_from(seq).ok();
            }
            Ok(Page { items, next: None })
        })
        .await
    }

    async fn chats(&self, session: &SessionId) -> Result<Vec<ChatSummary>, StorageError> {
        let session = session.as_str().to_owned();
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT i.chat, MAX(i.seq), \
                        SUM(CASE WHEN i.seq > COALESCE(r.read_seq, 0) THEN 1 ELSE 0 END) \
                 FROM incoming i LEFT JOIN chat_reads r ON r.session_id = i.session_id AND r.chat = i.chat \
                 WHERE i.session_id = ?1 GROUP BY i.chat ORDER BY MAX(i.seq) DESC",
            )?;
            let rows = stmt
                .query_map([&session], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut chats = Vec::with_capacity(rows.len());
            let mut latest = conn.prepare_cached("SELECT record FROM incoming WHERE seq = ?1")?;
            for (chat, seq, unread) in rows {
                let record: String = latest.query_row([seq], |r| r.get(0))?;
                chats.push(summary(chat, serde_json::from_str(&record).ok(), unread));
            }
            Ok(chats)
        })
        .await
    }

    async fn chat_starts(&self, session: &SessionId) -> Result<HashMap<String, u64>, StorageError> {
        let session = session.as_str().to_owned();
        self.with(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT chat, MIN(timestamp) FROM incoming WHERE session_id = ?1 GROUP BY chat")?;
            let rows = stmt.query_map([&session], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut starts = HashMap::new();
            for row in rows {
                let (chat, at) = row?;
                starts.insert(chat, u64::try_from(at).unwrap_or_default());
            }
            Ok(starts)
        })
        .await
    }

    async fn mark_read(&self, session: &SessionId, chat: &str) -> Result<Option<Vec<IncomingMessage>>, StorageError> {
        let (session, chat) = (session.as_str().to_owned(), chat.to_owned());
        self.with(move |conn| {
            let latest: Option<i64> = conn
                .prepare_cached("SELECT MAX(seq) FROM incoming WHERE session_id = ?1 AND chat = ?2")?
                .query_row(params![session, chat], |r| r.get(0))?;
            let Some(latest) = latest else { return Ok(None) };
            let read_seq: i64 = conn
                .prepare_cached("SELECT read_seq FROM chat_reads WHERE session_id = ?1 AND chat = ?2")?
                .query_row(params![session, chat], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            let unread = conn
                .prepare_cached(
                    "SELECT record FROM incoming WHERE session_id = ?1 AND chat = ?2 AND seq > ?3 ORDER BY seq",
                )?
                .query_map(params![session, chat, read_seq], |r| r.get::<_, String>(0))?
                .filter_map(|r| r.ok().and_then(|record| serde_json::from_str(&record).ok()))
                .collect();
            conn.prepare_cached(
                "INSERT INTO chat_reads (session_id, chat, read_seq) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (session_id, chat) DO UPDATE SET read_seq = MAX(read_seq, excluded.read_seq)",
            )?
            .execute(params![session, chat, latest])?;
            Ok(Some(unread))
        })
        .await
    }

    async fn get(&self, message_id: &str) -> Result<Option<IncomingMessage>, StorageError> {
        let id = message_id.to_owned();
        self.with(move |conn| {
            let record: Option<String> = conn
                .prepare_cached("SELECT record FROM incoming WHERE message_id = ?1 ORDER BY seq DESC LIMIT 1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            Ok(record.and_then(|record| serde_json::from_str(&record).ok()))
        })
        .await
    }

    async fn file(&self, message_id: &str) -> Result<Option<Bytes>, StorageError> {
        let id = message_id.to_owned();
        let media_dir = self.media_dir.clone();
        self.with(move |conn| {
            let file: Option<Option<String>> = conn
                .prepare_cached("SELECT media_file FROM incoming WHERE message_id = ?1 ORDER BY seq DESC LIMIT 1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            let Some(file) = file.flatten() else { return Ok(None) };
            match std::fs::read(media_dir.join(file)) {
                Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn prune(&self, cutoff_ms: u64) -> Result<usize, StorageError> {
        let media_dir = self.media_dir.clone();
        self.with(move |conn| {
            let files: Vec<String> = conn
                .prepare_cached("SELECT media_file FROM incoming WHERE stored_at < ?1 AND media_file IS NOT NULL")?
                .query_map([int(cutoff_ms)], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let deleted =
                conn.prepare_cached("DELETE FROM incoming WHERE stored_at < ?1")?.execute([int(cutoff_ms)])?;
            for file in files {
                if let Err(e) = std::fs::remove_file(media_dir.join(&file))
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(file, error = %e, "could not delete an expired file");
                }
            }
            Ok(deleted)
        })
        .await
    }
}

/// A message id as a file name: only `A-Z a-z 0-9 _ -`, never starting with `.`.
fn file_name_of(message_id: &str) -> String {
    let clean: String =
        message_id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') { c } else { '_' }).collect();
    if clean.is_empty() { "_".into() } else { clean }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        crate::files::private_dir(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
