//! Fake WhatsApp media CDN (`mmg.whatsapp.net`) served over HTTPS.
//!
//! whatsapp-rust 0.7.0 hard-codes `https://{hostname}{path}` for media, where `hostname` is
//! spliced verbatim from our `<media_conn><host hostname=".."/></media_conn>` answer. So this
//! module serves HTTP/1.1 over TLS with a certificate signed by a CA it creates itself, and
//! writes that CA certificate (PEM) to a file the client side can trust.
//!
//! # Protocol (see `fake-whatsapp-protocol.md` §4.4)
//!
//! * **Upload:** `POST /mms/{mediatype}/{token}?auth={auth}&token={token}` with the encrypted
//!   body, where `token = base64url_nopad(sha256(body))`. Answered `200` with
//!   `{"url":"https://{host}{direct_path}","direct_path":"/v/…"}`; the direct path never carries
//!   a query string. Any other prefix than `/mms/` (for example `/product/image/{token}`) is
//!   accepted too; the media type is then the whole prefix.
//! * **Resume probe** (the client sends it first for files of 5 MiB or more): the same URL plus
//!   `&resume=1` is answered `404` with a JSON error, which the client reads as "not uploaded
//!   yet, upload fully".
//! * **Download:** `GET {direct_path}?auth={auth}&token={token}` returns the stored bytes.
//!   Without `auth` (WA Web does not send it on download) the `token` must match the blob.
//! * **Errors** are JSON `{"error":"…"}`: `400` for a bad token or body, `401` for a missing or
//!   wrong `auth` (the client then refreshes `media_conn` and retries once), `404` for an
//!   unknown path, `405` for other methods, `413` for bodies over [`MAX_BODY_BYTES`].
//!
//! A failed TLS handshake, a plain-TCP client or garbage bytes only close that one connection
//! (logged at debug level); the server keeps running.
//!
//! # Making a client trust the CA
//!
//! [`MediaServer::ca_file`] is the PEM file of the CA (also available as
//! [`MediaServer::ca_pem`]). With ureq 3 (`features = ["rustls"]`):
//!
//! ```ignore
//! use std::sync::Arc;
//! use ureq::tls::{Certificate, RootCerts, TlsConfig};
//!
//! let pem = std::fs::read(media_server.ca_file())?;
//! let ca = Certificate::from_pem(&pem)?.to_owned();
//! let tls = TlsConfig::builder()
//!     .root_certs(RootCerts::Specific(Arc::new(vec![ca])))
//!     .build();
//! let agent: ureq::Agent = ureq::Agent::config_builder().tls_config(tls).build().into();
//! // whatsapp-rust's HTTP client on top of it (it already delivers non-2xx as Ok(response)):
//! let http = whatsapp_rust_ureq_http_client::UreqHttpClient::with_agent(agent);
//! // (also re-exported as `whatsapp_rust::http::UreqHttpClient`), then
//! // `Bot::builder().with_http_client(http)`.
//! ```
//!
//! Advertise [`MediaServer::host`] (`"127.0.0.1:PORT"`) as the `hostname` and
//! [`MediaServer::auth`] as the `auth` attribute of the `media_conn` answer.
//!
//! # Example
//!
//! ```ignore
//! let store = MediaStore::new();
//! let server = MediaServer::start(
//!     "127.0.0.1:0".parse()?, None, "media-auth".into(), store.clone(), cancel.clone(),
//! ).await?;
//! // ... media_conn answers use server.host() and server.auth() ...
//! server.shutdown().await;
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Largest request body accepted (128 MiB); larger uploads get `413`.
pub const MAX_BODY_BYTES: usize = 128 * 1024 * 1024;

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send the request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an in-flight request may run on after shutdown was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors from setting up the media server (serving errors are answered or logged instead).
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Generating the CA or leaf certificate failed.
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    /// Building the rustls server configuration failed.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// Writing the CA certificate PEM file failed.
    #[error("cannot write CA certificate to {}: {source}", path.display())]
    WriteCa {
        /// The file that could not be written.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// Binding or inspecting the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested listen address.
        addr: SocketAddr,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
}

