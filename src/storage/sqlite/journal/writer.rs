//! The writer thread: the only owner of the write connection, and where group commit happens.
//!
//! Callers send a [`Command`] over a bounded channel and wait on a oneshot. The thread blocks for
//! the first command, then takes whatever else is already queued (up to [`MAX_BATCH`]), applies
//! them all in one transaction and commits once. Before the commit it fdatasyncs the segments the
//! batch's PDFs were written to (see `segments`), so a whole batch costs one data sync per
//! segment and one WAL fsync. Each command runs inside its own savepoint, so a command that
//! fails (unknown id, duplicate id, disk full on its insert) is rolled back alone and the others
//! still commit. Answers go out only after the commit, so `Ok` always means "durable".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::outbox::Outbox;
use super::segments::{Segment, Segments};
use super::store::{self, NewRow};
use super::{Accepted, DeliveryStatus, JournalError, Pruned};
use crate::domain::now_ms;

/// Most commands applied in one transaction.
pub(super) const MAX_BATCH: usize = 256;

/// Commands that may wait for the writer before senders are held back.
pub(super) const QUEUE_CAPACITY: usize = 1024;

/// Where the writer sends one command's result.
pub(super) type Reply<T> = oneshot::Sender<Result<T, JournalError>>;

/// A closure run on the write connection (tests only).
#[cfg(test)]
pub(super) type ExecOp = Box<dyn FnOnce(&Connection) -> Result<(), JournalError> + Send>;

/// One request to the writer.
pub(super) enum Command {
    /// Insert a message whose PDF is already written to `segment` (not yet synced).
    Accept { row: Box<NewRow>, segment: Arc<Segment>, reply: Reply<Accepted> },
    /// Move a message forward; delete its PDF if the new status is final.
    SetStatus { message_id: String, status: DeliveryStatus, last_error: Option<String>, reply: Reply<bool> },
    /// Count one more send attempt.
    RecordAttempt { message_id: String, error: Option<String>, reply: Reply<u32> },
    /// Delete these `message.status` events (handed over).
    DeleteStatusEvents { seqs: Vec<i64>, reply: Reply<u64> },
    /// Delete old idempotency keys and finished messages (cut-offs in unix ms).
    Prune { keys_before: u64, finished_before: u64, reply: Reply<Pruned> },
    /// Run arbitrary SQL on the write connection (tests only: e.g. shrink `max_page_count`).
    #[cfg(test)]
    Exec { op: ExecOp, reply: Reply<()> },
}

/// Counters the writer keeps, read by [`super::SqliteJournal::stats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub batches: AtomicU64,
    pub commands: AtomicU64,
    pub largest_batch: AtomicU64,
    /// Set while the latest batch failed to commit (a full disk, an I/O error).
    pub failing: std::sync::atomic::AtomicBool,
    /// Woken after every committed batch: new `message.status` events may be there.
    pub committed: tokio::sync::Notify,
    /// Holders of a [`super::StatusEventsGuard`]: while there are any, status moves record
    /// their `message.status` events.
    pub status_listeners: Arc<std::sync::atomic::AtomicUsize>,
}

/// Where PDFs are: the writer frees them when their messages end.
pub(super) struct Files {
    /// PDFs of messages accepted by a version 1 journal.
    pub outbox: Outbox,
    pub segments: Segments,
}

impl Files {
    /// The PDF of `message_id`, stored as `stored` says, is no longer needed.
    fn release(&self, message_id: &str, segment: Option<u64>) {
        match segment {
            Some(segment) => self.segments.release(segment),
            None => self.outbox.remove(message_id),
        }
    }
}

/// Starts the writer thread. It stops when every sender is dropped and the queue is empty.
pub(super) fn spawn(
    conn: Connection,
    files: Files,
    commands: mpsc::Receiver<Command>,
    counters: Arc<Counters>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name("journal-writer".to_owned()).spawn(move || run(&conn, &files, commands, &counters))
}

fn run(conn: &Connection, files: &Files, mut commands: mpsc::Receiver<Command>, counters: &Counters) {
    while let Some(first) = commands.blocking_recv() {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        commit_batch(conn, files, batch, counters);
    }
    tracing::debug!("journal writer stopped");
}

/// What to do once the batch's fate is known: side effects on the outbox, then the answer.
type Settle = Box<dyn FnOnce(&Files, Result<(), &JournalError>)>;

/// The open transaction of one batch.
struct Batch<'c> {
    conn: &'c Connection,
    now: u64,
    /// Set when the transaction itself failed: every later command fails with it, and the batch
    /// is rolled back instead of committed.
    broken: Option<JournalError>,
}

impl Batch<'_> {
    /// Runs `op` in its own savepoint, unless `skip` (or a broken batch) says not to.
    fn run<T>(
        &mut self,
        skip: Option<&JournalError>,
        op: impl FnOnce(&Connection, u64) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        if let Some(error) = self.broken.as_ref().or(skip) {
            return Err(error.clone());
        }
        if let Err(error) = self.conn.execute_batch("SAVEPOINT command") {
            return Err(self.break_with(error));
        }
        let result = op(self.conn, self.now);
        let end = if result.is_ok() { "RELEASE command" } else { "ROLLBACK TO command; RELEASE command" };
        if let Err(error) = self.conn.execute_batch(end) {
            // E.g. SQLITE_FULL made SQLite roll back the whole transaction: no savepoint left.
            let error = self.break_with(error);
            return result.and(Err(error));
        }
        result
    }

    fn break_with(&mut self, error: rusqlite::Error) -> JournalError {
        let error = JournalError::from(error);
        self.broken = Some(error.clone());
        error
    }
}

