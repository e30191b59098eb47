//! The SQLite journal ([`SqliteJournal`]): the durable record of every accepted message in
//! `DATA_DIR`, so that a 202 survives a crash.
//!
//! On disk, under the journal directory (mode 0700):
//!
//! * `journal.db`: SQLite in WAL mode with `synchronous=FULL`. One row per message (status,
//!   attempts, last error, times) in acceptance order, plus the idempotency keys.
//! * `segments/<n>.seg`: the PDF of every message not yet in a final state, appended to shared
//!   segment files (`segments`). PDFs stay out of the database (a large blob per commit is what
//!   makes SQLite slow), but they are group-committed like the rows: the writer syncs each batch's
//!   segments once, before the `COMMIT` of the rows that point into them. A segment is deleted
//!   once every message in it is final.
//! * `outbox/<message_id>.pdf`: one file per PDF, as schema version 1 stored them. Journals made
//!   by that version still have their pending PDFs there; they are read and deleted as before,
//!   and nothing new is written there.
//! * `journal.lock`: held (`flock`) while open, so two processes never share a journal.
//!
//! Writes go through one writer thread that commits many requests per fsync (`writer`); reads
//! use their own connection, which WAL lets run beside the writer. [`SqliteJournal::open`] repairs what
//! a crash can leave: PDFs and segments without a row are deleted, rows whose PDF is missing are
//! failed.

mod outbox;
mod recover;
mod segments;
mod store;
mod writer;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::domain::MessageId;
use crate::domain::now_ms;
pub use crate::storage::journal::{
    Accepted, DeliveryStatus, IDEMPOTENCY_RETENTION, IdempotencyKey, JournalError, JournalStats, JournalStore,
    MessageRecord, NewMessage, PDF_MISSING, Pruned, StatusEvent, StatusEventsGuard,
};
use crate::storage::sqlite::export;
use crate::storage::transfer::Rows;
use outbox::Outbox;
use segments::Segments;
use store::{NewRow, Stored};
use writer::{Command, Counters, Files, Reply};

/// Size of the write that tells whether a journal that failed can be written again: a small PDF.
pub const PROBE_BYTES: usize = 64 * 1024;

