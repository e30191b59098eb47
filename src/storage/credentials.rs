//! The credentials of each linked number: the keys, Signal sessions and app-state that
//! whatsapp-rust keeps for a device, behind one trait the session layer uses without knowing
//! where they live.
//!
//! * [`sqlite::SqliteCredentials`](super::sqlite::SqliteCredentials): today's layout, one
//!   `SESSIONS_DIR/<id>/whatsapp.db` per number (0600 files in 0700 folders).
//! * [`postgres::PgCredentials`](super::postgres::PgCredentials): every number in one schema,
//!   keyed by session, on the shared pool.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use whatsapp_rust::wacore::store::traits::Backend;

use super::StorageError;
use crate::domain::{Lease, SessionId};

/// whatsapp-rust's store for one number, as the client is built on it.
pub type CredentialBackend = Arc<dyn Backend>;

/// Asked before every call a fleet's store makes for a number: whether this gateway still holds
/// the number's lease (not lost, and renewed within its own deadline). A store refuses the call
/// when it says no, so a gateway that lost a number (paused by the OS, cut off) cannot write its
/// keys back over the new holder's.
pub type WriteFence = Arc<dyn Fn() -> bool + Send + Sync>;

/// Where the numbers' credentials live.
#[async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// The store a client for `session` is built on. A number without credentials gets an
    /// empty one: the client creates its device there and fills it in when it is linked.
    async fn backend(&self, session: &SessionId) -> Result<CredentialBackend, StorageError>;

    /// [`CredentialStore::backend`] whose every call first asks `fence` (a fleet's lease). The
    /// embedded store has no fleet and ignores it.
    async fn fenced_backend(&self, session: &SessionId, fence: WriteFence) -> Result<CredentialBackend, StorageError> {
        let _ = fence;
        self.backend(session).await
    }

    /// Whether `session` holds a store of credentials: it was linked, or a linking began, and
    /// it was not wiped since. A client started on it tells which.
    async fn has_credentials(&self, session: &SessionId) -> Result<bool, StorageError>;

    /// Those of `sessions` that hold credentials (one question for many, as at start-up).
    async fn with_credentials(&self, sessions: &[SessionId]) -> Result<HashSet<SessionId>, StorageError> {
        let mut linked = HashSet::new();
        for session in sessions {
            if self.has_credentials(session).await? {
                linked.insert(session.clone());
            }
        }
        Ok(linked)
    }

    /// Logout: the number's credentials go, so that its next client starts unlinked; anything
    /// else kept for the session stays. Whatever a store handed out before still writes (a client
    /// generation that is finishing) does not bring them back.
    async fn wipe(&self, session: &SessionId) -> Result<(), StorageError>;

    /// [`CredentialStore::wipe`] in a fleet: only while `lease` is the session's live lease,
    /// checked in the wipe's own transaction (a claim by another gateway waits for it); `false`,
    /// and nothing deleted, when it is not. The embedded store has no fleet and just wipes.
    async fn wipe_under_lease(&self, session: &SessionId, lease: &Lease) -> Result<bool, StorageError> {
        let _ = lease;
        self.wipe(session).await.map(|()| true)
    }

    /// Where the session's credentials are, for people (a folder, or a database).
    fn location(&self, session: &SessionId) -> String;

    /// Delete: everything kept for the session goes (its credentials, and on SQLite its folder).
    async fn remove(&self, session: &SessionId) -> Result<(), StorageError>;
}
