//! The only module of the session layer that talks to whatsapp-rust: building a client for a
//! session on the store its [`CredentialStore`] hands out, turning its events into ours, and
//! the operations a [`SessionClient`](super::client::SessionClient) offers (sending, checking
//! numbers, read receipts, downloads). (The stores themselves are whatsapp-rust's storage traits, implemented in
//! `storage/`.)

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::download::MediaType;
use whatsapp_rust::http::UreqHttpClient;
use whatsapp_rust::media::{
    AudioOptions, DocumentOptions, ImageOptions, VideoOptions, audio_message, document_message, image_message,
    video_message,
};
use whatsapp_rust::send::SendOptions;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::upload::UploadOptions;
use whatsapp_rust::wacore::runtime::{AbortHandle, Runtime};
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, Jid};

use crate::config::Config;
use crate::domain::{
    IncomingContact, IncomingKind, IncomingLocation, IncomingMedia, IncomingMessage, IncomingReaction, MessageId,
    OutgoingContent, PhoneNumber, SessionId,
};
use crate::session::{DeliveryEvent, SessionOps};
use crate::storage::CredentialStore;
use crate::storage::credentials::WriteFence;

/// What the session supervisor needs to know from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UpstreamEvent {
    /// A QR code to show, and how long it stays valid before the next one rotates in.
    Qr {
        code: String,
        valid_for: std::time::Duration,
    },
    QrExhausted,
    /// A pairing code to type on the phone.
    PairingCode(String),
    PairSuccess,
    /// WhatsApp gates this link behind a passkey on the phone.
    PasskeyRequest,
    /// The passkey link reached verification: confirm this code on the phone.
    PasskeyConfirmation(String),
    /// The passkey link failed.
    PasskeyError(String),
    Connected,
    Disconnected,
    LoggedOut,
    /// Another client took over these credentials, or the number is banned: do not retry.
    Terminal(String),
}

fn translate(event: &Event) -> Option<UpstreamEvent> {
    Some(match event {
        Event::PairingQrCode(qr) => UpstreamEvent::Qr { code: qr.code.clone(), valid_for: qr.timeout },
        Event::PairingQrCodesExhausted(_) => UpstreamEvent::QrExhausted,
        Event::PairingCode(code) => UpstreamEvent::PairingCode(code.code.clone()),
        Event::PairSuccess(_) => UpstreamEvent::PairSuccess,
        Event::PairPasskeyRequest(_) => UpstreamEvent::PasskeyRequest,
        Event::PairPasskeyConfirmation(c) => UpstreamEvent::PasskeyConfirmation(c.code.clone()),
        Event::PairPasskeyError(e) => UpstreamEvent::PasskeyError(e.error.clone()),
        Event::Connected(_) => UpstreamEvent::Connected,
        Event::Disconnected(_) => UpstreamEvent::Disconnected,
        Event::LoggedOut(_) => UpstreamEvent::LoggedOut,
        Event::StreamReplaced(_) => UpstreamEvent::Terminal(
            "replaced by another connection: these credentials are in use elsewhere; restart the session to take them back".into(),
        ),
        Event::TemporaryBan(ban) => UpstreamEvent::Terminal(format!(
            "temporarily banned by WhatsApp for {} min; restart the session after that",
            (ban.expire.num_seconds().max(0) as u64).div_ceil(60)
        )),
        Event::ClientOutdated(_) => UpstreamEvent::Terminal(
            "WhatsApp refused this client version as outdated; set WHATSAPP_VERSION or upgrade the gateway".into(),
        ),
        Event::ConnectFailure(f) => UpstreamEvent::Terminal(format!("WhatsApp refused the connection ({:?})", f.reason)),
        _ => return None,
    })
}

/// Runs inline on the client's dispatch path, so events arrive in order and before the run
/// loop returns (a spawned handler could deliver `LoggedOut` after the client has stopped).
struct Forward {
    id: SessionId,
    session: mpsc::Sender<UpstreamEvent>,
    delivery: mpsc::Sender<DeliveryEvent>,
    inbound: mpsc::Sender<Inbound>,
}

