//! The message journal in Postgres: a row per message with its bytes in the row (dropped when
//! the message is final), so that any gateway can send any accepted message. Each accept is one
//! transaction, committed with `synchronous_commit=on`; Postgres batches the WAL flushes of
//! concurrent commits itself, as the SQLite writer's group commit does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::Notify;

use crate::domain::{ContentKind, Lease, MessageId, SessionId, new_event_id};
use crate::storage::journal::{
    Accepted, DeliveryStatus, IDEMPOTENCY_RETENTION, JournalError, JournalStore, MessageRecord, NewMessage,
    PDF_MISSING, Pruned, StatusEvent, StatusEventsGuard, is_valid_message_id,
};
use crate::storage::{StorageError, int, now_ms};

/// The columns [`record`] reads, in its order.
const RECORD_COLUMNS: &str = "message_id, session_id, recipient, kind, file_name, mimetype, caption, preview, \
                              status, attempts, last_error, created_at, updated_at, size, ptt";

/// How many columns [`RECORD_COLUMNS`] names: the index of the first one after them.
const RECORD_COLUMN_COUNT: usize = 15;

/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgJournal {
    pool: PgPool,
    /// Listeners of `message.status` events in this process.
    listeners: Arc<AtomicUsize>,
    committed: Arc<Notify>,
}

impl PgJournal {
    pub(super) fn new(pool: PgPool) -> PgJournal {
        PgJournal { pool, listeners: Arc::default(), committed: Arc::new(Notify::new()) }
    }

    fn events(&self) -> bool {
        self.listeners.load(Ordering::Acquire) > 0
    }

    fn wrote(&self) {
        self.committed.notify_waiters();
    }

