//! Writing rows copied from the embedded store (`whatsapp-gateway migrate`): each row goes in
//! unless a row with the same key is there, so a second copy adds nothing and changes nothing.

use sqlx::Row as _;

use super::Database;
use crate::storage::StorageError;
use crate::storage::transfer::{Cell, Rows, quote};

/// A column's name and its Postgres type (`information_schema.columns.data_type`).
type Column = (String, String);

impl Database {
    /// The columns of `table` in this database's schema that a copy may write (not the
    /// generated `seq`s), in table order; empty when there is no such table.
    pub async fn columns(&self, table: &str) -> Result<Vec<String>, StorageError> {
        Ok(self.column_types(table).await?.into_iter().map(|(name, _)| name).collect())
    }

    async fn column_types(&self, table: &str) -> Result<Vec<Column>, StorageError> {
        let rows = sqlx::query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 AND is_identity = 'NO' \
             ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await?;
        let mut columns = Vec::with_capacity(rows.len());
        for row in &rows {
            let (name, kind): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            columns.push((name, kind));
        }
        Ok(columns)
    }

    /// Inserts `rows` into `table` in their order, each unless a row with the same key is
    /// there; with `session`, each row also gets `session_id` = it. Returns how many went in.
    /// One transaction: all of them or none.
    pub async fn import(&self, table: &str, session: Option<&str>, rows: &Rows) -> Result<u64, StorageError> {
        Ok(self.import_each(table, session, rows).await?.into_iter().filter(|new| *new).count() as u64)
    }

    /// [`Database::import`], telling for each row whether it went in.
    pub async fn import_each(
        &self,
        table: &str,
        session: Option<&str>,
        rows: &Rows,
    ) -> Result<Vec<bool>, StorageError> {
        if rows.rows.is_empty() {
            return Ok(Vec::new());
        }
        let types = self.column_types(table).await?;
        if types.is_empty() {
            return Err(StorageError::Failed(format!("no table {table} in the database")));
        }
        let mut columns: Vec<Column> = Vec::new();
        for name in session.map(|_| "session_id").into_iter().chain(rows.columns.iter().map(String::as_str)) {
            let column = types
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| StorageError::Failed(format!("{table} has no column {name}")))?;
            columns.push(column.clone());
        }
        let names: Vec<String> = columns.iter().map(|(n, _)| quote(n)).collect();
        let places: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
            quote(table),
            names.join(", "),
            places.join(", ")
        );
        let mut tx = crate::storage::postgres::begin(&self.pool).await?;
        let mut inserted = Vec::with_capacity(rows.rows.len());
        for row in &rows.rows {
            let session = session.map(|s| Cell::Text(s.to_owned()));
            let cells = session.iter().chain(row.iter());
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for ((name, kind), cell) in columns.iter().zip(cells) {
                query = bind(query, kind, cell).map_err(|e| StorageError::Failed(format!("{table}.{name}: {e}")))?;
            }
            inserted.push(query.execute(&mut *tx).await?.rows_affected() == 1);
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Appends `message.status` events (`event_id, message_id, session_id, status, kind,
    /// last_error, at` rows) in their order, but those whose event id is there already; returns
    /// how many went in.
    pub async fn import_status_events(&self, events: &Rows) -> Result<u64, StorageError> {
        let mut tx = crate::storage::postgres::begin(&self.pool).await?;
        let mut inserted = 0;
        for row in &events.rows {
            let [event_id, message_id, session_id, status, kind, last_error, at] = row.as_slice() else {
                return Err(StorageError::Failed("a status event row of the wrong width".into()));
            };
            let text = |cell: &Cell| match cell {
                Cell::Text(t) => Some(t.clone()),
                _ => None,
            };
            let Cell::Int(at) = at else { return Err(StorageError::Failed("a status event without its time".into())) };
            inserted += sqlx::query(
                "INSERT INTO journal_status_events (event_id, message_id, session_id, status, kind, last_error, at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7 \
                 WHERE NOT EXISTS (SELECT 1 FROM journal_status_events WHERE event_id = $1)",
            )
            .bind(text(event_id))
            .bind(text(message_id))
            .bind(text(session_id))
            .bind(text(status))
            .bind(text(kind))
            .bind(text(last_error))
            .bind(*at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Sets each chat's read mark (`session_id, chat, message_id` rows: the last message read)
    /// unless the chat has one; returns how many were set.
    pub async fn import_chat_reads(&self, reads: &Rows) -> Result<u64, StorageError> {
        let mut tx = crate::storage::postgres::begin(&self.pool).await?;
        let mut inserted = 0;
        for row in &reads.rows {
            let [Cell::Text(session), Cell::Text(chat), last] = row.as_slice() else { continue };
            let Cell::Text(message_id) = last else { continue };
            inserted += sqlx::query(
                "INSERT INTO inbox_chat_reads (session_id, chat, read_seq) \
                 SELECT $1, $2, seq FROM inbox_messages WHERE session_id = $1 AND message_id = $3 \
                 ON CONFLICT DO NOTHING",
            )
            .bind(session)
            .bind(chat)
            .bind(message_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `cell` as the column's type: SQLite stores booleans as integers, and text and blobs
/// interchangeably.
fn bind<'q>(query: Query<'q>, kind: &str, cell: &Cell) -> Result<Query<'q>, String> {
    let wrong = || format!("{cell:?} is not a {kind}");
    Ok(match (kind, cell) {
        ("boolean", Cell::Null) => query.bind(None::<bool>),
        ("boolean", Cell::Int(i)) => query.bind(*i != 0),
        ("integer", Cell::Null) => query.bind(None::<i32>),
        ("integer", Cell::Int(i)) => query.bind(i32::try_from(*i).map_err(|_| wrong())?),
        ("bigint", Cell::Null) => query.bind(None::<i64>),
        ("bigint", Cell::Int(i)) => query.bind(*i),
        ("double precision", Cell::Null) => query.bind(None::<f64>),
        ("double precision", Cell::Real(f)) => query.bind(*f),
        ("bytea", Cell::Null) => query.bind(None::<Vec<u8>>),
        ("bytea", Cell::Blob(b)) => query.bind(b.clone()),
        ("bytea", Cell::Text(t)) => query.bind(t.clone().into_bytes()),
        ("text", Cell::Null) => query.bind(None::<String>),
        ("text", Cell::Text(t)) => query.bind(t.clone()),
        ("text", Cell::Blob(b)) => query.bind(String::from_utf8(b.clone()).map_err(|_| wrong())?),
        ("text", Cell::Int(i)) => query.bind(i.to_string()),
        _ => return Err(wrong()),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use crate::storage::transfer::CREDENTIAL_TABLES;

    #[tokio::test]
    async fn every_credentials_table_is_copied() {
        let test = testing::fresh(1).await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name LIKE 'wa\\_%' ORDER BY 1",
        )
        .fetch_all(&test.db.pool)
        .await
        .expect("tables");
        let mut copied: Vec<&str> = CREDENTIAL_TABLES.iter().map(|(_, postgres)| *postgres).collect();
        copied.sort_unstable();
        assert_eq!(tables, copied, "a credentials table the migration does not copy");
    }
}