impl whatsapp_rust::types::events::EventHandler for Forward {
    fn handle_event(&self, event: Arc<Event>) {
        if let Event::Messages(batch) = &*event {
            // Handed over by [`Keep`] before their acks already.
            if batch.hook_committed {
                return;
            }
            // What the hook does not see (acked on their own path by the client): at most once.
            for item in batch.messages.iter() {
                let Some(inbound) = inbound_message(&self.id, item) else { continue };
                // Bounded: a burst beyond it waits for nobody; the message is counted lost
                // here rather than stalling the client's dispatch.
                if self.inbound.try_send(inbound).is_err() {
                    metrics::counter!(crate::metrics::INBOUND_DROPPED).increment(1);
                    tracing::warn!(session = %self.id, "inbound channel full; a received message was not stored");
                }
            }
            return;
        }
        if let Some(delivery) = delivery_event(&event) {
            if self.delivery.try_send(delivery).is_err() {
                tracing::warn!("delivery event channel full; an ack or receipt was dropped");
            }
            return;
        }
        if let Some(ours) = translate(&event)
            && self.session.try_send(ours).is_err()
        {
            tracing::warn!("session event channel full; status will be polled");
        }
    }
}

/// The client's inbound durability hook: a received message is acknowledged to WhatsApp only
/// once the inbox has stored it and the webhook outbox has its `message.received` event. Until
/// then WhatsApp keeps it and delivers it again on the next login (after a crash, a failover,
/// a store that could not be written), and the client replays it from its buffered copy; the
/// inbox stores it once and the outbox keeps one delivery of its event (same id).
struct Keep {
    id: SessionId,
    inbound: mpsc::Sender<Inbound>,
}

#[async_trait::async_trait]
impl whatsapp_rust::types::durability_hook::InboundDurabilityHook for Keep {
    async fn on_messages(
        &self,
        _client: Arc<Client>,
        batch: &[whatsapp_rust::types::events::InboundMessage],
    ) -> anyhow::Result<()> {
        let mut kept = Vec::with_capacity(batch.len());
        for item in batch {
            let Some(mut inbound) = inbound_message(&self.id, item) else { continue };
            let (stored, answer) = oneshot::channel();
            inbound.stored = Some(stored);
            // Waits for room: a burst slows the client down instead of being dropped.
            self.inbound.send(inbound).await.map_err(|_| anyhow::anyhow!("the inbox has stopped"))?;
            kept.push(answer);
        }
        for answer in kept {
            if answer.await != Ok(true) {
                anyhow::bail!("a received message was not kept; WhatsApp delivers it again on the next login");
            }
        }
        Ok(())
    }
}

/// A received message, and what is needed to fetch its file later.
pub(crate) struct Inbound {
    pub(crate) session: SessionId,
    pub(crate) message: IncomingMessage,
    pub(crate) media: Option<MediaRef>,
    /// Told whether the message is kept (stored, its event in the webhook outbox) when the
    /// client waits to acknowledge it; dropped unanswered means not kept.
    pub(crate) stored: Option<oneshot::Sender<bool>>,
}

/// The message a file can be downloaded from (with [`SessionClient::download`](super::client::SessionClient::download)).
pub(crate) struct MediaRef(Arc<wa::Message>);

/// Downloads and decrypts the file of a received media message.
async fn download(client: &Client, media: &MediaRef) -> Result<Vec<u8>, UpstreamError> {
    use whatsapp_rust::wacore::proto_helpers::MessageExt as _;
    let message = media.0.get_base_message();
    let message = message
        .document_with_caption_message
        .as_option()
        .and_then(|wrapper| wrapper.message.as_option())
        .unwrap_or(message);
    let result = if let Some(m) = message.image_message.as_option() {
        client.download(m).await
    } else if let Some(m) = message.video_message.as_option() {
        client.download(m).await
    } else if let Some(m) = message.audio_message.as_option() {
        client.download(m).await
    } else if let Some(m) = message.document_message.as_option() {
        client.download(m).await
    } else if let Some(m) = message.sticker_message.as_option() {
        client.download(m).await
    } else {
        return Err(UpstreamError::Send("the message has no file".into()));
    };
    result.map_err(|e| UpstreamError::Send(e.to_string()))
}

