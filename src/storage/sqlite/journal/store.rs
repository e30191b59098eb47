//! The SQLite side of the journal: connection settings, schema, and one function per statement
//! group. Everything here takes a `&Connection` and runs inside whatever transaction the caller
//! (the writer's batch, or start-up recovery) has open.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::segments::Location;
use super::{Accepted, DeliveryStatus, IdempotencyKey, JournalError, MessageRecord, Pruned, StatusEvent};
use crate::domain::ContentKind;

/// How long a statement waits for a lock held by another connection before failing `BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bumped when the schema changes; checked on open. Version 1 kept every PDF in a file of its
/// own (`outbox/`); version 2 adds where a PDF sits in a segment (NULL: in the outbox); version
/// 3 adds the kind of content (`text`, `image`, `document`), its media type and caption (rows of
/// earlier versions are PDFs: `document`, with a NULL media type that reads `application/pdf`);
/// version 4 adds `status_events`, the outbox of `message.status` events, written in the same
/// transaction as the status they report; version 5 adds the start of a text (`preview`), kept
/// after its segment is gone so that lists can show what was sent (NULL for earlier rows);
/// version 6 adds the kinds `audio` and `video`, and `ptt` (1 for a voice note, NULL for
/// anything but audio). SQLite cannot change a CHECK, so a journal of an earlier version has its
/// `messages` table rebuilt with the new list, its rows and their sequence intact.
const SCHEMA_VERSION: i64 = 6;

/// Columns added to `messages` since version 1, with their declarations, in order.
fn added_columns() -> [(&'static str, String); 8] {
    let kinds = kind_list();
    [
        ("segment", "INTEGER".to_owned()),
        ("seg_offset", "INTEGER".to_owned()),
        ("crc32", "INTEGER".to_owned()),
        ("kind", format!("TEXT NOT NULL DEFAULT 'document' CHECK (kind IN {kinds})")),
        ("mimetype", "TEXT".to_owned()),
        ("caption", "TEXT".to_owned()),
        ("preview", "TEXT".to_owned()),
        ("ptt", "INTEGER".to_owned()),
    ]
}

/// The columns of `messages` before [`added_columns`].
const BASE_COLUMNS: [&str; 11] = [
    "seq",
    "message_id",
    "session_id",
    "recipient",
    "file_name",
    "size",
    "status",
    "attempts",
    "last_error",
    "created_at",
    "updated_at",
];

/// `('text', 'image', 'document')`.
fn kind_list() -> String {
    let quoted: Vec<String> = ContentKind::ALL.iter().map(|k| format!("'{}'", k.as_str())).collect();
    format!("({})", quoted.join(", "))
}

/// The media type of documents stored before version 3: they were all PDFs.
pub(super) const LEGACY_MIMETYPE: &str = "application/pdf";

/// The schema; its status lists come from [`DeliveryStatus::as_str`], the one place each status
/// is spelled.
fn schema() -> String {
    let (open, finished) = (status_list(is_open), status_list(DeliveryStatus::is_final));
    let messages = messages_table("messages");
    format!(
        "
{messages}
CREATE INDEX IF NOT EXISTS messages_open ON messages (seq)
    WHERE status IN {open};
CREATE INDEX IF NOT EXISTS messages_finished ON messages (updated_at)
    WHERE status IN {finished};
CREATE INDEX IF NOT EXISTS messages_by_session ON messages (session_id, seq);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key         TEXT    PRIMARY KEY,
    fingerprint BLOB    NOT NULL,
    message_id  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_keys_age ON idempotency_keys (created_at);
CREATE TABLE IF NOT EXISTS status_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    session_id  TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    last_error  TEXT,
    at          INTEGER NOT NULL
) STRICT;
"
    )
}

/// `CREATE TABLE IF NOT EXISTS {name}` of the messages table as this version declares it.
fn messages_table(name: &str) -> String {
    let all = status_list(|_| true);
    let added: Vec<String> = added_columns().iter().map(|(name, decl)| format!("{name} {decl}")).collect();
    let added = added.join(",\n    ");
    format!(
        "
CREATE TABLE IF NOT EXISTS {name} (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  TEXT    NOT NULL UNIQUE,
    session_id  TEXT    NOT NULL,
    recipient   TEXT    NOT NULL,
    file_name   TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN {all}),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    {added}
) STRICT;"
    )
}

