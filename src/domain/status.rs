//! [`DeliveryStatus`]: where an outgoing message is, spelled in one place.

use serde::{Serialize, Serializer};
use utoipa::ToSchema;

/// Where a message is in its life. Statuses only move forward:
/// `Queued → Sending → Sent → Delivered → Read`, and `Failed` only from `Queued` or `Sending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Accepted and durable, waiting for its turn.
    Queued,
    /// An attempt to send it is under way (or was, when the process stopped).
    Sending,
    /// WhatsApp's server acknowledged it.
    Sent,
    /// The recipient's device received it.
    Delivered,
    /// The recipient opened it.
    Read,
    /// Given up on; `last_error` says why.
    Failed,
}

impl DeliveryStatus {
    /// Every status, in life order.
    pub const ALL: [DeliveryStatus; 6] = [
        DeliveryStatus::Queued,
        DeliveryStatus::Sending,
        DeliveryStatus::Sent,
        DeliveryStatus::Delivered,
        DeliveryStatus::Read,
        DeliveryStatus::Failed,
    ];

    /// The lowercase name: the one place each status is spelled (stored, serialized, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// The status spelled `text` by [`DeliveryStatus::as_str`].
    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// Sent, delivered, read or failed: nothing left to send, so the PDF is deleted.
    pub fn is_final(self) -> bool {
        !matches!(self, DeliveryStatus::Queued | DeliveryStatus::Sending)
    }

    /// Whether `self → next` is a forward move. Late or repeated events (a `Sent` ack after
    /// `Delivered`, a `Failed` after `Sent`) are not, and are ignored by the journal.
    pub fn can_move_to(self, next: DeliveryStatus) -> bool {
        use DeliveryStatus::{Failed, Queued, Sending};
        match (self, next) {
            (Queued | Sending, Failed) => true,
            (Failed, _) | (_, Failed) => false,
            _ => next.rank() > self.rank(),
        }
    }

    fn rank(self) -> u8 {
        self as u8
    }
}

impl Serialize for DeliveryStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_everywhere() {
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert_eq!(DeliveryStatus::parse("QUEUED"), None);
    }
}
