//! What the rest of the gateway may do with a connected session: a [`SessionClient`] handle over
//! the few operations the queue, the contacts and chats routes and the inbox need, instead of the
//! raw whatsapp-rust client. The real client implements [`SessionOps`] in `upstream`; tests put
//! a fake behind the same handle.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::contacts::ContactCheck;
use super::upstream::{MediaRef, UpstreamError};
use super::{SessionManager, SessionState};
use crate::domain::{MessageId, OutgoingContent, PhoneNumber, SessionId};
use crate::storage::credentials::WriteFence;

/// The operations a connected session offers to the rest of the gateway.
#[async_trait]
pub(crate) trait SessionOps: Send + Sync + 'static {
    /// Whether `to` has a WhatsApp account.
    async fn is_on_whatsapp(&self, to: &PhoneNumber) -> Result<bool, UpstreamError>;

    /// Which of `phones` have an account, with their JIDs and LIDs (one query).
    async fn check_numbers(&self, phones: &[PhoneNumber]) -> Result<Vec<ContactCheck>, UpstreamError>;

    /// Sends `content` to `to` under `message_id`; WhatsApp's server ack arrives later as a
    /// [`DeliveryEvent`](super::DeliveryEvent).
    async fn send_content(
        &self,
        to: &PhoneNumber,
        content: &OutgoingContent,
        message_id: &MessageId,
    ) -> Result<(), UpstreamError>;

    /// Sends read receipts for `message_ids` of `chat` (a JID as the inbox stores it).
    async fn mark_read(&self, chat: &str, message_ids: &[&str]) -> Result<(), UpstreamError>;

    /// Downloads and decrypts the file of a received media message.
    async fn download(&self, media: &MediaRef) -> Result<Vec<u8>, UpstreamError>;

    /// The phone number (digits) the session knows for the LID user `lid`.
    async fn phone_for_lid(&self, lid: &str) -> Option<String>;
}

/// A connected session's client, cheap to clone. It stays bound to the connection it was taken
/// from: after a reconnect, ask [`SessionManager::connected_client`] again.
#[derive(Clone)]
pub(crate) struct SessionClient(Arc<dyn SessionOps>);

impl SessionClient {
    pub(crate) fn new(ops: Arc<dyn SessionOps>) -> SessionClient {
        SessionClient(ops)
    }

    pub(crate) async fn is_on_whatsapp(&self, to: &PhoneNumber) -> Result<bool, UpstreamError> {
        self.0.is_on_whatsapp(to).await
    }

    pub(crate) async fn check_numbers(&self, phones: &[PhoneNumber]) -> Result<Vec<ContactCheck>, UpstreamError> {
        self.0.check_numbers(phones).await
    }

    pub(crate) async fn send_content(
        &self,
        to: &PhoneNumber,
        content: &OutgoingContent,
        message_id: &MessageId,
    ) -> Result<(), UpstreamError> {
        self.0.send_content(to, content, message_id).await
    }

    pub(crate) async fn mark_read(&self, chat: &str, message_ids: &[&str]) -> Result<(), UpstreamError> {
        self.0.mark_read(chat, message_ids).await
    }

    pub(crate) async fn download(&self, media: &MediaRef) -> Result<Vec<u8>, UpstreamError> {
        self.0.download(media).await
    }

    pub(crate) async fn phone_for_lid(&self, lid: &str) -> Option<String> {
        self.0.phone_for_lid(lid).await
    }
}

/// Under what the gateway that runs a session writes its messages' statuses.
pub(crate) enum Writes {
    /// No fleet: this gateway alone runs every session.
    Alone,
    /// In a fleet, under this gateway's lease of the session: refused once it is lost.
    Fenced(WriteFence),
    /// In a fleet, and this gateway does not hold the session's lease.
    NotHeld,
}

/// What the queue's workers need of the sessions: each one's state, to wait for a connection
/// and notice its loss, and its client while connected. [`SessionManager`] in the gateway; a
/// fake in the queue's tests.
pub(crate) trait Connections: Send + Sync + 'static {
    fn state(&self, id: &SessionId) -> Option<watch::Receiver<SessionState>>;
    fn connected_client(&self, id: &SessionId) -> Option<SessionClient>;

    /// In a fleet: whether another gateway holds the session's lease (runs its client).
    fn runs_elsewhere(&self, id: &SessionId) -> bool {
        let _ = id;
        false
    }

    /// Under what the statuses of `id`'s messages are written here.
    fn writes(&self, id: &SessionId) -> Writes {
        let _ = id;
        Writes::Alone
    }

    /// In a fleet: tells the gateway that runs `id` that a message for it was accepted here.
    fn announce_queued(&self, id: &SessionId) {
        let _ = id;
    }
}

impl Connections for SessionManager {
    fn state(&self, id: &SessionId) -> Option<watch::Receiver<SessionState>> {
        SessionManager::state(self, id)
    }

    fn connected_client(&self, id: &SessionId) -> Option<SessionClient> {
        SessionManager::connected_client(self, id)
    }

    fn runs_elsewhere(&self, id: &SessionId) -> bool {
        SessionManager::runs_elsewhere(self, id)
    }

    fn announce_queued(&self, id: &SessionId) {
        SessionManager::announce_queued(self, id);
    }

    fn writes(&self, id: &SessionId) -> Writes {
        match self.fleet() {
            None => Writes::Alone,
            Some(fleet) => fleet.fence_of(id).map_or(Writes::NotHeld, Writes::Fenced),
        }
    }
}
