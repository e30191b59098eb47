//! Opening a journal directory: the lock that keeps a second process out, and the repair of
//! what a crash can leave behind.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::outbox::{Entry, Outbox};
use super::segments::Segments;
use super::store::{self, Stored};
use super::{DeliveryStatus, JournalError, PDF_MISSING};
use crate::domain::now_ms;

/// Takes `<dir>/journal.lock`, so a second process cannot open (and "repair") a journal in use.
pub(super) fn lock_dir(dir: &Path) -> Result<File, JournalError> {
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(dir.join("journal.lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(JournalError::Locked),
        Err(TryLockError::Error(error)) => Err(error.into()),
    }
}

/// Start-up repair, then the segments opened with the open messages each holds:
/// * temp files, outbox PDFs without a live row, and segments without one are deleted;
/// * live rows whose PDF is missing (its outbox file gone, its segment gone or cut short) are
///   failed with [`PDF_MISSING`].
pub(super) fn recover(conn: &Connection, outbox: &Outbox, segments_dir: PathBuf) -> Result<Segments, JournalError> {
    let mut removed = 0_u64;
    for entry in outbox.scan()? {
        match entry {
            Entry::Temp(path) => {
                outbox.remove_path(&path);
                removed += 1;
            }
            Entry::Pdf(message_id) => {
                let live = store::status(conn, &message_id)?.is_some_and(|s| !s.is_final());
                if !live {
                    outbox.remove(&message_id);
                    removed += 1;
                }
            }
        }
    }
    let open = store::open_messages(conn)?;
    let mut live: HashMap<u64, u64> = HashMap::new();
    for segment in open.iter().filter_map(|(_, stored)| stored.segment()) {
        *live.entry(segment).or_default() += 1;
    }
    let (segments, segments_removed) = Segments::open(segments_dir, live)?;

    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let now = now_ms();
    let mut failed = Vec::new();
    for (record, stored) in &open {
        let present = match stored {
            Stored::Outbox => outbox.contains(&record.message_id)?,
            Stored::Segment(location) => segments.holds(location)?,
        };
        if !present {
            store::set_status(&tx, &record.message_id, DeliveryStatus::Failed, Some(PDF_MISSING), now, true)?;
            tracing::warn!(message_id = %record.message_id, "journal row without pdf: marked failed");
            failed.push(stored.segment());
        }
    }
    tx.commit()?;
    // Failed is final: those messages no longer hold their segments.
    for segment in failed.iter().flatten() {
        segments.release(*segment);
    }
    if removed > 0 {
        outbox.sync_dir()?;
    }
    tracing::info!(orphans_removed = removed, segments_removed, missing_pdfs_failed = failed.len(), "journal opened");
    Ok(segments)
}