// ---------------------------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------------------------

/// A freshly generated CA plus a leaf certificate it signed, ready for a TLS server.
///
/// The leaf is valid for `localhost`, `127.0.0.1` and `::1` (as IP SANs) plus any extra IPs
/// given to [`MediaTls::generate`]. If the CA file was placed in the temp dir by us (no path
/// given), it is deleted when this value is dropped.
#[derive(Debug)]
pub struct MediaTls {
    /// Where the CA certificate PEM was written.
    pub ca_pem_path: PathBuf,
    /// The CA certificate, PEM encoded (the same text as the file).
    pub ca_pem: String,
    /// rustls server configuration (leaf + CA chain, ALPN `http/1.1`).
    pub server_config: Arc<rustls::ServerConfig>,
    remove_on_drop: bool,
}

impl MediaTls {
    /// Generates a CA and a leaf certificate and writes the CA PEM to `ca_out`, or to a fresh
    /// file under [`std::env::temp_dir`] if `None` (parent directories are created).
    pub fn generate(ca_out: Option<PathBuf>, extra_ips: &[IpAddr]) -> Result<MediaTls, MediaError> {
        // The CA.
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = rcgen::DistinguishedName::new();
        ca_params.distinguished_name.push(DnType::CommonName, "fake-whatsapp media test CA");
        ca_params.distinguished_name.push(DnType::OrganizationName, "fake-whatsapp");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        ca_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        ca_params.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca_params, ca_key);

        // The leaf.
        let leaf_key = KeyPair::generate()?;
        let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()])?;
        leaf_params.distinguished_name = rcgen::DistinguishedName::new();
        leaf_params.distinguished_name.push(DnType::CommonName, "fake-whatsapp media server");
        let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
        for ip in extra_ips {
            if !ip.is_unspecified() && !ips.contains(ip) {
                ips.push(*ip);
            }
        }
        leaf_params.subject_alt_names.extend(ips.into_iter().map(SanType::IpAddress));
        leaf_params.is_ca = IsCa::ExplicitNoCa;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.use_authority_key_identifier_extension = true;
        leaf_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        leaf_params.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

        let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];

        let (ca_pem_path, remove_on_drop) = match ca_out {
            Some(path) => (path, false),
            None => (temp_ca_path(), true),
        };
        write_file(&ca_pem_path, ca_pem.as_bytes())
            .map_err(|source| MediaError::WriteCa { path: ca_pem_path.clone(), source })?;

        Ok(MediaTls { ca_pem_path, ca_pem, server_config: Arc::new(config), remove_on_drop })
    }

    /// A TLS acceptor for [`MediaTls::server_config`].
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.server_config))
    }
}

impl Drop for MediaTls {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = std::fs::remove_file(&self.ca_pem_path);
        }
    }
}

fn temp_ca_path() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    std::env::temp_dir().join(format!("fake-whatsapp-media-ca-{}-{n}-{nanos}.pem", std::process::id()))
}

fn write_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents)
}

// ---------------------------------------------------------------------------------------------
// Blob store
// ---------------------------------------------------------------------------------------------

/// One stored media file (the encrypted bytes as uploaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The bytes exactly as uploaded (ciphertext + MAC for encrypted media).
    pub bytes: Bytes,
    /// The media type from the upload path, e.g. `"document"` for `/mms/document/…`.
    pub media_type: String,
    /// SHA-256 of `bytes` (the client's `file_enc_sha256`).
    pub enc_sha256: [u8; 32],
}

impl Blob {
    /// `base64url_nopad(enc_sha256)`, the `token` the client sends.
    pub fn token(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.enc_sha256)
    }
}

