//! The credentials of every number in one schema on the shared pool: whatsapp-rust 0.7's
//! storage traits (`Backend`) over the tables of `0003_credentials.sql`, which are the tables of
//! its SQLite store with `session_id` where that has `device_id`.
//!
//! What it promises, as the SQLite store does:
//! * Every write is committed (`synchronous_commit=on`) before the call returns, and an error is
//!   returned, never swallowed: a client whose store is unreachable stops and retries rather
//!   than running ahead with keys nobody saved.
//! * A batch is one statement (`UNNEST` of arrays), so it is all or nothing; when a batch names
//!   one key twice, the last one wins, as it does when SQLite writes the rows one by one.
//! * The same answers, down to the defaults (a missing hash state is version 0) and the blobs
//!   (`wire`: the SQLite store's protobuf, so rows can be copied between them).
//!
//! A session's store is a pool handle, its id and a gate: no connection or cache of its own, so a
//! thousand idle numbers cost a thousand small structs. [`CredentialStore::wipe`] shuts the gate
//! of every store handed out for the session before it deletes, so a client generation that is
//! still finishing cannot write its keys back.

mod app_sync;
mod device;
mod protocol;
mod signal;
mod wire;

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use dashmap::DashMap;
use sqlx::PgPool;
use whatsapp_rust::wacore::store::error::StoreError;

use crate::domain::{Lease, SessionId};
use crate::storage::StorageError;
use crate::storage::credentials::{CredentialBackend, CredentialStore, WriteFence};

/// Every table that holds a number's credentials, so that a wipe forgets none.
const TABLES: [&str; 18] = [
    "DELETE FROM wa_identities WHERE session_id = $1",
    "DELETE FROM wa_sessions WHERE session_id = $1",
    "DELETE FROM wa_prekeys WHERE session_id = $1",
    "DELETE FROM wa_signed_prekeys WHERE session_id = $1",
    "DELETE FROM wa_sender_keys WHERE session_id = $1",
    "DELETE FROM wa_app_state_keys WHERE session_id = $1",
    "DELETE FROM wa_app_state_versions WHERE session_id = $1",
    "DELETE FROM wa_app_state_mutation_macs WHERE session_id = $1",
    "DELETE FROM wa_sender_key_devices WHERE session_id = $1",
    "DELETE FROM wa_lid_pn_mapping WHERE session_id = $1",
    "DELETE FROM wa_base_keys WHERE session_id = $1",
    "DELETE FROM wa_device_registry WHERE session_id = $1",
    "DELETE FROM wa_group_metadata WHERE session_id = $1",
    "DELETE FROM wa_tc_tokens WHERE session_id = $1",
    "DELETE FROM wa_sent_messages WHERE session_id = $1",
    "DELETE FROM wa_pending_inbound WHERE session_id = $1",
    "DELETE FROM wa_msg_secrets WHERE session_id = $1",
    "DELETE FROM wa_device WHERE session_id = $1",
];

/// The credentials of every number, on the shared pool.
#[derive(Debug)]
pub struct PgCredentials {
    pool: PgPool,
    /// The gate of the stores handed out for each session since its last wipe.
    gates: DashMap<SessionId, Arc<Gate>>,
}

impl PgCredentials {
    pub(in crate::storage::postgres) fn new(pool: PgPool) -> PgCredentials {
        PgCredentials { pool, gates: DashMap::new() }
    }

    /// Shuts the gate of every store handed out for `session`, and waits for the writes already
    /// inside to finish.
    async fn close_gate(&self, session: &SessionId) {
        if let Some((_, gate)) = self.gates.remove(session) {
            gate.closed.store(true, Ordering::SeqCst);
            drop(gate.writes.write().await);
        }
    }
}

/// Open until the session's credentials are wiped; every store call passes through it.
#[derive(Debug, Default)]
struct Gate {
    closed: AtomicBool,
    /// Held shared by each call while it runs, and exclusively by a wipe before it deletes.
    writes: tokio::sync::RwLock<()>,
}

#[async_trait]
impl CredentialStore for PgCredentials {
    async fn backend(&self, session: &SessionId) -> Result<CredentialBackend, StorageError> {
        let gate = self.gates.entry(session.clone()).or_default().clone();
        Ok(Arc::new(PgBackend { pool: self.pool.clone(), session: Arc::from(session.as_str()), gate, fence: None }))
    }

    async fn fenced_backend(&self, session: &SessionId, fence: WriteFence) -> Result<CredentialBackend, StorageError> {
        let gate = self.gates.entry(session.clone()).or_default().clone();
        Ok(Arc::new(PgBackend {
            pool: self.pool.clone(),
            session: Arc::from(session.as_str()),
            gate,
            fence: Some(fence),
        }))
    }

