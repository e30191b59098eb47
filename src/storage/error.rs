//! One error for every store, in two kinds a caller can act on.

/// Why a store failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store cannot be reached now (Postgres restarting, the network cut, the pool
    /// exhausted): nothing was changed, and the same call may succeed later. The API answers 503
    /// with `Retry-After`.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a broken file, a constraint the code did not expect, a full disk.
    #[error("storage failed: {0}")]
    Failed(String),
}

impl StorageError {
    /// True when retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }

    pub(crate) fn failed(error: impl std::fmt::Display) -> StorageError {
        StorageError::Failed(error.to_string())
    }
}