/// What we keep of a received message; `None` for what is not a received message (our own
/// messages echoed from the phone, status broadcasts, protocol messages).
fn inbound_message(session: &SessionId, item: &whatsapp_rust::types::events::InboundMessage) -> Option<Inbound> {
    use whatsapp_rust::wacore::proto_helpers::MessageExt as _;
    let info = &item.info;
    let source = &info.source;
    if source.is_from_me || source.chat.user == "status" {
        return None;
    }
    let base = item.message.get_base_message();
    // Revocations, key shares and the like are not messages anyone sent.
    if base.protocol_message.as_option().is_some() {
        return None;
    }
    let message =
        base.document_with_caption_message.as_option().and_then(|wrapper| wrapper.message.as_option()).unwrap_or(base);
    // The phone number: the sender's own when it is one, else its alternate address (a LID
    // sender carries its number there); the LID likewise.
    let alt = source.sender_alt.as_ref();
    let from = if source.sender.is_pn() { Some(&source.sender) } else { alt.filter(|j| j.is_pn()) };
    let from_lid = if source.sender.is_lid() { Some(&source.sender) } else { alt.filter(|j| j.is_lid()) };
    let mut record = IncomingMessage {
        message_id: info.id.to_string(),
        session_id: session.as_str().to_owned(),
        direction: "in".to_owned(),
        chat: source.chat.to_non_ad().to_string(),
        from: from.map(|j| j.user.to_string()),
        from_lid: from_lid.map(|j| j.user.to_string()),
        push_name: Some(info.push_name.clone()).filter(|n| !n.is_empty()),
        timestamp: u64::try_from(info.timestamp.timestamp_millis()).unwrap_or(0),
        kind: IncomingKind::Other,
        text: None,
        caption: None,
        media: None,
        quoted_id: None,
        location: None,
        reaction: None,
        contact: None,
        summary: None,
    };
    let media = |mimetype: &Option<String>, file_name: Option<&String>, size: Option<u64>| IncomingMedia {
        mimetype: mimetype.clone(),
        file_name: file_name.cloned(),
        size,
        ..IncomingMedia::default()
    };
    let mut quoted = None;
    if let Some(text) = &message.conversation {
        record.kind = IncomingKind::Text;
        record.text = Some(text.clone());
    } else if let Some(m) = message.extended_text_message.as_option() {
        record.kind = IncomingKind::Text;
        record.text = m.text.clone();
        quoted = m.context_info.as_option();
    } else if let Some(m) = message.image_message.as_option() {
        record.kind = IncomingKind::Image;
        record.caption = m.caption.clone();
        record.media = Some(media(&m.mimetype, None, m.file_length));
        quoted = m.context_info.as_option();
    } else if let Some(m) = message.video_message.as_option() {
        record.kind = IncomingKind::Video;
        record.caption = m.caption.clone();
        record.media = Some(media(&m.mimetype, None, m.file_length));
        quoted = m.context_info.as_option();
    } else if let Some(m) = message.audio_message.as_option() {
        record.kind = IncomingKind::Audio;
        record.media = Some(media(&m.mimetype, None, m.file_length));
        quoted = m.context_info.as_option();
    } else if let Some(m) = message.document_message.as_option() {
        record.kind = IncomingKind::Document;
        record.caption = m.caption.clone();
        record.media = Some(media(&m.mimetype, m.file_name.as_ref(), m.file_length));
        quoted = m.context_info.as_option();
    } else if let Some(m) = message.sticker_message.as_option() {
        record.kind = IncomingKind::Sticker;
        record.media = Some(media(&m.mimetype, None, m.file_length));
    } else if let Some(m) = message.location_message.as_option() {
        record.kind = IncomingKind::Location;
        record.location = Some(IncomingLocation {
            latitude: m.degrees_latitude.unwrap_or_default(),
            longitude: m.degrees_longitude.unwrap_or_default(),
            name: m.name.clone(),
            address: m.address.clone(),
        });
    } else if let Some(m) = message.contact_message.as_option() {
        record.kind = IncomingKind::Contact;
        record.contact = Some(IncomingContact { display_name: m.display_name.clone(), vcard: m.vcard.clone() });
    } else if let Some(m) = message.reaction_message.as_option() {
        record.kind = IncomingKind::Reaction;
        record.reaction = Some(IncomingReaction {
            message_id: m.key.as_option().and_then(|k| k.id.clone()),
            emoji: m.text.clone().unwrap_or_default(),
        });
    } else {
        let summary = summarize(message);
        // A group's sender key alone, ahead of its first message, is not a message.
        if summary == "sender_key_distribution_message" {
            return None;
        }
        // Not modelled: kept with a summary of what it was, never dropped.
        record.summary = Some(summary);
    }
    record.quoted_id = quoted.and_then(|c| c.stanza_id.clone());
    let media = record.kind.has_media().then(|| MediaRef(Arc::clone(&item.message)));
    Some(Inbound { session: session.clone(), message: record, media, stored: None })
}

