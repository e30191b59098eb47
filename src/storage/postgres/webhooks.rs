//! The webhook outbox in Postgres: the same rows as SQLite's, shared by every gateway on the
//! database. An endpoint's row carries the lease of the claimer posting its deliveries.
//!
//! Claiming: the order of an endpoint's deliveries is its queue's, so a claimer needs its head,
//! and skipping a locked head (`FOR UPDATE SKIP LOCKED` on the deliveries) would post what comes
//! after it first. Instead claims take the endpoint's row (`FOR NO KEY UPDATE`: writers of
//! deliveries, which only take `KEY SHARE` on it, are not held up), which serializes them for the
//! few milliseconds a claim lasts, and the lease written there keeps every other claimer away from
//! the endpoint while its batch is posted. The lease is short and its claimer extends it while it
//! posts (only while it is still its own: `claimed_until` unchanged), so a claimer that dies
//! leaves a lease that ends by itself within seconds, and another gateway takes the endpoint.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::domain::{
    Delivery, DeliveryOutcome, Endpoint, Enqueued, EnvEndpoint, EventKind, GONE, NewDelivery, OUTBOX_FULL, Viewer,
    WebhookDeliveryStatus, WebhookSecret,
};
use crate::storage::webhooks::{Claim, EndpointColumns, WebhookStore, lease_end};
use crate::storage::{StorageError, int, now_ms};

/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgWebhooks {
    pool: PgPool,
}

impl PgWebhooks {
    pub(super) fn new(pool: PgPool) -> PgWebhooks {
        PgWebhooks { pool }
    }
}

const ENDPOINT_COLUMNS: &str = "id, url, secret, events, sessions, created_at, disabled, owner, owner_admin, format";

const DELIVERY_COLUMNS: &str =
    "id, event_id, event, session_id, status, attempts, last_error, created_at, next_attempt_at, body, path";

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// `None` for a row whose secret or format this build cannot use (never written by it).
fn endpoint_from_row(row: &PgRow) -> Result<Option<Endpoint>, StorageError> {
    Ok(EndpointColumns {
        id: row.try_get(0)?,
        url: row.try_get(1)?,
        secret: row.try_get(2)?,
        events: row.try_get(3)?,
        sessions: row.try_get(4)?,
        created_at: row.try_get(5)?,
        disabled: row.try_get(6)?,
        owner_name: row.try_get(7)?,
        owner_admin: row.try_get(8)?,
        format: row.try_get(9)?,
    }
    .decode())
}

fn delivery_from_row(row: &PgRow) -> Result<Delivery, StorageError> {
    let status: String = row.try_get(4)?;
    let attempts: i32 = row.try_get(5)?;
    Ok(Delivery {
        id: row.try_get(0)?,
        event_id: row.try_get(1)?,
        event: row.try_get(2)?,
        session_id: row.try_get(3)?,
        status: WebhookDeliveryStatus::parse(&status).unwrap_or(WebhookDeliveryStatus::Failed),
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error: row.try_get(6)?,
        created_at: to_u64(row.try_get(7)?),
        next_attempt_at: to_u64(row.try_get(8)?),
        body: row.try_get(9)?,
        path: row.try_get(10)?,
    })
}

fn events_json(events: Option<&Vec<EventKind>>) -> Option<String> {
    events
        .map(|events| serde_json::to_string(&events.iter().map(|e| e.as_str()).collect::<Vec<_>>()).unwrap_or_default())
}

async fn pending<'c, E: sqlx::PgExecutor<'c>>(executor: E, endpoint_id: &str) -> Result<u64, StorageError> {
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'pending'")
            .bind(endpoint_id)
            .fetch_one(executor)
            .await?;
    Ok(to_u64(count))
}

/// Whether the endpoint `id` exists and `viewer` sees it.
async fn visible(tx: &mut Transaction<'_, Postgres>, id: &str, viewer: &Viewer) -> Result<bool, StorageError> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM webhook_endpoints WHERE id = $1 AND ($2::TEXT IS NULL OR owner = $2)")
            .bind(id)
            .bind(viewer.owner())
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.is_some())
}

impl PgWebhooks {
    async fn visible_endpoints(&self, viewer: &Viewer) -> Result<Vec<Endpoint>, StorageError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE $1::TEXT IS NULL OR owner = $1 \
             ORDER BY created_at, id"
        )))
        .bind(viewer.owner())
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.extend(endpoint_from_row(row)?);
        }
        Ok(out)
    }
}

