//! The inbox: everything the linked numbers receive, stored in `DATA_DIR/inbox.db` (SQLite) with
//! media files under `DATA_DIR/media/` (0700 folders, 0600 files), listed by the API and pushed
//! on the event bus.
//!
//! A message is stored once: WhatsApp redelivers what arrived while the gateway was down (and
//! may redeliver after a crash), and the `(session, message id)` key drops the repeats. Media is
//! downloaded and decrypted after the row is stored, within `INBOUND_MEDIA_MAX_BYTES`; a file
//! over it, or one that cannot be downloaded, is recorded without its bytes, with the reason.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::domain::{IncomingMessage, SessionId};
use crate::events::{EventBus, EventKind};
use crate::session::SessionManager;
use crate::session::upstream::{self, Inbound};
use crate::shutdown::Shutdown;

/// Received messages waiting to be stored before new ones are dropped (and counted).
pub(crate) const CHANNEL_CAPACITY: usize = 4096;

/// Longest a received file may take to download before it is recorded without its bytes.
const DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Most items one list call returns.
pub const MAX_PAGE: usize = 200;

/// Why the inbox failed.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("inbox database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("inbox files: {0}")]
    Io(#[from] std::io::Error),
    #[error("inbox task stopped")]
    Closed,
}

/// A page of messages, newest first.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<IncomingMessage>,
    /// Pass as `before` for the next page; `None` on the last one.
    pub next: Option<u64>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    conn: Arc<Mutex<Connection>>,
    media_dir: PathBuf,
    max_media_bytes: u64,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("media_dir", &self.media_dir).finish_non_exhaustive()
    }
}

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

/// A chat as `GET /api/sessions/{id}/chats` lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatSummary {
    /// The chat's JID.
    pub chat: String,
    /// The phone number of its latest sender, when known.
    pub from: Option<String>,
    /// The latest sender's WhatsApp name.
    pub push_name: Option<String>,
    /// When its latest message was sent, unix ms.
    pub last_message_at: u64,
    /// Messages received since the chat was last marked read.
    pub unread_count: u64,
}

impl Inbox {
    /// Opens (creating) `dir/inbox.db` and `dir/media/`.
    pub fn open(dir: &Path, max_media_bytes: u64) -> Result<Inbox, InboxError> {
        crate::files::private_dir(dir)?;
        let path = dir.join("inbox.db");
        crate::files::private_file(&path)?;
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        let media_dir = dir.join("media");
        crate::files::private_dir(&media_dir)?;
        Ok(Inbox { conn: Arc::new(Mutex::new(conn)), media_dir, max_media_bytes })
    }

