//! The session registry in Postgres, shared by every gateway on the database.

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::{PgPool, Row};

use super::leases::SESSIONS_CHANNEL;
use crate::domain::{SessionEntry, SessionId};
use crate::storage::{SessionRegistry, StorageError};

/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgRegistry {
    pool: PgPool,
}

impl PgRegistry {
    pub(super) fn new(pool: PgPool) -> PgRegistry {
        PgRegistry { pool }
    }
}

fn object(text: Option<String>) -> Option<Map<String, Value>> {
    text.and_then(|text| serde_json::from_str(&text).ok())
}

#[async_trait]
impl SessionRegistry for PgRegistry {
    async fn load(&self) -> Result<Vec<SessionEntry>, StorageError> {
        let rows = sqlx::query("SELECT session_id, description, metadata, extra FROM registry_sessions ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0)?;
            let session_id = SessionId::parse(&id)
                .map_err(|e| StorageError::Failed(format!("the registry holds an invalid session id {id:?}: {e}")))?;
            entries.push(SessionEntry {
                session_id,
                description: row.try_get(1)?,
                metadata: object(row.try_get(2)?),
                extra: object(row.try_get(3)?).unwrap_or_default(),
            });
        }
        Ok(entries)
    }

    async fn add(&self, entry: SessionEntry) -> Result<bool, StorageError> {
        let json = |map: &Map<String, Value>| serde_json::to_string(map).map_err(StorageError::failed);
        let metadata = entry.metadata.as_ref().map(json).transpose()?;
        // Announced to the fleet in the same statement: the other gateways add it too.
        let added = sqlx::query(
            "WITH added AS ( \
                 INSERT INTO registry_sessions (session_id, description, metadata, extra) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (session_id) DO NOTHING RETURNING session_id \
             ) \
             SELECT pg_notify($5, current_schema() || ':' || session_id) FROM added",
        )
        .bind(entry.session_id.as_str())
        .bind(&entry.description)
        .bind(metadata)
        .bind(json(&entry.extra)?)
        .bind(SESSIONS_CHANNEL)
        .fetch_optional(&self.pool)
        .await?;
        Ok(added.is_some())
    }

    async fn remove(&self, id: &SessionId) -> Result<bool, StorageError> {
        let removed = sqlx::query(
            "WITH removed AS (DELETE FROM registry_sessions WHERE session_id = $1 RETURNING session_id), \
                  state AS (DELETE FROM fleet_session_states WHERE session_id IN (SELECT session_id FROM removed)) \
             SELECT pg_notify($2, current_schema() || ':' || session_id) FROM removed",
        )
        .bind(id.as_str())
        .bind(SESSIONS_CHANNEL)
        .fetch_optional(&self.pool)
        .await?;
        Ok(removed.is_some())
    }

    fn describe(&self) -> String {
        "the database's registry_sessions".into()
    }
}
