//! The webhook outbox in `DATA_DIR/webhooks.db`: endpoints and their deliveries. One gateway
//! owns the file (the data directory is locked), so a claim's lease is kept in memory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::domain::{
    Delivery, DeliveryOutcome, Endpoint, Enqueued, EnvEndpoint, EventKind, GONE, NewDelivery, OUTBOX_FULL, Viewer,
    WebhookDeliveryStatus, WebhookSecret,
};
use crate::storage::webhooks::{Claim, EndpointColumns, WebhookStore, lease_end};
use crate::storage::{StorageError, int};

use super::OpenError;

/// Bumped when the schema changes; checked on open. Version 0 (no `user_version` set) had no
/// owners; version 2 adds `owner` and `owner_admin` to endpoints. Endpoints already there belong
/// to the admin: who registered them is not known, and that is the safe side (a scoped token
/// sees none of them, and they post where they posted before). Version 3 adds the endpoints'
/// `format` (those already there are `standard`) and the deliveries' `path` (empty: the
/// endpoint's URL itself).
const SCHEMA_VERSION: i64 = 3;

/// Columns added to `endpoints` since version 0, with their declarations.
const ADDED_ENDPOINT_COLUMNS: [(&str, &str); 3] = [
    ("owner", "TEXT NOT NULL DEFAULT 'admin'"),
    ("owner_admin", "INTEGER NOT NULL DEFAULT 1"),
    ("format", "TEXT NOT NULL DEFAULT 'standard'"),
];

/// Columns added to `deliveries` since version 0, with their declarations.
const ADDED_DELIVERY_COLUMNS: [(&str, &str); 1] = [("path", "TEXT NOT NULL DEFAULT ''")];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS endpoints (
    id          TEXT    PRIMARY KEY,
    url         TEXT    NOT NULL,
    secret      TEXT    NOT NULL,
    events      TEXT,
    sessions    TEXT,
    created_at  INTEGER NOT NULL,
    disabled    TEXT,
    owner       TEXT    NOT NULL DEFAULT 'admin',
    owner_admin INTEGER NOT NULL DEFAULT 1,
    format      TEXT    NOT NULL DEFAULT 'standard'
) STRICT;
CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id     TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    session_id      TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    path            TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (endpoint_id, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_by_endpoint ON deliveries (endpoint_id, status, id);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_once ON deliveries (endpoint_id, event_id);
";

/// The connection, and the lease on each endpoint a claim holds (unix ms).
struct State {
    conn: Connection,
    leases: HashMap<String, u64>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct SqliteWebhooks {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SqliteWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWebhooks").finish_non_exhaustive()
    }
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl SqliteWebhooks {
    /// Opens (creating) `path`, usually `DATA_DIR/webhooks.db`, bringing its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteWebhooks, OpenError> {
        let conn = super::open(path)?;
        init_schema(&conn)?;
        Ok(SqliteWebhooks { state: Arc::new(Mutex::new(State { conn, leases: HashMap::new() })) })
    }

    /// Runs `op` on the connection, on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut State) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || {
            // Transactions roll back when dropped by a panic: a poisoned lock is usable.
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            op(&mut state)
        })
        .await
        .map_err(|_| StorageError::Failed("webhook store task stopped".into()))?
    }
}

