//! The message journal's store: every accepted message with its bytes until it is final, the
//! idempotency keys, and the `message.status` events written with the statuses they report.
//!
//! A 202 is answered only after [`JournalStore::accept`] returns: by then the message and its
//! bytes are committed (survive a crash or a power loss), on every backend.

mod error;
mod model;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::domain::{Lease, MessageId, SessionId};
pub use error::JournalError;
pub use model::{
    Accepted, DeliveryStatus, IdempotencyKey, JournalStats, MessageRecord, NewMessage, Pruned, StatusEvent,
};

/// Idempotency keys are kept at least this long; [`JournalStore::prune`] never removes younger
/// ones.
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// The `last_error` of a pending message whose bytes were gone (found by
/// [`JournalStore::pending`], or by the queue when [`JournalStore::read_payload`] finds nothing).
pub const PDF_MISSING: &str = "pdf missing";

/// Longest message id.
const MAX_MESSAGE_ID_LEN: usize = 128;

/// A message id can name a file (the SQLite journal's outbox does): 1–128 of
/// `A-Z a-z 0-9 . _ -`, not starting with `.` (so it is never `..`, never hidden, and never looks
/// like one of its temp files). Every backend accepts the same ids.
pub(crate) fn is_valid_message_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_MESSAGE_ID_LEN
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The durable record of accepted messages.
#[async_trait]
pub trait JournalStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a message durably as `queued`: when this returns `Ok(Accepted::New)`, its content
    /// and its row are committed. Replays and key conflicts store nothing. Once called, the write
    /// runs to its end even if the future is dropped: a message can be committed without its
    /// caller learning it, and [`JournalStore::pending`] returns it at the next start.
    async fn accept(&self, message: NewMessage) -> Result<Accepted, JournalError>;

    /// Moves a message to `status` and returns `true`, or returns `false` and changes nothing if
    /// that is not a forward move ([`DeliveryStatus::can_move_to`]) or the id is unknown.
    /// `last_error`, when given, replaces the stored one. Reaching a final status drops the bytes.
    async fn set_status(
        &self,
        message_id: &MessageId,
        status: DeliveryStatus,
        last_error: Option<String>,
    ) -> Result<bool, JournalError>;

    /// [`JournalStore::set_status`] by the gateway that runs the message's session in a fleet:
    /// only while `lease` is the session's live lease, checked in the move's own transaction (a
    /// claim by another gateway waits for it). [`JournalError::Fenced`], and nothing changed,
    /// when it is not. The embedded journal has no fleet and just moves it.
    async fn set_status_under(
        &self,
        message_id: &MessageId,
        status: DeliveryStatus,
        last_error: Option<String>,
        lease: &Lease,
    ) -> Result<bool, JournalError> {
        let _ = lease;
        self.set_status(message_id, status, last_error).await
    }

    /// Counts one more send attempt (and its error, if given) and returns the new count;
    /// [`JournalError::NotFound`] for an unknown id.
    async fn record_attempt(&self, message_id: &MessageId, error: Option<String>) -> Result<u32, JournalError>;

    /// One message, `None` if unknown.
    async fn get(&self, message_id: &MessageId) -> Result<Option<MessageRecord>, JournalError>;

    /// The messages of `session` (to `recipient` if given) accepted before the cursor `before`,
    /// newest first, at most `limit`, each with its cursor.
    async fn by_session(
        &self,
        session: &str,
        recipient: Option<String>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, MessageRecord)>, JournalError>;

    /// Every `queued` or `sending` message in acceptance order, without its bytes: what to
    /// rebuild the queue from. A message whose bytes are gone is failed ([`PDF_MISSING`]) and
    /// left out.
    async fn pending(&self) -> Result<Vec<MessageRecord>, JournalError>;

    /// [`JournalStore::pending`] of one session: what the gateway that runs it (in a fleet, the
    /// holder of its lease) has to send, whichever gateway accepted it.
    async fn pending_for(&self, session: &SessionId) -> Result<Vec<MessageRecord>, JournalError> {
        Ok(self.pending().await?.into_iter().filter(|r| r.session_id == session.as_str()).collect())
    }

    /// The content of a message still to send; `None` when it is final, unknown or gone, and
    /// [`JournalError::Damaged`] when the stored bytes fail their checksum.
    async fn read_payload(&self, message_id: &MessageId) -> Result<Option<Bytes>, JournalError>;

    /// Deletes idempotency keys older than `idempotency_older_than` (never younger than
    /// [`IDEMPOTENCY_RETENTION`]) and finished messages not updated for `finished_older_than`.
    async fn prune(
        &self,
        idempotency_older_than: Duration,
        finished_older_than: Duration,
    ) -> Result<Pruned, JournalError>;

    /// The `message.status` events recorded after `after_seq`, oldest first (at most `limit`).
    async fn status_events(&self, after_seq: i64, limit: usize) -> Result<Vec<StatusEvent>, JournalError>;

    /// Deletes the `message.status` events `seqs`, once they are handed over: exactly those,
    /// not every one up to the last. On a shared store an event with a lower `seq` may commit
    /// after a higher one was read, and it has not been handed over yet.
    async fn delete_status_events(&self, seqs: &[i64]) -> Result<u64, JournalError>;

    /// While the guard lives, status moves record their `message.status` events (nobody
    /// listening, none are written: they would cost every accept a row).
    fn want_status_events(&self) -> StatusEventsGuard;

    /// Resolves after the next committed write (new `message.status` events may be there).
    async fn committed(&self);

    /// For `/health/ready`: false when a write cannot succeed now (a full disk, a stopped
    /// writer, an unreachable database).
    async fn is_writable(&self) -> bool;
}

/// Keeps `message.status` events recorded (see [`JournalStore::want_status_events`]).
pub struct StatusEventsGuard {
    listeners: Arc<AtomicUsize>,
}

impl StatusEventsGuard {
    /// Counts one more listener on `listeners` until dropped.
    pub(crate) fn new(listeners: &Arc<AtomicUsize>) -> StatusEventsGuard {
        listeners.fetch_add(1, Ordering::AcqRel);
        StatusEventsGuard { listeners: Arc::clone(listeners) }
    }
}

impl Drop for StatusEventsGuard {
    fn drop(&mut self) {
        self.listeners.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for StatusEventsGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusEventsGuard")
    }
}
