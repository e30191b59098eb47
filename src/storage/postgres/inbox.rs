//! The inbox in Postgres: the same rows as SQLite's, with a file's bytes in the row itself, so
//! that any gateway can serve any received file.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::{PgPool, Row};

use crate::domain::{ChatSummary, IncomingMessage, SessionId};
use crate::storage::inbox::summary;
use crate::storage::{InboxStore, MAX_PAGE, Page, StorageError, int, now_ms};

/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgInbox {
    pool: PgPool,
}

impl PgInbox {
    pub(super) fn new(pool: PgPool) -> PgInbox {
        PgInbox { pool }
    }
}

fn parse(record: &str) -> Option<IncomingMessage> {
    serde_json::from_str(record).ok()
}

#[async_trait]
impl InboxStore for PgInbox {
    async fn insert(&self, message: &IncomingMessage) -> Result<bool, StorageError> {
        let record = serde_json::to_string(message).map_err(StorageError::failed)?;
        let inserted = sqlx::query(
            "INSERT INTO inbox_messages (session_id, message_id, chat, kind, timestamp, record, stored_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (session_id, message_id) DO NOTHING",
        )
        .bind(&message.session_id)
        .bind(&message.message_id)
        .bind(&message.chat)
        .bind(message.kind.as_str())
        .bind(int(message.timestamp))
        .bind(record)
        .bind(int(now_ms()))
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn update(&self, message: &IncomingMessage, file: Option<Bytes>) -> Result<(), StorageError> {
        let record = serde_json::to_string(message).map_err(StorageError::failed)?;
        sqlx::query(
            "UPDATE inbox_messages SET record = $3, file = COALESCE($4, file) \
             WHERE session_id = $1 AND message_id = $2",
        )
        .bind(&message.session_id)
        .bind(&message.message_id)
        .bind(record)
        .bind(file.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list(
        &self,
        session: &SessionId,
        chat: Option<&str>,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Page, StorageError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let rows = sqlx::query(
            "SELECT seq, record FROM inbox_messages WHERE session_id = $1 AND ($2::TEXT IS NULL OR chat = $2) \
             AND seq < $3 ORDER BY seq DESC LIMIT $4",
        )
        .bind(session.as_str())
        .bind(chat)
        .bind(before.map_or(i64::MAX, int))
        .bind((limit + 1) as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut items = Vec::new();
        let mut last_seq = None;
        for row in rows {
            if items.len() == limit {
                return Ok(Page { items, next: last_seq });
            }
            let (seq, record): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
            items.extend(parse(&record));
            last_seq = u64::try_from(seq).ok();
        }
        Ok(Page { items, next: None })
    }

    async fn chats(&self, session: &SessionId) -> Result<Vec<ChatSummary>, StorageError> {
        let rows = sqlx::query(
            "SELECT c.chat, c.unread, m.record FROM ( \
                 SELECT i.chat, MAX(i.seq) AS latest, \
                        COUNT(*) FILTER (WHERE i.seq > COALESCE(r.read_seq, 0)) AS unread \
                 FROM inbox_messages i LEFT JOIN inbox_chat_reads r \
                   ON r.session_id = i.session_id AND r.chat = i.chat \
                 WHERE i.session_id = $1 GROUP BY i.chat \
             ) c JOIN inbox_messages m ON m.seq = c.latest ORDER BY c.latest DESC",
        )
        .bind(session.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let (chat, unread, record): (String, i64, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                Ok(summary(chat, parse(&record), unread))
            })
            .collect()
    }

    async fn chat_starts(&self, session: &SessionId) -> Result<HashMap<String, u64>, StorageError> {
        let rows = sqlx::query("SELECT chat, MIN(timestamp) FROM inbox_messages WHERE session_id = $1 GROUP BY chat")
            .bind(session.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get::<String, _>(0)?, u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or_default())))
            .collect()
    }

    async fn mark_read(&self, session: &SessionId, chat: &str) -> Result<Option<Vec<IncomingMessage>>, StorageError> {
        let mut tx = crate::storage::postgres::begin(&self.pool).await?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM inbox_messages WHERE session_id = $1 AND chat = $2")
                .bind(session.as_str())
                .bind(chat)
                .fetch_one(&mut *tx)
                .await?;
        let Some(latest) = latest else { return Ok(None) };
        let read_seq: Option<i64> =
            sqlx::query_scalar("SELECT read_seq FROM inbox_chat_reads WHERE session_id = $1 AND chat = $2")
                .bind(session.as_str())
                .bind(chat)
                .fetch_optional(&mut *tx)
                .await?;
        let unread: Vec<String> = sqlx::query_scalar(
            "SELECT record FROM inbox_messages WHERE session_id = $1 AND chat = $2 AND seq > $3 AND seq <= $4 \
             ORDER BY seq",
        )
        .bind(session.as_str())
        .bind(chat)
        .bind(read_seq.unwrap_or(0))
        .bind(latest)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO inbox_chat_reads (session_id, chat, read_seq) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id, chat) DO UPDATE \
             SET read_seq = GREATEST(inbox_chat_reads.read_seq, excluded.read_seq)",
        )
        .bind(session.as_str())
        .bind(chat)
        .bind(latest)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(unread.iter().filter_map(|record| parse(record)).collect()))
    }

    async fn get(&self, message_id: &str) -> Result<Option<IncomingMessage>, StorageError> {
        let record: Option<String> =
            sqlx::query_scalar("SELECT record FROM inbox_messages WHERE message_id = $1 ORDER BY seq DESC LIMIT 1")
                .bind(message_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(record.as_deref().and_then(parse))
    }

    async fn file(&self, message_id: &str) -> Result<Option<Bytes>, StorageError> {
        let file: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT file FROM inbox_messages WHERE message_id = $1 ORDER BY seq DESC LIMIT 1")
                .bind(message_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(file.flatten().map(Bytes::from))
    }

    async fn prune(&self, cutoff_ms: u64) -> Result<usize, StorageError> {
        let deleted = sqlx::query("DELETE FROM inbox_messages WHERE stored_at < $1")
            .bind(int(cutoff_ms))
            .execute(&self.pool)
            .await?;
        Ok(usize::try_from(deleted.rows_affected()).unwrap_or(usize::MAX))
    }
}
