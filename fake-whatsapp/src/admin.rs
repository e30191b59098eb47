//! The admin API, over HTTP (JSON) and in-process: link a device as a phone (scan its QR, or type
//! the pairing code it shows), read what reached a phone, make a phone send, and inject faults
//! (logout, dropped connection, refusal).
//!
//! HTTP routes (JSON bodies; errors are `{"error": "..."}`):
//!
//! | Route | Body | Answer |
//! |---|---|---|
//! | `POST /admin/scan` | `{"qr","phone"}` | 200 `{"jid","lid"}`; 400 malformed, 404 unknown ref, 410 expired, 504 unconfirmed |
//! | `POST /admin/passkey-request` | `{"qr"}` | 200 `{"ok":true}`: WhatsApp asks the companion showing this QR for a passkey (`passkey_prologue_request`), as for a passkey-protected account; the handshake that would follow is not modelled. 400 malformed, 404 unknown ref, 410 expired |
//! | `POST /admin/pair-code` | `{"phone","code"}` (code with or without the dash, any case) | 200 `{"jid","lid"}`; 400 malformed body, phone or code; 404 no pending pairing-code request for the phone, or unknown code; 409 another code is being entered; 410 the requesting connection is gone; 502 the companion's keys are invalid; 504 the companion did not answer or confirm |
//! | `GET /admin/devices` | | `[{"jid","lid","phone","connected","removed"}]` |
//! | `POST /admin/devices/{jid}/logout`, `.../drop` | | `{"ok":true}`; 400, 404, 409 |
//! | `POST /admin/refuse` | `{"seconds"}` | `{"ok":true}` |
//! | `GET /admin/phones/{phone}/messages`, `.../receipts`, `.../duplicates` | | records (a message: `{"id","from","from_lid"?,"type","text"?,"document"?,"media"?,"location"?,"reaction"?,"received_at","repeats"?}`, see [`ReceivedMessage`]; `repeats`, when not 0, counts how often it arrived again under its id; `type` is `text`, `image`, `video`, `audio`, `document`, …; `media` is `{"sha256","size","mimetype","file_name","caption","ptt"?,"seconds"?}` of the decrypted file, with `ptt` (a voice note or a plain audio) on audio and the declared `seconds` on audio and video) |
//! | `POST /admin/phones/{phone}/redeliver` | `{"id"}` | 200 `{"devices"}`: the message `id` a virtual phone sent to `{phone}` goes again, encrypted anew under the same id, to each of its linked devices (now, or at their next login); 404 no such message for `{phone}`, or no linked device |
//! | `POST /admin/phones/{phone}/messages/{id}/read` | | `{"ok":true}`; 404 |
//! | `POST /admin/phones/{phone}/registered` | `{"registered"}` | `{"ok":true}` |
//! | `GET /admin/phones/{phone}/lid` | | `{"phone","lid"}`; 404 not on WhatsApp |
//! | `POST /admin/phones/{phone}/send` | `{"to"}` and exactly one of `"text"`, `"document":{"file_name","mimetype","base64","caption"}`, `"image":{"mimetype","base64","caption"}`, `"location":{"latitude","longitude","name","address"}`, `"reaction":{"message_id","emoji"}` | `{"id"}`; 400, 404, 500 |
//!
//! A message handed to a linked device waits for the device's receipt (or `<ack>`); each new
//! login gets again what an earlier connection never acknowledged, as on WhatsApp. Every such
//! repeat, and each `redeliver`, is a [`FakeEvent::MessageRedelivered`](crate::FakeEvent).
//!
//! `POST /admin/scan` takes the QR string as a client shows it (`ref,noise,identity,adv[,platform]`)
//! or as a link (`https://wa.me/settings/linked_devices#ref,noise,identity,adv,platform`).
//! Devices are named by phone-number JID or by LID in the `/admin/devices/{jid}` routes.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use wacore_binary::Jid;
use wacore_binary::builder::NodeBuilder;

use crate::pair_code::{self, PairCodeError};
use crate::pairing::{self, Linked, ScanError};
use crate::routing::{self, Outgoing, SendError};
use crate::shared::Shared;
use crate::stanza;
use crate::state::{DeviceKey, Outbound, ReceiptRecord, ReceivedMessage, Registry, unix_secs};

const MAX_ADMIN_BODY: usize = 96 << 20;

/// A linked device as the admin API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceInfo {
    pub jid: String,
    /// The device's LID (`LID:device@lid`).
    pub lid: String,
    pub phone: String,
    pub connected: bool,
    pub removed: bool,
}