/// The name of the first field a message carries (`pollCreationMessage`), for kinds we do not
/// model.
fn summarize(message: &wa::Message) -> String {
    let debug = format!("{message:?}");
    debug
        .split([' ', ','])
        .find_map(|part| part.strip_suffix(':').filter(|name| name.ends_with("_message")))
        .map_or_else(|| "unknown message".to_owned(), str::to_owned)
}

fn delivery_event(event: &Event) -> Option<DeliveryEvent> {
    use whatsapp_rust::types::presence::ReceiptType;
    match event {
        Event::ServerAck(ack) if ack.class.as_deref() == Some("message") => {
            Some(DeliveryEvent::Ack { message_id: ack.id.clone(), error: ack.error.clone() })
        }
        Event::Receipt(receipt) => {
            let read = match receipt.r#type {
                ReceiptType::Delivered => false,
                ReceiptType::Read | ReceiptType::ReadSelf => true,
                _ => return None,
            };
            Some(DeliveryEvent::Receipt {
                message_ids: receipt.message_ids.iter().map(|id| id.to_string()).collect(),
                read,
            })
        }
        _ => None,
    }
}

/// The real WhatsApp Web endpoint, for reachability checks when `WHATSAPP_URL` is unset.
const DEFAULT_ENDPOINT: (&str, u16) = ("web.whatsapp.com", 443);

/// Settings shared by every session's client.
#[derive(Clone)]
pub(crate) struct Upstream {
    url: Option<String>,
    version: Option<(u32, u32, u32)>,
    http: UreqHttpClient,
    qr_terminal: bool,
    delivery: mpsc::Sender<DeliveryEvent>,
    inbound: mpsc::Sender<Inbound>,
    /// Where each number's credentials live: the stores the clients are built on.
    credentials: Arc<dyn CredentialStore>,
}

/// Why a client could not be built or a send failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("session store: {0}")]
    Store(String),
    #[error("CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error(
        "this binary was built with the `fake-whatsapp` feature and refuses WhatsApp's real endpoint; set WHATSAPP_URL to the fake server"
    )]
    FakeBuildOnRealEndpoint,
    #[error("not connected")]
    NotConnected,
    #[error("number is not on WhatsApp")]
    NotOnWhatsApp,
    #[error("{0}")]
    Send(String),
}

impl UpstreamError {
    /// A failure that retrying will not fix.
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(self, UpstreamError::NotOnWhatsApp)
    }
}

