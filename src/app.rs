//! Start-up and shutdown: bind the listener, load the sessions, serve until told to stop, then
//! stop in order (HTTP, WebSockets with 1001, sessions, queue workers).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{self, auth::Authenticator};
use crate::journal::Journal;
use crate::queue::{Queue, QueueSettings, RetryPolicy};
use crate::session::DeliveryEvent;
use crate::session::upstream::Upstream;
use crate::session::{SessionError, SessionManager, SessionsFile};
use crate::shutdown::Shutdown;
use tokio::sync::mpsc;

/// Everything must be stopped within this after the signal (PM2 and systemd wait ~10 s+).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(8);
/// Acks and receipts in flight from the sessions to the queue.
const DELIVERY_EVENTS: usize = 4096;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Sessions(#[from] SessionError),
    #[error("{0}")]
    Upstream(String),
    #[error("message journal {0}")]
    Journal(String),
}

/// A gateway that is bound and loaded, ready to run.
pub struct App {
    delivery_rx: mpsc::Receiver<DeliveryEvent>,
    listener: TcpListener,
    addr: SocketAddr,
    sessions: SessionManager,
    queue: Queue,
    shutdown: Shutdown,
    auth: Authenticator,
    max_body_bytes: usize,
}

impl App {
    /// Binds the port and reads `sessions.config.json`; nothing runs yet.
    pub async fn build(config: Config) -> Result<App, StartError> {
        let bind = config.bind_addr();
        let listener = TcpListener::bind(bind).await.map_err(|source| StartError::Bind { addr: bind, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: bind, source })?;
        let shutdown = Shutdown::new();
        let journal = Journal::open(&config.data_dir)
            .map_err(|e| StartError::Journal(format!("{}: {e}", config.data_dir.display())))?;
        let (delivery_tx, delivery_rx) = mpsc::channel(DELIVERY_EVENTS);
        let upstream = Upstream::from_config(&config, delivery_tx).map_err(|e| StartError::Upstream(e.to_string()))?;
        let sessions = SessionManager::load(
            SessionsFile::new(&config.sessions_config),
            config.sessions_dir.clone(),
            upstream,
            shutdown.token(),
            tokio_util::task::TaskTracker::new(),
        )?;
        let settings = QueueSettings {
            retry: RetryPolicy {
                base: config.retry_base_delay,
                max_delay: config.retry_max_delay,
                max_attempts: config.retry_max_attempts,
            },
            max_age: config.retry_max_age,
            min_interval: config.send_min_interval,
            limits: config.queue_limits,
        };
        let queue = Queue::new(sessions.clone(), journal, settings, shutdown.clone());
        queue.restore().await.map_err(|e| StartError::Journal(e.to_string()))?;
        Ok(App {
            delivery_rx,
            listener,
            addr,
            sessions,
            queue,
            shutdown,
            auth: Authenticator::new(&config.api_token),
            max_body_bytes: config.max_body_bytes,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `signal` resolves, then shuts down cleanly.
    pub async fn run(self, signal: impl Future<Output = ()>) -> Result<(), StartError> {
        let App { delivery_rx, listener, addr, sessions, queue, shutdown, auth, max_body_bytes } = self;
        tracing::info!(%addr, "whatsapp-gateway listening");
        shutdown.spawn(queue.clone().track_deliveries(delivery_rx));
        shutdown.spawn(queue.clone().prune_periodically());
        sessions.start_all();
        let ctx =
            Arc::new(http::Ctx { auth, sessions: sessions.clone(), queue, shutdown: shutdown.clone(), max_body_bytes });
        let server = tokio::spawn(http::serve(listener, ctx));
        signal.await;
        tracing::info!("shutting down");
        shutdown.cancel();
        let _ = server.await;
        let (session_wait, rest) =
            (sessions.wait_stopped(SHUTDOWN_DEADLINE), shutdown.close_and_wait(SHUTDOWN_DEADLINE));
        let (sessions_done, rest_done) = tokio::join!(session_wait, rest);
        if !sessions_done {
            tracing::warn!("some sessions did not stop in time");
        }
        if let Err(e) = rest_done {
            tracing::warn!(error = %e, "some tasks did not stop in time");
        }
        tracing::info!("stopped");
        Ok(())
    }
}
