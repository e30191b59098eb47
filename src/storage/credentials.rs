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

/// What a fleet's writes for a number are fenced by: the lease they are made under, and this
/// gateway's own view of it.
///
/// * [`WriteFence::holds`] is asked before every call: the lease is not lost, and was renewed
///   within this gateway's own deadline. It costs nothing and refuses at once after a pause.
/// * [`WriteFence::lease`] goes into the write's own transaction, which reads the lease row
///   `FOR SHARE` and refuses unless it still names this owner at this epoch, unexpired by the
///   database's clock. A claim by another gateway waits until that write is committed, so a
///   gateway that lost the number (paused by the OS, cut off, its clock wrong) cannot write its
///   keys, or a message's status, over the new holder's.
#[derive(Clone)]
pub struct WriteFence {
    lease: Lease,
    holds: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl WriteFence {
    pub fn new(lease: Lease, holds: Arc<dyn Fn() -> bool + Send + Sync>) -> WriteFence {
        WriteFence { lease, holds }
    }

    /// This gateway's own view: the lease is neither lost nor past its deadline.
    pub fn holds(&self) -> bool {
        (self.holds)()
    }

    /// The lease the writes are made under (owner and epoch), for the database's check.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }
}

impl std::fmt::Debug for WriteFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteFence").field("lease", &self.lease).finish_non_exhaustive()
    }
}

/// Where the numbers' credentials live.
#[async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// The store a client for `session` is built on. A number without credentials gets an
    /// empty one: the client creates its device there and fills it in when it is linked.
    async fn backend(&self, session: &SessionId) -> Result<CredentialBackend, StorageError>;

    /// [`CredentialStore::backend`] whose every call first asks `fence` (a fleet's lease), and
    /// whose every write is refused by the database unless the fence's lease is the number's
    /// live lease. The embedded store has no fleet and ignores it.
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
