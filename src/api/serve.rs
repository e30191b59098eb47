//! The accept loop: a cap on open connections, hyper's header-read timeout, backoff on accept
//! errors, and a graceful drain at shutdown.
//!
//! axum's own `serve` exposes none of hyper's connection settings, so we drive hyper 1 directly
//! (the pattern of hyper-util's graceful example) with the axum router as the service.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
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

/// Accepts connections until `cancel`, then lets in-flight requests finish.
///
/// At most `limits.max_connections` connections are open at once, WebSockets included (the
/// permit travels with the socket through the upgrade); past that, new connections wait in the
/// kernel's backlog until one closes.
pub(crate) async fn serve(listener: TcpListener, router: Router, limits: HttpLimits, cancel: CancellationToken) {
    let mut http = auto::Builder::new(TokioExecutor::new()).http1_only();
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
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
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(Counted { io: tcp, _permit: permit });
        let conn = http.serve_connection_with_upgrades(io, TowerToHyperService::new(router.clone())).into_owned();
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

/// A connection that holds its place under the connection cap for as long as it is open.
struct Counted<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
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
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
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