/// Why an admin operation on a device failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceOpError {
    #[error("not a device JID")]
    BadJid,
    #[error("unknown device")]
    Unknown,
    #[error("device is not connected")]
    NotConnected,
    #[error("unknown message id")]
    UnknownMessage,
}

/// In-process handle on the admin operations.
#[derive(Clone)]
pub struct Admin {
    shared: Arc<Shared>,
}

impl Admin {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// A phone scans `qr`: the waiting client is linked to `phone`. Resolves once the client
    /// confirmed (`pair-device-sign`).
    pub async fn scan(&self, qr: &str, phone: &str) -> Result<Linked, ScanError> {
        pairing::scan(&self.shared, qr, phone).await
    }

    /// WhatsApp asks the companion that shows `qr` to prove a passkey before linking (a
    /// `passkey_prologue_request` notification with WebAuthn request options), as it does when a
    /// passkey-protected account scans the code. Only the request is modelled.
    pub fn passkey_request(&self, qr: &str) -> Result<(), ScanError> {
        pairing::passkey_request(&self.shared, qr)
    }

    /// The phone of `phone` types the pairing `code` (with or without its dash, any case) that a
    /// client requested for this number with `pair_with_code`: the client is linked to `phone`.
    /// Resolves once the client confirmed (`pair-device-sign`), like [`Admin::scan`].
    ///
    /// Fails with [`PairCodeError::NoRequest`] when no client is waiting for a code for this
    /// number and with [`PairCodeError::UnknownCode`] when the code is not the one it shows; the
    /// request then stays pending, so the right code can still be typed.
    pub async fn pair_code(&self, phone: &str, code: &str) -> Result<Linked, PairCodeError> {
        pair_code::pair_code(&self.shared, phone, code).await
    }

    /// What reached a virtual phone, oldest first.
    pub fn messages(&self, phone: &str) -> Vec<ReceivedMessage> {
        self.shared.lock().phones.get(phone).map(|p| p.messages.clone()).unwrap_or_default()
    }

    /// How many messages reached the phone again with an id it had already shown.
    pub fn duplicates(&self, phone: &str) -> u64 {
        self.shared.lock().phones.get(phone).map_or(0, |p| p.duplicates)
    }

    /// WhatsApp delivers the message `id` that a virtual phone sent to `to` again, encrypted
    /// anew under the same id, to each linked device of `to` (now if connected, else at its
    /// next login), as when its sender resends it. Returns how many devices it went to.
    pub async fn redeliver(&self, to: &str, id: &str) -> Result<usize, SendError> {
        routing::redeliver(&self.shared, to, id).await
    }

    /// Receipts linked devices sent for messages this phone had sent them.
    pub fn receipts(&self, phone: &str) -> Vec<ReceiptRecord> {
        self.shared.lock().phones.get(phone).map(|p| p.receipts.clone()).unwrap_or_default()
    }

    /// The phone sends a text to every linked device of `to`; returns the message id.
    pub async fn send_text(&self, from: &str, to: &str, text: &str) -> Result<String, SendError> {
        routing::phone_send(&self.shared, from, to, Outgoing::Text(text.to_owned())).await
    }

    /// The phone sends a document to every linked device of `to`.
    pub async fn send_document(
        &self,
        from: &str,
        to: &str,
        file_name: &str,
        mimetype: &str,
        bytes: Vec<u8>,
        caption: Option<String>,
    ) -> Result<String, SendError> {
        let doc = Outgoing::Document { file_name: file_name.to_owned(), mimetype: mimetype.to_owned(), bytes, caption };
        routing::phone_send(&self.shared, from, to, doc).await
    }

    /// The phone sends an image (any bytes; `mimetype` e.g. `image/jpeg`) to every linked device
    /// of `to`, encrypted and uploaded to the media server as a phone does.
    pub async fn send_image(
        &self,
        from: &str,
        to: &str,
        mimetype: &str,
        bytes: Vec<u8>,
        caption: Option<String>,
    ) -> Result<String, SendError> {
        let image = Outgoing::Image { mimetype: mimetype.to_owned(), bytes, caption };
        routing::phone_send(&self.shared, from, to, image).await
    }

    /// The phone shares a location with every linked device of `to`.
    pub async fn send_location(
        &self,
        from: &str,
        to: &str,
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
    ) -> Result<String, SendError> {
        let location = Outgoing::Location { latitude, longitude, name, address };
        routing::phone_send(&self.shared, from, to, location).await
    }