impl Upstream {
    pub(crate) fn from_config(
        config: &Config,
        delivery: mpsc::Sender<DeliveryEvent>,
        inbound: mpsc::Sender<Inbound>,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<Self, UpstreamError> {
        let http = match &config.whatsapp_ca_file {
            None => UreqHttpClient::new(),
            Some(path) => UreqHttpClient::with_agent(agent_trusting(path)?),
        };
        if cfg!(feature = "fake-whatsapp") {
            // This build cannot verify WhatsApp's certificate chain: never let it near the real
            // service.
            let url = config.whatsapp_url.as_deref().unwrap_or("");
            if url.is_empty() || url.contains("whatsapp.com") || url.contains("whatsapp.net") {
                return Err(UpstreamError::FakeBuildOnRealEndpoint);
            }
            tracing::warn!(url, "FAKE-WHATSAPP BUILD: the Noise certificate chain is NOT verified; test use only");
        }
        Ok(Self {
            url: config.whatsapp_url.clone(),
            version: config.whatsapp_version,
            http,
            qr_terminal: config.qr_terminal,
            delivery,
            inbound,
            credentials,
        })
    }

    /// Where the numbers' credentials live.
    pub(crate) fn credentials(&self) -> &dyn CredentialStore {
        &*self.credentials
    }

    /// With `QR_TERMINAL=true`, draws a QR code on stderr (debugging only; never logged).
    pub(crate) fn show_qr(&self, session: &crate::domain::SessionId, code: &str) {
        if !self.qr_terminal {
            return;
        }
        match qrcode::QrCode::new(code.as_bytes()) {
            Ok(qr) => {
                let art = qr.render::<qrcode::render::unicode::Dense1x2>().quiet_zone(true).build();
                eprintln!("QR for session {session}:\n{art}");
            }
            Err(e) => tracing::warn!(session = %session, error = %e, "cannot render the QR code"),
        }
    }

    /// Builds and starts a client on the session's credentials; its events arrive on the
    /// returned channel (bounded: if the supervisor lags, events are dropped and polling corrects
    /// the status).
    pub(crate) async fn start(
        &self,
        session: &SessionId,
        fence: Option<WriteFence>,
    ) -> Result<(BotHandle, Arc<Client>, mpsc::Receiver<UpstreamEvent>, ClientTasks), UpstreamError> {
        let store = match fence {
            Some(fence) => self.credentials.fenced_backend(session, fence).await,
            None => self.credentials.backend(session).await,
        }
        .map_err(|e| UpstreamError::Store(e.to_string()))?;
        let (tx, rx) = mpsc::channel(256);
        let mut transport = TokioWebSocketTransportFactory::new();
        if let Some(url) = &self.url {
            transport = transport.with_url(url.clone());
        }
        let tasks = ClientTasks(CancellationToken::new());
        let mut builder = Bot::builder()
            .with_runtime(GenerationRuntime { cancel: tasks.0.clone() })
            .with_backend_arc(store)
            .with_transport_factory(transport)
            .with_http_client(self.http.clone())
            .with_device_props(
                whatsapp_rust::wacore::store::DevicePropsOverride::new()
                    .with_os("whatsapp-gateway")
                    .with_platform_type(whatsapp_rust::waproto::whatsapp::device_props::PlatformType::DESKTOP),
            )
            .skip_history_sync()
            .with_inbound_durability_hook(Keep { id: session.clone(), inbound: self.inbound.clone() })
            .with_event_handler(Forward {
                id: session.clone(),
                session: tx,
                delivery: self.delivery.clone(),
                inbound: self.inbound.clone(),
            });
        if let Some(version) = self.version {
            builder = builder.with_version(version);
        }
        let bot = builder.build().await.map_err(|e| UpstreamError::Store(e.to_string()))?;
        let handle = bot.spawn();
        let client = handle.client();
        Ok((handle, client, rx, tasks))
    }
}

/// The tasks one client generation spawned. whatsapp-rust detaches some of them, and each
/// holds the client: an unlinked client's QR rotation, for one, sleeps out every ref (up to
/// 160 s) after the client is disconnected, keeping its store open (2 descriptors and ~200 KiB
/// per abandoned linking). [`ClientTasks::retire`] ends whatever is left.
pub(crate) struct ClientTasks(CancellationToken);

impl ClientTasks {
    /// Ends every task this generation left running. Only for a generation that is over.
    pub(crate) fn retire(self) {
        self.0.cancel();
    }
}

/// whatsapp-rust's runtime on tokio, but with every task of one generation cancellable.
struct GenerationRuntime {
    cancel: CancellationToken,
}

impl GenerationRuntime {
    fn guarded(&self, future: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) -> impl Future<Output = ()> + use<> {
        let cancel = self.cancel.clone();
        async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = future => {}
            }
        }
    }
}