/// Handle to the journal: cheap to clone, all clones share one writer thread and one read
/// connection. Dropping the last clone stops the writer once its queue is empty (and waits for
/// it, so the directory can be reopened right away).
#[derive(Clone)]
pub struct SqliteJournal {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` only while dropping: closing it is what stops the writer.
    commands: Option<mpsc::Sender<Command>>,
    writer: Option<thread::JoinHandle<()>>,
    reader: Arc<Mutex<Connection>>,
    outbox: Outbox,
    segments: Segments,
    counters: Arc<Counters>,
    /// Holds the directory's `flock` for as long as the journal is open.
    _lock: std::fs::File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("journal writer thread panicked");
        }
    }
}

impl std::fmt::Debug for SqliteJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJournal").field("outbox", &self.inner.outbox).finish_non_exhaustive()
    }
}

impl SqliteJournal {
    /// Opens (creating if needed) the journal in `dir`, repairs what a crash left behind, and
    /// starts the writer thread. Blocking: call it at start-up, before serving.
    pub fn open(dir: &Path) -> Result<SqliteJournal, JournalError> {
        outbox::create_private_dir(dir)?;
        let lock = recover::lock_dir(dir)?;
        let outbox = Outbox::create(dir.join("outbox"))?;
        let db_path = dir.join("journal.db");
        let conn = store::open(&db_path)?;
        store::init_schema(&conn)?;
        let segments = recover::recover(&conn, &outbox, dir.join("segments"))?;
        let reader = store::open(&db_path)?;
        reader.pragma_update(None, "query_only", true)?;

        let (commands, receiver) = mpsc::channel(writer::QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        let files = Files { outbox: outbox.clone(), segments: segments.clone() };
        let writer = writer::spawn(conn, files, receiver, Arc::clone(&counters))?;
        Ok(SqliteJournal {
            inner: Arc::new(Inner {
                commands: Some(commands),
                writer: Some(writer),
                reader: Arc::new(Mutex::new(reader)),
                outbox,
                segments,
                counters,
                _lock: lock,
            }),
        })
    }

    /// Stores a message durably: when this returns `Ok(Accepted::New)`, its content and the row
    /// survive a crash or power loss. Replays and key conflicts store nothing.
    ///
    /// Cancel-safe as far as the disk goes: once called, the write runs to its end even if this
    /// future is dropped, and no stray file is left. A message can therefore be committed
    /// without its caller learning it; [`SqliteJournal::pending`] returns it at the next start.
    pub async fn accept(&self, message: NewMessage) -> Result<Accepted, JournalError> {
        if !outbox::is_valid_message_id(&message.message_id) {
            return Err(JournalError::InvalidMessageId);
        }
        let commands = self.commands()?.clone();
        let segments = self.inner.segments.clone();
        let (reply, answer) = oneshot::channel();
        // The write and the hand-over to the writer happen on one blocking task, so that
        // dropping this future cannot strand written bytes between the two.
        let handed_over = tokio::task::spawn_blocking(move || {
            let content = &message.content;
            let (segment, location) = segments.write(&content.payload())?;
            let row = NewRow {
                message_id: message.message_id,
                session_id: message.session_id.as_str().to_owned(),
                to: message.to.digits().to_owned(),
                kind: content.kind(),
                file_name: content.file_name().map(|f| f.as_str().to_owned()).unwrap_or_default(),
                mimetype: content.mimetype().map(|m| m.as_str().to_owned()),
                caption: content.caption().map(str::to_owned),
                preview: content.preview(),
                ptt: content.ptt(),
                size: location.len,
                idempotency: message.idempotency,
                location,
            };
            commands.blocking_send(Command::Accept { row: Box::new(row), segment, reply }).map_err(|_| {
                segments.give_back(&location);
                JournalError::Closed
            })
        })
        .await
        .map_err(|_| JournalError::Closed)?;
        if let Err(error) = handed_over {
            if matches!(error, JournalError::DiskFull | JournalError::Io(_)) {
                // Readiness reports it until a write works again.
                self.inner.counters.failing.store(true, Ordering::Relaxed);
            }
            return Err(error);
        }
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// Moves a message to `status` and returns `true`, or returns `false` and changes nothing
    /// if that is not a forward move (see [`DeliveryStatus::can_move_to`]) or the id is unknown
    /// (receipts for messages sent from the phone, or pruned ones). `last_error`, when given,
    /// replaces the stored one. Reaching a final status deletes the PDF.
    pub async fn set_status(
        &self,
        message_id: &MessageId,
        status: DeliveryStatus,
        last_error: Option<String>,
    ) -> Result<bool, JournalError> {
        let message_id = message_id.as_str().to_owned();
        self.request(|reply| Command::SetStatus { message_id, status, last_error, reply }).await
    }

    /// Counts one more send attempt (and its error, if given) and returns the new count.
    /// [`JournalError::NotFound`] for an unknown id.
    pub async fn record_attempt(&self, message_id: &MessageId, error: Option<String>) -> Result<u32, JournalError> {
        let message_id = message_id.as_str().to_owned();
        self.request(|reply| Command::RecordAttempt { message_id, error, reply }).await
    }

    /// Every message row in acceptance order (without its bytes: see
    /// [`SqliteJournal::read_payload`]), every idempotency key and every `message.status` event
    /// not yet handed over, as the shared store's tables name their columns: what
    /// `whatsapp-gateway migrate` copies.
    pub async fn export(&self) -> Result<(Rows, Rows, Rows), JournalError> {
        self.read(|conn| {
            let messages = export::select(
                conn,
                "SELECT message_id, session_id, recipient, kind, NULLIF(file_name, '') AS file_name, \
                 COALESCE(mimetype, CASE WHEN kind = 'document' THEN ?1 END) AS mimetype, caption, preview, ptt, \
                 size, status, attempts, last_error, created_at, updated_at FROM messages ORDER BY seq",
                [store::LEGACY_MIMETYPE],
            )?;
            let keys = export::select(
                conn,
                "SELECT key, fingerprint, message_id, created_at FROM idempotency_keys ORDER BY created_at, key",
                [],
            )?;
            let events = export::select(
                conn,
                "SELECT event_id, message_id, session_id, status, kind, last_error, at FROM status_events ORDER BY seq",
                [],
            )?;
            Ok((messages, keys, events))
        })
        .await
    }

    /// One message, `None` if unknown.
    pub async fn get(&self, message_id: &MessageId) -> Result<Option<MessageRecord>, JournalError> {
        let message_id = message_id.as_str().to_owned();
        self.read(move |conn| store::get(conn, &message_id)).await
    }

    /// The messages of `session` (to `recipient` if given) accepted before the cursor `before`,
    /// newest first, at most `limit`, each with its cursor.
    pub async fn by_session(
        &self,
        session: &str,
        recipient: Option<String>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, MessageRecord)>, JournalError> {
        let session = session.to_owned();
        let before = before.map_or(i64::MAX, store::int);
        self.read(move |conn| {
            let rows = store::by_session(conn, &session, recipient.as_deref(), before, limit)?;
            Ok(rows.into_iter().map(|(seq, record)| (u64::try_from(seq).unwrap_or(0), record)).collect())
        })
        .await
    }

    /// Every `queued` or `sending` message in acceptance order: what to rebuild the queue from.
    /// Only the rows are loaded; each PDF stays on disk, checked to be there but not read (see
    /// [`SqliteJournal::read_payload`]). A message whose PDF has vanished is marked failed
    /// ([`PDF_MISSING`]) and left out.
    pub async fn pending(&self) -> Result<Vec<MessageRecord>, JournalError> {
        let outbox = self.inner.outbox.clone();
        let segments = self.inner.segments.clone();
        let (found, missing) = self
            .read(move |conn| {
                let mut found = Vec::new();
                let mut missing = Vec::new();
                for (record, stored) in store::open_messages(conn)? {
                    let present = match &stored {
                        Stored::Outbox => outbox.contains(&record.message_id)?,
                        Stored::Segment(location) => segments.holds(location)?,
                    };
                    if present {
                        found.push(record);
                    } else {
                        missing.push(record.message_id);
                    }
                }
                Ok((found, missing))
            })
            .await?;
        for message_id in missing {
            self.fail_missing(message_id).await?;
        }
        Ok(found)
    }

    /// Marks a pending message whose PDF is gone as failed ([`PDF_MISSING`]).
    async fn fail_missing(&self, message_id: String) -> Result<(), JournalError> {
        // Also covers a message that became final (and lost its file) between the query and the
        // check: that move would be backwards, so it is ignored.
        let id = MessageId::from_stored(message_id.as_str());
        if self.set_status(&id, DeliveryStatus::Failed, Some(PDF_MISSING.to_owned())).await? {
            tracing::warn!(%message_id, "pending message has no pdf: marked failed");
        }
        Ok(())
    }

    /// The content of a message still to send (the file, or the text as UTF-8), read on the
    /// blocking pool; `None` when it is gone
    /// (the message is final or unknown, or its file was removed behind our back), and
    /// [`JournalError::Damaged`] when the bytes on disk fail their checksum. The caller owns
    /// the bytes: the journal keeps no copy in memory.
    pub async fn read_payload(&self, message_id: &MessageId) -> Result<Option<Bytes>, JournalError> {
        if !outbox::is_valid_message_id(message_id.as_str()) {
            return Ok(None);
        }
        let message_id = message_id.as_str().to_owned();
        let id = message_id.clone();
        let stored = match self.read(move |conn| store::stored(conn, &id)).await? {
            Some((status, stored)) if !status.is_final() => stored,
            _ => return Ok(None),
        };
        // Read off the reader's lock: status lookups need not wait for 100 KiB of disk.
        let outbox = self.inner.outbox.clone();
        let segments = self.inner.segments.clone();
        tokio::task::spawn_blocking(move || match stored {
            Stored::Outbox => Ok(outbox.read(&message_id)?),
            Stored::Segment(location) => segments.read(&location),
        })
        .await
        .map_err(|_| JournalError::Closed)?
    }

    /// Deletes idempotency keys older than `idempotency_older_than` (never younger than
    /// [`IDEMPOTENCY_RETENTION`]) and finished messages not updated for `finished_older_than`.
    pub async fn prune(
        &self,
        idempotency_older_than: Duration,
        finished_older_than: Duration,
    ) -> Result<Pruned, JournalError> {
        let now = now_ms();
        let before = |age: Duration| now.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        let keys_before = before(idempotency_older_than.max(IDEMPOTENCY_RETENTION));
        let finished_before = before(finished_older_than);
        self.request(|reply| Command::Prune { keys_before, finished_before, reply }).await
    }

    /// The `message.status` events recorded after `after_seq`, oldest first (at most `limit`).
    pub async fn status_events(&self, after_seq: i64, limit: usize) -> Result<Vec<StatusEvent>, JournalError> {
        self.read(move |conn| store::status_events(conn, after_seq, limit)).await
    }

    /// Deletes the `message.status` events `seqs`, once they are handed over.
    pub async fn delete_status_events(&self, seqs: &[i64]) -> Result<u64, JournalError> {
        let seqs = seqs.to_vec();
        self.request(|reply| Command::DeleteStatusEvents { seqs, reply }).await
    }

    /// While the guard lives, status moves record their `message.status` events (nobody
    /// listening, none are written: they would cost every accept a row).
    pub fn want_status_events(&self) -> StatusEventsGuard {
        StatusEventsGuard::new(&self.inner.counters.status_listeners)
    }

    /// Resolves after the next committed write (new `message.status` events may be there).
    pub async fn committed(&self) {
        self.inner.counters.committed.notified().await;
    }

    /// How much the writer has batched so far.
    pub fn stats(&self) -> JournalStats {
        let counters = &self.inner.counters;
        JournalStats {
            batches: counters.batches.load(Ordering::Relaxed),
            commands: counters.commands.load(Ordering::Relaxed),
            largest_batch: counters.largest_batch.load(Ordering::Relaxed),
        }
    }

    /// For `/health/ready`: false when the writer has stopped, or when the latest write failed
    /// (a full disk, an I/O error) and a probe write of [`PROBE_BYTES`] still fails. The probe
    /// runs only after a failure, so a recovered disk is seen even if no request comes.
    pub async fn is_writable(&self) -> bool {
        let running = self.inner.commands.as_ref().is_some_and(|commands| !commands.is_closed());
        if !running {
            return false;
        }
        if !self.inner.counters.failing.load(Ordering::Relaxed) {
            return true;
        }
        let outbox = self.inner.outbox.clone();
        let segments = self.inner.segments.clone();
        let writable = tokio::task::spawn_blocking(move || {
            segments.has_room(PROBE_BYTES as u64).unwrap_or(false) && outbox.probe(PROBE_BYTES).is_ok()
        })
        .await
        .unwrap_or(false);
        if writable {
            self.inner.counters.failing.store(false, Ordering::Relaxed);
        }
        writable
    }

    fn commands(&self) -> Result<&mpsc::Sender<Command>, JournalError> {
        self.inner.commands.as_ref().ok_or(JournalError::Closed)
    }

    /// Sends one command to the writer and waits for its (post-commit) answer.
    async fn request<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.commands()?.send(command(reply)).await.map_err(|_| JournalError::Closed)?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// Runs `op` on the read connection, on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let reader = Arc::clone(&self.inner.reader);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave the connection half-changed (it only
            // reads), so a poisoned lock is still usable.
            let conn = reader.lock().unwrap_or_else(PoisonError::into_inner);
            op(&conn)
        })
        .await
        .map_err(|_| JournalError::Closed)?
    }

    /// Runs `op` on the write connection inside a batch (tests only).
    #[cfg(test)]
    async fn exec(
        &self,
        op: impl FnOnce(&Connection) -> Result<(), JournalError> + Send + 'static,
    ) -> Result<(), JournalError> {
        self.request(|reply| Command::Exec { op: Box::new(op), reply }).await
    }
}

/// The SQLite journal behind the storage trait: the same calls, the same guarantees.
#[async_trait::async_trait]
impl JournalStore for SqliteJournal {
    async fn accept(&self, message: NewMessage) -> Result<Accepted, JournalError> {
        SqliteJournal::accept(self, message).await
    }

    async fn set_status(
        &self,
        message_id: &MessageId,
        status: DeliveryStatus,
        last_error: Option<String>,
    ) -> Result<bool, JournalError> {
        SqliteJournal::set_status(self, message_id, status, last_error).await
    }

    async fn record_attempt(&self, message_id: &MessageId, error: Option<String>) -> Result<u32, JournalError> {
        SqliteJournal::record_attempt(self, message_id, error).await
    }

    async fn get(&self, message_id: &MessageId) -> Result<Option<MessageRecord>, JournalError> {
        SqliteJournal::get(self, message_id).await
    }

    async fn by_session(
        &self,
        session: &str,
        recipient: Option<String>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, MessageRecord)>, JournalError> {
        SqliteJournal::by_session(self, session, recipient, before, limit).await
    }

    async fn pending(&self) -> Result<Vec<MessageRecord>, JournalError> {
        SqliteJournal::pending(self).await
    }

    async fn read_payload(&self, message_id: &MessageId) -> Result<Option<Bytes>, JournalError> {
        SqliteJournal::read_payload(self, message_id).await
    }

    async fn prune(
        &self,
        idempotency_older_than: Duration,
        finished_older_than: Duration,
    ) -> Result<Pruned, JournalError> {
        SqliteJournal::prune(self, idempotency_older_than, finished_older_than).await
    }

    async fn status_events(&self, after_seq: i64, limit: usize) -> Result<Vec<StatusEvent>, JournalError> {
        SqliteJournal::status_events(self, after_seq, limit).await
    }

    async fn delete_status_events(&self, seqs: &[i64]) -> Result<u64, JournalError> {
        SqliteJournal::delete_status_events(self, seqs).await
    }

    fn want_status_events(&self) -> StatusEventsGuard {
        SqliteJournal::want_status_events(self)
    }

    async fn committed(&self) {
        SqliteJournal::committed(self).await;
    }

    async fn is_writable(&self) -> bool {
        SqliteJournal::is_writable(self).await
    }
}