/// In-memory media storage keyed by `direct_path`. Cheap to clone (shared inside).
#[derive(Debug, Clone, Default)]
pub struct MediaStore {
    inner: Arc<StoreInner>,
}

#[derive(Debug, Default)]
struct StoreInner {
    blobs: Mutex<HashMap<String, Blob>>,
    next_id: AtomicU64,
}

impl MediaStore {
    /// An empty store.
    pub fn new() -> MediaStore {
        MediaStore::default()
    }

    fn blobs(&self) -> MutexGuard<'_, HashMap<String, Blob>> {
        // A panic elsewhere while holding the lock cannot leave the map half-updated.
        self.inner.blobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `bytes` and returns its new direct path (`/v/fake/{id}_{token}.enc`, no query).
    pub fn put(&self, media_type: &str, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let enc_sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let blob = Blob { bytes, media_type: media_type.to_owned(), enc_sha256 };
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let direct_path = format!("/v/fake/{id}_{}.enc", blob.token());
        self.blobs().insert(direct_path.clone(), blob);
        direct_path
    }

    /// The blob stored under `direct_path` (without query string), if any.
    pub fn get(&self, direct_path: &str) -> Option<Blob> {
        self.blobs().get(direct_path).cloned()
    }

    /// Removes and returns the blob stored under `direct_path`.
    pub fn remove(&self, direct_path: &str) -> Option<Blob> {
        self.blobs().remove(direct_path)
    }

    /// All stored direct paths (unordered).
    pub fn direct_paths(&self) -> Vec<String> {
        self.blobs().keys().cloned().collect()
    }