    /// Runs `op` on the connection, on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, InboxError> + Send + 'static,
    ) -> Result<T, InboxError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // Statements leave no half-done state behind a panic: a poisoned lock is usable.
            let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            op(&conn)
        })
        .await
        .map_err(|_| InboxError::Closed)?
    }

    /// Stores `message` unless it is already stored; `true` when it is new.
    pub async fn insert(&self, message: &IncomingMessage) -> Result<bool, InboxError> {
        let record = serde_json::to_string(message).map_err(|e| InboxError::Io(e.into()))?;
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
                .execute(params![session, id, chat, kind, int(timestamp), record, int(crate::journal::now_ms())])?;
            Ok(inserted == 1)
        })
        .await
    }

    /// Replaces the stored record of a message (its media details changed) and its file name.
    async fn update(&self, message: &IncomingMessage, media_file: Option<String>) -> Result<(), InboxError> {
        let record = serde_json::to_string(message).map_err(|e| InboxError::Io(e.into()))?;
        let (session, id) = (message.session_id.clone(), message.message_id.clone());
        self.with(move |conn| {
            conn.prepare_cached(
                "UPDATE incoming SET record = ?3, media_file = ?4 WHERE session_id = ?1 AND message_id = ?2",
            )?
            .execute(params![session, id, record, media_file])?;
            Ok(())
        })
        .await
    }

    /// The messages of `session` (of one `chat` if given), newest first, older than `before`.
    pub async fn list(
        &self,
        session: &SessionId,
        chat: Option<String>,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Page, InboxError> {
        let session = session.as_str().to_owned();
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

    /// Deletes the messages stored before `older_than` ago, and their files; returns how many.
    pub async fn prune(&self, older_than: std::time::Duration) -> Result<usize, InboxError> {
        let cutoff = crate::journal::now_ms().saturating_sub(u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX));
        let media_dir = self.media_dir.clone();
        self.with(move |conn| {
            let files: Vec<String> = conn
                .prepare_cached("SELECT media_file FROM incoming WHERE stored_at < ?1 AND media_file IS NOT NULL")?
                .query_map([int(cutoff)], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let deleted = conn.prepare_cached("DELETE FROM incoming WHERE stored_at < ?1")?.execute([int(cutoff)])?;
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

    /// The chats of `session`, most recent first.
    pub async fn chats(&self, session: &SessionId) -> Result<Vec<ChatSummary>, InboxError> {
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
                let last: Option<IncomingMessage> = serde_json::from_str(&record).ok();
                chats.push(ChatSummary {
                    chat,
                    from: last.as_ref().and_then(|m| m.from.clone()),
                    push_name: last.as_ref().and_then(|m| m.push_name.clone()),
                    last_message_at: last.as_ref().map_or(0, |m| m.timestamp),
                    unread_count: u64::try_from(unread).unwrap_or(0),
                });
            }
            Ok(chats)
        })
        .await
    }

    /// When each chat of `session` began: the send time of its oldest stored message, unix ms.
    pub async fn chat_starts(&self, session: &SessionId) -> Result<std::collections::HashMap<String, u64>, InboxError> {
        let session = session.as_str().to_owned();
        self.with(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT chat, MIN(timestamp) FROM incoming WHERE session_id = ?1 GROUP BY chat")?;
            let rows = stmt.query_map([&session], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut starts = std::collections::HashMap::new();
            for row in rows {
                let (chat, at) = row?;
                starts.insert(chat, u64::try_from(at).unwrap_or_default());
            }
            Ok(starts)
        })
        .await
    }

    /// Marks `chat` read up to its latest message; returns the ids (with their senders) that
    /// were unread, for read receipts. `None` if the chat has no messages.
    pub async fn mark_read(&self, session: &SessionId, chat: &str) -> Result<Option<Vec<IncomingMessage>>, InboxError> {
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
                .prepare_cached("SELECT record FROM incoming WHERE session_id = ?1 AND chat = ?2 AND seq > ?3")?
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

    /// A received message by id (the newest, should two sessions share an id).
    pub async fn get(&self, message_id: &str) -> Result<Option<(IncomingMessage, Option<PathBuf>)>, InboxError> {
        let id = message_id.to_owned();
        let media_dir = self.media_dir.clone();
        self.with(move |conn| {
            let row: Option<(String, Option<String>)> = conn
                .prepare_cached(
                    "SELECT record, media_file FROM incoming WHERE message_id = ?1 ORDER BY seq DESC LIMIT 1",
                )?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(row.and_then(|(record, file)| {
                let message = serde_json::from_str(&record).ok()?;
                Some((message, file.map(|f| media_dir.join(f))))
            }))
        })
        .await
    }

    /// Downloads, checks and keeps the file of a newly stored media message; records why not
    /// when it cannot.
    async fn fetch_media(&self, sessions: &SessionManager, inbound: &Inbound, message: &mut IncomingMessage) {
        let Some(media) = &inbound.media else { return };
        let Some(details) = message.media.as_mut() else { return };
        if details.size.is_some_and(|size| size > self.max_media_bytes) {
            details.error = Some(format!("over the size limit ({} bytes)", self.max_media_bytes));
            return;
        }
        let Some(client) = sessions.connected_client(&inbound.session) else {
            details.error = Some("the session disconnected before the file was downloaded".into());
            return;
        };
        // Messages are stored in order, one at a time: a stuck download must not hold the rest.
        let bytes = match tokio::time::timeout(DOWNLOAD_TIMEOUT, upstream::download(&client, media)).await {
            Ok(Ok(bytes)) => Bytes::from(bytes),
            Ok(Err(e)) => {
                details.error = Some(format!("download failed: {e}"));
                return;
            }
            Err(_) => {
                details.error = Some(format!("download took longer than {} s", DOWNLOAD_TIMEOUT.as_secs()));
                return;
            }
        };
        if bytes.len() as u64 > self.max_media_bytes {
            details.error = Some(format!("over the size limit ({} bytes)", self.max_media_bytes));
            return;
        }
        let sha256: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        let relative = format!("{}/{}", inbound.session, file_name_of(&message.message_id));
        let path = self.media_dir.join(&relative);
        let written = tokio::task::spawn_blocking({
            let bytes = bytes.clone();
            move || write_private(&path, &bytes)
        })
        .await;
        match written {
            Ok(Ok(())) => {
                details.size = Some(bytes.len() as u64);
                details.sha256 = Some(sha256);
                details.stored = true;
                if let Err(e) = self.update(message, Some(relative)).await {
                    tracing::error!(error = %e, "cannot record a downloaded file");
                }
            }
            Ok(Err(e)) => details.error = Some(format!("cannot store the file: {e}")),
            Err(_) => details.error = Some("cannot store the file".into()),
        }
    }
}

/// A message id as a file name: only `A-Z a-z 0-9 . _ -`, never starting with `.`.
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

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Deletes what is older than `retention` every hour, until shutdown.
pub(crate) async fn prune_periodically(inbox: Inbox, retention: std::time::Duration, shutdown: Shutdown) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match inbox.prune(retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired received messages deleted"),
            Err(e) => tracing::warn!(error = %e, "inbox prune failed"),
        }
    }
}

