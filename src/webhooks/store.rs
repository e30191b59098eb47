//! The webhooks' SQLite side: endpoints and their deliveries.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::format::{SessionFacts, WebhookFormat};
use super::sign::WebhookSecret;
use crate::events::{EventKind, GatewayEvent};

/// The id of the endpoint from `WEBHOOK_URL`.
pub const ENV_ENDPOINT: &str = "env";
/// The id of the endpoint from `BACKEND_URL` (a seed's callbacks).
pub const BACKEND_URL_ENDPOINT: &str = "env_backend_url";
/// The id of the endpoint from `BACKEND_BASE_URL` (seed 002's callbacks).
pub const BACKEND_BASE_URL_ENDPOINT: &str = "env_backend_base_url";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("webhook store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("webhook store: {0}")]
    Io(#[from] std::io::Error),
    #[error("webhook store closed")]
    Closed,
    #[error("webhook store: {0}")]
    Incompatible(String),
}

/// Where a webhook delivery is. Not a message's [`crate::domain::DeliveryStatus`]: the two
/// have their own names so the OpenAPI document can describe both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookDeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl WebhookDeliveryStatus {
    /// Every status, in the order a delivery goes through them.
    pub const ALL: [WebhookDeliveryStatus; 3] =
        [WebhookDeliveryStatus::Pending, WebhookDeliveryStatus::Delivered, WebhookDeliveryStatus::Failed];

    /// The name in JSON, SQL and `?status=`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookDeliveryStatus::Pending => "pending",
            WebhookDeliveryStatus::Delivered => "delivered",
            WebhookDeliveryStatus::Failed => "failed",
        }
    }

    /// The status named `text`, if any.
    pub fn parse(text: &str) -> Option<WebhookDeliveryStatus> {
        WebhookDeliveryStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The token that registered an endpoint: it sees and manages it (and the admin does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The token's name (`admin` for `API_STATIC_TOKEN`, `WEBHOOK_URL` and endpoints from before
    /// owners were recorded).
    pub name: String,
    /// Whether it was the admin then: its endpoint may post to private addresses.
    pub admin: bool,
}

impl Owner {
    /// `API_STATIC_TOKEN`.
    pub fn admin() -> Owner {
        Owner { name: ADMIN.to_owned(), admin: true }
    }
}

/// The admin token's name, and the owner of endpoints that predate owners.
const ADMIN: &str = "admin";

/// Whose endpoints a caller sees and manages. Another caller's endpoint is treated as unknown
/// (404), so ids cannot be probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// The admin: every endpoint.
    Admin,
    /// Any other token, by name: the endpoints it registered.
    Token(String),
}

impl Viewer {
    /// The owner name to filter on, `None` for every endpoint (an SQL `?n IS NULL OR owner = ?n`).
    fn owner(&self) -> Option<&str> {
        match self {
            Viewer::Admin => None,
            Viewer::Token(name) => Some(name),
        }
    }
}

/// A receiver of events.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub secret: WebhookSecret,
    /// `None`: every event.
    pub events: Option<Vec<EventKind>>,
    /// `None`: every session.
    pub sessions: Option<Vec<String>>,
    pub created_at: u64,
    /// Why it no longer receives (a 410).
    pub disabled: Option<String>,
    /// Who registered it.
    pub owner: Owner,
    /// How its events are posted: a `seed…` format posts to paths below `url`.
    pub format: WebhookFormat,
}

impl Endpoint {
    /// Whether it may get events of `kind` (enabled, asked for, and posted in its format).
    pub(super) fn wants_kind(&self, kind: EventKind) -> bool {
        self.disabled.is_none()
            && self.format.posts(kind)
            && self.events.as_ref().is_none_or(|events| events.contains(&kind))
    }

    fn wants(&self, event: &GatewayEvent) -> bool {
        self.wants_kind(event.event)
            && self.sessions.as_ref().is_none_or(|sessions| sessions.contains(&event.session_id))
    }
}

/// One event for one endpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: i64,
    /// The event's id: the `webhook-id` of every attempt.
    pub event_id: String,
    pub event: String,
    pub session_id: String,
    pub status: WebhookDeliveryStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Unix ms.
    pub created_at: u64,
    /// Unix ms of the next attempt (pending ones).
    pub next_attempt_at: u64,
    /// The JSON posted.
    #[serde(skip)]
    pub body: String,
    /// Where, below the endpoint's URL (a `seed…` format's callback path; empty for `standard`).
    #[serde(skip)]
    pub path: String,
}

