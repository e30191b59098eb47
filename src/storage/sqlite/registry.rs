//! The embedded registry is the Node service's own `sessions.config.json`: the list of
//! sessions, `[{"sessionId", "description"}]`, so that a folder it wrote works as it is.
//!
//! Entries keep any extra fields they had. Appends are atomic: write a temp file in the same
//! folder, fsync it, rename it over the old one, fsync the folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::domain::{SessionEntry, SessionId};
use crate::storage::{SessionRegistry, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid JSON in {path}: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The sessions file on disk.
#[derive(Debug, Clone)]
pub struct SessionsFile {
    path: PathBuf,
}

impl SessionsFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the entries; a missing file is an empty list. Duplicate ids keep the first. A file
    /// that others may read (the Node service wrote it 0644) is made 0600.
    pub fn load(&self) -> Result<Vec<SessionEntry>, StoreError> {
        crate::files::tighten_file(&self.path)
            .map_err(|source| StoreError::Read { path: self.path.clone(), source })?;
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::Read { path: self.path.clone(), source }),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        let mut entries: Vec<SessionEntry> =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Parse { path: self.path.clone(), source })?;
        let mut seen = std::collections::HashSet::new();
        entries.retain(|e| seen.insert(e.session_id.clone()));
        Ok(entries)
    }

    /// Adds an entry unless one with that id exists. Returns whether it was added.
    pub fn append(&self, entry: SessionEntry) -> Result<bool, StoreError> {
        let mut entries = self.load()?;
        if entries.iter().any(|e| e.session_id == entry.session_id) {
            return Ok(false);
        }
        entries.push(entry);
        self.write_atomically(&entries)?;
        Ok(true)
    }

    /// Removes the entry with that id, keeping the others as they are. Returns whether it was there.
    pub fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        let mut entries = self.load()?;
        let before = entries.len();
        entries.retain(|e| &e.session_id != id);
        if entries.len() == before {
            return Ok(false);
        }
        self.write_atomically(&entries)?;
        Ok(true)
    }

    fn write_atomically(&self, entries: &[SessionEntry]) -> Result<(), StoreError> {
        let write_err = |source| StoreError::Write { path: self.path.clone(), source };
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut json = serde_json::to_vec_pretty(entries).map_err(|e| write_err(std::io::Error::other(e)))?;
        json.push(b'\n');
        let tmp = dir
            .join(format!(".{}.tmp", self.path.file_name().and_then(|n| n.to_str()).unwrap_or("sessions.config.json")));
        // It names the numbers the business runs: private, as the credentials are.
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)
        }
        .map_err(write_err)?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            // A leftover temporary file keeps the mode it was created with.
            file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(write_err)?;
        }
        file.write_all(&json).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(write_err)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl From<StoreError> for StorageError {
    fn from(error: StoreError) -> StorageError {
        StorageError::failed(error)
    }
}

#[async_trait]
impl SessionRegistry for SessionsFile {
    async fn load(&self) -> Result<Vec<SessionEntry>, StorageError> {
        let file = self.clone();
        // Blocking reads and fsyncs: kept off the async workers.
        Ok(tokio::task::spawn_blocking(move || SessionsFile::load(&file)).await.map_err(StorageError::failed)??)
    }

    async fn add(&self, entry: SessionEntry) -> Result<bool, StorageError> {
        let file = self.clone();
        Ok(tokio::task::spawn_blocking(move || file.append(entry)).await.map_err(StorageError::failed)??)
    }

    async fn remove(&self, id: &SessionId) -> Result<bool, StorageError> {
        let (file, id) = (self.clone(), id.clone());
        Ok(tokio::task::spawn_blocking(move || SessionsFile::remove(&file, &id))
            .await
            .map_err(StorageError::failed)??)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    fn id(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }

    #[test]
    fn append_keeps_other_entries_and_their_fields() {
        let dir = tempdir();
        let path = dir.join("sessions.config.json");
        std::fs::write(&path, r#"[{"sessionId":"tienda_lima","description":"Lima","owner":"ventas"}]"#).unwrap();
        let file = SessionsFile::new(&path);
        let added = file
            .append(SessionEntry { session_id: id("soporte"), description: None, metadata: None, extra: Map::new() })
            .unwrap();
        assert!(added);
        let entries = file.load().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].extra.get("owner"), Some(&Value::String("ventas".into())));
        assert_eq!(entries[1].session_id, id("soporte"));
        assert!(
            !file
                .append(SessionEntry {
                    session_id: id("soporte"),
                    description: None,
                    metadata: None,
                    extra: Map::new()
                })
                .unwrap()
        );
    }

    #[test]
    fn the_file_is_private_whether_written_or_found() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempdir();
        let written = dir.join("written.json");
        let file = SessionsFile::new(&written);
        file.append(SessionEntry { session_id: id("a"), description: None, metadata: None, extra: Map::new() })
            .unwrap();
        assert_eq!(mode(&written), 0o600);

        let found = dir.join("found.json");
        std::fs::write(&found, r#"[{"sessionId":"a"}]"#).unwrap();
        std::fs::set_permissions(&found, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(SessionsFile::new(&found).load().unwrap().len(), 1);
        assert_eq!(mode(&found), 0o600, "the Node service's 0644 file is tightened when read");
    }

    #[test]
    fn remove_keeps_the_others() {
        let dir = tempdir();
        let path = dir.join("sessions.config.json");
        std::fs::write(&path, r#"[{"sessionId":"a","owner":"x"},{"sessionId":"b","metadata":{"k":1}}]"#).unwrap();
        let file = SessionsFile::new(&path);
        assert_eq!(file.load().unwrap()[1].metadata.as_ref().unwrap()["k"], 1);
        assert!(file.remove(&id("b")).unwrap());
        assert!(!file.remove(&id("b")).unwrap());
        let entries = file.load().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].extra.get("owner"), Some(&Value::String("x".into())));
    }

    #[test]
    fn invalid_json_and_invalid_ids_are_errors() {
        let dir = tempdir();
        let path = dir.join("s.json");
        std::fs::write(&path, "[{").unwrap();
        assert!(matches!(SessionsFile::new(&path).load(), Err(StoreError::Parse { .. })));
        std::fs::write(&path, r#"[{"sessionId":"../etc"}]"#).unwrap();
        assert!(matches!(SessionsFile::new(&path).load(), Err(StoreError::Parse { .. })));
        assert!(SessionsFile::new(dir.join("missing.json")).load().unwrap().is_empty());
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wg-store-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
