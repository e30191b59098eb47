//! The shared store, chosen by `DATABASE_URL=postgres://…`: one bounded pool that every session
//! shares, embedded migrations run at start under an advisory lock, and every commit durable
//! (`synchronous_commit=on`, whatever the server's default) before a caller is told so.
//!
//! A test (or an operator) keeps several gateways' data apart in one database by naming a schema
//! in the URL: `postgres://host/db?options[search_path]=tenant_a`.

mod credentials;
mod import;
mod inbox;
mod journal;
mod leases;
mod migrate;
mod registry;
mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

pub use credentials::PgCredentials;
pub use inbox::PgInbox;
pub use journal::PgJournal;
pub use leases::{PgLeases, RELEASED_CHANNEL};
pub use migrate::MIGRATIONS;
pub use registry::PgRegistry;
pub use webhooks::PgWebhooks;

use super::StorageError;

/// The pool's bound when `DATABASE_MAX_CONNECTIONS` is not set.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// How long a caller waits for a free connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared pool, cheap to clone.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
}

impl Database {
    /// Connects a pool of at most `max_connections` to `url` and brings the schema up to date.
    /// Fails when Postgres cannot be reached: the gateway does not start on a store it cannot
    /// see.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Database, StorageError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StorageError::Failed(format!("invalid DATABASE_URL: {}", redact(&e.to_string()))))?
            .application_name("whatsapp-gateway")
            .options([("synchronous_commit", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection broken by a Postgres restart is found and replaced before it is used.
            .test_before_acquire(true)
            .connect_with(options)
            .await
            .map_err(StorageError::from)?;
        migrate::run(&pool).await?;
        Ok(Database { pool })
    }

    /// The inbox on this database.
    pub fn inbox(&self) -> PgInbox {
        PgInbox::new(self.pool.clone())
    }

    /// The message journal on this database.
    pub fn journal(&self) -> PgJournal {
        PgJournal::new(self.pool.clone())
    }

    /// The numbers' credentials on this database (one per gateway: it keeps the gates of the
    /// stores it hands out).
    pub fn credentials(&self) -> PgCredentials {
        PgCredentials::new(self.pool.clone())
    }

    /// The fleet's leases and the gateways' heartbeats on this database.
    pub fn leases(&self) -> PgLeases {
        PgLeases::new(self.pool.clone())
    }

    /// The session registry on this database.
    pub fn registry(&self) -> PgRegistry {
        PgRegistry::new(self.pool.clone())
    }

    /// The webhook endpoints and their outbox on this database.
    pub fn webhooks(&self) -> PgWebhooks {
        PgWebhooks::new(self.pool.clone())
    }

    /// Connections open now (idle or in use); never more than the bound.
    pub fn connections(&self) -> u32 {
        self.pool.size()
    }

    /// True when a trivial query answers within the acquire timeout.
    pub async fn is_reachable(&self) -> bool {
        sqlx::query_scalar::<Postgres, i32>("SELECT 1").fetch_one(&self.pool).await.is_ok()
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Begins a transaction on `pool`, cancel-safely. sqlx 0.9's `Pool::begin` is not: cancelled
/// after its `BEGIN` went out but before the answer came back, it returns the connection to the
/// pool inside a transaction the server still holds open (its rollback guard checks a depth it
/// has not raised yet), and every later statement on that connection runs, uncommitted and
/// holding its locks, inside it. Callers here are cancelled often (a client dropped mid-write, a
/// lane stopped, a shutdown), so the begin runs to completion in a task of its own: if the
/// caller is gone by then, the task drops the transaction, which rolls it back. The task lasts
/// one round trip or the pool's acquire timeout. (Upstream: sqlx issue #4393, fixed after 0.9.0;
/// no compatible release has the fix yet.)
pub(super) async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await }).await.map_err(|_| sqlx::Error::WorkerCrashed)?
}

/// A URL's password never reaches a log or an error body.
fn redact(text: &str) -> String {
    match (text.find("://"), text.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &text[..scheme], &text[at..]),
        _ => text.to_owned(),
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> StorageError {
        match &error {
            // The server is gone or cannot be reached, or every connection is busy: nothing was
            // committed, and the same call may work later. A protocol error is a connection
            // that broke mid-conversation (a half-opened one answers garbage to the TLS request).
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StorageError::Unavailable(error.to_string()),
            sqlx::Error::Database(db) if db.code().is_some_and(|code| is_transient(&code)) => {
                StorageError::Unavailable(db.message().to_owned())
            }
            _ => StorageError::failed(error),
        }
    }
}

/// SQLSTATEs after which the same statement may succeed: connection exceptions (class 08), an
/// administrator's shutdown or restart (57P01–57P03), too many connections (53300), and
/// serialization failures (40001, 40P01).
fn is_transient(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@db/x"), "postgres://…@db/x");
        assert_eq!(redact("no url here"), "no url here");
    }

    #[test]
    fn transient_codes() {
        for code in ["08006", "08001", "57P01", "53300", "40001"] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02"] {
            assert!(!is_transient(code), "{code}");
        }
    }
}

/// A database of its own for each test: a fresh schema in `TEST_DATABASE_URL` (default
/// `postgres://postgres@127.0.0.1:5432/test`), dropped when the handle goes. A test that cannot reach
/// Postgres fails and says why; it never skips.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::Database;

    /// Where the tests' Postgres is.
    pub(crate) fn url() -> String {
        std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// A schema that is dropped with its tables when the last handle goes.
    pub(crate) struct TestDatabase {
        pub(crate) db: Database,
        schema: String,
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            let (url, schema) = (url(), self.schema.clone());
            // Drop runs outside any runtime guarantee: a short thread of its own does the SQL.
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                runtime.block_on(async {
                    if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
                            .execute(&mut conn)
                            .await;
                    }
                });
            })
            .join();
        }
    }

    /// A fresh schema and a pool of `max_connections` on it, migrated.
    pub(crate) async fn fresh(max_connections: u32) -> TestDatabase {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let url = url();
        let schema = format!(
            "t_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            crate::storage::now_ms() % 1_000_000
        );
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap_or_else(|e| {
            panic!("this test needs Postgres at {url} (set TEST_DATABASE_URL; `bash .ci/run` starts one): {e}")
        });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .expect("create the test schema");
        let separator = if url.contains('?') { '&' } else { '?' };
        let db = Database::connect(&format!("{url}{separator}options[search_path]={schema}"), max_connections)
            .await
            .expect("connect to the test schema");
        TestDatabase { db, schema }
    }
}
