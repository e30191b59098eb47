//! Embedded, versioned migrations. Each runs once, in its own transaction, while the gateway
//! holds an advisory lock for the schema: several gateways starting at once take turns, and
//! those that come second find the work done.

use sqlx::{Connection, PgPool};

use crate::storage::StorageError;

/// Every migration, in order. A released migration is never edited: a change is a new one.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "inbox", include_str!("migrations/0001_inbox.sql")),
    (2, "journal", include_str!("migrations/0002_journal.sql")),
    (3, "credentials", include_str!("migrations/0003_credentials.sql")),
    (4, "registry", include_str!("migrations/0004_registry.sql")),
    (5, "webhooks", include_str!("migrations/0005_webhooks.sql")),
    (6, "leases", include_str!("migrations/0006_leases.sql")),
    (7, "session_states", include_str!("migrations/0007_session_states.sql")),
];

/// First key of the advisory lock (the second is the schema's hash): "wagw".
const LOCK_CLASS: i32 = 0x7761_6777;

/// Applies the migrations this schema has not seen. Refuses a schema that a newer build has
/// migrated further than this one knows.
pub(super) async fn run(pool: &PgPool) -> Result<(), StorageError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1, hashtext(current_schema()))").bind(LOCK_CLASS).execute(&mut *conn).await?;
    let result = apply(&mut conn).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, hashtext(current_schema()))")
        .bind(LOCK_CLASS)
        .execute(&mut *conn)
        .await;
    result?;
    unlocked?;
    Ok(())
}

async fn apply(conn: &mut sqlx::PgConnection) -> Result<(), StorageError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS gateway_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .execute(&mut *conn)
    .await?;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM gateway_migrations ORDER BY version").fetch_all(&mut *conn).await?;
    let known = MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
    if let Some(newest) = applied.iter().max().filter(|newest| **newest > known) {
        return Err(StorageError::Failed(format!(
            "the database schema is at version {newest}, newer than this build's ({known}): upgrade the gateway"
        )));
    }
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO gateway_migrations (version, name) VALUES ($1, $2)")
            .bind(version)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, name, "database migrated");
    }
    Ok(())
}
