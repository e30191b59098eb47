//! `whatsapp-gateway migrate --to postgres://…`: copies what a gateway kept on SQLite (`DATA_DIR`,
//! `SESSIONS_DIR`, `SESSIONS_CONFIG`) into Postgres, so that the same numbers run on
//! `DATABASE_URL` without a new scan.
//!
//! * It refuses while a gateway holds `DATA_DIR`: it takes the journal's lock for the whole copy.
//! * Everything is copied as it is: the journal (rows with their statuses, attempts, errors and
//!   times, in acceptance order; the bytes of every message not yet final; the idempotency keys),
//!   the inbox (messages, read marks, the bytes of their files), the session registry (in its
//!   order), every number's credentials (whatsapp-rust's store, table by table) and the webhook
//!   outbox.
//! * It is idempotent: a row whose key is already in Postgres is left as it is, so a second run
//!   adds nothing and says so (and never overwrites what a gateway on Postgres changed since).
//! * The `message.status` events not yet handed to the webhooks come along with their messages.
//! * The webhook outbox: endpoints (with their secrets), and every delivery, pending, delivered
//!   or a dead letter (which stays replayable).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::Config;
use crate::domain::{DeliveryStatus, MessageId, SessionEntry, SessionId};
use crate::journal::{JournalError, SqliteJournal};
use crate::storage::postgres::Database;
use crate::storage::sqlite::{SessionsFile, SqliteCredentials, SqliteInbox, StoreError};
use crate::storage::transfer::{CREDENTIAL_TABLES, Cell};
use crate::storage::{SessionRegistry, StorageError};

/// Connections the copy uses.
const MAX_CONNECTIONS: u32 = 2;

/// Where the embedded store is.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `DATA_DIR`: the journal, the inbox and its media.
    pub data_dir: PathBuf,
    /// `SESSIONS_DIR`: one folder of credentials per number.
    pub sessions_dir: PathBuf,
    /// `SESSIONS_CONFIG`: the registry.
    pub sessions_config: PathBuf,
}

impl From<&Config> for Sources {
    fn from(config: &Config) -> Sources {
        Sources {
            data_dir: config.data_dir.clone(),
            sessions_dir: config.sessions_dir.clone(),
            sessions_config: config.sessions_config.clone(),
        }
    }
}

/// Why the copy stopped. What was copied before stays (each table goes in one transaction), and
/// running it again finishes it.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("a gateway is running on {0} (its journal is locked): stop it first")]
    InUse(PathBuf),
    #[error("journal in {dir}: {source}")]
    Journal { dir: PathBuf, source: JournalError },
    #[error("registry: {0}")]
    Registry(#[from] StoreError),
    #[error("{0}")]
    Storage(#[from] StorageError),
}

/// How many rows of a kind were there, and how many of them were new to Postgres.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub found: u64,
    pub moved: u64,
}

impl Count {
    fn add(&mut self, found: usize, moved: u64) {
        self.found += found as u64;
        self.moved += moved;
    }
}

/// What a run copied.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sessions: Count,
    pub messages: Count,
    /// Of the messages copied, those still to send, and the bytes they carry.
    pub pending: u64,
    pub pending_bytes: u64,
    pub idempotency_keys: Count,
    /// `message.status` events not yet handed to the webhooks.
    pub status_events: Count,
    pub inbox_messages: Count,
    /// Of the inbox messages copied, those with a file, and its bytes.
    pub inbox_files: u64,
    pub inbox_file_bytes: u64,
    /// Files the inbox named but that were no longer on disk (copied without them).
    pub inbox_missing_files: u64,
    pub read_marks: Count,
    /// Numbers with credentials, and their rows.
    pub numbers: Count,
    pub credential_rows: Count,
    pub webhook_endpoints: Count,
    /// Webhook deliveries; of those copied, the ones still to post and the dead letters.
    pub deliveries: Count,
    pub pending_deliveries: u64,
    pub dead_letters: u64,
}

