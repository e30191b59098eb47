//! Start-up and shutdown: bind the listeners, load the sessions, serve until told to stop, then
//! stop in order (HTTP, WebSockets with 1001, sessions, queue workers).

mod fanout;
mod relay;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::api::auth::{Authenticator, TokensFileError};
use crate::api::state::{AppState, Lifecycle, Phase};
use crate::config::{Config, HttpLimits};
use crate::events::EventBus;
use crate::fleet::Fleet;
use crate::inbox::Inbox;
use crate::journal::{Journal, JournalError, SqliteJournal};
use crate::queue::{Queue, QueueSettings, RetryPolicy};
use crate::session::DeliveryEvent;
use crate::session::upstream::{Upstream, UpstreamError};
use crate::session::{SessionError, SessionManager, SessionsFile};
use crate::shutdown::Shutdown;
use crate::storage::postgres::Database;
use crate::storage::sqlite::{SqliteCredentials, SqliteInbox};
use crate::storage::{CredentialStore, InboxStore, SessionRegistry};

/// Everything must be stopped within this after the signal (PM2 and systemd wait ~10 s+).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(8);
/// Acks and receipts in flight from the sessions to the queue.
const DELIVERY_EVENTS: usize = 4096;

/// Process-wide SQLite settings, first thing in `main` (see the function's own doc).
pub use crate::storage::sqlite::tune_sqlite_for_many_stores;

/// Where each kind of state lives: the embedded default (SQLite and files under `DATA_DIR`,
/// one credentials store per number under `SESSIONS_DIR`, `SESSIONS_CONFIG`), or with
/// `DATABASE_URL` one Postgres shared by every store through one bounded pool.
pub struct Stores {
    pub journal: Journal,
    pub inbox: Arc<dyn InboxStore>,
    pub registry: Arc<dyn SessionRegistry>,
    pub credentials: Arc<dyn CredentialStore>,
    pub webhooks: Arc<dyn crate::storage::WebhookStore>,
    /// The numbers' leases, in the Postgres mode: a fleet of gateways shares them.
    pub leases: Option<Arc<dyn crate::storage::LeaseStore>>,
    /// The pool, in the Postgres mode (for readiness and shutdown).
    pub database: Option<Database>,
}

impl Stores {
    /// The stores `config` names. On Postgres, connects and migrates first: a gateway does not
    /// start on a database it cannot see.
    pub async fn open(config: &Config) -> Result<Stores, StartError> {
        // Credentials and the journal are private even in folders that already existed open.
        for dir in [&config.sessions_dir, &config.data_dir] {
            crate::files::tighten_tree(dir).map_err(|source| StartError::Permissions { dir: dir.clone(), source })?;
        }
        match &config.database {
            Some(settings) => {
                let db = Database::connect(settings.url.expose(), settings.max_connections)
                    .await
                    .map_err(|source| StartError::Database { url: settings.url.clone(), source })?;
                tracing::info!(database = %settings.url, max_connections = settings.max_connections, "state in Postgres");
                Ok(Stores {
                    journal: Arc::new(db.journal()),
                    inbox: Arc::new(db.inbox()),
                    registry: Arc::new(db.registry()),
                    credentials: Arc::new(db.credentials()),
                    webhooks: Arc::new(db.webhooks()),
                    leases: Some(Arc::new(db.leases())),
                    database: Some(db),
                })
            }
            None => {
                let journal = SqliteJournal::open(&config.data_dir)
                    .map_err(|source| StartError::Journal { dir: config.data_dir.clone(), source })?;
                let inbox = SqliteInbox::open(&config.data_dir)
                    .map_err(|source| StartError::Inbox { dir: config.data_dir.clone(), source })?;
                let webhooks = crate::storage::sqlite::SqliteWebhooks::open(&config.data_dir.join("webhooks.db"))
                    .map_err(|source| StartError::Webhooks {
                        dir: config.data_dir.clone(),
                        source: crate::storage::StorageError::failed(source),
                    })?;
                Ok(Stores {
                    journal: Arc::new(journal),
                    inbox: Arc::new(inbox),
                    registry: Arc::new(SessionsFile::new(&config.sessions_config)),
                    credentials: Arc::new(SqliteCredentials::new(config.sessions_dir.clone())),
                    webhooks: Arc::new(webhooks),
                    leases: None,
                    database: None,
                })
            }
        }
    }
}