/// What a failed post did to a delivery.
pub(super) enum Update {
    Gone,
    Dead(String),
    Retry { error: String, next_attempt_at: u64 },
}

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

#[derive(Clone)]
pub(super) struct Store {
    conn: Arc<Mutex<Connection>>,
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Store {
    pub(super) fn open(path: &Path) -> Result<Store, StoreError> {
        crate::files::private_file(path)?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        init_schema(&conn)?;
        Ok(Store { conn: Arc::new(Mutex::new(conn)) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates, updates or removes the endpoint `id` of an environment variable (`WEBHOOK_URL`,
    /// `BACKEND_URL`, `BACKEND_BASE_URL`): the same id at every start, so a restart changes
    /// nothing but what the variable changed.
    pub(super) fn sync_env_endpoint(&self, id: &str, env: Option<&super::EnvEndpoint>) -> Result<(), StoreError> {
        let conn = self.lock();
        match env {
            None => {
                conn.execute("DELETE FROM deliveries WHERE endpoint_id = ?1", [id])?;
                conn.execute("DELETE FROM endpoints WHERE id = ?1", [id])?;
            }
            Some(super::EnvEndpoint { url, secret, events, format }) => {
                let existing: Option<String> =
                    conn.query_row("SELECT secret FROM endpoints WHERE id = ?1", [id], |r| r.get(0)).optional()?;
                // Without WEBHOOK_SECRET the secret generated the first time stays (it is logged
                // nowhere; set WEBHOOK_SECRET to know it).
                let secret = match (secret, existing) {
                    (Some(secret), _) => secret.expose(),
                    (None, Some(existing)) => existing,
                    (None, None) => WebhookSecret::generate().expose(),
                };
                conn.execute(
                    "INSERT INTO endpoints (id, url, secret, events, sessions, created_at, format) \
                     VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6) \
                     ON CONFLICT (id) DO UPDATE SET url = excluded.url, secret = excluded.secret, events = excluded.events, \
                     format = excluded.format, disabled = NULL",
                    params![id, url, secret, events_json(events.as_ref()), int(crate::journal::now_ms()), format.as_str()],
                )?;
            }
        }
        Ok(())
    }

    pub(super) fn create(
        &self,
        url: String,
        events: Option<Vec<EventKind>>,
        sessions: Option<Vec<String>>,
        secret: WebhookSecret,
        owner: Owner,
        format: WebhookFormat,
    ) -> Result<Endpoint, StoreError> {
        let raw: [u8; 8] = rand::random();
        let id = format!("wh_{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let created_at = crate::journal::now_ms();
        self.lock().execute(
            "INSERT INTO endpoints (id, url, secret, events, sessions, created_at, owner, owner_admin, format) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                id,
                url,
                secret.expose(),
                events_json(events.as_ref()),
                sessions.as_ref().and_then(|s| serde_json::to_string(s).ok()),
                int(created_at),
                owner.name,
                owner.admin,
                format.as_str(),
            ],
        )?;
        Ok(Endpoint { id, url, secret, events, sessions, created_at, disabled: None, owner, format })
    }

    /// Every endpoint, oldest first.
    pub(super) fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        self.visible_endpoints(&Viewer::Admin)
    }

    /// The endpoints `viewer` sees, oldest first.
    fn visible_endpoints(&self, viewer: &Viewer) -> Result<Vec<Endpoint>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE ?1 IS NULL OR owner = ?1 ORDER BY created_at"
        ))?;
        let rows = stmt.query_map([viewer.owner()], endpoint_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().flatten().collect())
    }

    pub(super) fn endpoints_with_pending(&self, viewer: &Viewer) -> Result<Vec<(Endpoint, u64)>, StoreError> {
        let endpoints = self.visible_endpoints(viewer)?;
        let conn = self.lock();
        let mut count =
            conn.prepare_cached("SELECT COUNT(*) FROM deliveries WHERE endpoint_id = ?1 AND status = 'pending'")?;
        let mut out = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let pending: i64 = count.query_row([&endpoint.id], |r| r.get(0))?;
            out.push((endpoint, to_u64(pending)));
        }
        Ok(out)
    }

