//! What a linked number receives: [`IncomingMessage`], as the inbox stores it and the API and
//! the events socket show it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The kind of a received message. Kinds we do not model are `other`, with a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncomingKind {
    Text,
    Image,
    Video,
    Audio,
    Document,
    Sticker,
    Location,
    Contact,
    Reaction,
    Other,
}

impl IncomingKind {
    pub const ALL: [IncomingKind; 10] = [
        IncomingKind::Text,
        IncomingKind::Image,
        IncomingKind::Video,
        IncomingKind::Audio,
        IncomingKind::Document,
        IncomingKind::Sticker,
        IncomingKind::Location,
        IncomingKind::Contact,
        IncomingKind::Reaction,
        IncomingKind::Other,
    ];

    /// The one place each kind is spelled.
    pub fn as_str(self) -> &'static str {
        match self {
            IncomingKind::Text => "text",
            IncomingKind::Image => "image",
            IncomingKind::Video => "video",
            IncomingKind::Audio => "audio",
            IncomingKind::Document => "document",
            IncomingKind::Sticker => "sticker",
            IncomingKind::Location => "location",
            IncomingKind::Contact => "contact",
            IncomingKind::Reaction => "reaction",
            IncomingKind::Other => "other",
        }
    }

    pub fn parse(text: &str) -> Option<IncomingKind> {
        IncomingKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Whether messages of this kind carry a file.
    pub fn has_media(self) -> bool {
        matches!(
            self,
            IncomingKind::Image
                | IncomingKind::Video
                | IncomingKind::Audio
                | IncomingKind::Document
                | IncomingKind::Sticker
        )
    }
}

/// The file of a received media message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncomingMedia {
    pub mimetype: Option<String>,
    pub file_name: Option<String>,
    /// Size in bytes (as WhatsApp announced it until the file is downloaded).
    pub size: Option<u64>,
    /// Hex SHA-256 of the downloaded file.
    pub sha256: Option<String>,
    /// Whether `GET /api/messages/{messageId}/media` has the bytes.
    pub stored: bool,
    /// Why the bytes are not kept (over the size limit, download failed).
    pub error: Option<String>,
}

/// A shared location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncomingLocation {
    pub latitude: f64,
    pub longitude: f64,
    pub name: Option<String>,
    pub address: Option<String>,
}

/// A reaction to an earlier message (an empty emoji takes it back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncomingReaction {
    pub message_id: Option<String>,
    pub emoji: String,
}

/// A shared contact card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncomingContact {
    pub display_name: Option<String>,
    pub vcard: Option<String>,
}

/// A message a linked number received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncomingMessage {
    /// WhatsApp's id of the message.
    pub message_id: String,
    pub session_id: String,
    /// Always `in`.
    #[schema(example = "in")]
    pub direction: String,
    /// The chat: the sender's JID for a direct message, the group's JID for a group.
    pub chat: String,
    /// The sender's phone number, whenever WhatsApp or the LID↔phone mapping gives it.
    pub from: Option<String>,
    /// The sender's LID, when known.
    pub from_lid: Option<String>,
    /// The name the sender set in WhatsApp.
    pub push_name: Option<String>,
    /// When it was sent, unix milliseconds.
    pub timestamp: u64,
    #[serde(rename = "type")]
    pub kind: IncomingKind,
    pub text: Option<String>,
    pub caption: Option<String>,
    pub media: Option<IncomingMedia>,
    /// The id of the message this one quotes.
    pub quoted_id: Option<String>,
    pub location: Option<IncomingLocation>,
    pub reaction: Option<IncomingReaction>,
    pub contact: Option<IncomingContact>,
    /// For kinds we do not model: what it was (e.g. `pollCreationMessage`).
    pub summary: Option<String>,
}

/// A chat as `GET /api/sessions/{id}/chats` lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatSummary {
    /// The chat's JID.
    pub chat: String,
    /// The phone number of its latest sender, when known.
    pub from: Option<String>,
    /// The latest sender's WhatsApp name.
    pub push_name: Option<String>,
    /// When its latest message was sent, unix ms.
    pub last_message_at: u64,
    /// Messages received since the chat was last marked read.
    pub unread_count: u64,
}