/// Stores what the sessions receive and pushes it, until shutdown.
pub(crate) async fn run(
    inbox: Inbox,
    mut inbound: mpsc::Receiver<Inbound>,
    sessions: SessionManager,
    bus: EventBus,
    shutdown: Shutdown,
) {
    loop {
        let item = tokio::select! {
            () = shutdown.cancelled() => return,
            item = inbound.recv() => item,
        };
        let Some(item) = item else { return };
        let started = Instant::now();
        let mut message = item.message.clone();
        // A sender known only by its LID: the client's LID↔phone mapping may know its number.
        if message.from.is_none()
            && let Some(lid) = message.from_lid.clone()
            && let Some(client) = sessions.connected_client(&item.session)
        {
            message.from = upstream::phone_for_lid(&client, &lid).await;
        }
        match inbox.insert(&message).await {
            Ok(true) => {}
            Ok(false) => continue, // a redelivery: stored once already
            Err(e) => {
                tracing::error!(session = %item.session, error = %e, "cannot store a received message");
                continue;
            }
        }
        if message.kind.has_media() {
            inbox.fetch_media(&sessions, &item, &mut message).await;
            if message.media.as_ref().is_some_and(|m| m.error.is_some())
                && let Err(e) = inbox.update(&message, None).await
            {
                tracing::error!(error = %e, "cannot record why a file was not kept");
            }
        }
        metrics::counter!(crate::metrics::INBOUND_STORED, "type" => message.kind.as_str()).increment(1);
        tracing::info!(session = %item.session, message_id = %message.message_id, kind = message.kind.as_str(), "message received");
        let data = serde_json::to_value(&message).unwrap_or_default();
        bus.publish(EventKind::MessageReceived, &message.session_id, data);
        metrics::histogram!(crate::metrics::INBOUND_LATENCY).record(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IncomingKind;

    fn message(id: &str, chat: &str) -> IncomingMessage {
        IncomingMessage {
            message_id: id.into(),
            session_id: "tienda".into(),
            direction: "in".into(),
            chat: chat.into(),
            from: Some("51987654321".into()),
            from_lid: None,
            push_name: None,
            timestamp: 1,
            kind: IncomingKind::Text,
            text: Some("hola".into()),
            caption: None,
            media: None,
            quoted_id: None,
            location: None,
            reaction: None,
            contact: None,
            summary: None,
        }
    }

    #[tokio::test]
    async fn stored_once_counted_unread_and_expired() {
        let dir = std::env::temp_dir().join(format!("wg-inbox-{}-{}", std::process::id(), crate::journal::now_ms()));
        let inbox = Inbox::open(&dir, 1024).expect("open");
        let session = SessionId::parse("tienda").expect("id");
        assert!(inbox.insert(&message("a", "c1")).await.expect("insert"));
        assert!(!inbox.insert(&message("a", "c1")).await.expect("again"), "a redelivery is stored once");
        assert!(inbox.insert(&message("b", "c1")).await.expect("insert"));
        assert!(inbox.insert(&message("c", "c2")).await.expect("insert"));
        let chats = inbox.chats(&session).await.expect("chats");
        let unread: Vec<(&str, u64)> = chats.iter().map(|c| (c.chat.as_str(), c.unread_count)).collect();
        assert_eq!(unread, [("c2", 1), ("c1", 2)]);
        assert_eq!(inbox.mark_read(&session, "c1").await.expect("read").map(|m| m.len()), Some(2));
        assert_eq!(inbox.chats(&session).await.expect("chats")[1].unread_count, 0);
        assert_eq!(inbox.mark_read(&session, "nobody").await.expect("read"), None);

        // Age one message by two days: a one-day retention deletes it alone.
        let day_ms = 86_400_000_u64;
        let old = int(crate::journal::now_ms() - 2 * day_ms);
        inbox
            .conn
            .lock()
            .expect("lock")
            .execute("UPDATE incoming SET stored_at = ?1 WHERE message_id = 'a'", [old])
            .expect("age");
        assert_eq!(inbox.prune(std::time::Duration::from_millis(day_ms)).await.expect("prune"), 1);
        assert!(inbox.get("a").await.expect("get").is_none());
        assert!(inbox.get("b").await.expect("get").is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