/// Rebuilds `messages` when its CHECK on `kind` predates a kind of [`ContentKind::ALL`]: a new
/// table with the current declaration, every row copied (`seq` included, so the sequence goes
/// on), the old one dropped with its indexes, which [`schema`] then creates again.
fn widen_kinds(tx: &Transaction<'_>) -> Result<(), JournalError> {
    let declared: String =
        tx.query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'", [], |r| r.get(0))?;
    if ContentKind::ALL.iter().all(|k| declared.contains(&format!("'{}'", k.as_str()))) {
        return Ok(());
    }
    let columns: Vec<&str> =
        BASE_COLUMNS.iter().copied().chain(added_columns().iter().map(|(name, _)| *name)).collect();
    let columns = columns.join(", ");
    tx.execute_batch(&format!(
        "{}
INSERT INTO messages_rebuilt ({columns}) SELECT {columns} FROM messages;
DROP TABLE messages;
ALTER TABLE messages_rebuilt RENAME TO messages;
{}",
        messages_table("messages_rebuilt"),
        schema()
    ))?;
    tracing::info!("message journal: messages table rebuilt for the audio and video kinds");
    Ok(())
}

/// Still to send: `queued` or `sending`.
fn is_open(status: DeliveryStatus) -> bool {
    !status.is_final()
}

/// `('queued', 'sending')`: the statuses `pick` keeps, as an SQL list.
fn status_list(pick: impl Fn(DeliveryStatus) -> bool) -> String {
    let quoted: Vec<String> =
        DeliveryStatus::ALL.into_iter().filter(|s| pick(*s)).map(|s| format!("'{}'", s.as_str())).collect();
    format!("({})", quoted.join(", "))
}

const RECORD_COLUMNS: &str = "message_id, session_id, recipient, file_name, status, attempts, \
                              last_error, created_at, updated_at, size, kind, mimetype, caption, preview, ptt";

/// How many columns [`RECORD_COLUMNS`] has.
const RECORD_COLUMN_COUNT: usize = 15;

impl ToSql for DeliveryStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for DeliveryStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        DeliveryStatus::parse(text).ok_or_else(|| FromSqlError::Other(text.into()))
    }
}

/// Opens `path` with the settings every journal connection uses: WAL, `synchronous=FULL` (a
/// commit survives power loss, not only a crash of the process), a busy timeout.
pub(super) fn open(path: &Path) -> Result<Connection, JournalError> {
    // Created (or tightened) 0600 first: SQLite gives its -wal and -shm files the same mode.
    crate::files::private_file(path)?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(JournalError::Incompatible(format!("journal_mode is {mode}, not wal")));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Creates the tables if missing and checks the schema version.
pub(super) fn init_schema(conn: &Connection) -> Result<(), JournalError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(JournalError::Incompatible(format!(
            "schema version {version} is newer than this build's ({SCHEMA_VERSION})"
        )));
    }
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    tx.execute_batch(&schema())?;
    // An older journal: its rows keep NULL (or `document`) there, which says "a PDF, in the
    // outbox" for version 1 rows, "a PDF" for version 2 rows.
    let mut columns = Vec::new();
    tx.pragma(None, "table_info", "messages", |row| {
        columns.push(row.get::<_, String>(1)?);
        Ok(())
    })?;
    for (name, decl) in added_columns() {
        if !columns.iter().any(|c| c == name) {
            tx.execute_batch(&format!("ALTER TABLE messages ADD COLUMN {name} {decl}"))?;
        }
    }
    widen_kinds(&tx)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// The row of a message being accepted.
#[derive(Debug)]
pub(super) struct NewRow {
    pub message_id: String,
    pub session_id: String,
    pub to: String,
    pub kind: ContentKind,
    /// `''` for content without a file name (the column predates texts and images).
    pub file_name: String,
    pub mimetype: Option<String>,
    pub caption: Option<String>,
    /// The start of a text ([`OutgoingContent::preview`](crate::domain::OutgoingContent::preview)).
    pub preview: Option<String>,
    /// For audio, whether it is a voice note; `None` otherwise.
    pub ptt: Option<bool>,
    pub size: u64,
    pub idempotency: Option<IdempotencyKey>,
    /// Where its PDF was written.
    pub location: Location,
}

/// Where the PDF of a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    /// `outbox/<message_id>.pdf`, written by a version 1 journal.
    Outbox,
    /// A range of a segment.
    Segment(Location),
}

impl Stored {
    /// The segment holding the PDF, if it is in one.
    pub(super) fn segment(&self) -> Option<u64> {
        match self {
            Stored::Outbox => None,
            Stored::Segment(location) => Some(location.segment),
        }
    }
}