#[async_trait]
impl WebhookStore for SqliteWebhooks {
    async fn sync_env_endpoint(&self, id: &str, env: Option<&EnvEndpoint>) -> Result<(), StorageError> {
        let (id, env) = (id.to_owned(), env.cloned());
        self.with(move |state| {
            let conn = &state.conn;
            match env {
                None => {
                    conn.execute("DELETE FROM deliveries WHERE endpoint_id = ?1", [&id])?;
                    conn.execute("DELETE FROM endpoints WHERE id = ?1", [&id])?;
                }
                Some(EnvEndpoint { url, secret, events, format }) => {
                    let existing: Option<String> =
                        conn.query_row("SELECT secret FROM endpoints WHERE id = ?1", [&id], |r| r.get(0)).optional()?;
                    // Without WEBHOOK_SECRET the secret generated the first time stays (it is
                    // logged nowhere; set WEBHOOK_SECRET to know it).
                    let secret = match (secret, existing) {
                        (Some(secret), _) => secret.expose(),
                        (None, Some(existing)) => existing,
                        (None, None) => WebhookSecret::generate().expose(),
                    };
                    conn.execute(
                        "INSERT INTO endpoints (id, url, secret, events, sessions, created_at, format) \
                         VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6) \
                         ON CONFLICT (id) DO UPDATE SET url = excluded.url, secret = excluded.secret, \
                         events = excluded.events, format = excluded.format, disabled = NULL",
                        params![
                            id,
                            url,
                            secret,
                            events_json(events.as_ref()),
                            int(crate::storage::now_ms()),
                            format.as_str()
                        ],
                    )?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn create(&self, endpoint: &Endpoint) -> Result<(), StorageError> {
        let endpoint = endpoint.clone();
        self.with(move |state| {
            state.conn.execute(
                "INSERT INTO endpoints (id, url, secret, events, sessions, created_at, disabled, owner, owner_admin, \
                 format) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    endpoint.id,
                    endpoint.url,
                    endpoint.secret.expose(),
                    events_json(endpoint.events.as_ref()),
                    sessions_json(endpoint.sessions.as_ref()),
                    int(endpoint.created_at),
                    endpoint.disabled,
                    endpoint.owner.name,
                    endpoint.owner.admin,
                    endpoint.format.as_str(),
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn endpoints(&self, viewer: &Viewer) -> Result<Vec<Endpoint>, StorageError> {
        let viewer = viewer.clone();
        self.with(move |state| visible_endpoints(&state.conn, &viewer)).await
    }

    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, StorageError> {
        let id = id.to_owned();
        self.with(move |state| endpoint(&state.conn, &id)).await
    }

    async fn endpoints_with_pending(&self, viewer: &Viewer) -> Result<Vec<(Endpoint, u64)>, StorageError> {
        let viewer = viewer.clone();
        self.with(move |state| {
            let endpoints = visible_endpoints(&state.conn, &viewer)?;
            let mut out = Vec::with_capacity(endpoints.len());
            for endpoint in endpoints {
                let pending = pending(&state.conn, &endpoint.id)?;
                out.push((endpoint, pending));
            }
            Ok(out)
        })
        .await
    }

    async fn delete(&self, id: &str, viewer: &Viewer) -> Result<bool, StorageError> {
        let (id, viewer) = (id.to_owned(), viewer.clone());
        self.with(move |state| {
            let tx = state.conn.transaction()?;
            if !visible(&tx, &id, &viewer)? {
                return Ok(false);
            }
            tx.execute("DELETE FROM deliveries WHERE endpoint_id = ?1", [&id])?;
            let deleted = tx.execute("DELETE FROM endpoints WHERE id = ?1", [&id])?;
            tx.commit()?;
            state.leases.remove(&id);
            Ok(deleted == 1)
        })
        .await
    }

    async fn enqueue(&self, deliveries: &[NewDelivery], max: u64, now: u64) -> Result<Vec<Enqueued>, StorageError> {
        if deliveries.is_empty() {
            // Nobody wants them: no write, no sync.
            return Ok(Vec::new());
        }
        let deliveries = deliveries.to_vec();
        self.with(move |state| {
            let tx = Transaction::new(&mut state.conn, TransactionBehavior::Immediate)?;
            let now = int(now);
            let mut out: Vec<Enqueued> = Vec::new();
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO deliveries (endpoint_id, event_id, event, session_id, body, status, \
                     last_error, next_attempt_at, created_at, updated_at, path) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8, ?9)",
                )?;
                for delivery in &deliveries {
                    let at = match out.iter().position(|e| e.endpoint_id == delivery.endpoint_id) {
                        Some(at) => at,
                        None => {
                            // An endpoint deleted meanwhile gets nothing.
                            if endpoint(&tx, &delivery.endpoint_id)?.is_none() {
                                continue;
                            }
                            let pending = pending(&tx, &delivery.endpoint_id)?;
                            out.push(Enqueued { endpoint_id: delivery.endpoint_id.clone(), pending, outbox_full: 0 });
                            out.len() - 1
                        }
                    };
                    let full = out[at].pending >= max;
                    let (status, error) = if full { ("failed", Some(OUTBOX_FULL)) } else { ("pending", None) };
                    let inserted = insert.execute(params![
                        delivery.endpoint_id,
                        delivery.event_id,
                        delivery.event.as_str(),
                        delivery.session_id,
                        delivery.body,
                        status,
                        error,
                        now,
                        delivery.path,
                    ])?;
                    if inserted == 1 {
                        if full {
                            out[at].outbox_full += 1;
                        } else {
                            out[at].pending += 1;
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn claim(
        &self,
        endpoint_id: &str,
        limit: usize,
        now: u64,
        lease: Duration,
    ) -> Result<Option<Claim>, StorageError> {
        let endpoint_id = endpoint_id.to_owned();
        self.with(move |state| {
            let Some(endpoint) = endpoint(&state.conn, &endpoint_id)?.filter(|e| e.disabled.is_none()) else {
                return Ok(None);
            };
            if let Some(until) = state.leases.get(&endpoint_id).copied().filter(|until| *until > now) {
                return Ok(Some(Claim { endpoint, deliveries: Vec::new(), until: Some(until) }));
            }
            let head = state
                .conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE endpoint_id = ?1 AND status = 'pending' \
                     ORDER BY id LIMIT ?2"
                ))?
                .query_map(params![endpoint_id, limit as i64], delivery_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(lease_head(state, endpoint, head, now, lease)))
        })
        .await
    }

    async fn extend(
        &self,
        endpoint_id: &str,
        until: u64,
        lease: Duration,
        now: u64,
    ) -> Result<Option<u64>, StorageError> {
        let endpoint_id = endpoint_id.to_owned();
        self.with(move |state| {
            Ok(state.leases.get_mut(&endpoint_id).filter(|held| **held == until).map(|held| {
                *held = lease_end(now, lease).max(until);
                *held
            }))
        })
        .await
    }

    async fn settle(
        &self,
        endpoint_id: &str,
        until: u64,
        delivered: &[i64],
        stopped_at: Option<(i64, DeliveryOutcome)>,
        now: u64,
    ) -> Result<u64, StorageError> {
        let (endpoint_id, delivered) = (endpoint_id.to_owned(), delivered.to_vec());
        self.with(move |state| {
            let tx = state.conn.transaction()?;
            let now = int(now);
            {
                let mut done = tx.prepare_cached(
                    "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, updated_at = ?2 \
                     WHERE id = ?1",
                )?;
                for id in &delivered {
                    done.execute(params![id, now])?;
                }
            }
            if let Some((delivery, outcome)) = stopped_at {
                match outcome {
                    DeliveryOutcome::Gone => {
                        tx.execute(
                            "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, last_error = ?3, \
                             updated_at = ?2 WHERE id = ?1 AND status = 'pending'",
                            params![delivery, now, GONE],
                        )?;
                        tx.execute("UPDATE endpoints SET disabled = ?2 WHERE id = ?1", params![endpoint_id, GONE])?;
                    }
                    DeliveryOutcome::Dead(error) => {
                        tx.execute(
                            "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, last_error = ?3, \
                             updated_at = ?2 WHERE id = ?1 AND status = 'pending'",
                            params![delivery, now, error],
                        )?;
                    }
                    DeliveryOutcome::Retry { error, next_attempt_at } => {
                        tx.execute(
                            "UPDATE deliveries SET attempts = attempts + 1, last_error = ?3, next_attempt_at = ?4, \
                             updated_at = ?2 WHERE id = ?1 AND status = 'pending'",
                            params![delivery, now, error, int(next_attempt_at)],
                        )?;
                    }
                }
            }
            let pending = pending(&tx, &endpoint_id)?;
            tx.commit()?;
            if state.leases.get(&endpoint_id) == Some(&until) {
                state.leases.remove(&endpoint_id);
            }
            Ok(pending)
        })
        .await
    }

    async fn deliveries(
        &self,
        endpoint_id: &str,
        viewer: &Viewer,
        status: Option<WebhookDeliveryStatus>,
        limit: usize,
    ) -> Result<Option<Vec<Delivery>>, StorageError> {
        let (endpoint_id, viewer) = (endpoint_id.to_owned(), viewer.clone());
        self.with(move |state| {
            let conn = &state.conn;
            if !visible(conn, &endpoint_id, &viewer)? {
                return Ok(None);
            }
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE endpoint_id = ?1 AND (?2 IS NULL OR status = ?2) \
                 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = stmt
                .query_map(
                    params![endpoint_id, status.map(WebhookDeliveryStatus::as_str), limit as i64],
                    delivery_from_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(rows))
        })
        .await
    }

    async fn prune(&self, before: u64, limit: usize) -> Result<u64, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |state| {
            let deleted = state.conn.execute(
                "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
                 WHERE status <> 'pending' AND updated_at < ?1 LIMIT ?2)",
                params![int(before), limit],
            )?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn retry(
        &self,
        endpoint_id: &str,
        viewer: &Viewer,
        delivery: Option<i64>,
        now: u64,
    ) -> Result<Option<u64>, StorageError> {
        let (endpoint_id, viewer) = (endpoint_id.to_owned(), viewer.clone());
        self.with(move |state| {
            let tx = state.conn.transaction()?;
            if !visible(&tx, &endpoint_id, &viewer)? {
                return Ok(None);
            }
            let now = int(now);
            let retried = match delivery {
                Some(id) => tx.execute(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = ?3, created_at = ?3, updated_at = ?3 \
                     WHERE endpoint_id = ?1 AND id = ?2 AND status = 'failed'",
                    params![endpoint_id, id, now],
                )?,
                None => tx.execute(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = ?2, created_at = ?2, updated_at = ?2 \
                     WHERE endpoint_id = ?1 AND status = 'failed'",
                    params![endpoint_id, now],
                )?,
            };
            tx.execute("UPDATE endpoints SET disabled = NULL WHERE id = ?1", [&endpoint_id])?;
            tx.commit()?;
            Ok(Some(retried as u64))
        })
        .await
    }
}

/// The due prefix of `head` (an endpoint's oldest pending deliveries), leased; or, when nothing
/// is due, when the oldest will be.
fn lease_head(state: &mut State, endpoint: Endpoint, mut head: Vec<Delivery>, now: u64, lease: Duration) -> Claim {
    let due = head.iter().take_while(|d| d.next_attempt_at <= now).count();
    if due == 0 {
        let until = head.first().map(|d| d.next_attempt_at);
        return Claim { endpoint, deliveries: Vec::new(), until };
    }
    head.truncate(due);
    let until = lease_end(now, lease);
    state.leases.insert(endpoint.id.clone(), until);
    Claim { endpoint, deliveries: head, until: Some(until) }
}

fn pending(conn: &Connection, endpoint_id: &str) -> Result<u64, StorageError> {
    let count: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE endpoint_id = ?1 AND status = 'pending'")?
        .query_row([endpoint_id], |r| r.get(0))?;
    Ok(to_u64(count))
}

/// The endpoints `viewer` sees, oldest first.
fn visible_endpoints(conn: &Connection, viewer: &Viewer) -> Result<Vec<Endpoint>, StorageError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE ?1 IS NULL OR owner = ?1 ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([viewer.owner()], endpoint_from_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows.into_iter().flatten().collect())
}

fn endpoint(conn: &Connection, id: &str) -> Result<Option<Endpoint>, StorageError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = ?1"))?
        .query_row([id], endpoint_from_row)
        .optional()?
        .flatten())
}

/// Creates the tables if missing, adds the columns of later versions, and checks the version.
fn init_schema(conn: &Connection) -> Result<(), OpenError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(OpenError::Incompatible(format!(
            "schema version {version} is newer than this build's ({SCHEMA_VERSION})"
        )));
    }
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    let mut columns = Vec::new();
    tx.pragma(None, "table_info", "endpoints", |row| {
        columns.push(row.get::<_, String>(1)?);
        Ok(())
    })?;
    for (name, decl) in ADDED_ENDPOINT_COLUMNS {
        if !columns.iter().any(|c| c == name) {
            tx.execute_batch(&format!("ALTER TABLE endpoints ADD COLUMN {name} {decl}"))?;
        }
    }
    let mut columns = Vec::new();
    tx.pragma(None, "table_info", "deliveries", |row| {
        columns.push(row.get::<_, String>(1)?);
        Ok(())
    })?;
    for (name, decl) in ADDED_DELIVERY_COLUMNS {
        if !columns.iter().any(|c| c == name) {
            tx.execute_batch(&format!("ALTER TABLE deliveries ADD COLUMN {name} {decl}"))?;
        }
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Whether the endpoint `id` exists and `viewer` sees it.
fn visible(conn: &Connection, id: &str, viewer: &Viewer) -> Result<bool, StorageError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM endpoints WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)")?
        .exists(params![id, viewer.owner()])?)
}

const ENDPOINT_COLUMNS: &str = "id, url, secret, events, sessions, created_at, disabled, owner, owner_admin, format";

const DELIVERY_COLUMNS: &str =
    "id, event_id, event, session_id, status, attempts, last_error, created_at, next_attempt_at, body, path";

fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    let status: String = r.get(4)?;
    Ok(Delivery {
        id: r.get(0)?,
        event_id: r.get(1)?,
        event: r.get(2)?,
        session_id: r.get(3)?,
        status: WebhookDeliveryStatus::parse(&status).unwrap_or(WebhookDeliveryStatus::Failed),
        attempts: r.get(5)?,
        last_error: r.get(6)?,
        created_at: to_u64(r.get(7)?),
        next_attempt_at: to_u64(r.get(8)?),
        body: r.get(9)?,
        path: r.get(10)?,
    })
}

/// `None` for a row whose secret or format this build cannot use (never written by it).
fn endpoint_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Endpoint>> {
    Ok(EndpointColumns {
        id: r.get(0)?,
        url: r.get(1)?,
        secret: r.get(2)?,
        events: r.get(3)?,
        sessions: r.get(4)?,
        created_at: r.get(5)?,
        disabled: r.get(6)?,
        owner_name: r.get(7)?,
        owner_admin: r.get(8)?,
        format: r.get(9)?,
    }
    .decode())
}

fn events_json(events: Option<&Vec<EventKind>>) -> Option<String> {
    events
        .map(|events| serde_json::to_string(&events.iter().map(|e| e.as_str()).collect::<Vec<_>>()).unwrap_or_default())
}

fn sessions_json(sessions: Option<&Vec<String>>) -> Option<String> {
    sessions.and_then(|s| serde_json::to_string(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Owner, WebhookFormat};

    fn temp_db() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wg-webhooks-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("webhooks.db")
    }

    fn user_version(store: &SqliteWebhooks) -> i64 {
        let state = store.state.lock().unwrap();
        state.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap()
    }

    fn endpoint(url: &str, owner: Owner) -> Endpoint {
        Endpoint {
            id: Endpoint::new_id(),
            url: url.into(),
            secret: WebhookSecret::generate(),
            events: None,
            sessions: None,
            created_at: crate::storage::now_ms(),
            disabled: None,
            owner,
            format: WebhookFormat::Standard,
        }
    }

    #[tokio::test]
    async fn endpoints_from_before_owners_belong_to_the_admin() {
        let path = temp_db();
        let secret = WebhookSecret::generate().expose();
        {
            // The first schema: no owner, no user_version.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE endpoints (id TEXT PRIMARY KEY, url TEXT NOT NULL, secret TEXT NOT NULL, events TEXT, \
                 sessions TEXT, created_at INTEGER NOT NULL, disabled TEXT) STRICT;",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO endpoints (id, url, secret, created_at) VALUES ('wh_old', 'http://10.0.0.5/h', ?1, 1)",
                [&secret],
            )
            .unwrap();
        }
        let store = SqliteWebhooks::open(&path).unwrap();
        assert_eq!(user_version(&store), SCHEMA_VERSION);
        let all = store.endpoints(&Viewer::Admin).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].owner, Owner::admin());

        // A scoped token sees nothing of it and can touch nothing.
        let scoped = Viewer::Token("ventas".into());
        assert!(store.endpoints_with_pending(&scoped).await.unwrap().is_empty());
        assert!(store.deliveries("wh_old", &scoped, None, 10).await.unwrap().is_none());
        assert!(store.retry("wh_old", &scoped, None, 1).await.unwrap().is_none());
        assert!(!store.delete("wh_old", &scoped).await.unwrap());
        assert_eq!(store.endpoints(&Viewer::Admin).await.unwrap().len(), 1);

        // Opening again is a no-op; the admin still manages it.
        drop(store);
        let store = SqliteWebhooks::open(&path).unwrap();
        assert!(store.delete("wh_old", &Viewer::Admin).await.unwrap());
    }

