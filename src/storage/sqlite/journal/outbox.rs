//! The outbox: `<dir>/outbox/<message_id>.pdf`, one file per message, as journals of schema
//! version 1 stored PDFs (temp file, fsync, `link(2)` into place). New PDFs go to segments; the
//! outbox is still read, and emptied as its messages end, so a journal written by that version
//! delivers what it had pending. It is also where the writability probe writes its scratch file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// Distinguishes temp files written concurrently by this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(super) use crate::storage::journal::is_valid_message_id;

/// What a directory entry of the outbox is, judged by its name.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Entry {
    /// `<message_id>.pdf`.
    Pdf(String),
    /// `.<message_id>.<n>.tmp`: left behind by a crash during a write.
    Temp(PathBuf),
}

/// The outbox directory.
#[derive(Debug, Clone)]
pub(super) struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// Creates `dir` (mode 0700, parents too) if missing.
    pub(super) fn create(dir: PathBuf) -> io::Result<Outbox> {
        create_private_dir(&dir)?;
        Ok(Outbox { dir })
    }

    fn pdf_path(&self, message_id: &str) -> PathBuf {
        self.dir.join(format!("{message_id}.pdf"))
    }

    /// Writes, fsyncs and removes a scratch file of `size` bytes: can this outbox take a PDF now?
    pub(super) fn probe(&self, size: usize) -> io::Result<()> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!(".probe.{}-{n}.tmp", std::process::id()));
        let result = write_synced(&temp, &vec![0u8; size]);
        remove_if_exists(&temp);
        result
    }

    /// fsyncs the directory, making every name created or removed in it so far durable.
    pub(super) fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// The PDF of `message_id`, or `None` if its file is missing.
    pub(super) fn read(&self, message_id: &str) -> io::Result<Option<Bytes>> {
        match fs::read(self.pdf_path(message_id)) {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Whether `<message_id>.pdf` exists.
    pub(super) fn contains(&self, message_id: &str) -> io::Result<bool> {
        self.pdf_path(message_id).try_exists()
    }

    /// Removes the PDF of `message_id`; a missing file is fine, other failures are logged (the
    /// file is then an orphan, removed by the next [`super::SqliteJournal::open`]).
    pub(super) fn remove(&self, message_id: &str) {
        remove_if_exists(&self.pdf_path(message_id));
    }

    /// The PDFs and temp files in the outbox; other names are ignored.
    pub(super) fn scan(&self) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for dir_entry in fs::read_dir(&self.dir)? {
            let dir_entry = dir_entry?;
            let name = dir_entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') && name.ends_with(".tmp") {
                entries.push(Entry::Temp(dir_entry.path()));
            } else if let Some(id) = name.strip_suffix(".pdf")
                && is_valid_message_id(id)
            {
                entries.push(Entry::Pdf(id.to_owned()));
            }
        }
        Ok(entries)
    }

    /// Removes a path found by [`Outbox::scan`].
    pub(super) fn remove_path(&self, path: &Path) {
        remove_if_exists(path);
    }
}

/// `mkdir -p` with mode 0700, and 0700 on `dir` if it already existed.
pub(super) fn create_private_dir(dir: &Path) -> io::Result<()> {
    crate::files::private_dir(dir)
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn remove_if_exists(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "could not remove outbox file");
        }
    }
}
