//! Opening a journal directory: the lock that keeps a second process out, and the repair of
//! what a crash can leave behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::outbox::{Entry, Outbox};
use super::{DeliveryStatus, JournalError, PDF_MISSING, now_ms, store};

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

/// Start-up repair: delete temp files and PDFs without a live row, then fail the live rows
/// whose PDF is missing.
pub(super) fn recover(conn: &Connection, outbox: &Outbox) -> Result<(), JournalError> {
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
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let now = now_ms();
    let mut failed = 0_u64;
    for record in store::open_messages(&tx)? {
        if !outbox.contains(&record.message_id)? {
            store::set_status(&tx, &record.message_id, DeliveryStatus::Failed, Some(PDF_MISSING), now)?;
            tracing::warn!(message_id = %record.message_id, "journal row without pdf: marked failed");
            failed += 1;
        }
    }
    tx.commit()?;
    if removed > 0 {
        outbox.sync_dir()?;
    }
    tracing::info!(orphans_removed = removed, missing_pdfs_failed = failed, "journal opened");
    Ok(())
}
