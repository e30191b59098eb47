//! The inbox's store: received messages, their chats and read marks, and the bytes of their files.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;

use super::StorageError;
use crate::domain::{ChatSummary, IncomingMessage, SessionId};

/// Most items one list call returns.
pub const MAX_PAGE: usize = 200;

/// A page of messages, newest first.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<IncomingMessage>,
    /// Pass as `before` for the next page; `None` on the last one.
    pub next: Option<u64>,
}

/// What the linked numbers received. A message is stored once per `(session, message id)`:
/// WhatsApp redelivers what arrived while the gateway was down, and may redeliver after a crash.
#[async_trait]
pub trait InboxStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `message` unless it is already stored; `true` when it is new.
    async fn insert(&self, message: &IncomingMessage) -> Result<bool, StorageError>;

    /// Replaces the stored record of a message (its media details changed), keeping `file` as its
    /// bytes when given.
    async fn update(&self, message: &IncomingMessage, file: Option<Bytes>) -> Result<(), StorageError>;

    /// The messages of `session` (of one `chat` if given), newest first, older than `before`;
    /// `limit` is clamped to `1..=MAX_PAGE`.
    async fn list(
        &self,
        session: &SessionId,
        chat: Option<&str>,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Page, StorageError>;

    /// The chats of `session`, most recent first, with their unread counts.
    async fn chats(&self, session: &SessionId) -> Result<Vec<ChatSummary>, StorageError>;

    /// When each chat of `session` began: the send time of its oldest stored message, unix ms.
    async fn chat_starts(&self, session: &SessionId) -> Result<HashMap<String, u64>, StorageError>;

    /// Marks `chat` read up to its latest message; returns the messages that were unread (for
    /// read receipts), or `None` if the chat has no messages.
    async fn mark_read(&self, session: &SessionId, chat: &str) -> Result<Option<Vec<IncomingMessage>>, StorageError>;

    /// A received message by id (the newest, should two sessions share an id).
    async fn get(&self, message_id: &str) -> Result<Option<IncomingMessage>, StorageError>;

    /// The kept bytes of a received message's file.
    async fn file(&self, message_id: &str) -> Result<Option<Bytes>, StorageError>;

    /// Deletes the messages stored before `cutoff_ms` (unix ms), and their files; returns how many.
    async fn prune(&self, cutoff_ms: u64) -> Result<usize, StorageError>;
}

/// A chat's summary from its latest message and its unread count.
pub(crate) fn summary(chat: String, last: Option<IncomingMessage>, unread: i64) -> ChatSummary {
    ChatSummary {
        chat,
        from: last.as_ref().and_then(|m| m.from.clone()),
        push_name: last.as_ref().and_then(|m| m.push_name.clone()),
        last_message_at: last.as_ref().map_or(0, |m| m.timestamp),
        unread_count: u64::try_from(unread).unwrap_or(0),
    }
}