fn commit_batch(conn: &Connection, files: &Files, commands: Vec<Command>, counters: &Counters) {
    let started = Instant::now();
    let size = commands.len();
    // Every accept in the batch wrote its PDF before it was queued, so syncing the segments
    // they went to makes all those bytes durable before their rows commit.
    let mut written: Vec<Arc<Segment>> = Vec::new();
    for command in &commands {
        if let Command::Accept { segment, .. } = command
            && !written.iter().any(|s| s.id() == segment.id())
        {
            written.push(Arc::clone(segment));
        }
    }
    let sync_error =
        if written.is_empty() { None } else { files.segments.sync(&written).err().map(JournalError::from) };
    drop(written);
    let mut batch = Batch { conn, now: now_ms(), broken: None };
    let events = counters.status_listeners.load(Ordering::Acquire) > 0;
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        batch.break_with(error);
    }
    let settles: Vec<Settle> =
        commands.into_iter().map(|command| apply(&mut batch, sync_error.as_ref(), events, command)).collect();

    let outcome = match batch.broken.take() {
        Some(error) => Err(error),
        None => conn.execute_batch("COMMIT").map_err(JournalError::from),
    };
    if let Err(error) = &outcome {
        if !conn.is_autocommit()
            && let Err(rollback) = conn.execute_batch("ROLLBACK")
        {
            tracing::error!(%rollback, "journal rollback failed");
        }
        tracing::warn!(%error, size, "journal batch not committed");
    }
    // Counted before anyone is answered, so a caller that got its answer sees its batch.
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters.commands.fetch_add(size as u64, Ordering::Relaxed);
    counters.largest_batch.fetch_max(size as u64, Ordering::Relaxed);
    counters.failing.store(outcome.is_err(), Ordering::Relaxed);
    metrics::histogram!(crate::metrics::JOURNAL_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::histogram!(crate::metrics::JOURNAL_BATCH_SIZE).record(size as f64);
    // Latest first: the bytes of accepts that did not commit are then cut off the segment's
    // end one after the other (see `Segments::give_back`).
    for settle in settles.into_iter().rev() {
        settle(files, outcome.as_ref().map(|_| ()));
    }
    if outcome.is_ok() {
        counters.committed.notify_one();
    }
    tracing::trace!(size, elapsed_us = started.elapsed().as_micros() as u64, "journal batch");
}

/// Applies one command inside the batch and returns how to settle it.
fn apply(batch: &mut Batch<'_>, sync_error: Option<&JournalError>, events: bool, command: Command) -> Settle {
    match command {
        Command::Accept { row, segment: _, reply } => {
            let result = batch.run(sync_error, |c, now| store::accept(c, &row, now, events));
            Box::new(move |files, committed| {
                let result = settle(result, committed);
                // Only a committed new message keeps its bytes: a replay, a conflict or any
                // failure gives them back.
                if !matches!(result, Ok(Accepted::New)) {
                    files.segments.give_back(&row.location);
                }
                let _ = reply.send(result);
            })
        }
        Command::SetStatus { message_id, status, last_error, reply } => {
            // Whether it moved, and where its PDF was if this move is the one that ends it
            // (later moves between final statuses, sent → delivered → read, free nothing).
            let result = batch.run(None, |c, now| {
                let ending = match store::stored(c, &message_id)? {
                    Some((current, stored)) if status.is_final() && !current.is_final() => Some(stored),
                    _ => None,
                };
                let moved = store::set_status(c, &message_id, status, last_error.as_deref(), now, events)?;
                Ok((moved, ending.filter(|_| moved).map(|stored| stored.segment())))
            });
            Box::new(move |files, committed| {
                let result = settle(result, committed);
                if let Ok((_, Some(segment))) = &result {
                    files.release(&message_id, *segment);
                }
                let _ = reply.send(result.map(|(moved, _)| moved));
            })
        }
        Command::RecordAttempt { message_id, error, reply } => {
            let result = batch.run(None, |c, now| store::record_attempt(c, &message_id, error.as_deref(), now));
            answer_after_commit(result, reply)
        }
        Command::DeleteStatusEvents { seqs, reply } => {
            let result = batch.run(None, |c, _| store::delete_status_events(c, &seqs));
            answer_after_commit(result, reply)
        }
        Command::Prune { keys_before, finished_before, reply } => {
            let result = batch.run(None, |c, _| store::prune(c, keys_before, finished_before));
            answer_after_commit(result, reply)
        }
        #[cfg(test)]
        Command::Exec { op, reply } => {
            let result = batch.run(None, |c, _| op(c));
            answer_after_commit(result, reply)
        }
    }
}

fn answer_after_commit<T: 'static>(result: Result<T, JournalError>, reply: Reply<T>) -> Settle {
    Box::new(move |_, committed| {
        let _ = reply.send(settle(result, committed));
    })
}

/// A command's own result, unless the batch it was part of failed to commit.
fn settle<T>(result: Result<T, JournalError>, committed: Result<(), &JournalError>) -> Result<T, JournalError> {
    match committed {
        Ok(()) => result,
        Err(error) => result.and(Err(error.clone())),
    }
}
