//! How an endpoint's events are posted: its [`WebhookFormat`].
//!
//! * `standard`: every event as `/ws/events` shows it (`{"id","event","sessionId","timestamp",
//!   "data"}`), to the endpoint's URL.
//! * `seed000` and `seed002`: the callbacks of a sibling Node.js service, for a backend written
//!   for it. Their service posted to several paths under one base URL, so here the endpoint's URL
//!   is that base (the service's `BACKEND_URL` / `BACKEND_BASE_URL`) and each event picks its
//!   path below it. Events the service had no callback for are not posted to such an endpoint.
//!
//! | event | `seed000` | `seed002` |
//! |---|---|---|
//! | `session.qr` | `/whatsapp-qr/webhook` `type: qr` | `/api/whatsapp/sessions/qr-update` |
//! | `session.connected` | `/whatsapp-qr/webhook` `type: connected` | `/api/whatsapp/sessions/new-session-connected`, on a new link only |
//! | `session.status` | `/whatsapp-qr/webhook` `type: disconnected`, when the connection is gone or lost | `/api/whatsapp/sessions/status-update`, every change |
//! | `message.received` | `/whatsapp-qr/incoming`, messages with a text or a caption | `/api/whatsapp/messages/received` |
//! | `session.logged_out`, `message.status` | — | — |
//!
//! Bodies are rendered when the event is written to the outbox, so every retry posts the same
//! bytes under the same `webhook-id`; the signature headers are there too, and a seed's backend
//! simply ignores them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::EventKind;
/// Defined in `domain` (the configuration names it); its rendering is here.
pub use crate::domain::WebhookFormat;
use crate::domain::{IncomingKind, IncomingMessage};
use crate::events::GatewayEvent;
use crate::seeds::{Seed002Status, iso_millis, iso_seconds};
use crate::session::Status;

impl WebhookFormat {
    /// What to post for `event`: the path below the endpoint's URL and the body; `None` when this
    /// format has nothing to say about it. `facts` tells what the event does not carry about its
    /// session.
    pub fn render(self, event: &GatewayEvent, facts: &dyn Fn(&str) -> SessionFacts) -> Option<Rendered> {
        let (path, body) = match self {
            WebhookFormat::Standard => ("", serde_json::to_string(event).ok()?),
            WebhookFormat::Seed000 => seed000(event)?,
            WebhookFormat::Seed002 => seed002(event, facts)?,
        };
        Some(Rendered { path, body })
    }
}

/// One delivery's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Appended to the endpoint's URL (empty for `standard`).
    pub path: &'static str,
    pub body: String,
}

/// What a seed's callback says about a session that its event does not carry, looked up as the
/// event is written to the outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFacts {
    /// The linked number, digits only.
    pub phone: Option<String>,
    /// The session's credentials folder (seed 002's `auth_folder_path`).
    pub folder: String,
}

/// `endpoint`'s URL with `path` appended to its path (before any query).
pub(super) fn join(endpoint: &str, path: &str) -> String {
    if path.is_empty() {
        return endpoint.to_owned();
    }
    let (base, query) = match endpoint.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (endpoint, None),
    };
    let mut url = format!("{}{path}", base.trim_end_matches('/'));
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// `session.status`'s data.
#[derive(Deserialize)]
struct StatusData {
    status: String,
    reason: Option<String>,
}

/// `session.qr`'s data.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QrData {
    qr: String,
    qr_png: Option<String>,
}

/// `session.connected`'s data.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectedData {
    phone: String,
    jid: String,
    connected_at: u64,
    #[serde(default)]
    new_link: bool,
}

fn data<T: for<'de> Deserialize<'de>>(event: &GatewayEvent) -> Option<T> {
    T::deserialize(&event.data).ok()
}

fn status_of(name: &str) -> Option<Status> {
    Status::ALL.into_iter().find(|s| s.as_str() == name)
}

/// The text a seed's backend reads as a message's content: the text, else the caption.
fn content(message: &IncomingMessage) -> Option<&str> {
    message.text.as_deref().or(message.caption.as_deref()).filter(|t| !t.is_empty())
}

/// Seed 000's `POST {BACKEND_URL}/whatsapp-qr/webhook` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Seed000Webhook<'a, D> {
    #[serde(rename = "type")]
    kind: &'static str,
    session_id: &'a str,
    data: D,
}

/// Seed 000's `POST {BACKEND_URL}/whatsapp-qr/incoming` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Seed000Incoming<'a> {
    session_id: &'a str,
    from: &'a str,
    message: &'a str,
    timestamp: String,
    message_id: &'a str,
}

const SEED000_WEBHOOK: &str = "/whatsapp-qr/webhook";
const SEED000_INCOMING: &str = "/whatsapp-qr/incoming";