    #[tokio::test]
    async fn a_token_sees_the_endpoints_it_registered() {
        let store = SqliteWebhooks::open(&temp_db()).unwrap();
        let mine = Owner { name: "ventas".into(), admin: false };
        let created = endpoint("http://x/h", mine.clone());
        store.create(&created).await.unwrap();
        store.create(&endpoint("http://y/h", Owner::admin())).await.unwrap();
        let seen = store.endpoints_with_pending(&Viewer::Token("ventas".into())).await.unwrap();
        assert_eq!(seen.iter().map(|(e, _)| (&e.id, &e.owner)).collect::<Vec<_>>(), [(&created.id, &mine)]);
        assert_eq!(store.endpoints_with_pending(&Viewer::Admin).await.unwrap().len(), 2);
        assert!(store.endpoints_with_pending(&Viewer::Token("otro".into())).await.unwrap().is_empty());
        assert!(store.deliveries(&created.id, &Viewer::Token("otro".into()), None, 10).await.unwrap().is_none());
        let own = store.deliveries(&created.id, &Viewer::Token("ventas".into()), None, 10).await.unwrap();
        assert_eq!(own.map(|d| d.len()), Some(0));
    }

    #[tokio::test]
    async fn endpoints_and_deliveries_from_before_formats_stay_standard() {
        let path = temp_db();
        let secret = WebhookSecret::generate().expose();
        {
            // Version 2: owners, no formats, no delivery paths.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE endpoints (id TEXT PRIMARY KEY, url TEXT NOT NULL, secret TEXT NOT NULL, events TEXT, \
                 sessions TEXT, created_at INTEGER NOT NULL, disabled TEXT, owner TEXT NOT NULL DEFAULT 'admin', \
                 owner_admin INTEGER NOT NULL DEFAULT 1) STRICT;
                 CREATE TABLE deliveries (id INTEGER PRIMARY KEY AUTOINCREMENT, endpoint_id TEXT NOT NULL, \
                 event_id TEXT NOT NULL, event TEXT NOT NULL, session_id TEXT NOT NULL, body TEXT NOT NULL, \
                 status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, \
                 next_attempt_at INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL) STRICT;
                 PRAGMA user_version = 2;",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO endpoints (id, url, secret, created_at) VALUES ('wh_old', 'http://10.0.0.5/h', ?1, 1)",
                [&secret],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO deliveries (endpoint_id, event_id, event, session_id, body, status, next_attempt_at, \
                 created_at, updated_at) VALUES ('wh_old', 'evt_1', 'session.qr', 'a', '{}', 'pending', 0, 0, 0)",
                [],
            )
            .unwrap();
        }
        let store = SqliteWebhooks::open(&path).unwrap();
        assert_eq!(user_version(&store), SCHEMA_VERSION);
        assert_eq!(store.endpoints(&Viewer::Admin).await.unwrap()[0].format, WebhookFormat::Standard);
        let claim = store.claim("wh_old", 10, 1, Duration::from_secs(60)).await.unwrap().unwrap();
        let pending = claim.deliveries;
        assert_eq!((pending.len(), pending[0].path.as_str()), (1, ""), "posted to the endpoint's URL, as before");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let path = temp_db();
        Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        assert!(matches!(SqliteWebhooks::open(&path), Err(OpenError::Incompatible(_))));
    }
}
