//! The segments: where the PDF of every pending message lives, appended to a shared file so that
//! one `fdatasync` makes a whole batch of PDFs durable.
//!
//! `<dir>/segments/<n>.seg`, `n` as 16 hex digits. An accept reserves a range at the end of the
//! current segment under a short lock, writes its bytes there with `pwrite` (beside other
//! accepts writing theirs), and only then hands its row to the writer thread. Before each
//! `COMMIT` the writer fdatasyncs every segment its batch wrote to, and the directory once for a
//! segment that is new, so the bytes of a committed row are always on disk. A crash can leave
//! bytes without a row (never read; gone with their segment), never a row without its bytes.
//! Each row keeps its range and a CRC-32 of the bytes, checked on every read.
//!
//! Space comes back per segment: each counts the messages still open in it. A segment whose count
//! falls to zero is deleted, or, if it is the one being appended to, truncated and reused. A
//! segment stops taking PDFs at [`SEGMENT_BYTES`], so one message that waits long holds at most
//! that much disk.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::JournalError;

/// A segment stops taking new PDFs once this full (a larger PDF gets a segment of its own).
pub(super) const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;

/// The most free space a PDF may not take: room kept for the journal's own bookkeeping (its
/// WAL, status updates), so that on a full disk messages can still end and free their
/// segments. A small file system keeps an eighth of its size instead.
const RESERVE_BYTES: u64 = 1024 * 1024;

/// Where the bytes of one message are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
    pub crc32: u32,
}

/// One segment file, open for appending.
#[derive(Debug)]
pub(super) struct Segment {
    id: u64,
    file: File,
    /// Whether the directory entry of this file is known durable.
    named: AtomicBool,
}

impl Segment {
    pub(super) fn id(&self) -> u64 {
        self.id
    }
}

/// Which segment takes the next PDF, and how many open messages each segment holds.
#[derive(Debug)]
struct State {
    current: Option<Arc<Segment>>,
    /// Where the next PDF goes in `current`.
    end: u64,
    next_id: u64,
    /// Open messages per segment: reserved, not yet final. Segments absent here hold none.
    live: HashMap<u64, u64>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
}

/// The segment directory; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Segments {
    shared: Arc<Shared>,
}