    /// Deletes the endpoint `id` if `viewer` sees it; `false` otherwise.
    pub(super) fn delete(&self, id: &str, viewer: &Viewer) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if !visible(&tx, id, viewer)? {
            return Ok(false);
        }
        tx.execute("DELETE FROM deliveries WHERE endpoint_id = ?1", [id])?;
        let deleted = tx.execute("DELETE FROM endpoints WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(deleted == 1)
    }

    /// Writes a delivery of each event for each endpoint that wants it, rendered in the endpoint's
    /// format (`facts` completes a seed's callback), in one transaction; returns the endpoints
    /// that got new pending deliveries. Beyond `max` pending, a delivery is written as failed
    /// (`outbox full`).
    pub(super) fn enqueue(
        &self,
        events: &[Arc<GatewayEvent>],
        max: u64,
        facts: &dyn Fn(&str) -> SessionFacts,
    ) -> Result<Vec<String>, StoreError> {
        let endpoints: Vec<Endpoint> =
            self.endpoints()?.into_iter().filter(|endpoint| events.iter().any(|e| endpoint.wants(e))).collect();
        if endpoints.is_empty() {
            // Nobody wants them: no write, no sync.
            return Ok(Vec::new());
        }
        let mut conn = self.lock();
        let tx = Transaction::new(&mut conn, TransactionBehavior::Immediate)?;
        let now = int(crate::journal::now_ms());
        let mut woken = Vec::new();
        for endpoint in &endpoints {
            let wanted: Vec<&Arc<GatewayEvent>> = events.iter().filter(|e| endpoint.wants(e)).collect();
            if wanted.is_empty() {
                continue;
            }
            let mut pending: u64 = to_u64(tx.query_row(
                "SELECT COUNT(*) FROM deliveries WHERE endpoint_id = ?1 AND status = 'pending'",
                [&endpoint.id],
                |r| r.get(0),
            )?);
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO deliveries (endpoint_id, event_id, event, session_id, body, status, last_error, \
                 next_attempt_at, created_at, updated_at, path) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8, ?9)",
            )?;
            let mut any = false;
            for event in wanted {
                // A seed's format has no callback for some events of a kind it posts.
                let Some(rendered) = endpoint.format.render(event, facts) else { continue };
                any = true;
                let (status, error) = if pending >= max {
                    metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => "outbox_full").increment(1);
                    ("failed", Some("outbox full"))
                } else {
                    ("pending", None)
                };
                let inserted = insert.execute(params![
                    endpoint.id,
                    event.id,
                    event.event.as_str(),
                    event.session_id,
                    rendered.body,
                    status,
                    error,
                    now,
                    rendered.path,
                ])?;
                if inserted == 1 && status == "pending" {
                    pending += 1;
                }
            }
            if any {
                metrics::gauge!(crate::metrics::WEBHOOK_OUTBOX, "endpoint" => endpoint.id.clone()).set(pending as f64);
                woken.push(endpoint.id.clone());
            }
        }
        tx.commit()?;
        Ok(woken)
    }

    /// The endpoint and its oldest pending deliveries (at most `limit`), if it is enabled and
    /// has any.
    pub(super) fn next_pending(
        &self,
        endpoint_id: &str,
        limit: usize,
    ) -> Result<Option<(Endpoint, Vec<Delivery>)>, StoreError> {
        let conn = self.lock();
        let endpoint = conn
            .prepare_cached(&format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = ?1"))?
            .query_row([endpoint_id], endpoint_from_row)
            .optional()?
            .flatten();
        let Some(endpoint) = endpoint.filter(|e| e.disabled.is_none()) else { return Ok(None) };
        let deliveries = conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE endpoint_id = ?1 AND status = 'pending' ORDER BY id LIMIT ?2"
            ))?
            .query_map(params![endpoint_id, limit as i64], delivery_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((!deliveries.is_empty()).then_some((endpoint, deliveries)))
    }

    /// Records a batch's outcomes in one transaction: `delivered`, then what stopped it.
    pub(super) fn settle(
        &self,
        endpoint_id: &str,
        delivered: &[i64],
        stopped_at: Option<(i64, Update)>,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = int(now);
        {
            let mut done = tx.prepare_cached(
                "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, updated_at = ?2 WHERE id = ?1",
            )?;
            for id in delivered {
                done.execute(params![id, now])?;
            }
        }
        if let Some((delivery, update)) = stopped_at {
            match update {
                Update::Gone => {
                    tx.execute(
                        "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, \
                         last_error = 'the endpoint answered 410 Gone', updated_at = ?2 WHERE id = ?1",
                        params![delivery, now],
                    )?;
                    tx.execute(
                        "UPDATE endpoints SET disabled = 'the endpoint answered 410 Gone' WHERE id = ?1",
                        [endpoint_id],
                    )?;
                }
                Update::Dead(error) => {
                    tx.execute(
                        "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, last_error = ?3, updated_at = ?2 \
                         WHERE id = ?1",
                        params![delivery, now, error],
                    )?;
                }
                Update::Retry { error, next_attempt_at } => {
                    tx.execute(
                        "UPDATE deliveries SET attempts = attempts + 1, last_error = ?3, next_attempt_at = ?4, updated_at = ?2 \
                         WHERE id = ?1",
                        params![delivery, now, error, int(next_attempt_at)],
                    )?;
                }
            }
        }
        let pending: i64 = tx.query_row(
            "SELECT COUNT(*) FROM deliveries WHERE endpoint_id = ?1 AND status = 'pending'",
            [endpoint_id],
            |r| r.get(0),
        )?;
        tx.commit()?;
        metrics::gauge!(crate::metrics::WEBHOOK_OUTBOX, "endpoint" => endpoint_id.to_owned()).set(pending as f64);
        Ok(())
    }

    /// The deliveries of `endpoint_id`, newest first; `None` if `viewer` does not see it.
    pub(super) fn deliveries(
        &self,
        endpoint_id: &str,
        viewer: &Viewer,
        status: Option<WebhookDeliveryStatus>,
        limit: usize,
    ) -> Result<Option<Vec<Delivery>>, StoreError> {
        let conn = self.lock();
        if !visible(&conn, endpoint_id, viewer)? {
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
    }

    /// Makes failed deliveries of `endpoint_id` pending again; `None` if `viewer` does not see it.
    pub(super) fn retry(
        &self,
        endpoint_id: &str,
        viewer: &Viewer,
        delivery: Option<i64>,
    ) -> Result<Option<u64>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if !visible(&tx, endpoint_id, viewer)? {
            return Ok(None);
        }
        let now = int(crate::journal::now_ms());
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
        tx.execute("UPDATE endpoints SET disabled = NULL WHERE id = ?1", [endpoint_id])?;
        tx.commit()?;
        Ok(Some(retried as u64))
    }
}

