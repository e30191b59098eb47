//! Reading the embedded store's rows as they are, for `whatsapp-gateway migrate`.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::storage::StorageError;
use crate::storage::transfer::{Cell, Rows};

/// The rows `sql` selects, named by its result columns.
pub(crate) fn select(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Rows, StorageError> {
    let mut stmt = conn.prepare(sql)?;
    let columns: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let width = columns.len();
    let mut rows = Vec::new();
    let mut cursor = stmt.query(params)?;
    while let Some(row) = cursor.next()? {
        let mut cells = Vec::with_capacity(width);
        for index in 0..width {
            cells.push(match row.get_ref(index)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(i) => Cell::Int(i),
                ValueRef::Real(f) => Cell::Real(f),
                ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
            });
        }
        rows.push(cells);
    }
    Ok(Rows { columns, rows })
}

/// Opens an existing database read-only; `None` when the file is not there.
pub(crate) fn open_read_only(path: &Path) -> Result<Option<Connection>, StorageError> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(super::BUSY_TIMEOUT)?;
    Ok(Some(conn))
}

/// Whether `table` exists in `conn`.
pub(crate) fn has_table(conn: &Connection, table: &str) -> Result<bool, StorageError> {
    Ok(conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?.exists([table])?)
}

/// The webhook endpoints and every delivery (pending, delivered, dead letters) in
/// `dir/webhooks.db`, in the order they were written, as the shared store's tables name their
/// columns; empty when there is no outbox there.
pub async fn webhooks(dir: &Path) -> Result<(Rows, Rows), StorageError> {
    let path = dir.join("webhooks.db");
    let read = tokio::task::spawn_blocking(move || {
        let Some(conn) = open_read_only(&path)? else { return Ok((Rows::default(), Rows::default())) };
        let endpoints = select(
            &conn,
            "SELECT id, url, secret, events, sessions, created_at, disabled, owner, owner_admin, format \
             FROM endpoints ORDER BY created_at, id",
            [],
        )?;
        let deliveries = select(
            &conn,
            "SELECT endpoint_id, event_id, event, session_id, body, status, attempts, last_error, next_attempt_at, \
             created_at, updated_at, path FROM deliveries ORDER BY id",
            [],
        )?;
        Ok((endpoints, deliveries))
    })
    .await;
    read.map_err(StorageError::failed)?
}