    /// The phone reacts with `emoji` (empty: takes the reaction back) to the message
    /// `message_id` of its chat with `to`.
    pub async fn send_reaction(
        &self,
        from: &str,
        to: &str,
        message_id: &str,
        emoji: &str,
    ) -> Result<String, SendError> {
        let reaction = Outgoing::Reaction { message_id: message_id.to_owned(), emoji: emoji.to_owned() };
        routing::phone_send(&self.shared, from, to, reaction).await
    }

    /// The LID (`LID@lid`) of a number on WhatsApp; `None` if it is not on WhatsApp.
    pub fn lid(&self, phone: &str) -> Option<String> {
        if !pairing::valid_phone(phone) || !self.shared.lock().is_registered(phone) {
            return None;
        }
        self.shared.ensure_phone(phone);
        self.shared.lock().lid_user(phone).map(|lid| Jid::lid(lid.to_owned()).to_string())
    }

    /// The phone marks a message it received as read: a read receipt goes to its sender.
    pub fn mark_read(&self, phone: &str, message_id: &str) -> Result<(), DeviceOpError> {
        let mut reg = self.shared.lock();
        let sender = reg
            .phones
            .get(phone)
            .and_then(|p| p.messages.iter().find(|m| m.id == message_id))
            .and_then(|m| m.from.parse::<Jid>().ok())
            .ok_or(DeviceOpError::UnknownMessage)?;
        let receipt = NodeBuilder::new("receipt")
            .attr("from", Jid::pn(phone))
            .attr("id", message_id.to_owned())
            .attr("type", "read")
            .attr("t", unix_secs().to_string())
            .build();
        reg.deliver(&DeviceKey::from_jid(&sender), receipt);
        Ok(())
    }

    /// Whether a number is on WhatsApp (every number is, unless set otherwise).
    pub fn set_registered(&self, phone: &str, registered: bool) {
        let mut reg = self.shared.lock();
        if registered {
            reg.unregistered.remove(phone);
        } else {
            reg.unregistered.insert(phone.to_owned());
        }
    }

    /// How many logins replaced a live connection of the same device (each sent the older one
    /// `conflict type="replaced"`): two clients running one number.
    pub fn replaced_conflicts(&self) -> u64 {
        self.shared.replaced()
    }

    /// Every linked device, removed ones included, sorted by JID.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        let reg = self.shared.lock();
        let mut out: Vec<DeviceInfo> = reg
            .devices
            .values()
            .map(|d| DeviceInfo {
                jid: d.key.jid().to_string(),
                lid: d.lid.to_string(),
                phone: d.key.phone.clone(),
                connected: d.conn.is_some(),
                removed: d.removed,
            })
            .collect();
        out.sort_by(|a, b| a.jid.cmp(&b.jid));
        out
    }

    /// The phone removes the device: it is told at once if connected (`LoggedOut` on the
    /// client), and every later login gets `failure 401`.
    pub fn logout(&self, jid: &str) -> Result<(), DeviceOpError> {
        let mut reg = self.shared.lock();
        let key = device_key(&reg, jid)?;
        let device = reg.devices.get_mut(&key).ok_or(DeviceOpError::Unknown)?;
        device.removed = true;
        device.offline.clear();
        device.acks.clear();
        if let Some(conn) = device.conn {
            reg.send_to_conn(conn, Outbound::NodeThenClose(stanza::stream_error_conflict("device_removed")));
        }
        tracing::info!(device = jid, "device logged out by its phone");
        Ok(())
    }

    /// Drops the device's TCP connection as a network failure would.
    pub fn drop_connection(&self, jid: &str) -> Result<(), DeviceOpError> {
        let reg = self.shared.lock();
        let key = device_key(&reg, jid)?;
        let device = reg.devices.get(&key).ok_or(DeviceOpError::Unknown)?;
        let conn = device.conn.ok_or(DeviceOpError::NotConnected)?;
        reg.send_to_conn(conn, Outbound::Drop);
        Ok(())
    }

    /// Refuses new WebSocket connections for a while (503 on the upgrade).
    pub fn refuse_for(&self, duration: Duration) {
        self.shared.lock().refuse_until = Some(Instant::now() + duration);
    }
}

/// The device a phone-number or LID device JID names.
fn device_key(reg: &Registry, jid: &str) -> Result<DeviceKey, DeviceOpError> {
    let jid: Jid = jid.parse().map_err(|_| DeviceOpError::BadJid)?;
    if jid.is_pn() {
        return Ok(DeviceKey::from_jid(&jid));
    }
    if jid.is_lid() {
        return reg.device_key_of(&jid).ok_or(DeviceOpError::Unknown);
    }
    Err(DeviceOpError::BadJid)
}

pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

#[derive(Deserialize)]
struct ScanBody {
    qr: String,
    phone: String,
}

#[derive(Deserialize)]
struct QrBody {
    qr: String,
}

#[derive(Deserialize)]
struct PairCodeBody {
    phone: String,
    code: String,
}

#[derive(Deserialize)]
struct SendBody {
    to: String,
    text: Option<String>,
    document: Option<DocumentBody>,
    image: Option<ImageBody>,
    location: Option<LocationBody>,
    reaction: Option<ReactionBody>,
}

#[derive(Deserialize)]
struct ImageBody {
    #[serde(default = "default_image_mimetype")]
    mimetype: String,
    /// The image, base64 (standard alphabet).
    base64: String,
    caption: Option<String>,
}

fn default_image_mimetype() -> String {
    "image/jpeg".into()
}

#[derive(Deserialize)]
struct LocationBody {
    latitude: f64,
    longitude: f64,
    name: Option<String>,
    address: Option<String>,
}

#[derive(Deserialize)]
struct ReactionBody {
    message_id: String,
    /// Empty takes the reaction back.
    emoji: String,
}

#[derive(Deserialize)]
struct DocumentBody {
    file_name: String,
    #[serde(default = "default_mimetype")]
    mimetype: String,
    /// The file, base64 (standard alphabet).
    base64: String,
    caption: Option<String>,
}

fn default_mimetype() -> String {
    "application/pdf".into()
}

#[derive(Deserialize)]
struct RedeliverBody {
    id: String,
}

#[derive(Deserialize)]
struct RefuseBody {
    seconds: u64,
}

#[derive(Deserialize)]
struct RegisteredBody {
    registered: bool,
}

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Response<Full<Bytes>>> {
    let body = Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|_| error(StatusCode::PAYLOAD_TOO_LARGE, "body unreadable or too large"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| error(StatusCode::BAD_REQUEST, &format!("malformed JSON: {e}")))
}

fn scan_status(e: &ScanError) -> StatusCode {
    match e {
        ScanError::Malformed(_) | ScanError::BadPhone | ScanError::KeyMismatch => StatusCode::BAD_REQUEST,
        ScanError::UnknownRef => StatusCode::NOT_FOUND,
        ScanError::Expired => StatusCode::GONE,
        ScanError::NoConfirmation => StatusCode::GATEWAY_TIMEOUT,
    }
}

fn pair_code_status(e: &PairCodeError) -> StatusCode {
    match e {
        PairCodeError::BadPhone | PairCodeError::BadCode => StatusCode::BAD_REQUEST,
        PairCodeError::NoRequest | PairCodeError::UnknownCode => StatusCode::NOT_FOUND,
        PairCodeError::Busy => StatusCode::CONFLICT,
        PairCodeError::Gone => StatusCode::GONE,
        PairCodeError::BadBundle(_) => StatusCode::BAD_GATEWAY,
        PairCodeError::NoFinish | PairCodeError::NoConfirmation => StatusCode::GATEWAY_TIMEOUT,
    }
}

fn device_status(e: &DeviceOpError) -> StatusCode {
    match e {
        DeviceOpError::BadJid => StatusCode::BAD_REQUEST,
        DeviceOpError::Unknown | DeviceOpError::UnknownMessage => StatusCode::NOT_FOUND,
        DeviceOpError::NotConnected => StatusCode::CONFLICT,
    }
}

fn done(result: Result<(), DeviceOpError>) -> Response<Full<Bytes>> {
    match result {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({"ok": true})),
        Err(e) => error(device_status(&e), &e.to_string()),
    }
}