    /// Number of stored blobs.
    pub fn len(&self) -> usize {
        self.blobs().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.blobs().is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// A running HTTPS media server. Dropping it stops serving (without waiting); prefer
/// [`MediaServer::shutdown`].
#[derive(Debug)]
pub struct MediaServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: MediaTls,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _stop_on_drop: DropGuard,
}

#[derive(Debug)]
struct Shared {
    host: String,
    auth: RwLock<String>,
    store: MediaStore,
}

impl Shared {
    fn auth(&self) -> String {
        self.auth.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl MediaServer {
    /// Binds `listen` (port 0 picks a free port), generates the TLS material (CA PEM written to
    /// `ca_out`, or a temp file if `None`) and spawns the accept loop. Requests must carry
    /// `auth={auth}`. The server stops when `cancel` (or [`MediaServer::shutdown`]) fires.
    pub async fn start(
        listen: SocketAddr,
        ca_out: Option<PathBuf>,
        auth: String,
        store: MediaStore,
        cancel: CancellationToken,
    ) -> Result<MediaServer, MediaError> {
        let bind_err = |source| MediaError::Bind { addr: listen, source };
        let listener = TcpListener::bind(listen).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let tls = MediaTls::generate(ca_out, &[addr.ip()])?;
        let host = advertised_host(addr);

        let shared = Arc::new(Shared { host: host.clone(), auth: RwLock::new(auth), store });
        let cancel = cancel.child_token();
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(listener, tls.acceptor(), Arc::clone(&shared), cancel.clone(), tracker.clone()));
        // Closing only means "wait() may finish once empty"; the loop can still spawn.
        tracker.close();
        info!(%addr, %host, ca = %tls.ca_pem_path.display(), "fake media server listening");

        Ok(MediaServer { addr, shared, tls, _stop_on_drop: cancel.clone().drop_guard(), cancel, tracker })
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"127.0.0.1:PORT"` (or `"[::1]:PORT"`): the `hostname` to advertise in `media_conn`.
    pub fn host(&self) -> String {
        self.shared.host.clone()
    }

    /// The CA certificate PEM file that clients must trust.
    pub fn ca_file(&self) -> &Path {
        &self.tls.ca_pem_path
    }

    /// The CA certificate as PEM text.
    pub fn ca_pem(&self) -> &str {
        &self.tls.ca_pem
    }

    /// The rustls configuration the server uses.
    pub fn tls(&self) -> &MediaTls {
        &self.tls
    }

    /// The blob store (shared with the caller's clone).
    pub fn store(&self) -> &MediaStore {
        &self.shared.store
    }

    /// The currently required `auth` value, to advertise in `media_conn`.
    pub fn auth(&self) -> String {
        self.shared.auth()
    }

    /// Replaces the required `auth` value (requests with the old one then get `401`, which
    /// makes the client refresh `media_conn`).
    pub fn set_auth(&self, auth: impl Into<String>) {
        *self.shared.auth.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = auth.into();
    }

    /// Stops accepting, lets in-flight requests finish (up to a few seconds) and waits for all
    /// tasks.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.wait().await;
        debug!(addr = %self.addr, "fake media server stopped");
    }
}

fn advertised_host(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port()).to_string()
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                tracker.spawn(serve_connection(tcp, peer, acceptor.clone(), Arc::clone(&shared), cancel.clone()));
            }
            Err(e) => {
                // E.g. EMFILE: back off briefly instead of spinning.
                warn!(error = %e, "media server accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let tls = tokio::select! {
        _ = cancel.cancelled() => return,
        result = handshake => match result {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "media TLS handshake failed; closing connection");
                return;
            }
            Err(_) => {
                debug!(%peer, "media TLS handshake timed out; closing connection");
                return;
            }
        },
    };

    let service = service_fn(move |req: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);

    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    debug!(%peer, "media connection did not finish in time; dropping it");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "media connection ended with an error");
    }
}

// ---------------------------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------------------------

type Resp = Response<Full<Bytes>>;

async fn handle(shared: &Shared, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = Query::parse(req.uri().query());
    let resp = if method == Method::POST {
        upload(shared, req, &path, &query).await
    } else if method == Method::GET {
        download(shared, &path, &query)
    } else {
        json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    };
    debug!(%method, %path, status = resp.status().as_u16(), "media request");
    resp
}

async fn upload(shared: &Shared, req: Request<Incoming>, path: &str, query: &Query) -> Resp {
    // `/mms/{type}/{token}` (or any `/{prefix}/{token}`).
    let Some((prefix, path_token)) = path.rsplit_once('/') else {
        return json_error(StatusCode::NOT_FOUND, "unknown upload path");
    };
    if prefix.len() < 2 || path_token.is_empty() || prefix.starts_with("/v/") {
        return json_error(StatusCode::NOT_FOUND, "unknown upload path");
    }
    let media_type = prefix.strip_prefix("/mms/").unwrap_or_else(|| prefix.trim_start_matches('/')).to_owned();

    let declared_len =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    // Read the body before judging the request, so a client still writing it gets to read
    // our answer instead of a reset connection.
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return json_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
        Err(e) => {
            debug!(error = %e, "media upload body could not be read");
            return json_error(StatusCode::BAD_REQUEST, "body could not be read");
        }
    };

    if !query.auth_matches(&shared.auth()) {
        return json_error(StatusCode::UNAUTHORIZED, "missing or wrong auth");
    }
    if query.get("resume").is_some() {
        // We never keep partial uploads: "not found, upload fully".
        return json_error(StatusCode::NOT_FOUND, "no upload in progress");
    }
    if query.get("file_offset").is_some_and(|o| o != "0") {
        return json_error(StatusCode::BAD_REQUEST, "resumed uploads are not supported");
    }
    if query.get("token").is_some_and(|t| t != path_token) {
        return json_error(StatusCode::BAD_REQUEST, "token query does not match the path");
    }
    if body.is_empty() {
        return json_error(StatusCode::BAD_REQUEST, "empty body");
    }
    let actual = URL_SAFE_NO_PAD.encode(Sha256::digest(&body));
    if actual != path_token {
        return json_error(StatusCode::BAD_REQUEST, "token does not match sha256 of body");
    }

    let size = body.len();
    let direct_path = shared.store.put(&media_type, body);
    let url = format!("https://{}{direct_path}", shared.host);
    debug!(%media_type, size, %direct_path, "media uploaded");
    json_response(StatusCode::OK, &serde_json::json!({ "url": url, "direct_path": direct_path }))
}

fn download(shared: &Shared, path: &str, query: &Query) -> Resp {
    let auth_ok = match query.get("auth") {
        Some(_) => {
            if !query.auth_matches(&shared.auth()) {
                return json_error(StatusCode::UNAUTHORIZED, "wrong auth");
            }
            true
        }
        None => false,
    };
    let Some(blob) = shared.store.get(path) else {
        return json_error(StatusCode::NOT_FOUND, "not found");
    };
    match query.get("token") {
        Some(token) if token != blob.token() => {
            return json_error(StatusCode::NOT_FOUND, "token does not match");
        }
        Some(_) => {}
        None if !auth_ok => return json_error(StatusCode::UNAUTHORIZED, "missing auth and token"),
        None => {}
    }
    let mut resp = Response::new(Full::new(blob.bytes));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    resp
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn json_error(status: StatusCode, message: &str) -> Resp {
    json_response(status, &serde_json::json!({ "error": message, "status": status.as_u16() }))
}

/// Query parameters, with values kept both raw and percent-decoded (the client splices
/// `auth` into the URL unencoded, so the raw form is what it meant).
struct Query {
    pairs: Vec<(String, String, String)>,
}

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|part| !part.is_empty())
            .map(|part| {
                let (k, v) = part.split_once('=').unwrap_or((part, ""));
                (percent_decode(k), v.to_owned(), percent_decode(v))
            })
            .collect();
        Query { pairs }
    }

    /// The raw value of the first `name` parameter.
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _, _)| k == name).map(|(_, raw, _)| raw.as_str())
    }

    fn auth_matches(&self, expected: &str) -> bool {
        self.pairs
            .iter()
            .find(|(k, _, _)| k == "auth")
            .is_some_and(|(_, raw, decoded)| raw == expected || decoded == expected)
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        match (first, tail) {
            (b'%', [h, l, after @ ..]) if hex(*h).is_some() && hex(*l).is_some() => {
                let value = hex(*h).unwrap_or(0) * 16 + hex(*l).unwrap_or(0);
                out.push(value as u8);
                rest = after;
            }
            _ => {
                out.push(first);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Bb%3d"), "a+b=");
        assert_eq!(percent_decode("a+b%"), "a+b%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn query_auth() {
        let q = Query::parse(Some("auth=ab%2Bc&token=t&resume=1"));
        assert!(q.auth_matches("ab+c"));
        assert!(!q.auth_matches("abc"));
        assert_eq!(q.get("token"), Some("t"));
        assert_eq!(q.get("resume"), Some("1"));
        assert!(!Query::parse(None).auth_matches(""));
    }

    #[test]
    fn host_for_unspecified_addresses() {
        assert_eq!(advertised_host("0.0.0.0:5".parse().unwrap()), "127.0.0.1:5");
        assert_eq!(advertised_host("[::]:5".parse().unwrap()), "[::1]:5");
        assert_eq!(advertised_host("127.0.0.1:7".parse().unwrap()), "127.0.0.1:7");
    }

    #[test]
    fn store_roundtrip() {
        let store = MediaStore::new();
        let dp = store.put("document", b"abc".to_vec());
        assert!(dp.starts_with("/v/") && !dp.contains('?'));
        let blob = store.get(&dp).unwrap();
        assert_eq!(&blob.bytes[..], b"abc");
        assert_eq!(blob.media_type, "document");
        assert_eq!(blob.token(), URL_SAFE_NO_PAD.encode(Sha256::digest(b"abc")));
        assert_eq!(store.len(), 1);
        assert!(store.remove(&dp).is_some());
        assert!(store.is_empty());
    }
}