impl Segments {
    /// Opens `dir` (creating it 0700), given how many open messages each segment holds
    /// according to the database. Every other segment file is deleted. Appending starts in a new
    /// segment, never after a tail a crash may have torn.
    pub(super) fn open(dir: PathBuf, live: HashMap<u64, u64>) -> io::Result<(Segments, u64)> {
        crate::files::private_dir(&dir)?;
        let mut highest = live.keys().copied().max().unwrap_or(0);
        let mut removed = 0;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let Some(id) = entry.file_name().to_str().and_then(parse_name) else { continue };
            highest = highest.max(id);
            if !live.contains_key(&id) {
                remove_if_exists(&entry.path());
                removed += 1;
            }
        }
        let state = State { current: None, end: 0, next_id: highest + 1, live };
        Ok((Segments { shared: Arc::new(Shared { dir, state: Mutex::new(state) }) }, removed))
    }

    fn path(&self, id: u64) -> PathBuf {
        self.shared.dir.join(format!("{id:016x}.seg"))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change to the state is a few plain assignments, so a panic elsewhere while the
        // lock was held cannot have left it half-changed.
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `bytes` into the current segment (not yet synced: the writer does that for the
    /// whole batch) and counts a new open message there. On error nothing is counted and the
    /// space a partial write took is given back (see [`Segments::abandon`]).
    pub(super) fn write(&self, bytes: &[u8]) -> Result<(Arc<Segment>, Location), JournalError> {
        let len = bytes.len() as u64;
        if !self.has_room(len)? {
            return Err(JournalError::DiskFull);
        }
        let (segment, offset) = self.reserve(len)?;
        let location = Location { segment: segment.id, offset, len, crc32: crc32fast::hash(bytes) };
        if let Err(error) = segment.file.write_all_at(bytes, offset) {
            self.give_back(&location);
            return Err(error.into());
        }
        Ok((segment, location))
    }

    /// Whether `len` more bytes fit and leave the reserve free (see [`RESERVE_BYTES`]).
    pub(super) fn has_room(&self, len: u64) -> io::Result<bool> {
        let fs = rustix::fs::statvfs(&self.shared.dir)?;
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        let reserve = RESERVE_BYTES.min(fs.f_blocks.saturating_mul(fs.f_frsize) / 8);
        Ok(free >= len.saturating_add(reserve))
    }

    /// A range of `len` bytes at the end of the current segment, opening a new segment when
    /// there is none or this one is full.
    fn reserve(&self, len: u64) -> io::Result<(Arc<Segment>, u64)> {
        let mut state = self.state();
        let full = state.end > 0 && state.end.saturating_add(len) > SEGMENT_BYTES;
        let segment = match state.current.clone() {
            Some(segment) if !full => segment,
            _ => {
                let id = state.next_id;
                let file =
                    OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(self.path(id))?;
                let segment = Arc::new(Segment { id, file, named: AtomicBool::new(false) });
                state.next_id += 1;
                if let Some(old) = state.current.replace(Arc::clone(&segment))
                    && !state.live.contains_key(&old.id)
                {
                    remove_if_exists(&self.path(old.id));
                }
                state.end = 0;
                segment
            }
        };
        let offset = state.end;
        state.end += len;
        *state.live.entry(segment.id).or_default() += 1;
        Ok((segment, offset))
    }

    /// Makes the bytes written to `segments` durable, and their names: called by the writer
    /// before it commits rows that point into them.
    pub(super) fn sync(&self, segments: &[Arc<Segment>]) -> io::Result<()> {
        for segment in segments {
            segment.file.sync_data()?;
        }
        if segments.iter().any(|s| !s.named.load(Ordering::Acquire)) {
            File::open(&self.shared.dir)?.sync_all()?;
            for segment in segments {
                segment.named.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    /// One open message of segment `id` is gone (final, or never committed). The last one frees
    /// the segment: deleted, or truncated for reuse if it is the current one.
    pub(super) fn release(&self, id: u64) {
        let mut state = self.state();
        let Some(count) = state.live.get_mut(&id) else { return };
        *count = count.saturating_sub(1);
        if *count > 0 {
            return;
        }
        state.live.remove(&id);
        match &state.current {
            Some(current) if current.id == id => {
                // Nothing is reserved in it (a reservation counts), so nothing in it is wanted.
                if let Err(error) = current.file.set_len(0) {
                    tracing::warn!(segment = id, %error, "could not truncate a drained segment");
                    state.current = None;
                } else {
                    state.end = 0;
                }
            }
            _ => remove_if_exists(&self.path(id)),
        }
    }

    /// Undoes the write of a message that was never committed: the write failed (typically, the
    /// disk is full), or its row did not commit, or it was a replay. When its range is the last
    /// of the current segment, the file is cut back to where the range started, so the space is
    /// free again at once: on a full disk that is what leaves the database room to record the
    /// messages that end. Otherwise the space comes back when the segment's other messages end.
    pub(super) fn give_back(&self, location: &Location) {
        {
            let mut state = self.state();
            let end = location.offset + location.len;
            if let Some(current) = state.current.clone()
                && current.id == location.segment
                && state.end == end
            {
                match current.file.set_len(location.offset) {
                    Ok(()) => state.end = location.offset,
                    // A segment we cannot cut takes no more PDFs.
                    Err(_) => state.current = None,
                }
            }
        }
        self.release(location.segment);
    }

    /// The bytes at `location`: `Ok(None)` when they are gone (the segment was freed, or cut
    /// short behind our back), [`JournalError::Damaged`] when they fail their checksum.
    pub(super) fn read(&self, location: &Location) -> Result<Option<Bytes>, JournalError> {
        let file = match File::open(self.path(location.segment)) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let len = usize::try_from(location.len).map_err(|_| JournalError::Damaged)?;
        let mut bytes = vec![0; len];
        match file.read_exact_at(&mut bytes, location.offset) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(error) => return Err(error.into()),
        }
        if crc32fast::hash(&bytes) != location.crc32 {
            return Err(JournalError::Damaged);
        }
        Ok(Some(Bytes::from(bytes)))
    }

    /// Whether the bytes at `location` are all there (not whether they are intact).
    pub(super) fn holds(&self, location: &Location) -> io::Result<bool> {
        match fs::metadata(self.path(location.segment)) {
            Ok(meta) => Ok(meta.len() >= location.offset.saturating_add(location.len)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Open messages over all segments (tests).
    #[cfg(test)]
    pub(super) fn live(&self) -> u64 {
        self.state().live.values().sum()
    }

    /// Segment files on disk and the bytes they take (tests).
    #[cfg(test)]
    pub(super) fn usage(&self) -> (usize, u64) {
        let mut files = 0;
        let mut bytes = 0;
        if let Ok(entries) = fs::read_dir(&self.shared.dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_str().and_then(parse_name).is_some() {
                    files += 1;
                    bytes += entry.metadata().map_or(0, |m| m.len());
                }
            }
        }
        (files, bytes)
    }
}

/// `0000000000000001.seg` → 1.
fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn remove_if_exists(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(path = %path.display(), %error, "could not remove a segment"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_nothing_else_is_one() {
        assert_eq!(parse_name("00000000000000ff.seg"), Some(255));
        for other in ["ff.seg", "00000000000000ff.pdf", ".00000000000000ff.seg", "000000000000000g.seg"] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }
}