    async fn has_credentials(&self, session: &SessionId) -> Result<bool, StorageError> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM wa_device WHERE session_id = $1)")
            .bind(session.as_str())
            .fetch_one(&self.pool)
            .await?)
    }

    async fn with_credentials(&self, sessions: &[SessionId]) -> Result<HashSet<SessionId>, StorageError> {
        let ids: Vec<&str> = sessions.iter().map(SessionId::as_str).collect();
        let linked: Vec<String> = sqlx::query_scalar("SELECT session_id FROM wa_device WHERE session_id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(sessions.iter().filter(|s| linked.iter().any(|l| l == s.as_str())).cloned().collect())
    }

    async fn wipe(&self, session: &SessionId) -> Result<(), StorageError> {
        self.close_gate(session).await;
        let mut tx = crate::storage::postgres::begin(&self.pool).await?;
        for delete in TABLES {
            sqlx::query(delete).bind(session.as_str()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn wipe_under_lease(&self, session: &SessionId, lease: &Lease) -> Result<bool, StorageError> {
        let mut tx = crate::storage::postgres::begin(&self.pool).await?;
        if !super::leases::hold_for_write(&mut tx, lease).await? {
            metrics::counter!(crate::metrics::FENCING_REFUSALS, "store" => "credentials").increment(1);
            return Ok(false);
        }
        self.close_gate(session).await;
        for delete in TABLES {
            sqlx::query(delete).bind(session.as_str()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    fn location(&self, session: &SessionId) -> String {
        format!("postgres: the wa_* tables' rows of session {session}")
    }

    async fn remove(&self, session: &SessionId) -> Result<(), StorageError> {
        // Postgres keeps nothing for a session but its credentials.
        self.wipe(session).await
    }
}

/// One number's store: what a client is built on.
pub(super) struct PgBackend {
    pool: PgPool,
    session: Arc<str>,
    gate: Arc<Gate>,
    /// In a fleet: the number's lease, which every write must still hold.
    fence: Option<WriteFence>,
}

/// A store call on credentials that were wiped while its client still ran.
#[derive(Debug, thiserror::Error)]
#[error("the credentials of this session were wiped")]
struct Wiped;

/// A store call from a gateway that no longer holds the number's lease.
#[derive(Debug, thiserror::Error)]
#[error("this gateway no longer holds the number's lease")]
struct Fenced;

impl PgBackend {
    /// Lets a call through the gate: held until the call is done.
    async fn open(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, StoreError> {
        let guard = self.gate.writes.read().await;
        if self.gate.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Database(Box::new(Wiped)));
        }
        if self.fence.as_ref().is_some_and(|fence| !fence.holds()) {
            return Err(fenced());
        }
        Ok(guard)
    }

    /// Lets a write through the gate, on a connection of its own. In a fleet that is a
    /// transaction that first holds the lease row (`FOR SHARE`): the write is refused unless the
    /// fence's lease is still the number's live lease, and no claim by another gateway commits
    /// before it does. [`Writer::done`] commits.
    async fn write(&self) -> Result<Writer<'_>, StoreError> {
        let gate = self.open().await?;
        let conn = match &self.fence {
            None => Conn::Plain(self.pool.acquire().await.map_err(db)?),
            Some(fence) => {
                let mut tx = crate::storage::postgres::begin(&self.pool).await.map_err(db)?;
                if !super::leases::hold_for_write(&mut tx, fence.lease()).await.map_err(db)? {
                    return Err(fenced());
                }
                Conn::Fenced(tx)
            }
        };
        Ok(Writer { _gate: gate, conn })
    }

    fn session(&self) -> &str {
        &self.session
    }
}

/// Counts a refused call and says why.
fn fenced() -> StoreError {
    metrics::counter!(crate::metrics::FENCING_REFUSALS, "store" => "credentials").increment(1);
    StoreError::Database(Box::new(Fenced))
}

/// One write's connection, through the gate until it is done.
pub(super) struct Writer<'a> {
    _gate: tokio::sync::RwLockReadGuard<'a, ()>,
    conn: Conn,
}

enum Conn {
    /// No fleet: a connection of the pool, each statement committed on its own.
    Plain(sqlx::pool::PoolConnection<sqlx::Postgres>),
    /// In a fleet: a transaction holding the lease row.
    Fenced(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Writer<'_> {
    pub(super) fn conn(&mut self) -> &mut sqlx::PgConnection {
        match &mut self.conn {
            Conn::Plain(conn) => conn,
            Conn::Fenced(tx) => tx,
        }
    }

    /// Commits what was written (in a fleet: with the lease still held, as checked at the start).
    pub(super) async fn done(self) -> Result<(), StoreError> {
        if let Conn::Fenced(tx) = self.conn {
            tx.commit().await.map_err(db)?;
        }
        Ok(())
    }
}

/// whatsapp-rust's error for a failed statement: `Connection` when Postgres could not be
/// reached (the client retries later), `Database` otherwise.
fn db(error: sqlx::Error) -> StoreError {
    match StorageError::from(error) {
        StorageError::Unavailable(why) => StoreError::Connection(why.into()),
        StorageError::Failed(why) => StoreError::Database(why.into()),
    }
}

/// The items of a batch with each key once, its last value winning, in the order of those last
/// values: what writing the rows one by one would have left, as one statement can hold.
fn last_wins<K: Eq + Hash + Clone, T>(items: impl IntoIterator<Item = (K, T)>) -> Vec<(K, T)> {
    let items: Vec<(K, T)> = items.into_iter().collect();
    let mut last: HashMap<K, usize> = HashMap::with_capacity(items.len());
    for (i, (key, _)) in items.iter().enumerate() {
        last.insert(key.clone(), i);
    }
    items.into_iter().enumerate().filter(|(i, (key, _))| last.get(key) == Some(i)).map(|(_, item)| item).collect()
}

/// A `u32` as the `BIGINT` it is stored in.
fn big(value: u32) -> i64 {
    i64::from(value)
}

/// A stored `BIGINT` back to the `u32` it was; one out of range (written by hand) is corrupt.
fn small(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Validation(format!("{value} does not fit a u32")))
}

/// Seconds since the epoch, from the same clock the client computes its cutoffs with.
fn now() -> i64 {
    whatsapp_rust::wacore::time::now_secs()
}

#[cfg(test)]
mod tests {
    use super::last_wins;

    #[test]
    fn a_batch_keeps_the_last_value_of_each_key() {
        let batch = vec![("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)];
        assert_eq!(last_wins(batch), vec![("a", 3), ("c", 4), ("b", 5)]);
        assert!(last_wins(Vec::<(u8, u8)>::new()).is_empty());
    }
}