impl Report {
    /// True when the run copied nothing: everything was there already.
    pub fn is_noop(&self) -> bool {
        [
            self.sessions,
            self.messages,
            self.idempotency_keys,
            self.inbox_messages,
            self.read_marks,
            self.credential_rows,
            self.webhook_endpoints,
            self.deliveries,
        ]
        .iter()
        .all(|c| c.moved == 0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let there =
            |c: Count| if c.moved < c.found { format!(", {} already there", c.found - c.moved) } else { String::new() };
        writeln!(f, "registry: {} sessions{}", self.sessions.moved, there(self.sessions))?;
        writeln!(
            f,
            "journal: {} messages ({} pending, {}){}, {} idempotency keys{}, {} status events",
            self.messages.moved,
            self.pending,
            size(self.pending_bytes),
            there(self.messages),
            self.idempotency_keys.moved,
            there(self.idempotency_keys),
            self.status_events.moved
        )?;
        writeln!(
            f,
            "inbox: {} messages ({} files, {}){}, {} read marks{}",
            self.inbox_messages.moved,
            self.inbox_files,
            size(self.inbox_file_bytes),
            there(self.inbox_messages),
            self.read_marks.moved,
            there(self.read_marks)
        )?;
        if self.inbox_missing_files > 0 {
            writeln!(f, "inbox: {} files were no longer on disk", self.inbox_missing_files)?;
        }
        writeln!(
            f,
            "credentials: {} numbers, {} rows{}",
            self.numbers.moved,
            self.credential_rows.moved,
            there(self.credential_rows)
        )?;
        write!(
            f,
            "webhooks: {} endpoints{}, {} deliveries ({} pending, {} dead letters){}",
            self.webhook_endpoints.moved,
            there(self.webhook_endpoints),
            self.deliveries.moved,
            self.pending_deliveries,
            self.dead_letters,
            there(self.deliveries)
        )
    }
}

/// Bytes for people: `1.2 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Copies everything under `from` into the Postgres at `to`.
pub async fn migrate(from: &Sources, to: &str) -> Result<Report, MigrateError> {
    // Held to the end: no gateway starts on the directory while it is copied.
    let journal = SqliteJournal::open(&from.data_dir).map_err(|source| match source {
        JournalError::Locked => MigrateError::InUse(from.data_dir.clone()),
        source => MigrateError::Journal { dir: from.data_dir.clone(), source },
    })?;
    let db = Database::connect(to, MAX_CONNECTIONS).await?;
    let mut report = Report::default();

    let entries = copy_registry(&from.sessions_config, &db, &mut report).await?;
    copy_journal(&journal, &from.data_dir, &db, &mut report).await?;
    copy_inbox(&from.data_dir, &db, &mut report).await?;
    copy_credentials(&from.sessions_dir, &entries, &db, &mut report).await?;
    copy_webhooks(&from.data_dir, &db, &mut report).await?;
    db.close().await;
    drop(journal);
    Ok(report)
}

async fn copy_registry(path: &Path, db: &Database, report: &mut Report) -> Result<Vec<SessionEntry>, MigrateError> {
    let file = SessionsFile::new(path);
    let entries = if path.exists() { file.load()? } else { Vec::new() };
    let registry = db.registry();
    for entry in &entries {
        let added = registry.add(entry.clone()).await?;
        report.sessions.add(1, u64::from(added));
    }
    Ok(entries)
}

async fn copy_journal(
    journal: &SqliteJournal,
    dir: &Path,
    db: &Database,
    report: &mut Report,
) -> Result<(), MigrateError> {
    let failed = |source| MigrateError::Journal { dir: dir.to_owned(), source };
    let (mut messages, keys, mut events) = journal.export().await.map_err(failed)?;
    let (Some(id_at), Some(status_at)) = (messages.index("message_id"), messages.index("status")) else {
        return Err(MigrateError::Storage(StorageError::Failed("journal rows without id or status".into())));
    };
    messages.columns.extend(["payload".to_owned(), "crc32".to_owned()]);
    let mut pending = Vec::with_capacity(messages.rows.len());
    for row in &mut messages.rows {
        let open = matches!(&row[status_at], Cell::Text(s) if DeliveryStatus::parse(s).is_some_and(|s| !s.is_final()));
        let payload = match (&row[id_at], open) {
            (Cell::Text(id), true) => {
                journal.read_payload(&MessageId::from_stored(id.as_str())).await.map_err(failed)?
            }
            _ => None,
        };
        pending.push(payload.as_ref().map(|p| p.len() as u64));
        match payload {
            Some(bytes) => {
                let crc32 = i64::from(crc32fast::hash(&bytes));
                row.extend([Cell::Blob(bytes.to_vec()), Cell::Int(crc32)]);
            }
            None => row.extend([Cell::Null, Cell::Null]),
        }
    }
    let inserted = db.import_each("journal_messages", None, &messages).await?;
    for (new, bytes) in inserted.iter().zip(&pending) {
        report.messages.add(1, u64::from(*new));
        if let (true, Some(bytes)) = (new, bytes) {
            report.pending += 1;
            report.pending_bytes += bytes;
        }
    }
    let moved = db.import("journal_idempotency_keys", None, &keys).await?;
    report.idempotency_keys.add(keys.rows.len(), moved);
    // The events of the messages this run brought in: those of a message copied before may have
    // been handed over (and deleted) by a gateway on Postgres since, and must not come back.
    let text = |cell: Option<&Cell>| match cell {
        Some(Cell::Text(id)) => Some(id.clone()),
        _ => None,
    };
    let new_ids: std::collections::HashSet<String> = messages
        .rows
        .iter()
        .zip(&inserted)
        .filter(|(_, new)| **new)
        .filter_map(|(row, _)| text(row.get(id_at)))
        .collect();
    let event_message_at = events.index("message_id").unwrap_or(1);
    let found = events.rows.len();
    events.rows.retain(|row| text(row.get(event_message_at)).is_some_and(|id| new_ids.contains(&id)));
    let moved = db.import_status_events(&events).await?;
    report.status_events.add(found, moved);
    Ok(())
}

async fn copy_inbox(dir: &Path, db: &Database, report: &mut Report) -> Result<(), MigrateError> {
    let inbox = SqliteInbox::export(dir).await?;
    let file_at = inbox.messages.index("file");
    let inserted = db.import_each("inbox_messages", None, &inbox.messages).await?;
    for (row, new) in inbox.messages.rows.iter().zip(inserted) {
        report.inbox_messages.add(1, u64::from(new));
        if let (true, Some(Cell::Blob(bytes))) = (new, file_at.and_then(|i| row.get(i))) {
            report.inbox_files += 1;
            report.inbox_file_bytes += bytes.len() as u64;
        }
    }
    let moved = db.import_chat_reads(&inbox.reads).await?;
    report.read_marks.add(inbox.reads.rows.len(), moved);
    report.inbox_missing_files += inbox.missing_files as u64;
    Ok(())
}

pub(crate) async fn copy_credentials(
    sessions_dir: &Path,
    entries: &[SessionEntry],
    db: &Database,
    report: &mut Report,
) -> Result<(), MigrateError> {
    let credentials = SqliteCredentials::new(sessions_dir);
    // The registry's sessions, and any other folder holding a store.
    let mut sessions: Vec<SessionId> = entries.iter().map(|e| e.session_id.clone()).collect();
    if let Ok(dir) = std::fs::read_dir(sessions_dir) {
        let mut others: Vec<SessionId> = dir
            .filter_map(Result::ok)
            .filter(|e| e.path().join(crate::storage::sqlite::STORE_FILE).is_file())
            .filter_map(|e| SessionId::parse(&e.file_name().to_string_lossy()).ok())
            .filter(|id| !sessions.contains(id))
            .collect();
        others.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        sessions.extend(others);
    }
    for session in &sessions {
        let mut found = false;
        let mut moved = 0;
        for (sqlite, postgres) in CREDENTIAL_TABLES {
            let columns: Vec<String> = db.columns(postgres).await?.into_iter().filter(|c| c != "session_id").collect();
            let Some(mut rows) = credentials.export(session, sqlite, columns).await? else { continue };
            rows.unwrap_unsigned_32(postgres);
            found |= sqlite == "device" && !rows.rows.is_empty();
            let copied = db.import(postgres, Some(session.as_str()), &rows).await?;
            report.credential_rows.add(rows.rows.len(), copied);
            moved += copied;
        }
        if found {
            report.numbers.add(1, u64::from(moved > 0));
        }
    }
    Ok(())
}

async fn copy_webhooks(dir: &Path, db: &Database, report: &mut Report) -> Result<(), MigrateError> {
    let (endpoints, deliveries) = crate::storage::sqlite::export::webhooks(dir).await?;
    let moved = db.import("webhook_endpoints", None, &endpoints).await?;
    report.webhook_endpoints.add(endpoints.rows.len(), moved);
    let status_at = deliveries.index("status");
    let inserted = db.import_each("webhook_deliveries", None, &deliveries).await?;
    for (row, new) in deliveries.rows.iter().zip(inserted) {
        report.deliveries.add(1, u64::from(new));
        match (new, status_at.and_then(|i| row.get(i))) {
            (true, Some(Cell::Text(status))) if status == "pending" => report.pending_deliveries += 1,
            (true, Some(Cell::Text(status))) if status == "failed" => report.dead_letters += 1,
            _ => {}
        }
    }
    Ok(())
}

/// `whatsapp-gateway migrate --to postgres://…`, with the usual configuration for where the
/// embedded store is. Prints what it moved; its output is for the person running it.
pub async fn command(args: &[String]) -> ExitCode {
    let to = match args {
        [flag, url] if flag == "--to" => url.clone(),
        [arg] if arg.starts_with("--to=") => arg.trim_start_matches("--to=").to_owned(),
        _ => {
            eprintln!("usage: whatsapp-gateway migrate --to postgres://user:password@host/database");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("whatsapp-gateway migrate: {e}");
            return ExitCode::FAILURE;
        }
    };
    match migrate(&Sources::from(&config), &to).await {
        Ok(report) => {
            println!("{report}");
            if report.is_noop() {
                println!("nothing new: everything was already there");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("whatsapp-gateway migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::domain::{FileName, OutgoingContent, PdfDocument, PhoneNumber};
    use crate::journal::NewMessage;
    use crate::storage::JournalStore as _;
    use crate::storage::postgres::testing;

    #[tokio::test]
    async fn status_events_not_handed_over_come_along_once() {
        let dir = std::env::temp_dir().join(format!("wg-migrate-{}-{}", std::process::id(), crate::domain::now_ms()));
        let journal = SqliteJournal::open(&dir).expect("journal");
        let listening = journal.want_status_events();
        let pdf = PdfDocument::from_bytes(Bytes::from_static(b"%PDF-1.4\nhola\n%%EOF\n")).expect("pdf");
        let content = OutgoingContent::pdf(pdf, FileName::parse("f.pdf").expect("name"));
        let message = NewMessage {
            message_id: "3EB0MIGRATE".into(),
            session_id: SessionId::parse("tienda").expect("id"),
            to: PhoneNumber::parse("51987000001").expect("phone"),
            content,
            idempotency: None,
        };
        journal.accept(message).await.expect("accept");
        let id = MessageId::from_stored("3EB0MIGRATE");
        assert!(journal.set_status(&id, DeliveryStatus::Sent, None).await.expect("sent"));
        drop(listening);
        let on_sqlite = journal.status_events(0, 10).await.expect("events");
        assert!(!on_sqlite.is_empty(), "the move was recorded");

        let test = testing::fresh(2).await;
        let mut report = Report::default();
        copy_journal(&journal, &dir, &test.db, &mut report).await.expect("copy");
        assert_eq!(report.status_events.moved, on_sqlite.len() as u64);
        let on_postgres = test.db.journal().status_events(0, 10).await.expect("events");
        let ids = |events: &[crate::journal::StatusEvent]| -> Vec<(String, String)> {
            events.iter().map(|e| (e.event_id.clone(), e.status.clone())).collect()
        };
        assert_eq!(ids(&on_postgres), ids(&on_sqlite));

        // Handed over and deleted on Postgres: a second run does not bring them back.
        let seqs: Vec<i64> = on_postgres.iter().map(|e| e.seq).collect();
        test.db.journal().delete_status_events(&seqs).await.expect("delete");
        let mut again = Report::default();
        copy_journal(&journal, &dir, &test.db, &mut again).await.expect("copy again");
        assert!(again.is_noop(), "{again}");
        assert!(test.db.journal().status_events(0, 10).await.expect("events").is_empty());
        drop(journal);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
