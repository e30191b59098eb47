//! The only module that talks to whatsapp-rust: building a client for a session, turning its
//! events into ours, and sending a PDF.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::download::MediaType;
use whatsapp_rust::http::UreqHttpClient;
use whatsapp_rust::media::{DocumentOptions, document_message};
use whatsapp_rust::send::SendOptions;
use whatsapp_rust::store::SqliteStore;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::upload::UploadOptions;
use whatsapp_rust::{Client, Jid};

use crate::config::Config;
use crate::domain::{FileName, PdfDocument, PhoneNumber};
use crate::session::DeliveryEvent;

/// File name of a session's SQLite store inside its folder.
pub(crate) const STORE_FILE: &str = "whatsapp.db";

/// What the session supervisor needs to know from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UpstreamEvent {
    Qr(String),
    QrExhausted,
    PairSuccess,
    Connected,
    Disconnected,
    LoggedOut,
    /// Another client took over these credentials, or the number is banned: do not retry.
    Terminal(String),
}

fn translate(event: &Event) -> Option<UpstreamEvent> {
    Some(match event {
        Event::PairingQrCode(qr) => UpstreamEvent::Qr(qr.code.clone()),
        Event::PairingQrCodesExhausted(_) => UpstreamEvent::QrExhausted,
        Event::PairSuccess(_) => UpstreamEvent::PairSuccess,
        Event::Connected(_) => UpstreamEvent::Connected,
        Event::Disconnected(_) => UpstreamEvent::Disconnected,
        Event::LoggedOut(_) => UpstreamEvent::LoggedOut,
        Event::StreamReplaced(_) => UpstreamEvent::Terminal("replaced by another client".into()),
        Event::TemporaryBan(_) => UpstreamEvent::Terminal("number temporarily banned".into()),
        Event::ClientOutdated(_) => UpstreamEvent::Terminal("client version outdated".into()),
        Event::ConnectFailure(f) => UpstreamEvent::Terminal(format!("connect failure: {:?}", f.reason)),
        _ => return None,
    })
}

/// Runs inline on the client's dispatch path, so events arrive in order and before the run
/// loop returns (a spawned handler could deliver `LoggedOut` after the client has stopped).
struct Forward {
    session: mpsc::Sender<UpstreamEvent>,
    delivery: mpsc::Sender<DeliveryEvent>,
}

impl whatsapp_rust::types::events::EventHandler for Forward {
    fn handle_event(&self, event: Arc<Event>) {
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

/// Settings shared by every session's client.
#[derive(Clone)]
pub(crate) struct Upstream {
    url: Option<String>,
    version: Option<(u32, u32, u32)>,
    http: UreqHttpClient,
    qr_terminal: bool,
    delivery: mpsc::Sender<DeliveryEvent>,
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
    pub(crate) fn from_config(config: &Config, delivery: mpsc::Sender<DeliveryEvent>) -> Result<Self, UpstreamError> {
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
        })
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

    /// Builds and starts a client on the session's store; its events arrive on the returned
    /// channel (bounded: if the supervisor lags, events are dropped and polling corrects the
    /// status).
    pub(crate) async fn start(
        &self,
        dir: &Path,
    ) -> Result<(BotHandle, Arc<Client>, mpsc::Receiver<UpstreamEvent>), UpstreamError> {
        create_private_dir(dir).map_err(|e| UpstreamError::Store(e.to_string()))?;
        let path = dir.join(STORE_FILE);
        let path = path.to_str().ok_or_else(|| UpstreamError::Store("path is not UTF-8".into()))?;
        let store = SqliteStore::new(path).await.map_err(|e| UpstreamError::Store(e.to_string()))?;
        let (tx, rx) = mpsc::channel(256);
        let mut transport = TokioWebSocketTransportFactory::new();
        if let Some(url) = &self.url {
            transport = transport.with_url(url.clone());
        }
        let mut builder = Bot::builder()
            .with_backend(store)
            .with_transport_factory(transport)
            .with_http_client(self.http.clone())
            .with_device_props(
                whatsapp_rust::wacore::store::DevicePropsOverride::new()
                    .with_os("whatsapp-gateway")
                    .with_platform_type(whatsapp_rust::waproto::whatsapp::device_props::PlatformType::DESKTOP),
            )
            .skip_history_sync()
            .with_event_handler(Forward { session: tx, delivery: self.delivery.clone() });
        if let Some(version) = self.version {
            builder = builder.with_version(version);
        }
        let bot = builder.build().await.map_err(|e| UpstreamError::Store(e.to_string()))?;
        let handle = bot.spawn();
        let client = handle.client();
        Ok((handle, client, rx))
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

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Whether the client holds credentials (it was linked and not logged out).
pub(crate) fn is_linked(client: &Client) -> bool {
    client.pn().is_some()
}

pub(crate) fn is_connected(client: &Client) -> bool {
    client.is_connected() && client.is_logged_in()
}

/// Asks WhatsApp whether the number has an account.
pub(crate) async fn is_on_whatsapp(client: &Client, to: &PhoneNumber) -> Result<bool, UpstreamError> {
    let jid = Jid::pn(to.digits());
    let results = client
        .contacts()
        .is_on_whatsapp(std::slice::from_ref(&jid))
        .await
        .map_err(|e| classify(&e.to_string(), client))?;
    Ok(results.iter().any(|r| r.is_registered && r.jid.user == jid.user))
}

/// Uploads the PDF and sends it as a document message with the given WhatsApp message id.
pub(crate) async fn send_pdf(
    client: &Client,
    to: &PhoneNumber,
    pdf: &PdfDocument,
    file_name: &FileName,
    message_id: &str,
) -> Result<(), UpstreamError> {
    let upload = client
        .upload(pdf.bytes().to_vec(), MediaType::Document, UploadOptions::default())
        .await
        .map_err(|e| classify(&e.to_string(), client))?;
    let message = document_message(
        upload,
        DocumentOptions {
            mimetype: Some("application/pdf".into()),
            file_name: Some(file_name.as_str().to_owned()),
            title: Some(file_name.as_str().to_owned()),
            ..Default::default()
        },
    );
    client
        .send_message_with_options(Jid::pn(to.digits()), message, SendOptions::default().with_message_id(message_id))
        .await
        .map_err(|e| classify(&e.to_string(), client))?;
    Ok(())
}

fn classify(error: &str, client: &Client) -> UpstreamError {
    if !is_connected(client) { UpstreamError::NotConnected } else { UpstreamError::Send(error.to_owned()) }
}
