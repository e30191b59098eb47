//! The accept loop: a cap on open connections and a share of it per client address, a deadline
//! for every wait for a request (the first byte included), hyper's header-read timeout, backoff
//! on accept errors, and a graceful drain at shutdown.
//!
//! axum's own `serve` exposes none of hyper's connection settings, so we drive hyper 1 directly
//! (the pattern of hyper-util's graceful example) with the axum router as the service.
//!
//! hyper's `header_read_timeout` starts at a request's first byte: a connection that sends
//! nothing, or a kept-alive one between requests, would be held open for ever. So each
//! connection's socket carries its own idle clock ([`Watched`]): while no request is being
//! handled, `HTTP_HEADER_TIMEOUT_SECS` without a byte either way closes it. Upgraded connections
//! (WebSockets) are exempt: their ping keeps them honest.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::HttpLimits;

/// How long in-flight HTTP requests get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// First and longest pause after a failed `accept()`.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// At most one warning this often while accepts keep failing.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// The body a client past its share of connections gets before the connection is closed.
const OVER_SHARE_BODY: &str = r#"{"success":false,"error":{"code":"TOO_MANY_CONNECTIONS","message":"too many open connections from this address (HTTP_MAX_CONNECTIONS_PER_IP)"}}"#;

/// The address of the client of a request, as the accept loop saw it (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientAddr(pub(crate) IpAddr);

impl ClientAddr {
    /// The client's address, from a request's extensions (absent outside `serve`, in tests).
    pub(crate) fn of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
        extensions.get::<ClientAddr>().map(|addr| addr.0)
    }
}

/// Accepts connections until `cancel`, then lets in-flight requests finish.
///
/// At most `limits.max_connections` connections are open at once, WebSockets included (the
/// permit travels with the socket through the upgrade); past that, new connections wait in the
/// kernel's backlog until one closes. One client address holds at most
/// `limits.max_connections_per_ip` of them; past that its new connections are answered 503 and
/// closed at once, holding nothing.
pub(crate) async fn serve(listener: TcpListener, router: Router, limits: HttpLimits, cancel: CancellationToken) {
    let mut http = auto::Builder::new(TokioExecutor::new()).http1_only();
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let shares = Shares::new(limits.max_connections_per_ip);
    let mut errors = AcceptErrors::default();
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    errors.succeeded();
                    pair
                }
                Err(e) => {
                    let pause = errors.failed(&e, Instant::now());
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        let Some(share) = shares.take(peer.ip()) else {
            refuse_over_share(&tcp, peer);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let state = Arc::new(ConnState::default());
        let io = TokioIo::new(Watched::new(tcp, limits.header_timeout, state.clone(), (permit, share)));
        let service = Tracked { router: router.clone(), state, client: ClientAddr(peer.ip()) };
        let conn = http.serve_connection_with_upgrades(io, TowerToHyperService::new(service)).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("some HTTP requests were still running at shutdown");
    }
}

/// Answers a connection past its address's share with a 503 and closes it. The answer is written
/// without waiting (a fresh socket's send buffer takes it), so the refusal holds nothing.
fn refuse_over_share(tcp: &TcpStream, peer: SocketAddr) {
    tracing::debug!(%peer, "connection over this address's share; refused");
    metrics::counter!(crate::metrics::CONNECTIONS_REFUSED, "reason" => "per_ip").increment(1);
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{OVER_SHARE_BODY}",
        OVER_SHARE_BODY.len()
    );
    let _ = tcp.try_write(answer.as_bytes());
}