fn seed000(event: &GatewayEvent) -> Option<(&'static str, String)> {
    let session_id = event.session_id.as_str();
    let webhook = |kind, data: Value| {
        serde_json::to_string(&Seed000Webhook { kind, session_id, data }).ok().map(|body| (SEED000_WEBHOOK, body))
    };
    match event.event {
        EventKind::SessionQr => {
            let qr: QrData = data(event)?;
            webhook("qr", serde_json::json!({ "qrCode": qr.qr_png? }))
        }
        EventKind::SessionConnected => {
            let connected: ConnectedData = data(event)?;
            webhook("connected", serde_json::json!({ "connectedAt": iso_seconds(connected.connected_at) }))
        }
        EventKind::SessionStatus => {
            let StatusData { status, reason } = data(event)?;
            // The seed posted `disconnected` when its connection closed, for good or to reconnect;
            // here that is a stop, a log-out, a terminal error, or a lost connection being retried
            // (`connecting` with a reason).
            let reason = match status_of(&status)? {
                Status::LoggedOut => "logout".to_owned(),
                Status::Disconnected | Status::Error => reason.unwrap_or(status),
                Status::Connecting => reason?,
                Status::QrReady | Status::PairingCode | Status::Connected => return None,
            };
            webhook("disconnected", serde_json::json!({ "reason": reason }))
        }
        EventKind::MessageReceived => {
            let message: IncomingMessage = data(event)?;
            let from = message.from.as_deref().or(message.from_lid.as_deref())?;
            let body = Seed000Incoming {
                session_id,
                from,
                message: content(&message)?,
                timestamp: iso_seconds(message.timestamp),
                message_id: &message.message_id,
            };
            Some((SEED000_INCOMING, serde_json::to_string(&body).ok()?))
        }
        EventKind::SessionLoggedOut | EventKind::MessageStatus => None,
    }
}

/// Seed 002's `new-session-connected` body.
#[derive(Serialize)]
struct Seed002Connected<'a> {
    session_id: &'a str,
    phone_number: String,
    status: Seed002Status,
    last_seen: String,
    auth_folder_path: String,
    server_port: Option<u16>,
    whatsapp_user_id: String,
    created_at: String,
    updated_at: String,
}

/// Seed 002's `status-update` body.
#[derive(Serialize)]
struct Seed002StatusUpdate<'a> {
    session_id: &'a str,
    status: Seed002Status,
    error_message: Option<String>,
    timestamp: String,
    last_seen: String,
}

/// Seed 002's `messages/received` body.
#[derive(Serialize)]
struct Seed002Received<'a> {
    session_id: &'a str,
    sender_name: Option<String>,
    sender_number: Option<String>,
    message_content: Option<String>,
    message_type: IncomingKind,
    media_info: Map<String, Value>,
    received_at: String,
    phone_number_session: Option<String>,
}

/// Seed 002's `qr-update` body.
#[derive(Serialize)]
struct Seed002Qr<'a> {
    session_id: &'a str,
    qr_data: String,
    generated_at: String,
}