impl Runtime for GenerationRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) -> AbortHandle {
        let task = tokio::spawn(self.guarded(future));
        AbortHandle::new(move || task.abort())
    }

    fn spawn_detached(&self, future: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        tokio::spawn(self.guarded(future));
    }

    fn sleep(&self, duration: std::time::Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn spawn_blocking(&self, f: Box<dyn FnOnce() + Send + 'static>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async {
            let _ = tokio::task::spawn_blocking(f).await;
        })
    }

    fn yield_now(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        // Multi-threaded runtime: other tasks run on other threads.
        None
    }
}

fn agent_trusting(path: &Path) -> Result<ureq::Agent, UpstreamError> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let err = |reason: String| UpstreamError::CaFile { path: path.to_path_buf(), reason };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let ca = Certificate::from_pem(&pem).map_err(|e| err(e.to_string()))?.to_owned();
    // This CA replaces the public roots: it is meant for a private WhatsApp-compatible endpoint.
    let tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![ca]))).build();
    let config = ureq::config::Config::builder().tls_config(tls).http_status_as_error(false).build();
    Ok(ureq::Agent::new_with_config(config))
}

/// The account a linked client belongs to.
pub(crate) fn account(client: &Client) -> Option<super::Account> {
    let pn = client.pn()?;
    let push_name = client.push_name();
    Some(super::Account::new(
        pn.user.to_string(),
        pn.to_string(),
        client.lid().map(|lid| lid.to_string()),
        (!push_name.is_empty()).then_some(push_name),
    ))
}

impl Upstream {
    /// Whether WhatsApp's endpoint answers a TCP connect: the library says nothing when it
    /// cannot connect, so the supervisor asks this to tell a person why a session hangs.
    pub(crate) async fn probe(&self) -> Result<(), String> {
        let (host, port) = match &self.url {
            Some(url) => host_port(url).ok_or_else(|| "WHATSAPP_URL has no host".to_owned())?,
            None => (DEFAULT_ENDPOINT.0.to_owned(), DEFAULT_ENDPOINT.1),
        };
        let timeout = std::time::Duration::from_secs(3);
        let addrs = match tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port))).await {
            Err(_) => return Err(format!("DNS lookup of {host} timed out")),
            Ok(Err(_)) => return Err(format!("DNS lookup of {host} failed")),
            Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
        };
        let Some(addr) = addrs.first() else { return Err(format!("{host} has no address")) };
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Err(_) => Err(format!("{host}:{port} did not answer")),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(format!("{host}:{port} refused the connection"))
            }
            Ok(Err(e)) => Err(format!("{host}:{port}: {e}")),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

/// `(host, port)` of a `ws://` or `wss://` URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let (default_port, rest) =
        if let Some(rest) = url.strip_prefix("wss://") { (443, rest) } else { (80, url.strip_prefix("ws://")?) };
    let authority = rest.split(['/', '?', '#']).next()?;
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, tail) = bracketed.split_once(']')?;
        let port = tail.strip_prefix(':').map_or(Some(default_port), |p| p.parse().ok())?;
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host.to_owned(), port.parse().ok()?)),
        Some(_) => None,
        None if !authority.is_empty() => Some((authority.to_owned(), default_port)),
        None => None,
    }
}