/// The open connections of each client address, against the per-address share.
#[derive(Clone)]
struct Shares {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in its address's share, given back when the connection closes.
struct Share {
    key: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Shares {
    fn new(max: usize) -> Shares {
        Shares { max, open: Arc::default() }
    }

    /// A place for a connection from `ip`, or `None` if its address holds its whole share.
    fn take(&self, ip: IpAddr) -> Option<Share> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Share { key, open: self.open.clone() })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The unit a share is counted by: an IPv4 address (also when mapped into IPv6), or an IPv6
/// client's /64, since one client normally holds a whole /64.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// What a connection's socket needs to know about the requests on it.
#[derive(Debug, Default)]
struct ConnState {
    /// Requests being handled (their handler has not answered yet).
    busy: AtomicUsize,
    /// Switched to another protocol (a WebSocket): no HTTP idle clock any more.
    upgraded: AtomicBool,
}

/// The router as one connection's service: tags each request with the client's address, and
/// tells the socket while a request is being handled and when the connection is upgraded.
#[derive(Clone)]
struct Tracked {
    router: Router,
    state: Arc<ConnState>,
    client: ClientAddr,
}

/// Marks a request as being handled until dropped.
struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<B> tower::Service<Request<B>> for Tracked
where
    Router: tower::Service<Request<B>, Response = Response, Error = Infallible>,
    <Router as tower::Service<Request<B>>>::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.client);
        self.state.busy.fetch_add(1, Ordering::Relaxed);
        let busy = Busy(self.state.clone());
        let answer = self.router.call(req);
        Box::pin(async move {
            let response = answer.await;
            if let Ok(response) = &response
                && response.status() == StatusCode::SWITCHING_PROTOCOLS
            {
                busy.0.upgraded.store(true, Ordering::Relaxed);
            }
            drop(busy);
            response
        })
    }
}

/// A connection's socket: holds its place under the connection cap and in its address's share
/// for as long as it is open, and fails its pending read once it has been idle too long.
struct Watched<T> {
    io: T,
    state: Arc<ConnState>,
    idle_limit: Duration,
    /// The last byte either way.
    last: tokio::time::Instant,
    idle: Pin<Box<tokio::time::Sleep>>,
    _places: (OwnedSemaphorePermit, Share),
}

impl<T> Watched<T> {
    fn new(io: T, idle_limit: Duration, state: Arc<ConnState>, places: (OwnedSemaphorePermit, Share)) -> Watched<T> {
        let last = tokio::time::Instant::now();
        Watched {
            io,
            state,
            idle_limit,
            last,
            idle: Box::pin(tokio::time::sleep_until(last + idle_limit)),
            _places: places,
        }
    }

    /// Whether the connection has waited for a request longer than allowed. Registers the
    /// waker for the deadline when it has not.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.state.upgraded.load(Ordering::Relaxed) {
            return false;
        }
        loop {
            let deadline = self.last + self.idle_limit;
            if self.idle.deadline() != deadline {
                self.idle.as_mut().reset(deadline);
            }
            if self.idle.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.state.busy.load(Ordering::Relaxed) == 0 {
                return true;
            }
            // A handler is still working (a long send, a QR long-poll): not idle.
            self.last = tokio::time::Instant::now();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.last = tokio::time::Instant::now();
                Poll::Ready(result)
            }
            Poll::Pending if this.idle_expired(cx) => {
                tracing::debug!("connection idle past HTTP_HEADER_TIMEOUT_SECS; closed");
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request in time")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if written.is_ready() {
            this.last = tokio::time::Instant::now();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if written.is_ready() {
            this.last = tokio::time::Instant::now();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Failed accepts: a growing pause (so a full descriptor table does not spin a core) and a
/// warning at most once a second, with how many failed since the last one.
#[derive(Debug, Default)]
struct AcceptErrors {
    pause: Duration,
    unreported: u64,
    last_warning: Option<Instant>,
}

impl AcceptErrors {
    fn failed(&mut self, error: &io::Error, now: Instant) -> Duration {
        self.unreported += 1;
        if self.last_warning.is_none_or(|last| now.duration_since(last) >= WARN_EVERY) {
            tracing::warn!(%error, failures = self.unreported, "accept failed; backing off");
            self.unreported = 0;
            self.last_warning = Some(now);
        }
        self.pause = (self.pause * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        self.pause
    }

    fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_and_warn_at_most_once_a_second() {
        let mut errors = AcceptErrors::default();
        let start = Instant::now();
        let emfile = io::Error::from_raw_os_error(24);
        let pauses: Vec<Duration> = (0..10).map(|i| errors.failed(&emfile, start + Duration::from_millis(i))).collect();
        assert_eq!(pauses[0], BACKOFF_MIN);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*pauses.last().unwrap(), BACKOFF_MAX);
        // The first failure warned; the nine after it within the second are counted, not logged.
        assert_eq!(errors.unreported, 9);
        errors.failed(&emfile, start + Duration::from_secs(1));
        assert_eq!(errors.unreported, 0);
        errors.succeeded();
        assert_eq!(errors.failed(&emfile, start + Duration::from_secs(3)), BACKOFF_MIN);
    }
}
