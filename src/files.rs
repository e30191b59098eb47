//! Private files and folders: credentials and the journal are readable by their owner only.
//!
//! Folders are 0700 and the files in them 0600, whether the gateway creates them or finds them:
//! a folder copied over at 0755 (from the Node service, say) is tightened at start, with a log
//! line. SQLite creates its `-wal` and `-shm` files with the mode of the database file, so a
//! database file created 0600 keeps its companions private too.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// `mkdir -p` with mode 0700 for every folder it creates, then 0700 on `dir` itself.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    tighten(dir, 0o700)
}

/// Creates `path` empty with mode 0600 if it does not exist (an empty file is a valid new
/// SQLite database), or tightens it to 0600 if it does.
pub fn private_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten(path, 0o600),
        Err(e) => Err(e),
    }
}

/// Tightens an existing file to 0600; nothing happens if it does not exist.
pub fn tighten_file(path: &Path) -> io::Result<()> {
    match tighten(path, 0o600) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Tightens an existing folder tree: `dir` and every folder in it to 0700, every file to 0600.
/// Nothing happens to a `dir` that does not exist.
pub fn tighten_tree(dir: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Ok(());
    }
    tighten(dir, 0o700)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            tighten_tree(&entry.path())?;
        } else if kind.is_file() {
            tighten(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

/// Removes group and other permissions beyond `mode`, saying so.
fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    let current = fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        tracing::warn!(path = %path.display(), from = format!("{current:o}"), to = format!("{mode:o}"), "tightened permissions");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn existing_open_folders_and_files_are_tightened() {
        let root = std::env::temp_dir().join(format!("wg-files-{}-{}", std::process::id(), rand::random::<u64>()));
        let inner = root.join("tienda");
        fs::create_dir_all(&inner).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o755)).unwrap();
        let db = inner.join("whatsapp.db");
        fs::write(&db, b"").unwrap();
        fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();

        tighten_tree(&root).unwrap();
        assert_eq!((mode(&root), mode(&inner), mode(&db)), (0o700, 0o700, 0o600));

        let fresh = root.join("new").join("deeper");
        private_dir(&fresh).unwrap();
        assert_eq!((mode(&root.join("new")), mode(&fresh)), (0o700, 0o700));
        let file = fresh.join("journal.db");
        private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o664)).unwrap();
        private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert!(tighten_tree(&root.join("missing")).is_ok());
        fs::remove_dir_all(&root).unwrap();
    }
}