/// What the seeds' callbacks say about a session beyond its events: its number and its
/// credentials folder.
fn session_facts(sessions: SessionManager) -> crate::webhooks::FactsLookup {
    Arc::new(move |id: &str| {
        let Ok(id) = crate::domain::SessionId::parse(id) else { return crate::webhooks::SessionFacts::default() };
        crate::webhooks::SessionFacts {
            phone: sessions.get(&id).and_then(|s| s.state.me).map(|me| me.phone),
            folder: sessions.folder(&id),
        }
    })
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Sessions(#[from] SessionError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("message journal {}: {source}", dir.display())]
    Journal { dir: std::path::PathBuf, source: JournalError },
    #[error("message journal: {0}")]
    Restore(JournalError),
    #[error(transparent)]
    Tokens(#[from] TokensFileError),
    #[error(transparent)]
    Jwt(#[from] crate::api::jwt::JwtSetupError),
    #[error("database {url}: {source}")]
    Database { url: crate::config::DatabaseUrl, source: crate::storage::StorageError },
    #[error("webhooks in {}: {source}", dir.display())]
    Webhooks { dir: std::path::PathBuf, source: crate::webhooks::StoreError },
    #[error("inbox in {}: {source}", dir.display())]
    Inbox { dir: std::path::PathBuf, source: crate::storage::sqlite::OpenError },
    #[error("cannot make {} private: {source}", dir.display())]
    Permissions { dir: std::path::PathBuf, source: std::io::Error },
}

/// A gateway that is bound and loaded, ready to run.
pub struct App {
    delivery_rx: mpsc::Receiver<DeliveryEvent>,
    webhook_rx: mpsc::UnboundedReceiver<crate::events::ToOutbox>,
    inbound_retention: Option<std::time::Duration>,
    inbound_rx: mpsc::Receiver<crate::session::upstream::Inbound>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    addr: SocketAddr,
    state: AppState,
    cors_origins: Vec<String>,
    limits: HttpLimits,
    compat: crate::config::CompatDialects,
}

impl App {
    /// Binds the ports, opens the stores and reads the session registry; nothing runs yet.
    /// The state lives in the files under `DATA_DIR` and `SESSIONS_DIR`, or with
    /// `DATABASE_URL` in one Postgres (see [`Stores`]).
    pub async fn build(config: Config) -> Result<App, StartError> {
        let stores = Stores::open(&config).await?;
        App::build_on(config, stores).await
    }

    /// [`App::build`], with the numbers' credentials in `credentials` (Postgres's, say) and
    /// the rest where `config` says.
    pub async fn build_with_credentials(
        config: Config,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<App, StartError> {
        let stores = Stores { credentials, ..Stores::open(&config).await? };
        App::build_on(config, stores).await
    }

    async fn build_on(config: Config, stores: Stores) -> Result<App, StartError> {
        let Stores { journal, inbox: inbox_store, registry, credentials, webhooks: webhook_store, leases, database } =
            stores;
        let bind = |addr: SocketAddr| async move {
            let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
            let local = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
            Ok::<_, StartError>((listener, local))
        };
        let (listener, addr) = bind(config.bind_addr()).await?;
        let metrics_listener = match config.metrics_listen {
            Some(metrics_addr) => Some(bind(metrics_addr).await?.0),
            None => None,
        };
        let auth = match &config.api_tokens_file {
            Some(path) => Authenticator::with_tokens_file(&config.api_token, path, config.rate_limit)?,
            None => Authenticator::new(&config.api_token),
        };
        let auth = match &config.jwt {
            Some(jwt) => auth.with_jwt(jwt, config.rate_limit)?,
            None => auth,
        };
        let shutdown = Shutdown::new();
        let inbox = Inbox::new(inbox_store, config.inbound_media_max_bytes);
        let (delivery_tx, delivery_rx) = mpsc::channel(DELIVERY_EVENTS);
        let (inbound_tx, inbound_rx) = mpsc::channel(crate::inbox::CHANNEL_CAPACITY);
        let upstream = Upstream::from_config(&config, delivery_tx, inbound_tx, credentials)?;
        // On Postgres this gateway is one of a fleet: a number's client runs under its lease.
        let fleet = match (&config.database, leases) {
            (Some(settings), Some(leases)) => {
                let id = settings.gateway_id.clone().unwrap_or_else(|| crate::config::default_gateway_id(addr.port()));
                tracing::info!(gateway = %id, lease_ttl_secs = settings.lease_ttl.as_secs(), "one gateway of a fleet");
                metrics::gauge!(crate::metrics::GATEWAY_INFO, "gateway" => id.to_string()).set(1.0);
                Some(Fleet::new(id, leases, settings.lease_ttl, settings.max_sessions))
            }
            _ => None,
        };
        let fleet_mode = fleet.is_some();
        let sessions = SessionManager::load(
            registry,
            upstream,
            fleet,
            shutdown.token(),
            tokio_util::task::TaskTracker::new(),
            config.startup_concurrency,
        )
        .await?;
        let settings = QueueSettings {
            retry: RetryPolicy {
                base: config.retry_base_delay,
                max_delay: config.retry_max_delay,
                max_attempts: config.retry_max_attempts,
            },
            max_age: config.retry_max_age,
            min_interval: config.send_min_interval,
            limits: config.queue_limits,
            shared: fleet_mode,
        };
        let queue = Queue::new(sessions.clone(), journal.clone(), settings, shutdown.clone());
        queue.restore().await.map_err(StartError::Restore)?;
        let events = EventBus::default();
        // In a fleet the outbox is shared: an endpoint's claim moves as fast as a number's lease.
        let sharing = match &config.database {
            Some(database) if fleet_mode => crate::webhooks::Sharing::Fleet { lease: database.lease_ttl },
            _ => crate::webhooks::Sharing::Alone,
        };
        let webhooks =
            crate::webhooks::Webhooks::open(webhook_store, config.webhooks.clone(), sharing, journal.clone())
                .await
                .map_err(|source| StartError::Webhooks { dir: config.data_dir.clone(), source })?;
        webhooks.set_session_facts(session_facts(sessions.clone()));
        let (webhook_tx, webhook_rx) = mpsc::unbounded_channel();
        events.attach_sink(webhook_tx);
        let state = AppState {
            auth: Arc::new(auth.with_failure_limit(config.http.auth_failures_per_minute)),
            sessions,
            queue,
            journal,
            inbox,
            webhooks,
            contacts: Arc::new(crate::session::contacts::ContactBook::new(config.contact_checks_per_minute)),
            events,
            shutdown,
            limits: config.http,
            qr_link_window: config.qr_link_window,
            max_body_bytes: config.max_body_bytes,
            lifecycle: Lifecycle::default(),
            metrics: crate::metrics::handle(),
            openapi: Arc::default(),
            database,
        };
        Ok(App {
            delivery_rx,
            webhook_rx,
            inbound_retention: config.inbound_retention,
            inbound_rx,
            listener,
            metrics_listener,
            addr,
            state,
            cors_origins: config.cors_allowed_origins,
            limits: config.http,
            compat: config.compat_api,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the token-free metrics listener (`METRICS_LISTEN`), if one was asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `signal` resolves, then shuts down cleanly.
    pub async fn run(self, signal: impl Future<Output = ()>) -> Result<(), StartError> {
        let App {
            delivery_rx,
            webhook_rx,
            inbound_retention,
            inbound_rx,
            listener,
            metrics_listener,
            addr,
            state,
            cors_origins,
            limits,
            compat,
        } = self;
        tracing::info!(%addr, "whatsapp-gateway listening");
        let shutdown = state.shutdown.clone();
        let sessions = state.sessions.clone();
        shutdown.spawn(state.queue.clone().track_deliveries(delivery_rx));
        if state.queue.settings().shared {
            shutdown.spawn(state.queue.clone().follow_sessions(state.sessions.events()));
        }
        if let Some(fleet) = sessions.fleet() {
            shutdown.spawn(state.queue.clone().follow_queued(fleet.queued()));
            shutdown.spawn(fleet.clone().run(shutdown.token()));
            shutdown.spawn(sessions.clone().follow_fleet(shutdown.token()));
            // Message events reach /ws/events on every gateway: before any session starts.
            fanout::spawn(&state.events, fleet, state.journal.clone(), &shutdown);
        }
        shutdown.spawn(state.queue.clone().prune_periodically());
        shutdown.spawn(crate::webhooks::run_outbox(state.webhooks.clone(), webhook_rx, shutdown.clone()));
        shutdown.spawn(relay::drain_status_events(
            state.journal.clone(),
            state.webhooks.clone(),
            state.events.clone(),
            shutdown.clone(),
        ));
        if let Err(e) = state.webhooks.start(&shutdown).await {
            tracing::error!(error = %e, "webhook workers did not start");
        }
        if let Some(retention) = inbound_retention {
            shutdown.spawn(crate::inbox::prune_periodically(state.inbox.clone(), retention, shutdown.clone()));
        }
        // Subscribed before any session starts, so no status is missed.
        shutdown.spawn(relay::forward_session_events(
            state.events.clone(),
            sessions.events(),
            sessions.clone(),
            shutdown.clone(),
        ));
        shutdown.spawn(crate::inbox::run(
            state.inbox.clone(),
            inbound_rx,
            sessions.clone(),
            state.events.clone(),
            shutdown.clone(),
        ));
        sessions.start_all();
        let router = crate::api::router(state.clone(), &cors_origins, compat);
        let server = tokio::spawn(crate::api::serve(listener, router, limits, shutdown.token()));
        let metrics_server = metrics_listener.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "metrics listening (no token)");
            }
            tokio::spawn(crate::api::serve(
                listener,
                crate::api::metrics_router(state.clone()),
                limits,
                shutdown.token(),
            ))
        });
        state.lifecycle.set(Phase::Running);
        signal.await;
        tracing::info!("shutting down");
        state.lifecycle.set(Phase::Stopping);
        if let Some(fleet) = sessions.fleet() {
            // First, so that the others count without this gateway when they take its numbers.
            fleet.leave().await;
        }
        shutdown.cancel();
        let _ = server.await;
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        let (session_wait, rest) =
            (sessions.wait_stopped(SHUTDOWN_DEADLINE), shutdown.close_and_wait(SHUTDOWN_DEADLINE));
        let (sessions_done, rest_done) = tokio::join!(session_wait, rest);
        if !sessions_done {
            tracing::warn!("some sessions did not stop in time");
        }
        if let Err(e) = rest_done {
            tracing::warn!(error = %e, "some tasks did not stop in time");
        }
        if let Some(db) = &state.database {
            // Last: the sessions and tasks above may still have written on their way out.
            db.close().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}