#[async_trait]
impl WebhookStore for PgWebhooks {
    async fn sync_env_endpoint(&self, id: &str, env: Option<&EnvEndpoint>) -> Result<(), StorageError> {
        let Some(EnvEndpoint { url, secret, events, format }) = env else {
            sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(id).execute(&self.pool).await?;
            return Ok(());
        };
        let mut tx = crate::storage::postgres::begin(&self.pool).await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT secret FROM webhook_endpoints WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        // Without WEBHOOK_SECRET the secret generated the first time stays.
        let secret = match (secret, existing) {
            (Some(secret), _) => secret.expose(),
            (None, Some(existing)) => existing,
            (None, None) => WebhookSecret::generate().expose(),
        };
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, secret, events, sessions, created_at, format) \
             VALUES ($1, $2, $3, $4, NULL, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET url = excluded.url, secret = excluded.secret, events = excluded.events, \
             format = excluded.format, disabled = NULL",
        )
        .bind(id)
        .bind(url)
        .bind(secret)
        .bind(events_json(events.as_ref()))
        .bind(int(now_ms()))
        .bind(format.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create(&self, endpoint: &Endpoint) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, secret, events, sessions, created_at, disabled, owner, \
             owner_admin, format) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&endpoint.id)
        .bind(&endpoint.url)
        .bind(endpoint.secret.expose())
        .bind(events_json(endpoint.events.as_ref()))
        .bind(endpoint.sessions.as_ref().and_then(|s| serde_json::to_string(s).ok()))
        .bind(int(endpoint.created_at))
        .bind(&endpoint.disabled)
        .bind(&endpoint.owner.name)
        .bind(endpoint.owner.admin)
        .bind(endpoint.format.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn endpoints(&self, viewer: &Viewer) -> Result<Vec<Endpoint>, StorageError> {
        self.visible_endpoints(viewer).await
    }

    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, StorageError> {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1")))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(row) => endpoint_from_row(&row)?,
            None => None,
        })
    }

    async fn endpoints_with_pending(&self, viewer: &Viewer) -> Result<Vec<(Endpoint, u64)>, StorageError> {
        let endpoints = self.visible_endpoints(viewer).await?;
        let mut out = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let pending = pending(&self.pool, &endpoint.id).await?;
            out.push((endpoint, pending));
        }
        Ok(out)
    }

    async fn delete(&self, id: &str, viewer: &Viewer) -> Result<bool, StorageError> {
        let mut tx = crate::storage::postgres::begin(&self.pool).await?;
        if !visible(&mut tx, id, viewer).await? {
            return Ok(false);
        }
        // Its deliveries go with it (ON DELETE CASCADE).
        let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(deleted.rows_affected() == 1)
    }

    async fn enqueue(&self, deliveries: &[NewDelivery], max: u64, now: u64) -> Result<Vec<Enqueued>, StorageError> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = crate::storage::postgres::begin(&self.pool).await?;
        let mut ids: Vec<&str> = Vec::new();
        for delivery in deliveries {
            if !ids.contains(&delivery.endpoint_id.as_str()) {
                ids.push(&delivery.endpoint_id);
            }
        }
        // The endpoints still there stay until this commits (a delete waits); deliveries of one
        // deleted meanwhile are dropped with it.
        let present: Vec<String> =
            sqlx::query_scalar("SELECT id FROM webhook_endpoints WHERE id = ANY($1) FOR KEY SHARE")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
        let now = int(now);
        let mut out: Vec<Enqueued> = Vec::new();
        for delivery in deliveries.iter().filter(|d| present.contains(&d.endpoint_id)) {
            let at = match out.iter().position(|e| e.endpoint_id == delivery.endpoint_id) {
                Some(at) => at,
                None => {
                    let pending = pending(&mut *tx, &delivery.endpoint_id).await?;
                    out.push(Enqueued { endpoint_id: delivery.endpoint_id.clone(), pending, outbox_full: 0 });
                    out.len() - 1
                }
            };
            let full = out[at].pending >= max;
            let (status, error) = if full { ("failed", Some(OUTBOX_FULL)) } else { ("pending", None) };
            let inserted = sqlx::query(
                "INSERT INTO webhook_deliveries (endpoint_id, event_id, event, session_id, body, status, last_error, \
                 next_attempt_at, created_at, updated_at, path) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8, $9) \
                 ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            )
            .bind(&delivery.endpoint_id)
            .bind(&delivery.event_id)
            .bind(delivery.event.as_str())
            .bind(&delivery.session_id)
            .bind(&delivery.body)
            .bind(status)
            .bind(error)
            .bind(now)
            .bind(&delivery.path)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1 {
                if full {
                    out[at].outbox_full += 1;
                } else {
                    out[at].pending += 1;
                }
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn claim(
        &self,
        endpoint_id: &str,
        limit: usize,
        now: u64,
        lease: Duration,
    ) -> Result<Option<Claim>, StorageError> {
        let mut tx = crate::storage::postgres::begin(&self.pool).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS}, claimed_until FROM webhook_endpoints WHERE id = $1 FOR NO KEY UPDATE"
        )))
        .bind(endpoint_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let claimed_until = to_u64(row.try_get(10)?);
        let Some(endpoint) = endpoint_from_row(&row)?.filter(|e| e.disabled.is_none()) else { return Ok(None) };
        if claimed_until > now {
            return Ok(Some(Claim { endpoint, deliveries: Vec::new(), until: Some(claimed_until) }));
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'pending' \
             ORDER BY id LIMIT $2"
        )))
        .bind(endpoint_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let mut head = Vec::with_capacity(rows.len());
        for row in &rows {
            let delivery = delivery_from_row(row)?;
            if delivery.next_attempt_at > now {
                if head.is_empty() {
                    // The head waits for its retry, and everything behind it.
                    return Ok(Some(Claim { endpoint, deliveries: Vec::new(), until: Some(delivery.next_attempt_at) }));
                }
                break;
            }
            head.push(delivery);
        }
        if head.is_empty() {
            return Ok(Some(Claim { endpoint, deliveries: Vec::new(), until: None }));
        }
        let until = lease_end(now, lease);
        sqlx::query("UPDATE webhook_endpoints SET claimed_until = $2 WHERE id = $1")
            .bind(endpoint_id)
            .bind(int(until))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Claim { endpoint, deliveries: head, until: Some(until) }))
    }

    async fn extend(
        &self,
        endpoint_id: &str,
        until: u64,
        lease: Duration,
        now: u64,
    ) -> Result<Option<u64>, StorageError> {
        let extended: Option<i64> = sqlx::query_scalar(
            "UPDATE webhook_endpoints SET claimed_until = GREATEST($3, claimed_until) \
             WHERE id = $1 AND claimed_until = $2 RETURNING claimed_until",
        )
        .bind(endpoint_id)
        .bind(int(until))
        .bind(int(lease_end(now, lease)))
        .fetch_optional(&self.pool)
        .await?;
        Ok(extended.map(to_u64))
    }

    async fn settle(
        &self,
        endpoint_id: &str,
        until: u64,
        delivered: &[i64],
        stopped_at: Option<(i64, DeliveryOutcome)>,
        now: u64,
    ) -> Result<u64, StorageError> {
        let now = int(now);
        let mut tx = crate::storage::postgres::begin(&self.pool).await?;
        if !delivered.is_empty() {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, updated_at = $3 \
                 WHERE endpoint_id = $1 AND id = ANY($2)",
            )
            .bind(endpoint_id)
            .bind(delivered)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((delivery, outcome)) = stopped_at {
            let (failed, error, next_attempt_at) = match &outcome {
                DeliveryOutcome::Gone => (true, GONE, None),
                DeliveryOutcome::Dead(error) => (true, error.as_str(), None),
                DeliveryOutcome::Retry { error, next_attempt_at } => {
                    (false, error.as_str(), Some(int(*next_attempt_at)))
                }
            };
            sqlx::query(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = $4, updated_at = $3, \
                 status = CASE WHEN $5 THEN 'failed' ELSE status END, \
                 next_attempt_at = COALESCE($6, next_attempt_at) \
                 WHERE endpoint_id = $1 AND id = $2 AND status = 'pending'",
            )
            .bind(endpoint_id)
            .bind(delivery)
            .bind(now)
            .bind(error)
            .bind(failed)
            .bind(next_attempt_at)
            .execute(&mut *tx)
            .await?;
            if outcome == DeliveryOutcome::Gone {
                sqlx::query("UPDATE webhook_endpoints SET disabled = $2 WHERE id = $1")
                    .bind(endpoint_id)
                    .bind(GONE)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // Ended only if it is still this claim's.
        sqlx::query("UPDATE webhook_endpoints SET claimed_until = 0 WHERE id = $1 AND claimed_until = $2")
            .bind(endpoint_id)
            .bind(int(until))
            .execute(&mut *tx)
            .await?;
        let pending = pending(&mut *tx, endpoint_id).await?;
        tx.commit().await?;
        Ok(pending)
    }

    async fn deliveries(
        &self,
        endpoint_id: &str,
        viewer: &Viewer,
        status: Option<WebhookDeliveryStatus>,
        limit: usize,
    ) -> Result<Option<Vec<Delivery>>, StorageError> {
        let mut tx = crate::storage::postgres::begin(&self.pool).await?;
        if !visible(&mut tx, endpoint_id, viewer).await? {
            return Ok(None);
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 \
             AND ($2::TEXT IS NULL OR status = $2) ORDER BY id DESC LIMIT $3"
        )))
        .bind(endpoint_id)
        .bind(status.map(WebhookDeliveryStatus::as_str))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(delivery_from_row).collect::<Result<Vec<_>, _>>().map(Some)
    }

    async fn prune(&self, before: u64, limit: usize) -> Result<u64, StorageError> {
        let deleted = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE status <> 'pending' AND updated_at < $1 LIMIT $2)",
        )
        .bind(int(before))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }

    async fn retry(
        &self,
        endpoint_id: &str,
        viewer: &Viewer,
        delivery: Option<i64>,
        now: u64,
    ) -> Result<Option<u64>, StorageError> {
        let mut tx = crate::storage::postgres::begin(&self.pool).await?;
        if !visible(&mut tx, endpoint_id, viewer).await? {
            return Ok(None);
        }
        let retried = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $3, created_at = $3, updated_at = $3 \
             WHERE endpoint_id = $1 AND ($2::BIGINT IS NULL OR id = $2) AND status = 'failed'",
        )
        .bind(endpoint_id)
        .bind(delivery)
        .bind(int(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE webhook_endpoints SET disabled = NULL WHERE id = $1")
            .bind(endpoint_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(retried.rows_affected()))
    }
}