fn seed002(event: &GatewayEvent, facts: &dyn Fn(&str) -> SessionFacts) -> Option<(&'static str, String)> {
    let session_id = event.session_id.as_str();
    let at = iso_millis(event.timestamp);
    let (path, body) = match event.event {
        EventKind::SessionConnected => {
            let connected: ConnectedData = data(event)?;
            // The seed's backend inserts a row per link (its `session_id` and `phone_number` are
            // unique): a reconnection of a linked session is a `status-update` instead.
            if !connected.new_link {
                return None;
            }
            let at = iso_millis(connected.connected_at);
            let body = Seed002Connected {
                session_id,
                phone_number: connected.phone,
                status: Seed002Status::Connected,
                last_seen: at.clone(),
                auth_folder_path: facts(session_id).folder,
                server_port: None,
                whatsapp_user_id: connected.jid,
                created_at: at.clone(),
                updated_at: at,
            };
            ("/api/whatsapp/sessions/new-session-connected", serde_json::to_string(&body))
        }
        EventKind::SessionStatus => {
            let StatusData { status, reason } = data(event)?;
            let body = Seed002StatusUpdate {
                session_id,
                status: status_of(&status)?.into(),
                error_message: reason,
                timestamp: at.clone(),
                last_seen: at,
            };
            ("/api/whatsapp/sessions/status-update", serde_json::to_string(&body))
        }
        EventKind::SessionQr => {
            let qr: QrData = data(event)?;
            (
                "/api/whatsapp/sessions/qr-update",
                serde_json::to_string(&Seed002Qr { session_id, qr_data: qr.qr, generated_at: at }),
            )
        }
        EventKind::MessageReceived => {
            let message: IncomingMessage = data(event)?;
            let mut media_info = Map::new();
            if let Some(media) = &message.media {
                media_info.insert("message_id".into(), message.message_id.clone().into());
                media_info.insert("mimetype".into(), media.mimetype.clone().into());
                media_info.insert("file_name".into(), media.file_name.clone().into());
                media_info.insert("size".into(), media.size.into());
                media_info.insert("sha256".into(), media.sha256.clone().into());
                media_info.insert("stored".into(), media.stored.into());
            }
            let body = Seed002Received {
                session_id,
                sender_name: message.push_name.clone(),
                sender_number: message.from.clone().or(message.from_lid.clone()),
                message_content: content(&message).map(str::to_owned).or(message.summary.clone()),
                message_type: message.kind,
                media_info,
                received_at: iso_millis(message.timestamp),
                phone_number_session: facts(session_id).phone,
            };
            ("/api/whatsapp/messages/received", serde_json::to_string(&body))
        }
        EventKind::SessionLoggedOut | EventKind::MessageStatus => return None,
    };
    Some((path, body.ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: EventKind, data: Value) -> GatewayEvent {
        GatewayEvent {
            id: "evt_1".into(),
            event: kind,
            session_id: "tienda".into(),
            timestamp: 1_705_314_600_000,
            data,
        }
    }

    fn facts(_: &str) -> SessionFacts {
        SessionFacts { phone: Some("51900000001".into()), folder: "./sessions/tienda".into() }
    }

    fn render(format: WebhookFormat, event: &GatewayEvent) -> Option<(&'static str, Value)> {
        format.render(event, &facts).map(|r| (r.path, serde_json::from_str(&r.body).unwrap()))
    }

    fn received(text: Option<&str>) -> Value {
        json!({"messageId":"3EB0","sessionId":"tienda","direction":"in","chat":"1@lid","from":"51987654321",
            "fromLid":"1","pushName":"Ana","timestamp":1_705_314_600_000u64,"type":"text","text":text,"caption":null,
            "media":null,"quotedId":null,"location":null,"reaction":null,"contact":null,"summary":null})
    }

    #[test]
    fn urls_get_the_path_before_their_query() {
        assert_eq!(join("http://b:3000", "/x/y"), "http://b:3000/x/y");
        assert_eq!(join("http://b:3000/", "/x"), "http://b:3000/x");
        assert_eq!(join("http://b/base?k=1", "/x"), "http://b/base/x?k=1");
        assert_eq!(join("http://b/hooks?k=1", ""), "http://b/hooks?k=1");
    }

    #[test]
    fn standard_is_the_event_itself() {
        let e = event(EventKind::MessageStatus, json!({"messageId":"x"}));
        let (path, body) = render(WebhookFormat::Standard, &e).unwrap();
        assert_eq!((path, body["event"].as_str(), body["id"].as_str()), ("", Some("message.status"), Some("evt_1")));
        assert!(!WebhookFormat::Seed000.posts(EventKind::MessageStatus));
        assert!(render(WebhookFormat::Seed002, &event(EventKind::SessionLoggedOut, json!({}))).is_none());
    }

    #[test]
    fn seed000_disconnects_only_when_the_connection_is_gone_or_lost() {
        let status = |status: &str, reason: Option<&str>| {
            render(WebhookFormat::Seed000, &event(EventKind::SessionStatus, json!({"status":status,"reason":reason})))
        };
        assert_eq!(
            status("logged_out", Some("logged out from the phone")),
            Some((SEED000_WEBHOOK, json!({"type":"disconnected","sessionId":"tienda","data":{"reason":"logout"}})))
        );
        assert_eq!(
            status("connecting", Some("connection lost; reconnecting")).unwrap().1["data"]["reason"],
            "connection lost; reconnecting"
        );
        assert_eq!(status("disconnected", None).unwrap().1["data"]["reason"], "disconnected");
        assert!(status("connecting", None).is_none() && status("qr_ready", None).is_none());
        assert!(status("connected", None).is_none(), "the connection is `session.connected`'s");
    }

    #[test]
    fn seed000_incoming_needs_a_text() {
        let (path, body) =
            render(WebhookFormat::Seed000, &event(EventKind::MessageReceived, received(Some("Hola")))).unwrap();
        assert_eq!(path, SEED000_INCOMING);
        assert_eq!(
            body,
            json!({"sessionId":"tienda","from":"51987654321","message":"Hola","timestamp":"2024-01-15T10:30:00Z","messageId":"3EB0"})
        );
        assert!(render(WebhookFormat::Seed000, &event(EventKind::MessageReceived, received(None))).is_none());
    }

    #[test]
    fn seed002_new_session_only_on_a_new_link() {
        let connected = |new_link: bool| {
            event(
                EventKind::SessionConnected,
                json!({"phone":"51900000001","jid":"51900000001:3@s.whatsapp.net","connectedAt":1_705_314_600_000u64,"newLink":new_link}),
            )
        };
        assert!(render(WebhookFormat::Seed002, &connected(false)).is_none());
        let (path, body) = render(WebhookFormat::Seed002, &connected(true)).unwrap();
        assert_eq!(path, "/api/whatsapp/sessions/new-session-connected");
        assert_eq!(body["auth_folder_path"], "./sessions/tienda");
        assert_eq!(body["server_port"], Value::Null);
        assert_eq!(body["created_at"], "2024-01-15T10:30:00.000Z");
        let (_, body) =
            render(WebhookFormat::Seed002, &event(EventKind::MessageReceived, received(Some("Hola")))).unwrap();
        assert_eq!(body["phone_number_session"], "51900000001");
        assert_eq!(body["media_info"], json!({}));
    }
}