/// Creates the tables if missing, adds the columns of later versions, and checks the version.
fn init_schema(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Incompatible(format!(
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
fn visible(conn: &Connection, id: &str, viewer: &Viewer) -> Result<bool, StoreError> {
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

/// `None` for a row whose secret no longer parses (never written by us).
fn endpoint_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Endpoint>> {
    let secret: String = r.get(2)?;
    let events: Option<String> = r.get(3)?;
    let sessions: Option<String> = r.get(4)?;
    let format: String = r.get(9)?;
    let Ok(secret) = WebhookSecret::parse(&secret) else { return Ok(None) };
    // A format this build does not know (a newer build's) is not posted in the wrong one.
    let Some(format) = WebhookFormat::parse(&format) else { return Ok(None) };
    Ok(Some(Endpoint {
        id: r.get(0)?,
        url: r.get(1)?,
        secret,
        events: events
            .and_then(|e| serde_json::from_str::<Vec<String>>(&e).ok())
            .map(|names| names.iter().filter_map(|n| EventKind::parse(n)).collect()),
        sessions: sessions.and_then(|s| serde_json::from_str(&s).ok()),
        created_at: to_u64(r.get(5)?),
        disabled: r.get(6)?,
        owner: Owner { name: r.get(7)?, admin: r.get(8)? },
        format,
    }))
}

fn events_json(events: Option<&Vec<EventKind>>) -> Option<String> {
    events
        .map(|events| serde_json::to_string(&events.iter().map(|e| e.as_str()).collect::<Vec<_>>()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wg-webhooks-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("webhooks.db")
    }

    #[test]
    fn endpoints_from_before_owners_belong_to_the_admin() {
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
        let store = Store::open(&path).unwrap();
        let version: i64 = store.lock().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let all = store.endpoints().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].owner, Owner::admin());

        // A scoped token sees nothing of it and can touch nothing.
        let scoped = Viewer::Token("ventas".into());
        assert!(store.endpoints_with_pending(&scoped).unwrap().is_empty());
        assert!(store.deliveries("wh_old", &scoped, None, 10).unwrap().is_none());
        assert!(store.retry("wh_old", &scoped, None).unwrap().is_none());
        assert!(!store.delete("wh_old", &scoped).unwrap());
        assert_eq!(store.endpoints().unwrap().len(), 1);

        // Opening again is a no-op; the admin still manages it.
        drop(store);
        let store = Store::open(&path).unwrap();
        assert!(store.delete("wh_old", &Viewer::Admin).unwrap());
    }

    #[test]
    fn a_token_sees_the_endpoints_it_registered() {
        let store = Store::open(&temp_db()).unwrap();
        let mine = Owner { name: "ventas".into(), admin: false };
        let created = store
            .create("http://x/h".into(), None, None, WebhookSecret::generate(), mine.clone(), WebhookFormat::Standard)
            .unwrap();
        store
            .create("http://y/h".into(), None, None, WebhookSecret::generate(), Owner::admin(), WebhookFormat::Standard)
            .unwrap();
        let seen = store.endpoints_with_pending(&Viewer::Token("ventas".into())).unwrap();
        assert_eq!(seen.iter().map(|(e, _)| (&e.id, &e.owner)).collect::<Vec<_>>(), [(&created.id, &mine)]);
        assert_eq!(store.endpoints_with_pending(&Viewer::Admin).unwrap().len(), 2);
        assert!(store.endpoints_with_pending(&Viewer::Token("otro".into())).unwrap().is_empty());
        assert!(store.deliveries(&created.id, &Viewer::Token("otro".into()), None, 10).unwrap().is_none());
        let own = store.deliveries(&created.id, &Viewer::Token("ventas".into()), None, 10).unwrap();
        assert_eq!(own.map(|d| d.len()), Some(0));
    }

    #[test]
    fn endpoints_and_deliveries_from_before_formats_stay_standard() {
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
        let store = Store::open(&path).unwrap();
        let version: i64 = store.lock().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(store.endpoints().unwrap()[0].format, WebhookFormat::Standard);
        let (_, pending) = store.next_pending("wh_old", 10).unwrap().unwrap();
        assert_eq!((pending.len(), pending[0].path.as_str()), (1, ""), "posted to the endpoint's URL, as before");
    }

    #[test]
    fn a_seed_format_writes_only_its_callbacks_with_their_paths() {
        let store = Store::open(&temp_db()).unwrap();
        let seed = store
            .create(
                "http://b:3000".into(),
                None,
                None,
                WebhookSecret::generate(),
                Owner::admin(),
                WebhookFormat::Seed000,
            )
            .unwrap();
        let event = |kind: EventKind, data: serde_json::Value| {
            Arc::new(GatewayEvent {
                id: crate::events::new_event_id(),
                event: kind,
                session_id: "a".into(),
                timestamp: 1,
                data,
            })
        };
        let events = [
            event(EventKind::MessageStatus, serde_json::json!({"messageId":"x","status":"sent"})),
            event(EventKind::SessionStatus, serde_json::json!({"status":"qr_ready","reason":null})),
            event(EventKind::SessionStatus, serde_json::json!({"status":"logged_out","reason":"x"})),
        ];
        assert_eq!(store.enqueue(&events, 10, &|_| SessionFacts::default()).unwrap(), vec![seed.id.clone()]);
        let (_, pending) = store.next_pending(&seed.id, 10).unwrap().unwrap();
        assert_eq!(pending.len(), 1, "only the log-out has a seed 000 callback");
        assert_eq!((pending[0].path.as_str(), pending[0].event.as_str()), ("/whatsapp-qr/webhook", "session.status"));
        assert!(store.enqueue(&events[..2], 10, &|_| SessionFacts::default()).unwrap().is_empty(), "nothing to wake");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let path = temp_db();
        Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        assert!(matches!(Store::open(&path), Err(StoreError::Incompatible(_))));
    }
}