    async fn accept_in(&self, message: &NewMessage) -> Result<Accepted, JournalError> {
        let mut tx = crate::storage::postgres::begin(&self.pool).await.map_err(db)?;
        if let Some(key) = &message.idempotency
            && let Some(earlier) = earlier_key(&mut tx, &key.key, &key.fingerprint).await?
        {
            return Ok(earlier);
        }
        let content = &message.content;
        let payload = content.payload();
        let now = int(now_ms());
        let inserted = sqlx::query(
            "INSERT INTO journal_messages (message_id, session_id, recipient, kind, file_name, mimetype, caption, \
             preview, size, status, created_at, updated_at, payload, crc32, ptt) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14) \
             ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(&message.message_id)
        .bind(message.session_id.as_str())
        .bind(message.to.digits())
        .bind(content.kind().as_str())
        .bind(content.file_name().map(|f| f.as_str()))
        .bind(content.mimetype().map(|m| m.as_str()))
        .bind(content.caption())
        .bind(content.preview())
        .bind(payload.len() as i64)
        .bind(DeliveryStatus::Queued.as_str())
        .bind(now)
        .bind(payload.as_ref())
        .bind(i64::from(crc32fast::hash(&payload)))
        .bind(content.ptt())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if inserted.rows_affected() == 0 {
            return Err(JournalError::DuplicateMessageId);
        }
        if let Some(key) = &message.idempotency {
            let stored = sqlx::query(
                "INSERT INTO journal_idempotency_keys (key, fingerprint, message_id, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
            )
            .bind(&key.key)
            .bind(&key.fingerprint[..])
            .bind(&message.message_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if stored.rows_affected() == 0 {
                // Another request with this key committed first: answer as it was answered.
                tx.rollback().await.map_err(db)?;
                let mut tx = crate::storage::postgres::begin(&self.pool).await.map_err(db)?;
                return earlier_key(&mut tx, &key.key, &key.fingerprint)
                    .await?
                    .ok_or_else(|| JournalError::Database("an idempotency key vanished".into()));
            }
        }
        if self.events() {
            record_status_event(&mut tx, &message.message_id, now).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(Accepted::New)
    }

    async fn set_status_in(
        &self,
        message_id: &str,
        next: DeliveryStatus,
        last_error: Option<&str>,
        lease: Option<&Lease>,
    ) -> Result<bool, JournalError> {
        let mut tx = crate::storage::postgres::begin(&self.pool).await.map_err(db)?;
        if let Some(lease) = lease
            && !super::leases::hold_for_write(&mut tx, lease).await.map_err(db)?
        {
            metrics::counter!(crate::metrics::FENCING_REFUSALS, "store" => "journal").increment(1);
            return Err(JournalError::Fenced);
        }
        let current: Option<String> =
            sqlx::query_scalar("SELECT status FROM journal_messages WHERE message_id = $1 FOR UPDATE")
                .bind(message_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let Some(current) = current.as_deref().and_then(DeliveryStatus::parse) else { return Ok(false) };
        if !current.can_move_to(next) {
            return Ok(false);
        }
        let now = int(now_ms());
        sqlx::query(
            "UPDATE journal_messages SET status = $2, last_error = COALESCE($3, last_error), updated_at = $4, \
             payload = CASE WHEN $5 THEN NULL ELSE payload END WHERE message_id = $1",
        )
        .bind(message_id)
        .bind(next.as_str())
        .bind(last_error)
        .bind(now)
        .bind(next.is_final())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if self.events() {
            record_status_event(&mut tx, message_id, now).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }
}

/// What an earlier request with this idempotency key was answered, if there was one.
async fn earlier_key(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    fingerprint: &[u8; 32],
) -> Result<Option<Accepted>, JournalError> {
    let first = sqlx::query("SELECT fingerprint, message_id FROM journal_idempotency_keys WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?;
    let Some(first) = first else { return Ok(None) };
    let (stored, message_id): (Vec<u8>, String) = (first.try_get(0).map_err(db)?, first.try_get(1).map_err(db)?);
    Ok(Some(if stored == fingerprint[..] { Accepted::Replay { message_id } } else { Accepted::KeyReusedWithOtherBody }))
}

/// Adds a `message.status` event for the message's current status, in the same transaction.
async fn record_status_event(
    tx: &mut Transaction<'_, Postgres>,
    message_id: &str,
    now: i64,
) -> Result<(), JournalError> {
    sqlx::query(
        "INSERT INTO journal_status_events (event_id, message_id, session_id, status, kind, last_error, at) \
         SELECT $1, message_id, session_id, status, kind, last_error, $2 FROM journal_messages WHERE message_id = $3",
    )
    .bind(new_event_id())
    .bind(now)
    .bind(message_id)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

fn db(error: sqlx::Error) -> JournalError {
    StorageError::from(error).into()
}

fn u64_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A row of [`RECORD_COLUMNS`].
fn record(row: &PgRow) -> Result<MessageRecord, JournalError> {
    let kind: String = row.try_get(3).map_err(db)?;
    let status: String = row.try_get(8).map_err(db)?;
    let attempts: i32 = row.try_get(9).map_err(db)?;
    Ok(MessageRecord {
        message_id: row.try_get(0).map_err(db)?,
        session_id: row.try_get(1).map_err(db)?,
        to: row.try_get(2).map_err(db)?,
        kind: ContentKind::parse(&kind).ok_or_else(|| JournalError::Database(format!("unknown kind {kind:?}")))?,
        file_name: row.try_get(4).map_err(db)?,
        mimetype: row.try_get(5).map_err(db)?,
        caption: row.try_get(6).map_err(db)?,
        preview: row.try_get(7).map_err(db)?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| JournalError::Database(format!("unknown status {status:?}")))?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error: row.try_get(10).map_err(db)?,
        created_at: u64_of(row.try_get(11).map_err(db)?),
        updated_at: u64_of(row.try_get(12).map_err(db)?),
        size: u64_of(row.try_get(13).map_err(db)?),
        ptt: row.try_get(14).map_err(db)?,
    })
}

#[async_trait]
impl JournalStore for PgJournal {
    async fn accept(&self, message: NewMessage) -> Result<Accepted, JournalError> {
        if !is_valid_message_id(&message.message_id) {
            return Err(JournalError::InvalidMessageId);
        }
        // On a task of its own: a caller that goes away cannot cut the transaction short, so the
        // outcome is the same whether or not anyone hears it.
        let journal = self.clone();
        let accepted =
            tokio::spawn(async move { journal.accept_in(&message).await }).await.map_err(|_| JournalError::Closed)?;
        if matches!(accepted, Ok(Accepted::New)) {
            self.wrote();
        }
        accepted
    }

    async fn set_status(
        &self,
        message_id: &MessageId,
        status: DeliveryStatus,
        last_error: Option<String>,
    ) -> Result<bool, JournalError> {
        let moved = self.set_status_in(message_id.as_str(), status, last_error.as_deref(), None).await?;
        if moved {
            self.wrote();
        }
        Ok(moved)
    }

    async fn set_status_under(
        &self,
        message_id: &MessageId,
        status: DeliveryStatus,
        last_error: Option<String>,
        lease: &Lease,
    ) -> Result<bool, JournalError> {
        let moved = self.set_status_in(message_id.as_str(), status, last_error.as_deref(), Some(lease)).await?;
        if moved {
            self.wrote();
        }
        Ok(moved)
    }

    async fn record_attempt(&self, message_id: &MessageId, error: Option<String>) -> Result<u32, JournalError> {
        let attempts: Option<i32> = sqlx::query_scalar(
            "UPDATE journal_messages SET attempts = attempts + 1, last_error = COALESCE($2, last_error), \
             updated_at = $3 WHERE message_id = $1 RETURNING attempts",
        )
        .bind(message_id.as_str())
        .bind(error)
        .bind(int(now_ms()))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        attempts.map(|n| u32::try_from(n).unwrap_or(0)).ok_or(JournalError::NotFound)
    }

    async fn get(&self, message_id: &MessageId) -> Result<Option<MessageRecord>, JournalError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM journal_messages WHERE message_id = $1"
        )))
        .bind(message_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(record).transpose()
    }

    async fn by_session(
        &self,
        session: &str,
        recipient: Option<String>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, MessageRecord)>, JournalError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS}, seq FROM journal_messages WHERE session_id = $1 \
             AND ($2::TEXT IS NULL OR recipient = $2) AND seq < $3 ORDER BY seq DESC LIMIT $4"
        )))
        .bind(session)
        .bind(recipient)
        .bind(before.map_or(i64::MAX, int))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|row| Ok((u64_of(row.try_get(RECORD_COLUMN_COUNT).map_err(db)?), record(row)?))).collect()
    }

    async fn pending(&self) -> Result<Vec<MessageRecord>, JournalError> {
        self.pending_of(None).await
    }

    async fn pending_for(&self, session: &SessionId) -> Result<Vec<MessageRecord>, JournalError> {
        self.pending_of(Some(session)).await
    }

    async fn read_payload(&self, message_id: &MessageId) -> Result<Option<Bytes>, JournalError> {
        let row = sqlx::query("SELECT status, payload, crc32 FROM journal_messages WHERE message_id = $1")
            .bind(message_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let status: String = row.try_get(0).map_err(db)?;
        if DeliveryStatus::parse(&status).is_none_or(DeliveryStatus::is_final) {
            return Ok(None);
        }
        let (payload, crc32): (Option<Vec<u8>>, Option<i64>) =
            (row.try_get(1).map_err(db)?, row.try_get(2).map_err(db)?);
        let Some(payload) = payload else { return Ok(None) };
        if crc32 != Some(i64::from(crc32fast::hash(&payload))) {
            return Err(JournalError::Damaged);
        }
        Ok(Some(Bytes::from(payload)))
    }

    async fn prune(
        &self,
        idempotency_older_than: Duration,
        finished_older_than: Duration,
    ) -> Result<Pruned, JournalError> {
        let now = now_ms();
        let before = |age: Duration| int(now.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)));
        let keys = sqlx::query("DELETE FROM journal_idempotency_keys WHERE created_at < $1")
            .bind(before(idempotency_older_than.max(IDEMPOTENCY_RETENTION)))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let finished: Vec<&str> = DeliveryStatus::ALL.iter().filter(|s| s.is_final()).map(|s| s.as_str()).collect();
        let messages = sqlx::query("DELETE FROM journal_messages WHERE status = ANY($1) AND updated_at < $2")
            .bind(&finished)
            .bind(before(finished_older_than))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(Pruned { idempotency_keys: keys.rows_affected(), messages: messages.rows_affected() })
    }

    async fn status_events(&self, after_seq: i64, limit: usize) -> Result<Vec<StatusEvent>, JournalError> {
        let rows = sqlx::query(
            "SELECT seq, event_id, message_id, session_id, status, kind, last_error, at FROM journal_status_events \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(StatusEvent {
                    seq: r.try_get(0).map_err(db)?,
                    event_id: r.try_get(1).map_err(db)?,
                    message_id: r.try_get(2).map_err(db)?,
                    session_id: r.try_get(3).map_err(db)?,
                    status: r.try_get(4).map_err(db)?,
                    kind: r.try_get(5).map_err(db)?,
                    last_error: r.try_get(6).map_err(db)?,
                    at: u64_of(r.try_get(7).map_err(db)?),
                })
            })
            .collect()
    }

    async fn delete_status_events(&self, seqs: &[i64]) -> Result<u64, JournalError> {
        let deleted = sqlx::query("DELETE FROM journal_status_events WHERE seq = ANY($1)")
            .bind(seqs)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(deleted.rows_affected())
    }

    fn want_status_events(&self) -> StatusEventsGuard {
        StatusEventsGuard::new(&self.listeners)
    }

    async fn committed(&self) {
        self.committed.notified().await;
    }

    async fn is_writable(&self) -> bool {
        sqlx::query_scalar::<Postgres, bool>("SELECT NOT pg_is_in_recovery()")
            .fetch_one(&self.pool)
            .await
            .unwrap_or(false)
    }
}