/// Asks WhatsApp for a pairing code for `phone` (whatsapp-rust's `pair_with_code`), once the
/// client's socket is up.
pub(crate) async fn request_pair_code(
    client: &Arc<Client>,
    phone: &PhoneNumber,
) -> Result<String, super::PairingError> {
    use super::PairingError;
    use whatsapp_rust::pair_code::{PairCodeOptions, PairError};
    use whatsapp_rust::wacore::pair_code::{PairCodeError, PairCodeRejection};
    if is_linked(client) {
        return Err(PairingError::AlreadyLinked);
    }
    client
        .wait_for_socket(std::time::Duration::from_secs(20))
        .await
        .map_err(|e| PairingError::Unavailable(format!("not connected to WhatsApp ({e})")))?;
    let options = PairCodeOptions { phone_number: phone.digits().to_owned(), ..Default::default() };
    client.pair_with_code(options).await.map_err(|e| match &e {
        PairError::PairCode(
            PairCodeError::PhoneNumberRequired
            | PairCodeError::PhoneNumberTooShort
            | PairCodeError::PhoneNumberNotInternational,
        ) => PairingError::InvalidPhone(e.to_string()),
        PairError::PairCode(PairCodeError::CodeAlreadyOutstanding { remaining }) => {
            PairingError::Outstanding { remaining_secs: remaining.as_secs() }
        }
        _ => match e.rejection() {
            Some(PairCodeRejection::RateOverlimit) => PairingError::RateLimited { retry_after: e.backoff() },
            Some(PairCodeRejection::BadRequest) if e.backoff().is_some() => {
                PairingError::RateLimited { retry_after: e.backoff() }
            }
            Some(_) => PairingError::Rejected(e.to_string()),
            None => PairingError::Unavailable(e.to_string()),
        },
    })
}

/// Whether the client holds credentials (it was linked and not logged out).
pub(crate) fn is_linked(client: &Client) -> bool {
    client.pn().is_some()
}

pub(crate) fn is_connected(client: &Client) -> bool {
    client.is_connected() && client.is_logged_in()
}

/// Asks WhatsApp whether the number has an account.
async fn is_on_whatsapp(client: &Client, to: &PhoneNumber) -> Result<bool, UpstreamError> {
    let jid = Jid::pn(to.digits());
    let results = client
        .contacts()
        .is_on_whatsapp(std::slice::from_ref(&jid))
        .await
        .map_err(|e| classify(&e.to_string(), client))?;
    Ok(results.iter().any(|r| r.is_registered && r.jid.user == jid.user))
}

/// The phone number the client's LID↔phone mapping knows for `lid` (the user part).
async fn phone_for_lid(client: &Client, lid: &str) -> Option<String> {
    match client.get_lid_pn_entry(&Jid::lid(lid)).await {
        Ok(entry) => entry.map(|e| e.phone_number.to_string()),
        Err(e) => {
            tracing::debug!(error = %e, "LID mapping lookup failed");
            None
        }
    }
}

/// Sends read receipts for `message_ids` of `chat` (a JID as the inbox stores it).
async fn mark_read(client: &Client, chat: &str, message_ids: &[&str]) -> Result<(), UpstreamError> {
    let chat: Jid = chat.parse().map_err(|_| UpstreamError::Send(format!("'{chat}' is not a JID")))?;
    client.mark_as_read(&chat, None, message_ids).await.map_err(|e| classify(&e.to_string(), client))
}

/// Asks WhatsApp which of `phones` have an account, with their JIDs and LIDs (one usync query).
async fn check_numbers(
    client: &Client,
    phones: &[PhoneNumber],
) -> Result<Vec<super::contacts::ContactCheck>, UpstreamError> {
    let jids: Vec<Jid> = phones.iter().map(|p| Jid::pn(p.digits())).collect();
    let results = client.contacts().is_on_whatsapp(&jids).await.map_err(|e| classify(&e.to_string(), client))?;
    Ok(phones
        .iter()
        .map(|phone| {
            let found = results.iter().find(|r| {
                r.jid.user == phone.digits() || r.pn_jid.as_ref().is_some_and(|pn| pn.user == phone.digits())
            });
            let registered = found.is_some_and(|r| r.is_registered);
            super::contacts::ContactCheck {
                phone: phone.digits().to_owned(),
                on_whatsapp: registered,
                jid: registered.then(|| Jid::pn(phone.digits()).to_string()),
                lid: found.filter(|_| registered).and_then(|r| {
                    r.lid.clone().or_else(|| r.jid.is_lid().then(|| r.jid.clone())).map(|l| l.to_non_ad().to_string())
                }),
            }
        })
        .collect())
}