/// Routes `/admin/...` requests.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let admin = Admin::new(shared);
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').skip(2).collect();
    match (&method, segments.as_slice()) {
        (&Method::POST, ["scan"]) => {
            let body: ScanBody = match read_json(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            match admin.scan(&body.qr, &body.phone).await {
                Ok(linked) => json(StatusCode::OK, &linked),
                Err(e) => error(scan_status(&e), &e.to_string()),
            }
        }
        (&Method::POST, ["passkey-request"]) => {
            let body: QrBody = match read_json(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            match admin.passkey_request(&body.qr) {
                Ok(()) => json(StatusCode::OK, &serde_json::json!({"ok": true})),
                Err(e) => error(scan_status(&e), &e.to_string()),
            }
        }
        (&Method::POST, ["pair-code"]) => {
            let body: PairCodeBody = match read_json(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            match admin.pair_code(&body.phone, &body.code).await {
                Ok(linked) => json(StatusCode::OK, &linked),
                Err(e) => error(pair_code_status(&e), &e.to_string()),
            }
        }
        (&Method::GET, ["devices"]) => json(StatusCode::OK, &admin.devices()),
        (&Method::POST, ["refuse"]) => match read_json::<RefuseBody>(req).await {
            Ok(b) => {
                admin.refuse_for(Duration::from_secs(b.seconds));
                json(StatusCode::OK, &serde_json::json!({"ok": true}))
            }
            Err(resp) => resp,
        },
        (&Method::POST, ["devices", jid, "logout"]) => done(admin.logout(jid)),
        (&Method::POST, ["devices", jid, "drop"]) => done(admin.drop_connection(jid)),
        (&Method::GET, ["phones", phone, "messages"]) => json(StatusCode::OK, &admin.messages(phone)),
        (&Method::GET, ["phones", phone, "duplicates"]) => {
            json(StatusCode::OK, &serde_json::json!({ "duplicates": admin.duplicates(phone) }))
        }
        (&Method::GET, ["phones", phone, "lid"]) => match admin.lid(phone) {
            Some(lid) => json(StatusCode::OK, &serde_json::json!({ "phone": phone, "lid": lid })),
            None => error(StatusCode::NOT_FOUND, "not a phone number on WhatsApp"),
        },
        (&Method::GET, ["phones", phone, "receipts"]) => json(StatusCode::OK, &admin.receipts(phone)),
        (&Method::POST, ["phones", phone, "messages", id, "read"]) => done(admin.mark_read(phone, id)),
        (&Method::POST, ["phones", phone, "registered"]) => {
            let phone = (*phone).to_owned();
            match read_json::<RegisteredBody>(req).await {
                Ok(b) => {
                    admin.set_registered(&phone, b.registered);
                    json(StatusCode::OK, &serde_json::json!({"ok": true}))
                }
                Err(resp) => resp,
            }
        }
        (&Method::POST, ["phones", phone, "redeliver"]) => {
            let phone = (*phone).to_owned();
            let body: RedeliverBody = match read_json(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            match admin.redeliver(&phone, &body.id).await {
                Ok(devices) => json(StatusCode::OK, &serde_json::json!({ "devices": devices })),
                Err(e @ (SendError::NoDevices(_) | SendError::UnknownMessage(_))) => {
                    error(StatusCode::NOT_FOUND, &e.to_string())
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (&Method::POST, ["phones", phone, "send"]) => {
            let phone = (*phone).to_owned();
            let body: SendBody = match read_json(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            send(&admin, &phone, body).await
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// `POST /admin/phones/{phone}/send`: exactly one kind of content per request.
async fn send(admin: &Admin, phone: &str, body: SendBody) -> Response<Full<Bytes>> {
    let SendBody { to, text, document, image, location, reaction } = body;
    let given = [text.is_some(), document.is_some(), image.is_some(), location.is_some(), reaction.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return error(
            StatusCode::BAD_REQUEST,
            "give exactly one of \"text\", \"document\", \"image\", \"location\" or \"reaction\"",
        );
    }
    let decode = |b64: &str| base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()).ok();
    let result = if let Some(text) = text {
        admin.send_text(phone, &to, &text).await
    } else if let Some(doc) = document {
        let Some(bytes) = decode(&doc.base64) else {
            return error(StatusCode::BAD_REQUEST, "document.base64 is not valid base64");
        };
        admin.send_document(phone, &to, &doc.file_name, &doc.mimetype, bytes, doc.caption).await
    } else if let Some(image) = image {
        let Some(bytes) = decode(&image.base64) else {
            return error(StatusCode::BAD_REQUEST, "image.base64 is not valid base64");
        };
        admin.send_image(phone, &to, &image.mimetype, bytes, image.caption).await
    } else if let Some(l) = location {
        if !(-90.0..=90.0).contains(&l.latitude) || !(-180.0..=180.0).contains(&l.longitude) {
            return error(StatusCode::BAD_REQUEST, "latitude must be within ±90 and longitude within ±180");
        }
        admin.send_location(phone, &to, l.latitude, l.longitude, l.name, l.address).await
    } else if let Some(r) = reaction {
        admin.send_reaction(phone, &to, &r.message_id, &r.emoji).await
    } else {
        return error(StatusCode::BAD_REQUEST, "nothing to send");
    };
    match result {
        Ok(id) => json(StatusCode::OK, &serde_json::json!({ "id": id })),
        Err(e @ SendError::NoDevices(_)) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