/// Checks the idempotency key, then inserts the message (and the key) as `queued`.
/// Inserts the message (see [`accept`]); `events` says whether to record its `message.status`.
pub(super) fn accept(conn: &Connection, row: &NewRow, now: u64, events: bool) -> Result<Accepted, JournalError> {
    if let Some(key) = &row.idempotency {
        let first: Option<(Vec<u8>, String)> = conn
            .prepare_cached("SELECT fingerprint, message_id FROM idempotency_keys WHERE key = ?1")?
            .query_row([&key.key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((fingerprint, message_id)) = first {
            return Ok(if fingerprint == key.fingerprint {
                Accepted::Replay { message_id }
            } else {
                Accepted::KeyReusedWithOtherBody
            });
        }
    }
    let taken = conn.prepare_cached("SELECT 1 FROM messages WHERE message_id = ?1")?.exists([&row.message_id])?;
    if taken {
        return Err(JournalError::DuplicateMessageId);
    }
    conn.prepare_cached(
        "INSERT INTO messages (message_id, session_id, recipient, file_name, size, status, \
         created_at, updated_at, segment, seg_offset, crc32, kind, mimetype, caption, preview, ptt) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        row.message_id,
        row.session_id,
        row.to,
        row.file_name,
        int(row.size),
        DeliveryStatus::Queued,
        int(now),
        int(row.location.segment),
        int(row.location.offset),
        i64::from(row.location.crc32),
        row.kind.as_str(),
        row.mimetype,
        row.caption,
        row.preview,
        row.ptt,
    ])?;
    if let Some(key) = &row.idempotency {
        conn.prepare_cached(
            "INSERT INTO idempotency_keys (key, fingerprint, message_id, created_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![key.key, key.fingerprint, row.message_id, int(now)])?;
    }
    if events {
        record_status_event(conn, &row.message_id, now)?;
    }
    Ok(Accepted::New)
}

/// The current status of a message, `None` if unknown.
pub(super) fn status(conn: &Connection, message_id: &str) -> Result<Option<DeliveryStatus>, JournalError> {
    Ok(conn
        .prepare_cached("SELECT status FROM messages WHERE message_id = ?1")?
        .query_row([message_id], |r| r.get(0))
        .optional()?)
}

/// The status of a message and where its PDF is, `None` if unknown.
pub(super) fn stored(conn: &Connection, message_id: &str) -> Result<Option<(DeliveryStatus, Stored)>, JournalError> {
    Ok(conn
        .prepare_cached("SELECT status, segment, seg_offset, size, crc32 FROM messages WHERE message_id = ?1")?
        .query_row([message_id], |r| Ok((r.get(0)?, stored_from_row(r, 1)?)))
        .optional()?)
}

/// Moves a message to `next` if that is a forward move; returns whether it moved (`false` for
/// an unknown id too). `last_error` replaces the stored one only when given.
pub(super) fn set_status(
    conn: &Connection,
    message_id: &str,
    next: DeliveryStatus,
    last_error: Option<&str>,
    now: u64,
    events: bool,
) -> Result<bool, JournalError> {
    let Some(current) = status(conn, message_id)? else {
        return Ok(false);
    };
    if !current.can_move_to(next) {
        return Ok(false);
    }
    conn.prepare_cached(
        "UPDATE messages SET status = ?2, last_error = COALESCE(?3, last_error), updated_at = ?4 \
         WHERE message_id = ?1",
    )?
    .execute(params![message_id, next, last_error, int(now)])?;
    if events {
        record_status_event(conn, message_id, now)?;
    }
    Ok(true)
}

/// Adds a `message.status` event for the message's current status (same transaction).
fn record_status_event(conn: &Connection, message_id: &str, now: u64) -> Result<(), JournalError> {
    let event_id = crate::domain::new_event_id();
    conn.prepare_cached(
        "INSERT INTO status_events (event_id, message_id, session_id, status, kind, last_error, at) \
         SELECT ?1, message_id, session_id, status, kind, last_error, ?2 FROM messages WHERE message_id = ?3",
    )?
    .execute(params![event_id, int(now), message_id])?;
    Ok(())
}

/// The `message.status` events after `after_seq`, oldest first.
pub(super) fn status_events(conn: &Connection, after_seq: i64, limit: usize) -> Result<Vec<StatusEvent>, JournalError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, event_id, message_id, session_id, status, kind, last_error, at FROM status_events \
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![after_seq, limit as i64], |r| {
            Ok(StatusEvent {
                seq: r.get(0)?,
                event_id: r.get(1)?,
                message_id: r.get(2)?,
                session_id: r.get(3)?,
                status: r.get(4)?,
                kind: r.get(5)?,
                last_error: r.get(6)?,
                at: get_u64(r, 7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Deletes the `message.status` events `seqs` (handed over).
pub(super) fn delete_status_events(conn: &Connection, seqs: &[i64]) -> Result<u64, JournalError> {
    let mut delete = conn.prepare_cached("DELETE FROM status_events WHERE seq = ?1")?;
    let mut deleted = 0;
    for seq in seqs {
        deleted += delete.execute([seq])? as u64;
    }
    Ok(deleted)
}

/// Counts one more send attempt; returns the new count.
pub(super) fn record_attempt(
    conn: &Connection,
    message_id: &str,
    error: Option<&str>,
    now: u64,
) -> Result<u32, JournalError> {
    conn.prepare_cached(
        "UPDATE messages SET attempts = attempts + 1, last_error = COALESCE(?2, last_error), \
         updated_at = ?3 WHERE message_id = ?1 RETURNING attempts",
    )?
    .query_row(params![message_id, error, int(now)], |r| r.get(0))
    .optional()?
    .ok_or(JournalError::NotFound)
}

/// Deletes idempotency keys created before `keys_before` and finished messages last updated
/// before `finished_before` (unix ms).
pub(super) fn prune(conn: &Connection, keys_before: u64, finished_before: u64) -> Result<Pruned, JournalError> {
    let idempotency_keys =
        conn.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?.execute([int(keys_before)])?;
    let messages = conn
        .prepare_cached(&format!(
            "DELETE FROM messages WHERE status IN {} AND updated_at < ?1",
            status_list(DeliveryStatus::is_final)
        ))?
        .execute([int(finished_before)])?;
    Ok(Pruned { idempotency_keys: idempotency_keys as u64, messages: messages as u64 })
}

/// One message, `None` if unknown.
pub(super) fn get(conn: &Connection, message_id: &str) -> Result<Option<MessageRecord>, JournalError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM messages WHERE message_id = ?1"))?
        .query_row([message_id], record_from_row)
        .optional()?)
}

/// The messages of `session` (to `recipient` if given) accepted before `before_seq`, newest
/// first, with their `seq` (the cursor).
pub(super) fn by_session(
    conn: &Connection,
    session: &str,
    recipient: Option<&str>,
    before_seq: i64,
    limit: usize,
) -> Result<Vec<(i64, MessageRecord)>, JournalError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS}, seq FROM messages WHERE session_id = ?1 AND (?2 IS NULL OR recipient = ?2) \
         AND seq < ?3 ORDER BY seq DESC LIMIT ?4"
    ))?;
    let rows = stmt
        .query_map(params![session, recipient, before_seq, limit as i64], |row| {
            Ok((row.get::<_, i64>(RECORD_COLUMN_COUNT)?, record_from_row(row)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The `queued` and `sending` messages, oldest acceptance first, with where their PDFs are.
pub(super) fn open_messages(conn: &Connection) -> Result<Vec<(MessageRecord, Stored)>, JournalError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS}, segment, seg_offset, size, crc32 FROM messages WHERE status IN {} ORDER BY seq",
        status_list(is_open)
    ))?;
    let records = stmt
        .query_map([], |row| Ok((record_from_row(row)?, stored_from_row(row, RECORD_COLUMN_COUNT)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(records)
}

/// `segment, seg_offset, size, crc32` from column `first` on.
fn stored_from_row(row: &Row<'_>, first: usize) -> rusqlite::Result<Stored> {
    let Some(segment) = row.get::<_, Option<i64>>(first)? else {
        return Ok(Stored::Outbox);
    };
    let crc32: i64 = row.get(first + 3)?;
    Ok(Stored::Segment(Location {
        segment: u64::try_from(segment).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(first, segment))?,
        offset: get_u64(row, first + 1)?,
        len: get_u64(row, first + 2)?,
        crc32: u32::try_from(crc32).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(first + 3, crc32))?,
    }))
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    let kind: String = row.get(10)?;
    let kind = ContentKind::parse(&kind)
        .ok_or_else(|| FromSqlError::Other(kind.into()))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, Box::new(e)))?;
    let file_name: String = row.get(3)?;
    let mimetype: Option<String> = row.get(11)?;
    Ok(MessageRecord {
        message_id: row.get(0)?,
        session_id: row.get(1)?,
        to: row.get(2)?,
        kind,
        file_name: (!file_name.is_empty()).then_some(file_name),
        mimetype: mimetype.or_else(|| (kind == ContentKind::Document).then(|| LEGACY_MIMETYPE.to_owned())),
        caption: row.get(12)?,
        preview: row.get(13)?,
        ptt: row.get(14)?,
        status: row.get(4)?,
        attempts: row.get(5)?,
        last_error: row.get(6)?,
        created_at: get_u64(row, 7)?,
        updated_at: get_u64(row, 8)?,
        size: get_u64(row, 9)?,
    })
}

/// SQLite integers are `i64`; ours (times in ms, sizes) are far below `i64::MAX`.
pub(super) fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn get_u64(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(index)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_match_the_databases_already_on_disk() {
        // Existing journals were created with these exact lists (CHECK and partial indexes).
        assert_eq!(status_list(|_| true), "('queued', 'sending', 'sent', 'delivered', 'read', 'failed')");
        assert_eq!(status_list(is_open), "('queued', 'sending')");
        assert_eq!(status_list(DeliveryStatus::is_final), "('sent', 'delivered', 'read', 'failed')");
    }
}