impl PgJournal {
    /// Every open message (of one session, when given) in acceptance order; one whose bytes are
    /// gone is failed and left out.
    async fn pending_of(&self, session: Option<&SessionId>) -> Result<Vec<MessageRecord>, JournalError> {
        let open: Vec<&str> = DeliveryStatus::ALL.iter().filter(|s| !s.is_final()).map(|s| s.as_str()).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS}, payload IS NOT NULL FROM journal_messages \
             WHERE status = ANY($1) AND ($2::TEXT IS NULL OR session_id = $2) ORDER BY seq"
        )))
        .bind(&open)
        .bind(session.map(SessionId::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let message = record(row)?;
            if row.try_get::<bool, _>(RECORD_COLUMN_COUNT).map_err(db)? {
                found.push(message);
            } else {
                let id = MessageId::from_stored(message.message_id.as_str());
                if self.set_status(&id, DeliveryStatus::Failed, Some(PDF_MISSING.to_owned())).await? {
                    tracing::warn!(message_id = %id, "pending message has no content: marked failed");
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::journal::JournalStore;
    use crate::storage::postgres::testing;

    async fn insert_event(executor: impl sqlx::PgExecutor<'_>, message: &str) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO journal_status_events (event_id, message_id, session_id, status, kind, at) \
             VALUES ('evt_' || $1, $1, 'tienda', 'sent', 'document', 0) RETURNING seq",
        )
        .bind(message)
        .fetch_one(executor)
        .await
        .expect("an event")
    }

    /// Two gateways (or two lanes) record statuses at once: the one that took the lower seq may
    /// commit after the higher one was read and handed over. Deleting what was handed over must
    /// leave it for the next read (deleting "up to the last seq read" lost it: a webhook status
    /// never posted).
    #[tokio::test]
    async fn an_event_committed_after_a_later_one_was_handed_over_is_not_deleted_with_it() {
        let test = testing::fresh(3).await;
        let journal = test.db.journal();
        let mut slow = test.db.pool.begin().await.expect("begin");
        let early = insert_event(&mut *slow, "m1").await;
        let late = insert_event(&test.db.pool, "m2").await;
        assert!(early < late, "the open transaction took the lower seq");

        let read = journal.status_events(0, 100).await.expect("events");
        assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), [late], "the open one is not visible yet");
        slow.commit().await.expect("commit");
        let handed: Vec<i64> = read.iter().map(|e| e.seq).collect();
        assert_eq!(journal.delete_status_events(&handed).await.expect("delete"), 1);

        let left = journal.status_events(0, 100).await.expect("events");
        assert_eq!(left.iter().map(|e| e.message_id.as_str()).collect::<Vec<_>>(), ["m1"], "m1's event waits");
    }
}
