//! Validated values every layer uses: ids ([`SessionId`], [`MessageId`]), phone numbers, PDFs,
//! file names, the delivery [`DeliveryStatus`], and what a webhook is (`webhook.rs`).
//!
//! Each value is parsed once at the edge (HTTP, the journal); past that point the queue and the
//! sessions only see values that are known to be well formed.

pub(crate) mod audio_video;
mod clock;
mod content;
mod event_kind;
mod fleet;
mod ids;
mod incoming;
mod media;
mod registry;
mod status;
mod values;
mod webhook;
mod webhook_secret;
mod webhook_settings;

pub use clock::now_ms;
pub use content::{
    ContentError, ContentKind, MAX_CAPTION_CHARS, MAX_MEDIA_BYTES, MAX_TEXT_CHARS, MimeType, OutgoingContent,
    PREVIEW_CHARS,
};
pub use event_kind::EventKind;
pub use fleet::{Epoch, GatewayId, InvalidGatewayId, Lease, MAX_GATEWAY_ID_LEN};
pub use ids::{InvalidSessionId, MAX_LEN as MAX_SESSION_ID_LEN, MessageId, SessionId, new_event_id, received_event_id};
pub use incoming::{
    ChatSummary, IncomingContact, IncomingKind, IncomingLocation, IncomingMedia, IncomingMessage, IncomingReaction,
};
pub use media::{InlineMedia, MediaError, decode_inline};
pub use registry::SessionEntry;
pub use status::DeliveryStatus;
pub use values::{
    DEFAULT_FILE_NAME, FileName, InvalidFileName, InvalidPhone, MAX_FILE_NAME_CHARS, MAX_PDF_BYTES, PDF_HEADER_WINDOW,
    PdfDocument, PdfError, PhoneNumber, has_pdf_header, visible_text,
};
pub use webhook::{
    Delivery, DeliveryOutcome, Endpoint, Enqueued, GONE, NewDelivery, OUTBOX_FULL, Owner, Viewer, WebhookDeliveryStatus,
};
pub use webhook_secret::{SecretError, WebhookSecret};
pub use webhook_settings::{EnvEndpoint, WebhookFormat, WebhookSettings, is_http_url};
