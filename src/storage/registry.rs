//! The session registry: which sessions exist, with their description and metadata (what
//! `sessions.config.json` holds in the embedded mode).

use async_trait::async_trait;

use super::StorageError;
use crate::domain::{SessionEntry, SessionId};

/// The sessions the gateway runs, in the order they were created.
#[async_trait]
pub trait SessionRegistry: Send + Sync + std::fmt::Debug + 'static {
    /// Every entry, oldest first.
    async fn load(&self) -> Result<Vec<SessionEntry>, StorageError>;

    /// Adds an entry unless one with its id exists; `true` when it was added.
    async fn add(&self, entry: SessionEntry) -> Result<bool, StorageError>;

    /// Removes the entry with this id, keeping the others as they are; `true` when it was there.
    async fn remove(&self, id: &SessionId) -> Result<bool, StorageError>;

    /// Where the registry lives, for logs (a path, or the database).
    fn describe(&self) -> String;
}