/// Sends `content` to `to` under the given WhatsApp message id: a text as is, media uploaded
/// first (encrypted by the client, under its media type's keys) and sent as an image, a
/// document, an audio (a voice note when `ptt`) or a video message.
async fn send_content(
    client: &Client,
    to: &PhoneNumber,
    content: &OutgoingContent,
    message_id: &str,
) -> Result<(), UpstreamError> {
    let upload = |bytes: &bytes::Bytes, kind: MediaType| {
        let bytes = bytes.to_vec();
        async move {
            client.upload(bytes, kind, UploadOptions::default()).await.map_err(|e| classify(&e.to_string(), client))
        }
    };
    let message = match content {
        OutgoingContent::Text { body } => wa::Message { conversation: Some(body.clone()), ..Default::default() },
        OutgoingContent::Image { bytes, mimetype, caption } => image_message(
            upload(bytes, MediaType::Image).await?,
            ImageOptions { mimetype: Some(mimetype.to_string()), caption: caption.clone(), ..Default::default() },
        ),
        OutgoingContent::Document { bytes, mimetype, file_name, caption } => document_message(
            upload(bytes, MediaType::Document).await?,
            DocumentOptions {
                mimetype: Some(mimetype.to_string()),
                file_name: Some(file_name.as_str().to_owned()),
                title: Some(file_name.as_str().to_owned()),
                caption: caption.clone(),
                ..Default::default()
            },
        ),
        OutgoingContent::Audio { bytes, ptt, seconds, .. } => audio_message(
            upload(bytes, MediaType::Audio).await?,
            AudioOptions {
                // What WhatsApp's own clients record voice notes as.
                mimetype: Some("audio/ogg; codecs=opus".to_owned()),
                duration_seconds: *seconds,
                ptt: Some(*ptt),
                ..Default::default()
            },
        ),
        OutgoingContent::Video { bytes, mimetype, caption, seconds } => video_message(
            upload(bytes, MediaType::Video).await?,
            VideoOptions {
                mimetype: Some(mimetype.to_string()),
                caption: caption.clone(),
                duration_seconds: *seconds,
                ..Default::default()
            },
        ),
    };
    client
        .send_message_with_options(Jid::pn(to.digits()), message, SendOptions::default().with_message_id(message_id))
        .await
        .map_err(|e| classify(&e.to_string(), client))?;
    Ok(())
}

/// The real client behind a [`SessionClient`](super::client::SessionClient).
#[async_trait::async_trait]
impl SessionOps for Client {
    async fn is_on_whatsapp(&self, to: &PhoneNumber) -> Result<bool, UpstreamError> {
        is_on_whatsapp(self, to).await
    }

    async fn check_numbers(&self, phones: &[PhoneNumber]) -> Result<Vec<super::contacts::ContactCheck>, UpstreamError> {
        check_numbers(self, phones).await
    }

    async fn send_content(
        &self,
        to: &PhoneNumber,
        content: &OutgoingContent,
        message_id: &MessageId,
    ) -> Result<(), UpstreamError> {
        send_content(self, to, content, message_id.as_str()).await
    }

    async fn mark_read(&self, chat: &str, message_ids: &[&str]) -> Result<(), UpstreamError> {
        mark_read(self, chat, message_ids).await
    }

    async fn download(&self, media: &MediaRef) -> Result<Vec<u8>, UpstreamError> {
        download(self, media).await
    }

    async fn phone_for_lid(&self, lid: &str) -> Option<String> {
        phone_for_lid(self, lid).await
    }
}

fn classify(error: &str, client: &Client) -> UpstreamError {
    if !is_connected(client) { UpstreamError::NotConnected } else { UpstreamError::Send(error.to_owned()) }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_and_port_of_ws_urls() {
        assert_eq!(host_port("ws://127.0.0.1:4000/ws/chat"), Some(("127.0.0.1".into(), 4000)));
        assert_eq!(host_port("wss://web.whatsapp.com/ws/chat"), Some(("web.whatsapp.com".into(), 443)));
        assert_eq!(host_port("ws://[::1]:9/x"), Some(("::1".into(), 9)));
        assert_eq!(host_port("ws://host"), Some(("host".into(), 80)));
        assert_eq!(host_port("http://host"), None);
        assert_eq!(host_port("ws://:1"), None);
    }
}
