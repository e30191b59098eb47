//! What a webhook is, below every layer that stores or posts one: the events it may carry
//! ([`EventKind`]), its [`Endpoint`] with its owner and [`WebhookFormat`], and each
//! [`Delivery`] of an event to it with its [`WebhookDeliveryStatus`].

use serde::Serialize;

use super::{EventKind, WebhookFormat, WebhookSecret};

/// Where a webhook delivery is. Not a message's [`crate::domain::DeliveryStatus`]: the two
/// have their own names so the OpenAPI document can describe both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookDeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl WebhookDeliveryStatus {
    /// Every status, in the order a delivery goes through them.
    pub const ALL: [WebhookDeliveryStatus; 3] =
        [WebhookDeliveryStatus::Pending, WebhookDeliveryStatus::Delivered, WebhookDeliveryStatus::Failed];

    /// The name in JSON, SQL and `?status=`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookDeliveryStatus::Pending => "pending",
            WebhookDeliveryStatus::Delivered => "delivered",
            WebhookDeliveryStatus::Failed => "failed",
        }
    }

    /// The status named `text`, if any.
    pub fn parse(text: &str) -> Option<WebhookDeliveryStatus> {
        WebhookDeliveryStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The token that registered an endpoint: it sees and manages it (and the admin does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The token's name (`admin` for `API_STATIC_TOKEN`, `WEBHOOK_URL` and endpoints from before
    /// owners were recorded).
    pub name: String,
    /// Whether it was the admin then: its endpoint may post to private addresses.
    pub admin: bool,
}

impl Owner {
    /// `API_STATIC_TOKEN`.
    pub fn admin() -> Owner {
        Owner { name: ADMIN.to_owned(), admin: true }
    }
}

/// The admin token's name, and the owner of endpoints that predate owners.
const ADMIN: &str = "admin";

/// Whose endpoints a caller sees and manages. Another caller's endpoint is treated as unknown
/// (404), so ids cannot be probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// The admin: every endpoint.
    Admin,
    /// Any other token, by name: the endpoints it registered.
    Token(String),
}

impl Viewer {
    /// The owner name to filter on, `None` for every endpoint (an SQL `?n IS NULL OR owner = ?n`).
    pub fn owner(&self) -> Option<&str> {
        match self {
            Viewer::Admin => None,
            Viewer::Token(name) => Some(name),
        }
    }
}

/// A receiver of events.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub secret: WebhookSecret,
    /// `None`: every event.
    pub events: Option<Vec<EventKind>>,
    /// `None`: every session.
    pub sessions: Option<Vec<String>>,
    pub created_at: u64,
    /// Why it no longer receives (a 410).
    pub disabled: Option<String>,
    /// Who registered it.
    pub owner: Owner,
    /// How its events are posted: a `seed…` format posts to paths below `url`.
    pub format: WebhookFormat,
}

impl Endpoint {
    /// A fresh endpoint id: `wh_` and 16 random hex digits.
    pub fn new_id() -> String {
        let raw: [u8; 8] = rand::random();
        format!("wh_{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    /// Whether it may get events of `kind` (enabled, asked for, and posted in its format).
    pub fn wants_kind(&self, kind: EventKind) -> bool {
        self.disabled.is_none()
            && self.format.posts(kind)
            && self.events.as_ref().is_none_or(|events| events.contains(&kind))
    }

    /// Whether it may get an event of `kind` from `session`.
    pub fn wants(&self, kind: EventKind, session: &str) -> bool {
        self.wants_kind(kind) && self.sessions.as_ref().is_none_or(|sessions| sessions.iter().any(|s| s == session))
    }
}

/// One event for one endpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: i64,
    /// The event's id: the `webhook-id` of every attempt.
    pub event_id: String,
    pub event: String,
    pub session_id: String,
    pub status: WebhookDeliveryStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Unix ms.
    pub created_at: u64,
    /// Unix ms of the next attempt (pending ones).
    pub next_attempt_at: u64,
    /// The JSON posted.
    #[serde(skip)]
    pub body: String,
    /// Where, below the endpoint's URL (a `seed…` format's callback path; empty for `standard`).
    #[serde(skip)]
    pub path: String,
}

/// A delivery to write: one event rendered in one endpoint's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub endpoint_id: String,
    /// The event's id; an endpoint gets each event once.
    pub event_id: String,
    pub event: EventKind,
    pub session_id: String,
    pub body: String,
    pub path: String,
}

/// What writing a batch of deliveries did to one endpoint's outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub endpoint_id: String,
    /// Its pending deliveries after the write.
    pub pending: u64,
    /// Deliveries written as failed (`outbox full`) because it already held the most pending.
    pub outbox_full: u64,
}

/// What a failed post did to a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The endpoint answered 410: the delivery failed and the endpoint is disabled.
    Gone,
    /// No more retries: a dead letter with this error.
    Dead(String),
    /// Tried again at `next_attempt_at` (unix ms).
    Retry { error: String, next_attempt_at: u64 },
}

/// The error of a delivery written beyond `WEBHOOK_OUTBOX_MAX`.
pub const OUTBOX_FULL: &str = "outbox full";

/// The error of a delivery the endpoint answered 410 to (and why the endpoint is disabled).
pub const GONE: &str = "the endpoint answered 410 Gone";
