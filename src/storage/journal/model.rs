//! The journal's data types: statuses and their order, what goes in ([`NewMessage`]) and what
//! comes out ([`MessageRecord`], [`Accepted`]).

use serde::Serialize;

pub use crate::domain::DeliveryStatus;
use crate::domain::{ContentKind, OutgoingContent, PhoneNumber, SessionId};

/// An idempotency key and the fingerprint of the request that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key, at most 255 characters (validated by the caller). Keys are global: scope them by
    /// caller (e.g. prefix a hash of the token) before they get here.
    pub key: String,
    /// SHA-256 of the raw request body.
    pub fingerprint: [u8; 32],
}

/// A message to accept.
#[derive(Clone)]
pub struct NewMessage {
    /// Unique id, also the PDF's file name: 1–128 of `A-Z a-z 0-9 . _ -`, not starting with `.`.
    pub message_id: String,
    /// The session that will send it.
    pub session_id: SessionId,
    /// The recipient.
    pub to: PhoneNumber,
    /// What it carries; its bytes go to a segment, the rest to the row.
    pub content: OutgoingContent,
    /// Set when the request carried an `Idempotency-Key`.
    pub idempotency: Option<IdempotencyKey>,
}

impl std::fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMessage")
            .field("message_id", &self.message_id)
            .field("session_id", &self.session_id)
            .field("to", &self.to)
            .field("content", &self.content)
            .field("idempotency", &self.idempotency)
            .finish()
    }
}

/// The outcome of [`super::JournalStore::accept`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored durably as a new `queued` message.
    New,
    /// The idempotency key was seen with the same body: nothing stored, answer as for the first
    /// request, whose message id this is.
    Replay {
        /// The id the first request was given.
        message_id: String,
    },
    /// The idempotency key was seen with a different body (422): nothing stored.
    KeyReusedWithOtherBody,
}

/// A message as the journal knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRecord {
    /// Its id.
    pub message_id: String,
    /// The session sending it.
    pub session_id: String,
    /// The recipient's digits.
    pub to: String,
    /// Text, image, document, audio or video.
    pub kind: ContentKind,
    /// The file name the recipient sees (documents only).
    pub file_name: Option<String>,
    /// The media type (images and documents).
    pub mimetype: Option<String>,
    /// The caption (images and documents).
    pub caption: Option<String>,
    /// The start of a text, for lists (texts accepted by schema version 5 on).
    pub preview: Option<String>,
    /// For audio, whether it is a voice note; `None` for other kinds.
    pub ptt: Option<bool>,
    /// Where it is now.
    pub status: DeliveryStatus,
    /// Send attempts so far.
    pub attempts: u32,
    /// The most recent error reported for it, if any (kept after later successes).
    pub last_error: Option<String>,
    /// When it was accepted, unix ms.
    pub created_at: u64,
    /// When it last changed, unix ms.
    pub updated_at: u64,
    /// Size in bytes of the file, or of the text as UTF-8.
    pub size: u64,
}

/// What [`super::JournalStore::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Idempotency keys removed.
    pub idempotency_keys: u64,
    /// Finished messages removed.
    pub messages: u64,
}

/// Writer activity since open: `commands / batches` is the group-commit factor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Transactions committed (or attempted) by the writer.
    pub batches: u64,
    /// Commands applied in them.
    pub commands: u64,
    /// The most commands one transaction carried.
    pub largest_batch: u64,
}

/// A `message.status` event the journal recorded with the status it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEvent {
    pub seq: i64,
    pub event_id: String,
    pub message_id: String,
    pub session_id: String,
    pub status: String,
    pub kind: String,
    pub last_error: Option<String>,
    pub at: u64,
}
