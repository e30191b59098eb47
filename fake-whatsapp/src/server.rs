//! Start-up and shutdown: one HTTP listener that upgrades `/ws/chat` (any path) to the
//! WhatsApp WebSocket and serves the admin API, plus the HTTPS media server. The state they
//! all share is in [`crate::shared`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::RngExt as _;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use crate::media::{MediaError, MediaServer, MediaStore};
use crate::noise::ServerIdentity;
use crate::shared::{FakeEvent, Shared, SharedParts};
use crate::{admin, conn};

/// Where the fake server listens and what it believes.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// WebSocket + admin API listener (port 0 picks one).
    pub listen: SocketAddr,
    /// HTTPS media listener.
    pub media_listen: SocketAddr,
    /// Where to write the media CA certificate (PEM); a temp file if `None`.
    pub ca_out: Option<PathBuf>,
    /// Phone numbers (digits) that are "not on WhatsApp".
    pub unregistered: Vec<String>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self { listen: loopback, media_listen: loopback, ca_out: None, unregistered: Vec::new() }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("media server: {0}")]
    Media(#[from] MediaError),
    #[error("noise identity: {0}")]
    Identity(String),
}

/// The addresses a client and a test need, as the binary prints them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Addresses {
    pub ws_url: String,
    pub admin_url: String,
    pub media_host: String,
    pub ca_file: PathBuf,
}

/// A running fake WhatsApp Web server.
pub struct FakeWhatsApp {
    addr: SocketAddr,
    media: MediaServer,
    shared: Arc<Shared>,
}

impl FakeWhatsApp {
    /// Binds both listeners and starts serving.
    pub async fn start(config: FakeConfig) -> Result<Self, StartError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let cancel = CancellationToken::new();
        let store = MediaStore::new();
        let media_auth = format!("fake-auth-{}", crate::stanza::hex(&rand::rng().random::<[u8; 8]>()));
        let media = MediaServer::start(
            config.media_listen,
            config.ca_out.clone(),
            media_auth.clone(),
            store.clone(),
            cancel.clone(),
        )
        .await?;
        let identity = ServerIdentity::generate().map_err(|e| StartError::Identity(e.to_string()))?;
        let shared = Arc::new(Shared::new(SharedParts {
            identity,
            unregistered: config.unregistered,
            media: store,
            media_host: media.host(),
            media_auth,
            cancel: cancel.clone(),
        }));
        shared.tasks.spawn(accept_loop(listener, shared.clone()));
        tracing::info!(%addr, media = %media.host(), "fake WhatsApp server listening");
        Ok(Self { addr, media, shared })
    }

    pub fn addresses(&self) -> Addresses {
        Addresses {
            ws_url: self.ws_url(),
            admin_url: self.admin_url(),
            media_host: self.media.host(),
            ca_file: self.media.ca_file().to_path_buf(),
        }
    }

    /// `ws://127.0.0.1:PORT/ws/chat`, for `TokioWebSocketTransportFactory::with_url`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn media_host(&self) -> String {
        self.media.host()
    }

    /// The CA that signs the media server's certificate: clients must trust it for media.
    pub fn ca_file(&self) -> &Path {
        self.media.ca_file()
    }

    /// Events as they happen (messages received, logins, disconnects).
    pub fn subscribe(&self) -> broadcast::Receiver<FakeEvent> {
        self.shared.events.subscribe()
    }

    /// In-process admin access, the same operations the HTTP admin API offers.
    pub fn admin(&self) -> admin::Admin {
        admin::Admin::new(self.shared.clone())
    }

    /// Stops accepting, closes every connection and waits for all tasks.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        self.media.shutdown().await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let conn_shared = shared.clone();
        shared.tasks.spawn(async move {
            let service = service_fn(move |req| route(conn_shared.clone(), req));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/health" {
        return Ok(admin::json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
    }
    if path.starts_with("/admin/") {
        return Ok(admin::handle(shared, req).await);
    }
    Ok(upgrade(shared, req))
}

fn upgrade(shared: Arc<Shared>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let is_ws =
        req.headers().get(UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned().filter(|_| is_ws) else {
        return admin::error(StatusCode::NOT_FOUND, "not found");
    };
    if shared.refusing() {
        return admin::error(StatusCode::SERVICE_UNAVAILABLE, "refusing connections");
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_shared = shared.clone();
    shared.tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut config = WebSocketConfig::default();
                // tungstenite zero-fills its whole read buffer: 128 KiB by default, per connection.
                config.read_buffer_size = 8 * 1024;
                config.max_message_size = Some(32 << 20);
                config.max_frame_size = Some(32 << 20);
                let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                conn::serve(task_shared, socket).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}
