//! Service configuration: built-in defaults, then an optional file, then environment variables.
//!
//! Variable names are the Node service's (`PORT`, `API_STATIC_TOKEN`, …). A `.env` file fills in
//! variables the real environment lacks and never overrides it. The optional file is
//! `$CONFIG_FILE`, else `config/gateway.toml` if it exists; its keys are the lowercase variable
//! names (`port = 3000`, `sessions_dir = "/var/lib/wa/sessions"`).
//!
//! [`Config::from_sources`] is pure apart from the token file, so tests pass their own
//! variables instead of touching the process environment.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::GatewayId;

/// Used when `CONFIG_FILE` is unset, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "config/gateway.toml";

/// Tokens shorter than this are accepted but flagged by [`Config::token_is_short`].
pub const MIN_TOKEN_LEN: usize = 16;

/// Largest request body by default: room for a PDF of the maximum size however a client encodes
/// it. Its base64 (4 characters per 3 bytes), wrapped at 76 columns with `\r\n` escaped in the
/// JSON (4 more bytes a line), with twice the usual share of `/` escaped as `\/` (one
/// character in 64 is a `/`), plus 64 KiB for the JSON around it.
pub const DEFAULT_MAX_BODY_BYTES: usize = {
    let encoded = crate::domain::MAX_PDF_BYTES.div_ceil(3) * 4;
    encoded + encoded.div_ceil(76) * 4 + encoded / 32 + 64 * 1024
};

/// (variable, default) for every variable with a default; the file and env key is the
/// lowercase name.
const DEFAULTS: &[(&str, &str)] = &[
    ("PORT", "3000"),
    ("HOST", "0.0.0.0"),
    ("SESSIONS_DIR", "./sessions"),
    ("SESSIONS_CONFIG", "./sessions.config.json"),
    ("LOG_LEVEL", "info"),
    ("RETRY_MAX_ATTEMPTS", "10"),
    ("RETRY_BASE_DELAY_MS", "1000"),
    ("RETRY_MAX_DELAY_MS", "300000"),
    ("QR_TERMINAL", "false"),
    ("API_TOKEN_FILE", "./.api-token"),
    ("DATA_DIR", "./data"),
    ("RETRY_MAX_AGE_SECS", "86400"),
    ("SEND_MIN_INTERVAL_MS", "1000"),
    ("QUEUE_MAX_PER_SESSION", "1000"),
    ("QUEUE_MAX_BYTES_PER_SESSION", "268435456"),
    ("QUEUE_MAX_TOTAL", "10000"),
    ("QUEUE_MAX_TOTAL_BYTES", "1073741824"),
    ("HTTP_HEADER_TIMEOUT_SECS", "10"),
    ("HTTP_BODY_TIMEOUT_SECS", "30"),
    ("HTTP_REQUEST_TIMEOUT_SECS", "30"),
    ("HTTP_MAX_CONNECTIONS", "1024"),
    ("HTTP_MAX_CONNECTIONS_PER_IP", "256"),
    ("HTTP_MAX_HEADER_BYTES", "16384"),
    ("HTTP_MAX_JSON_BYTES", "65536"),
    ("WS_MAX_MESSAGE_BYTES", "65536"),
    ("WS_PING_SECS", "25"),
    ("WS_MAX_PER_TOKEN", "64"),
    ("AUTH_FAILURES_PER_MINUTE", "60"),
    ("RATE_LIMIT_PER_SECOND", "100"),
    ("RATE_LIMIT_BURST", "200"),
    ("STARTUP_CONCURRENCY", "8"),
    ("INBOUND_MEDIA_MAX_BYTES", "16777216"),
    ("INBOUND_RETENTION_DAYS", "30"),
    ("WEBHOOK_MAX_RETRY_SECS", "86400"),
    ("WEBHOOK_RETRY_BASE_MS", "1000"),
    ("WEBHOOK_OUTBOX_MAX", "100000"),
    ("WEBHOOK_TIMEOUT_MS", "10000"),
    ("WEBHOOK_ALLOW_PRIVATE", "false"),
    ("WEBHOOK_RETENTION_DAYS", "30"),
    ("CONTACT_CHECKS_PER_MINUTE", "60"),
    ("QR_LINK_WINDOW_SECS", "120"),
    ("JWT_SESSION_CLAIM", "sub"),
    ("JWT_SCOPES", DEFAULT_JWT_SCOPES),
    ("JWT_JWKS_REFRESH_SECS", "600"),
    ("JWT_JWKS_MIN_REFRESH_SECS", "30"),
    ("DATABASE_MAX_CONNECTIONS", "16"),
    ("LEASE_TTL_SECS", "10"),
];

/// What a user's JWT may do unless `JWT_SCOPES` says otherwise: see, link and drive its own
/// session, never the admin's business.
pub const DEFAULT_JWT_SCOPES: &str = "sessions:read,sessions:write,messages:send,messages:read";

/// Shortest `JWT_SECRET`: RFC 7518 §3.2 wants an HMAC key at least as long as its hash (32
/// bytes for HS256).
pub const MIN_JWT_SECRET_LEN: usize = 32;

/// Variables without a default (absent means "not set").
const OPTIONAL: &[&str] = &[
    "API_STATIC_TOKEN",
    "RUST_LOG",
    "WHATSAPP_URL",
    "WHATSAPP_VERSION",
    "WHATSAPP_CA_FILE",
    "MAX_BODY_BYTES",
    "API_TOKENS_FILE",
    "CORS_ALLOWED_ORIGINS",
    "METRICS_LISTEN",
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "WEBHOOK_EVENTS",
    "COMPAT_API",
    "BACKEND_URL",
    "BACKEND_BASE_URL",
    "JWT_SECRET",
    "JWT_PUBLIC_KEY_FILE",
    "JWT_JWKS_URL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "DATABASE_URL",
    "GATEWAY_ID",
    "MAX_SESSIONS_PER_GATEWAY",
];

/// The static API token. `Debug` and `Display` print `[REDACTED]`; use
/// [`ApiToken::expose`] where the value itself is needed.
#[derive(Clone)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps a token value.
    pub fn new(token: impl Into<String>) -> ApiToken {
        ApiToken(token.into())
    }

    /// The secret value. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// The most connections `DATABASE_MAX_CONNECTIONS` may ask for: the pool is shared by every
/// session, so a thousand numbers need no more than this.
pub const MAX_DATABASE_CONNECTIONS: u32 = 64;

/// `DATABASE_URL`: where the shared state lives. `Debug` and `Display` hide the password.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL itself, with its password. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for DatabaseUrl {
    /// `postgres://user:…@host/db`: everything but the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.0;
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let user = url.get(scheme + 3..at).unwrap_or_default();
                let user = user.split(':').next().unwrap_or_default();
                write!(f, "{}://{user}:…{}", url.get(..scheme).unwrap_or_default(), url.get(at..).unwrap_or_default())
            }
            _ => f.write_str(url),
        }
    }
}

/// `DATABASE_URL` and its pool: every piece of state in one Postgres instead of files.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`: `postgres://` or `postgresql://`.
    pub url: DatabaseUrl,
    /// `DATABASE_MAX_CONNECTIONS` (16, at most 64): the pool's bound, shared by every session.
    pub max_connections: u32,
    /// `GATEWAY_ID`: this gateway's stable name in the fleet; `None` means the host name and
    /// the port it listens on ([`default_gateway_id`]).
    pub gateway_id: Option<GatewayId>,
    /// `LEASE_TTL_SECS` (10, from 2 to 300): how long a number's lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// `MAX_SESSIONS_PER_GATEWAY`: the most numbers this gateway runs, whatever its share of
    /// the fleet's; `None` (unset) means no bound but the share.
    pub max_sessions: Option<usize>,
}

/// The shortest and longest `LEASE_TTL_SECS`.
pub const LEASE_TTL_SECS_RANGE: std::ops::RangeInclusive<u64> = 2..=300;

/// `JWT_SECRET`, the HMAC key of the users' JWTs. `Debug` prints `[REDACTED]`.
#[derive(Clone)]
pub struct JwtSecret(String);

impl JwtSecret {
    /// Wraps a secret (its length is checked where the settings are loaded).
    pub fn new(secret: impl Into<String>) -> JwtSecret {
        JwtSecret(secret.into())
    }

    /// The secret value. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// How the users' own JWTs are verified (seeds 003 and 004: each app user drives the one
/// number of their own). Present when at least one key is configured.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// `JWT_SECRET`: HS256/384/512 tokens (Supabase's legacy JWT secret, used as its bytes).
    pub secret: Option<JwtSecret>,
    /// `JWT_PUBLIC_KEY_FILE`: an RSA or EC (P-256/P-384) public key, PEM, for RS*/PS*/ES* tokens.
    pub public_key_file: Option<PathBuf>,
    /// `JWT_JWKS_URL`: an http(s) URL serving the RSA/EC keys as a JWK set (e.g. Supabase's
    /// `https://<project>.supabase.co/auth/v1/.well-known/jwks.json`).
    pub jwks_url: Option<String>,
    /// `JWT_JWKS_REFRESH_SECS` (600): the fetched keys are fetched again once this old.
    pub jwks_refresh: Duration,
    /// `JWT_JWKS_MIN_REFRESH_SECS` (30; 0 = no floor): least time between two fetches, however
    /// many tokens name an unknown `kid`.
    pub jwks_min_refresh: Duration,
    /// `JWT_ISSUER`: accepted `iss` values (comma list); empty = not checked.
    pub issuers: Vec<String>,
    /// `JWT_AUDIENCE`: accepted `aud` values (comma list); empty = not checked.
    pub audiences: Vec<String>,
    /// `JWT_SESSION_CLAIM` (sub): the claim that names the user's session.
    pub session_claim: String,
    /// `JWT_SCOPES` (see [`DEFAULT_JWT_SCOPES`]): scope names, checked at start-up.
    pub scopes: Vec<String>,
}

/// Where [`Config::api_token`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOrigin {
    /// `API_STATIC_TOKEN`.
    Configured,
    /// Read from an existing `API_TOKEN_FILE`.
    File(PathBuf),
    /// Generated now and written (mode 0600) to this path: show it to the operator once.
    Generated(PathBuf),
}

/// The whole service configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOST` (0.0.0.0): address to bind.
    pub host: IpAddr,
    /// `PORT` (3000); 0 picks a free port (tests).
    pub port: u16,
    /// `API_STATIC_TOKEN`, else the content of `API_TOKEN_FILE`, else a generated token.
    pub api_token: ApiToken,
    /// Where `api_token` came from.
    pub token_origin: TokenOrigin,
    /// `API_TOKEN_FILE` (./.api-token).
    pub api_token_file: PathBuf,
    /// `SESSIONS_DIR` (./sessions): one sub-directory of credentials per session.
    pub sessions_dir: PathBuf,
    /// `SESSIONS_CONFIG` (./sessions.config.json): the list of sessions to start.
    pub sessions_config: PathBuf,
    /// `LOG_LEVEL` (info): an `EnvFilter` directive; `RUST_LOG` (from the environment or `.env`)
    /// overrides it when it is a valid filter.
    pub log_level: String,
    /// `WHATSAPP_URL`: upstream WebSocket; `None` means the real `wss://web.whatsapp.com/ws/chat`.
    pub whatsapp_url: Option<String>,
    /// `WHATSAPP_VERSION` (e.g. `2.3000.1`): client version to announce; `None` = library default.
    pub whatsapp_version: Option<(u32, u32, u32)>,
    /// `WHATSAPP_CA_FILE`: an extra trusted root certificate (PEM) for media HTTPS.
    pub whatsapp_ca_file: Option<PathBuf>,
    /// `MAX_BODY_BYTES` (see [`DEFAULT_MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// `RETRY_MAX_ATTEMPTS` (10): send attempts per message before it is dropped.
    pub retry_max_attempts: u32,
    /// `RETRY_BASE_DELAY_MS` (1000): first retry delay.
    pub retry_base_delay: Duration,
    /// `RETRY_MAX_DELAY_MS` (300000): cap of the exponential backoff.
    pub retry_max_delay: Duration,
    /// `QR_TERMINAL` (false): also draw QR codes in the terminal, for debugging.
    pub qr_terminal: bool,
    /// `DATA_DIR` (./data): the message journal and the PDFs waiting to be sent.
    pub data_dir: PathBuf,
    /// `RETRY_MAX_AGE_SECS` (86400): a message not sent by then fails as expired.
    pub retry_max_age: Duration,
    /// `SEND_MIN_INTERVAL_MS` (1000): least time between two sends of one session (plus up to
    /// 50 % jitter); 0 turns pacing off.
    pub send_min_interval: Duration,
    /// Queue bounds: `QUEUE_MAX_PER_SESSION` (1000 messages), `QUEUE_MAX_BYTES_PER_SESSION`
    /// (256 MiB), `QUEUE_MAX_TOTAL` (10000), `QUEUE_MAX_TOTAL_BYTES` (1 GiB). Beyond them, 429.
    pub queue_limits: QueueLimits,
    /// How the HTTP server protects itself: timeouts, connection and size limits.
    pub http: HttpLimits,
    /// `API_TOKENS_FILE`: scoped tokens (JSON); `None` means only the admin token exists.
    pub api_tokens_file: Option<PathBuf>,
    /// `RATE_LIMIT_PER_SECOND` (100) and `RATE_LIMIT_BURST` (200), per token; `None` when the rate is 0.
    pub rate_limit: Option<RateLimit>,
    /// `CORS_ALLOWED_ORIGINS`: origins (`https://admin.example.com`) a browser may call the API from;
    /// empty means none.
    pub cors_allowed_origins: Vec<String>,
    /// `METRICS_LISTEN`: an extra address serving `/metrics` without a token (a private network).
    pub metrics_listen: Option<SocketAddr>,
    /// `STARTUP_CONCURRENCY` (8): linked sessions connecting at once at boot.
    pub startup_concurrency: usize,
    /// `INBOUND_MEDIA_MAX_BYTES` (16 MiB): larger received files are recorded without their bytes.
    pub inbound_media_max_bytes: u64,
    /// `INBOUND_RETENTION_DAYS` (30; 0 = keep forever): received messages and files older than this
    /// are deleted.
    pub inbound_retention: Option<Duration>,
    /// `WEBHOOK_URL`, `WEBHOOK_SECRET`, `WEBHOOK_EVENTS`, `WEBHOOK_MAX_RETRY_SECS`,
    /// `WEBHOOK_RETRY_BASE_MS`, `WEBHOOK_OUTBOX_MAX`, `WEBHOOK_TIMEOUT_MS`, `WEBHOOK_ALLOW_PRIVATE`,
    /// `WEBHOOK_RETENTION_DAYS`, and the seeds' callback endpoints `BACKEND_URL` and `BACKEND_BASE_URL`.
    pub webhooks: crate::domain::WebhookSettings,
    /// `CONTACT_CHECKS_PER_MINUTE` (60; 0 = no limit): numbers each session may ask WhatsApp about.
    pub contact_checks_per_minute: u32,
    /// `QR_LINK_WINDOW_SECS` (120): how long linking goes on after the last `GET …/qr`.
    pub qr_link_window: Duration,
    /// `COMPAT_API` (none): the sibling services' HTTP dialects served besides our own API.
    pub compat_api: CompatDialects,
    /// `JWT_*`: the users' own JWTs; `None` when no JWT key is configured.
    pub jwt: Option<JwtSettings>,
    /// `DATABASE_URL`: Postgres as the shared store; `None` keeps the files under `DATA_DIR`
    /// and `SESSIONS_DIR` (the default).
    pub database: Option<DatabaseSettings>,
}

/// A sibling Node.js service whose HTTP dialect the gateway can speak (`COMPAT_API`): the
/// seeds of `/work/shared/seeds/`, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompatDialect {
    /// "WhatsApp QR Service": `/init`, `/qr-code/:id`, `/status/:id`, `/send`, `/disconnect`.
    Seed000,
    /// "WhatsApp Orchestrator": `/generate-qr`, `/sessions…`, `/config/download-media`.
    Seed002,
    /// `/api/whatsapp/…` and Socket.IO.
    Seed003,
    /// `/api/v1/whatsapp/…` and Socket.IO.
    Seed004,
}

impl CompatDialect {
    pub const ALL: [CompatDialect; 4] =
        [CompatDialect::Seed000, CompatDialect::Seed002, CompatDialect::Seed003, CompatDialect::Seed004];

    /// The name `COMPAT_API` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            CompatDialect::Seed000 => "seed000",
            CompatDialect::Seed002 => "seed002",
            CompatDialect::Seed003 => "seed003",
            CompatDialect::Seed004 => "seed004",
        }
    }

    pub fn parse(name: &str) -> Option<CompatDialect> {
        CompatDialect::ALL.into_iter().find(|d| d.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The dialects `COMPAT_API` enables: none by default, and then their routes answer 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompatDialects(u8);

impl CompatDialects {
    /// These dialects.
    pub fn of(dialects: &[CompatDialect]) -> CompatDialects {
        CompatDialects(dialects.iter().fold(0, |bits, d| bits | d.bit()))
    }

    pub fn contains(self, dialect: CompatDialect) -> bool {
        self.0 & dialect.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The enabled dialects, in [`CompatDialect::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = CompatDialect> {
        CompatDialect::ALL.into_iter().filter(move |d| self.contains(*d))
    }
}

/// The HTTP server's protections, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// `HTTP_HEADER_TIMEOUT_SECS` (10): time to receive a request's headers. The clock starts as
    /// soon as the connection waits for a request (at accept, and after each response), so it is
    /// also the deadline for a first byte and the keep-alive idle timeout.
    pub header_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT_SECS` (30): time to receive a whole request body (408 after it).
    pub body_timeout: Duration,
    /// `HTTP_REQUEST_TIMEOUT_SECS` (30): time a non-streaming route may take once the body is in.
    pub request_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS` (1024): open connections, WebSockets included; more wait in the backlog.
    pub max_connections: usize,
    /// `HTTP_MAX_CONNECTIONS_PER_IP` (256): open connections from one client address (an IPv6
    /// client by its /64); more are answered 503 and closed at once.
    pub max_connections_per_ip: usize,
    /// `HTTP_MAX_HEADER_BYTES` (16384): the request line and headers; 431 above.
    pub max_header_bytes: usize,
    /// `WS_MAX_MESSAGE_BYTES` (65536): largest message a WebSocket client may send (closed with 1009).
    pub ws_max_message_bytes: usize,
    /// `WS_PING_SECS` (25): every WebSocket is pinged this often, and closed (1011) when the
    /// previous ping got no pong by the next.
    pub ws_ping: Duration,
    /// `WS_MAX_PER_TOKEN` (64): WebSockets one token may hold open; more are refused with 429.
    pub ws_max_per_token: usize,
    /// `AUTH_FAILURES_PER_MINUTE` (60; 0 = no limit): requests with a missing or unknown token
    /// one client address may make; more are answered 429 until the minute's share refills.
    pub auth_failures_per_minute: u32,
    /// `HTTP_MAX_JSON_BYTES` (65536): body limit of every route but `POST /api/send-pdf`.
    pub max_json_bytes: usize,
}

/// A token bucket: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// How much may wait to be sent before new PDFs are refused with 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub per_session: usize,
    pub per_session_bytes: u64,
    pub total: usize,
    pub total_bytes: u64,
}

/// A configuration problem, as one line that names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable has a value we cannot use.
    #[error("invalid {var}: '{value}' {reason}")]
    Invalid {
        /// The variable, e.g. `PORT`.
        var: &'static str,
        /// The offending value.
        value: String,
        /// Why, e.g. `is not a port number`.
        reason: String,
    },
    /// The configuration file could not be read or parsed, or a value has the wrong shape.
    #[error("cannot load configuration: {0}")]
    Source(#[from] config::ConfigError),
    /// The `.env` file exists but cannot be parsed.
    #[error("cannot read .env: {0}")]
    DotEnv(#[from] dotenvy::Error),
    /// `API_TOKEN_FILE` could not be read or created.
    #[error("API_TOKEN_FILE '{}': {source}", path.display())]
    TokenFile {
        /// The token file.
        path: PathBuf,
        /// The I/O failure.
        source: io::Error,
    },
    /// `API_TOKEN_FILE` exists but holds no token.
    #[error("API_TOKEN_FILE '{}' is empty; delete it to generate a new token", path.display())]
    TokenFileEmpty {
        /// The token file.
        path: PathBuf,
    },
}

/// The merged sources before validation: every value is text here (TOML numbers and booleans
/// convert), so each variable gets its own error message.
#[derive(Deserialize)]
struct Raw {
    port: String,
    host: String,
    sessions_dir: String,
    sessions_config: String,
    log_level: String,
    rust_log: Option<String>,
    retry_max_attempts: String,
    retry_base_delay_ms: String,
    retry_max_delay_ms: String,
    qr_terminal: String,
    api_token_file: String,
    data_dir: String,
    retry_max_age_secs: String,
    send_min_interval_ms: String,
    queue_max_per_session: String,
    queue_max_bytes_per_session: String,
    queue_max_total: String,
    queue_max_total_bytes: String,
    http_header_timeout_secs: String,
    http_body_timeout_secs: String,
    http_request_timeout_secs: String,
    http_max_connections: String,
    http_max_connections_per_ip: String,
    http_max_header_bytes: String,
    http_max_json_bytes: String,
    ws_max_message_bytes: String,
    ws_ping_secs: String,
    ws_max_per_token: String,
    auth_failures_per_minute: String,
    rate_limit_per_second: String,
    rate_limit_burst: String,
    startup_concurrency: String,
    inbound_media_max_bytes: String,
    inbound_retention_days: String,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    webhook_events: Option<String>,
    webhook_max_retry_secs: String,
    webhook_retry_base_ms: String,
    webhook_outbox_max: String,
    webhook_timeout_ms: String,
    webhook_allow_private: String,
    webhook_retention_days: String,
    contact_checks_per_minute: String,
    qr_link_window_secs: String,
    jwt_session_claim: String,
    jwt_scopes: String,
    jwt_jwks_refresh_secs: String,
    jwt_jwks_min_refresh_secs: String,
    database_max_connections: String,
    database_url: Option<String>,
    lease_ttl_secs: String,
    gateway_id: Option<String>,
    max_sessions_per_gateway: Option<String>,
    jwt_secret: Option<String>,
    jwt_public_key_file: Option<String>,
    jwt_jwks_url: Option<String>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    api_tokens_file: Option<String>,
    cors_allowed_origins: Option<String>,
    metrics_listen: Option<String>,
    api_static_token: Option<String>,
    whatsapp_url: Option<String>,
    whatsapp_version: Option<String>,
    whatsapp_ca_file: Option<String>,
    max_body_bytes: Option<String>,
    compat_api: Option<String>,
    backend_url: Option<String>,
    backend_base_url: Option<String>,
}

impl Config {
    /// Loads from the process environment, a `.env` file (never overriding real variables) and
    /// `$CONFIG_FILE` or `config/gateway.toml`; see [`Config::from_sources`].
    pub fn load() -> Result<Config, ConfigError> {
        let mut env: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
            .collect();
        // Read, not `dotenvy::dotenv()`: no process-wide `set_var` (unsafe once threads run).
        match dotenvy::dotenv_iter() {
            Ok(items) => {
                for item in items {
                    let (key, value) = item?;
                    env.entry(key).or_insert(value);
                }
            }
            Err(err) if err.not_found() => {}
            Err(err) => return Err(err.into()),
        }
        let file = match env.get("CONFIG_FILE").filter(|path| !path.trim().is_empty()) {
            Some(path) => Some(PathBuf::from(path)),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|path| path.is_file()),
        };
        Config::from_sources(env, file.as_deref())
    }

    /// Builds the configuration from explicit sources: defaults, then `file` (required if
    /// given; format from its extension), then `env` (only the known variables are looked at;
    /// empty values count as unset). Then resolves the token, which may read or create
    /// `API_TOKEN_FILE`.
    pub fn from_sources<I>(env: I, file: Option<&Path>) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let known: HashMap<String, String> = env
            .into_iter()
            .filter(|(key, _)| DEFAULTS.iter().any(|(name, _)| name == key) || OPTIONAL.contains(&key.as_str()))
            .collect();

        let mut builder = config::Config::builder();
        for (name, value) in DEFAULTS {
            builder = builder.set_default(name.to_ascii_lowercase(), *value)?;
        }
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let raw: Raw = builder
            .add_source(config::Environment::default().source(Some(known)).ignore_empty(true))
            .build()?
            .try_deserialize()?;

        let compat_api = parse_compat_api(raw.compat_api.as_deref())?;
        let webhooks = webhook_settings(&raw, compat_api)?;
        let jwt = jwt_settings(&raw)?;
        let database = database_settings(&raw)?;
        let retry_base_delay = parse_millis("RETRY_BASE_DELAY_MS", &raw.retry_base_delay_ms)?;
        let retry_max_delay = parse_millis("RETRY_MAX_DELAY_MS", &raw.retry_max_delay_ms)?;
        if retry_base_delay > retry_max_delay {
            return Err(invalid(
                "RETRY_BASE_DELAY_MS",
                &raw.retry_base_delay_ms,
                format!("must not exceed RETRY_MAX_DELAY_MS ({})", raw.retry_max_delay_ms.trim()),
            ));
        }

        let api_token_file = parse_path("API_TOKEN_FILE", &raw.api_token_file)?;
        let configured = raw.api_static_token.filter(|token| !token.trim().is_empty());
        let (api_token, token_origin) = match configured {
            Some(token) => (ApiToken::new(token.trim()), TokenOrigin::Configured),
            None => load_or_create_token(&api_token_file)?,
        };

        let secs = |var: &'static str, value: &str| {
            parse_positive::<u64>(var, value, "is not a positive number of seconds").map(Duration::from_secs)
        };
        let http = HttpLimits {
            header_timeout: secs("HTTP_HEADER_TIMEOUT_SECS", &raw.http_header_timeout_secs)?,
            body_timeout: secs("HTTP_BODY_TIMEOUT_SECS", &raw.http_body_timeout_secs)?,
            request_timeout: secs("HTTP_REQUEST_TIMEOUT_SECS", &raw.http_request_timeout_secs)?,
            max_connections: parse_positive(
                "HTTP_MAX_CONNECTIONS",
                &raw.http_max_connections,
                "is not a positive whole number",
            )?,
            max_connections_per_ip: parse_positive(
                "HTTP_MAX_CONNECTIONS_PER_IP",
                &raw.http_max_connections_per_ip,
                "is not a positive whole number",
            )?,
            max_header_bytes: match raw.http_max_header_bytes.trim().parse::<usize>() {
                // hyper's read buffer cannot be smaller than 8 KiB.
                Ok(n) if n >= 8192 => n,
                _ => return Err(invalid("HTTP_MAX_HEADER_BYTES", &raw.http_max_header_bytes, "must be at least 8192")),
            },
            ws_max_message_bytes: parse_positive(
                "WS_MAX_MESSAGE_BYTES",
                &raw.ws_max_message_bytes,
                "is not a positive number of bytes",
            )?,
            ws_ping: secs("WS_PING_SECS", &raw.ws_ping_secs)?,
            ws_max_per_token: parse_positive(
                "WS_MAX_PER_TOKEN",
                &raw.ws_max_per_token,
                "is not a positive whole number",
            )?,
            auth_failures_per_minute: raw.auth_failures_per_minute.trim().parse().map_err(|_| {
                invalid("AUTH_FAILURES_PER_MINUTE", &raw.auth_failures_per_minute, "is not a whole number")
            })?,
            max_json_bytes: parse_positive(
                "HTTP_MAX_JSON_BYTES",
                &raw.http_max_json_bytes,
                "is not a positive number of bytes",
            )?,
        };
        let per_second: u32 = raw
            .rate_limit_per_second
            .trim()
            .parse()
            .map_err(|_| invalid("RATE_LIMIT_PER_SECOND", &raw.rate_limit_per_second, "is not a whole number"))?;
        let rate_limit = if per_second == 0 {
            None
        } else {
            let burst = parse_positive("RATE_LIMIT_BURST", &raw.rate_limit_burst, "is not a positive whole number")?;
            Some(RateLimit { per_second, burst })
        };
        let cors_allowed_origins =
            non_empty(raw.cors_allowed_origins).map(|list| parse_origins(&list)).transpose()?.unwrap_or_default();
        let metrics_listen = non_empty(raw.metrics_listen)
            .map(|addr| {
                addr.parse::<SocketAddr>()
                    .map_err(|_| invalid("METRICS_LISTEN", &addr, "is not an address like 127.0.0.1:9100"))
            })
            .transpose()?;
        let api_tokens_file = non_empty(raw.api_tokens_file).map(PathBuf::from);

        Ok(Config {
            compat_api,
            webhooks,
            jwt,
            database,
            inbound_retention: days("INBOUND_RETENTION_DAYS", &raw.inbound_retention_days)?,
            contact_checks_per_minute: raw.contact_checks_per_minute.trim().parse().map_err(|_| {
                invalid("CONTACT_CHECKS_PER_MINUTE", &raw.contact_checks_per_minute, "is not a whole number")
            })?,
            inbound_media_max_bytes: parse_positive(
                "INBOUND_MEDIA_MAX_BYTES",
                &raw.inbound_media_max_bytes,
                "is not a positive number of bytes",
            )?,
            startup_concurrency: parse_positive(
                "STARTUP_CONCURRENCY",
                &raw.startup_concurrency,
                "is not a positive whole number",
            )?,
            qr_link_window: secs("QR_LINK_WINDOW_SECS", &raw.qr_link_window_secs)?,
            http,
            api_tokens_file,
            rate_limit,
            cors_allowed_origins,
            metrics_listen,
            host: parse_host(&raw.host)?,
            port: raw.port.trim().parse().map_err(|_| invalid("PORT", &raw.port, "is not a port number"))?,
            api_token,
            token_origin,
            api_token_file,
            sessions_dir: parse_path("SESSIONS_DIR", &raw.sessions_dir)?,
            sessions_config: parse_path("SESSIONS_CONFIG", &raw.sessions_config)?,
            log_level: match non_empty(raw.rust_log)
                .filter(|d| tracing_subscriber::EnvFilter::try_new(d.trim()).is_ok())
            {
                Some(directives) => directives.trim().to_owned(),
                None => parse_log_level(&raw.log_level)?,
            },
            whatsapp_url: non_empty(raw.whatsapp_url).map(parse_ws_url).transpose()?,
            whatsapp_version: non_empty(raw.whatsapp_version).map(|v| parse_version(&v)).transpose()?,
            whatsapp_ca_file: non_empty(raw.whatsapp_ca_file).map(parse_ca_file).transpose()?,
            max_body_bytes: match non_empty(raw.max_body_bytes) {
                Some(value) => parse_positive("MAX_BODY_BYTES", &value, "is not a positive number of bytes")?,
                None => DEFAULT_MAX_BODY_BYTES,
            },
            retry_max_attempts: parse_positive(
                "RETRY_MAX_ATTEMPTS",
                &raw.retry_max_attempts,
                "is not a positive whole number",
            )?,
            retry_base_delay,
            retry_max_delay,
            qr_terminal: parse_bool("QR_TERMINAL", &raw.qr_terminal)?,
            data_dir: parse_path("DATA_DIR", &raw.data_dir)?,
            retry_max_age: Duration::from_secs(parse_positive(
                "RETRY_MAX_AGE_SECS",
                &raw.retry_max_age_secs,
                "is not a positive number of seconds",
            )?),
            send_min_interval: raw.send_min_interval_ms.trim().parse::<u64>().map(Duration::from_millis).map_err(
                |_| invalid("SEND_MIN_INTERVAL_MS", &raw.send_min_interval_ms, "is not a number of milliseconds"),
            )?,
            queue_limits: QueueLimits {
                per_session: parse_positive(
                    "QUEUE_MAX_PER_SESSION",
                    &raw.queue_max_per_session,
                    "is not a positive whole number",
                )?,
                per_session_bytes: parse_positive(
                    "QUEUE_MAX_BYTES_PER_SESSION",
                    &raw.queue_max_bytes_per_session,
                    "is not a positive number of bytes",
                )?,
                total: parse_positive("QUEUE_MAX_TOTAL", &raw.queue_max_total, "is not a positive whole number")?,
                total_bytes: parse_positive(
                    "QUEUE_MAX_TOTAL_BYTES",
                    &raw.queue_max_total_bytes,
                    "is not a positive number of bytes",
                )?,
            },
        })
    }

    /// `HOST:PORT`, ready to bind.
    pub fn bind_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// True if the configured or file token is shorter than [`MIN_TOKEN_LEN`]: main should warn.
    pub fn token_is_short(&self) -> bool {
        self.api_token.expose().chars().count() < MIN_TOKEN_LEN
    }

    /// The token file path if the token was generated by this load: main prints the token once.
    pub fn generated_token_file(&self) -> Option<&Path> {
        match &self.token_origin {
            TokenOrigin::Generated(path) => Some(path),
            TokenOrigin::Configured | TokenOrigin::File(_) => None,
        }
    }
}

fn invalid(var: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { var, value: value.to_owned(), reason: reason.into() }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn database_settings(raw: &Raw) -> Result<Option<DatabaseSettings>, ConfigError> {
    let max_connections: u32 =
        parse_positive("DATABASE_MAX_CONNECTIONS", &raw.database_max_connections, "is not a positive whole number")?;
    if max_connections > MAX_DATABASE_CONNECTIONS {
        return Err(invalid(
            "DATABASE_MAX_CONNECTIONS",
            &raw.database_max_connections,
            format!("is more than {MAX_DATABASE_CONNECTIONS}: the pool is shared by every session"),
        ));
    }
    let lease_ttl: u64 = parse_positive("LEASE_TTL_SECS", &raw.lease_ttl_secs, "is not a positive whole number")?;
    if !LEASE_TTL_SECS_RANGE.contains(&lease_ttl) {
        return Err(invalid(
            "LEASE_TTL_SECS",
            &raw.lease_ttl_secs,
            format!("must be from {} to {} seconds", LEASE_TTL_SECS_RANGE.start(), LEASE_TTL_SECS_RANGE.end()),
        ));
    }
    let gateway_id = match non_empty(raw.gateway_id.clone()) {
        Some(id) => Some(GatewayId::parse(id.trim()).map_err(|e| invalid("GATEWAY_ID", &id, e.to_string()))?),
        None => None,
    };
    let max_sessions = match non_empty(raw.max_sessions_per_gateway.clone()) {
        Some(max) => Some(parse_positive::<usize>("MAX_SESSIONS_PER_GATEWAY", &max, "is not a positive whole number")?),
        None => None,
    };
    let Some(url) = non_empty(raw.database_url.clone()) else { return Ok(None) };
    let url = DatabaseUrl(url);
    if !(url.0.starts_with("postgres://") || url.0.starts_with("postgresql://")) {
        // Shown without its password.
        return Err(invalid("DATABASE_URL", &url.to_string(), "is not a postgres:// or postgresql:// URL"));
    }
    Ok(Some(DatabaseSettings {
        url,
        max_connections,
        gateway_id,
        lease_ttl: Duration::from_secs(lease_ttl),
        max_sessions,
    }))
}

/// The host name (from the kernel, else `HOSTNAME`) and the port the gateway listens on: stable
/// across restarts of one gateway, distinct between gateways on one host.
pub fn default_gateway_id(port: u16) -> GatewayId {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_owned());
    let host: String = host.chars().take(crate::domain::MAX_GATEWAY_ID_LEN - 6).collect();
    GatewayId::parse(&format!("{host}:{port}"))
        .unwrap_or_else(|_| GatewayId::parse("gateway").unwrap_or_else(|_| unreachable!("a valid literal")))
}

fn parse_host(value: &str) -> Result<IpAddr, ConfigError> {
    match value.trim() {
        "localhost" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        other => other.parse().map_err(|_| invalid("HOST", value, "is not an IP address")),
    }
}

fn parse_path(var: &'static str, value: &str) -> Result<PathBuf, ConfigError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(invalid(var, value, "must not be empty"));
    }
    Ok(PathBuf::from(trimmed))
}

fn parse_log_level(value: &str) -> Result<String, ConfigError> {
    let trimmed = value.trim();
    tracing_subscriber::EnvFilter::try_new(trimmed)
        .map(|_| trimmed.to_owned())
        .map_err(|_| invalid("LOG_LEVEL", value, "is not a log level or filter (e.g. info, debug)"))
}

fn parse_ws_url(value: String) -> Result<String, ConfigError> {
    let lower = value.to_ascii_lowercase();
    let has_host =
        ["ws://", "wss://"].iter().any(|scheme| lower.strip_prefix(scheme).is_some_and(|rest| !rest.is_empty()));
    if has_host { Ok(value) } else { Err(invalid("WHATSAPP_URL", &value, "must be a ws:// or wss:// URL")) }
}

fn parse_version(value: &str) -> Result<(u32, u32, u32), ConfigError> {
    let bad = || invalid("WHATSAPP_VERSION", value, "is not a version like 2.3000.1");
    let mut parts = value.split('.').map(|part| part.parse::<u32>());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) => Ok((a, b, c)),
        _ => Err(bad()),
    }
}

/// A comma list of origins, each `scheme://host[:port]` with nothing after it (browsers send
/// exactly that in `Origin`).
fn parse_origins(list: &str) -> Result<Vec<String>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            match rest {
                Some(host)
                    if !host.is_empty() && !host.contains('/') && axum::http::HeaderValue::from_str(origin).is_ok() =>
                {
                    Ok(origin.to_owned())
                }
                _ => Err(invalid("CORS_ALLOWED_ORIGINS", origin, "is not an origin like https://admin.example.com")),
            }
        })
        .collect()
}

fn parse_ca_file(value: String) -> Result<PathBuf, ConfigError> {
    let path = PathBuf::from(&value);
    if path.is_file() { Ok(path) } else { Err(invalid("WHATSAPP_CA_FILE", &value, "is not a readable file")) }
}

/// `COMPAT_API`: a comma list of dialect names; an unknown one stops the start.
fn parse_compat_api(value: Option<&str>) -> Result<CompatDialects, ConfigError> {
    let mut dialects = Vec::new();
    for name in value.unwrap_or_default().split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let known = CompatDialect::ALL.map(CompatDialect::as_str).join(", ");
        let dialect = CompatDialect::parse(&name.to_ascii_lowercase())
            .ok_or_else(|| invalid("COMPAT_API", name, format!("is not a dialect (known: {known})")))?;
        dialects.push(dialect);
    }
    Ok(CompatDialects::of(&dialects))
}

/// The webhook settings: the environment's endpoint checked as the API checks endpoints, and
/// the seeds' own callback variables, `BACKEND_URL` (seed 000's, or seed 002's when it is the
/// only callback dialect on) and `BACKEND_BASE_URL` (seed 002's).
fn webhook_settings(raw: &Raw, compat: CompatDialects) -> Result<crate::domain::WebhookSettings, ConfigError> {
    use crate::domain::{EnvEndpoint, WebhookFormat};
    let number = |var: &'static str, value: &str| -> Result<u64, ConfigError> {
        value.trim().parse().map_err(|_| invalid(var, value, "is not a whole number"))
    };
    let http_url = |var: &'static str, url: String| {
        if crate::domain::is_http_url(&url) { Ok(url) } else { Err(invalid(var, &url, "is not an http(s) URL")) }
    };
    let env_endpoint = match non_empty(raw.webhook_url.clone()) {
        None => None,
        Some(url) => {
            let url = http_url("WEBHOOK_URL", url)?;
            let secret = match non_empty(raw.webhook_secret.clone()) {
                None => None,
                Some(secret) => Some(
                    crate::domain::WebhookSecret::parse(&secret)
                        .map_err(|e| invalid("WEBHOOK_SECRET", "(hidden)", e.to_string()))?,
                ),
            };
            let events = match non_empty(raw.webhook_events.clone()) {
                None => None,
                Some(list) => Some(
                    list.split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(|e| {
                            crate::domain::EventKind::parse(e)
                                .ok_or_else(|| invalid("WEBHOOK_EVENTS", e, "is not an event name"))
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            Some(EnvEndpoint { url, secret, events, format: WebhookFormat::Standard })
        }
    };
    let backend = |url: String, format| EnvEndpoint { url, secret: None, events: None, format };
    let backend_url = match non_empty(raw.backend_url.clone()) {
        None => None,
        Some(url) => {
            let format = if compat.contains(CompatDialect::Seed000) {
                WebhookFormat::Seed000
            } else if compat.contains(CompatDialect::Seed002) {
                WebhookFormat::Seed002
            } else {
                return Err(invalid("BACKEND_URL", &url, "needs COMPAT_API with seed000 or seed002 (their callbacks)"));
            };
            Some(backend(http_url("BACKEND_URL", url)?, format))
        }
    };
    let backend_base_url = match non_empty(raw.backend_base_url.clone()) {
        None => None,
        Some(url) if !compat.contains(CompatDialect::Seed002) => {
            return Err(invalid("BACKEND_BASE_URL", &url, "needs COMPAT_API with seed002 (its callbacks)"));
        }
        Some(url) if backend_url.as_ref().is_some_and(|b| b.format == WebhookFormat::Seed002) => {
            return Err(invalid(
                "BACKEND_BASE_URL",
                &url,
                "and BACKEND_URL both name seed 002's backend (seed000 is not in COMPAT_API); set one",
            ));
        }
        Some(url) => Some(backend(http_url("BACKEND_BASE_URL", url)?, WebhookFormat::Seed002)),
    };
    Ok(crate::domain::WebhookSettings {
        env_endpoint,
        backend_url,
        backend_base_url,
        max_retry_age: Duration::from_secs(number("WEBHOOK_MAX_RETRY_SECS", &raw.webhook_max_retry_secs)?),
        retry_base: Duration::from_millis(number("WEBHOOK_RETRY_BASE_MS", &raw.webhook_retry_base_ms)?.max(1)),
        outbox_max: number("WEBHOOK_OUTBOX_MAX", &raw.webhook_outbox_max)?.max(1),
        timeout: Duration::from_millis(number("WEBHOOK_TIMEOUT_MS", &raw.webhook_timeout_ms)?.max(1)),
        allow_private: parse_bool("WEBHOOK_ALLOW_PRIVATE", &raw.webhook_allow_private)?,
        retention: days("WEBHOOK_RETENTION_DAYS", &raw.webhook_retention_days)?,
    })
}

/// A retention in whole days; `None` for 0 (keep forever).
fn days(name: &'static str, value: &str) -> Result<Option<Duration>, ConfigError> {
    let days: u64 = value.trim().parse().map_err(|_| invalid(name, value, "is not a whole number of days"))?;
    Ok((days > 0).then(|| Duration::from_secs(days.saturating_mul(86_400))))
}

/// A comma list, trimmed, without empty entries.
fn comma_list(value: Option<String>) -> Vec<String> {
    non_empty(value)
        .map(|list| list.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The JWT settings, or `None` when no key is configured (then `JWT_ISSUER`/`JWT_AUDIENCE` are
/// a mistake: they would check nothing).
fn jwt_settings(raw: &Raw) -> Result<Option<JwtSettings>, ConfigError> {
    let secret = match non_empty(raw.jwt_secret.clone()) {
        Some(secret) if secret.len() < MIN_JWT_SECRET_LEN => {
            return Err(invalid(
                "JWT_SECRET",
                "(hidden)",
                format!("must be at least {MIN_JWT_SECRET_LEN} characters (an HMAC key as long as its hash)"),
            ));
        }
        secret => secret.map(JwtSecret),
    };
    let public_key_file = non_empty(raw.jwt_public_key_file.clone())
        .map(|value| {
            let path = PathBuf::from(&value);
            if path.is_file() {
                Ok(path)
            } else {
                Err(invalid("JWT_PUBLIC_KEY_FILE", &value, "is not a readable file"))
            }
        })
        .transpose()?;
    let jwks_url = non_empty(raw.jwt_jwks_url.clone())
        .map(|url| {
            if crate::domain::is_http_url(&url) {
                Ok(url)
            } else {
                Err(invalid("JWT_JWKS_URL", &url, "is not an http(s) URL"))
            }
        })
        .transpose()?;
    let issuers = comma_list(raw.jwt_issuer.clone());
    let audiences = comma_list(raw.jwt_audience.clone());
    if secret.is_none() && public_key_file.is_none() && jwks_url.is_none() {
        if let Some((var, value)) =
            [("JWT_ISSUER", &issuers), ("JWT_AUDIENCE", &audiences)].into_iter().find(|(_, values)| !values.is_empty())
        {
            return Err(invalid(
                var,
                &value.join(","),
                "is set but no JWT key is (JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL)",
            ));
        }
        return Ok(None);
    }
    let session_claim = raw.jwt_session_claim.trim();
    if session_claim.is_empty() {
        return Err(invalid("JWT_SESSION_CLAIM", &raw.jwt_session_claim, "must name a claim"));
    }
    let scopes = comma_list(Some(raw.jwt_scopes.clone()));
    if scopes.is_empty() {
        return Err(invalid("JWT_SCOPES", &raw.jwt_scopes, "must name at least one scope"));
    }
    Ok(Some(JwtSettings {
        secret,
        public_key_file,
        jwks_url,
        jwks_refresh: Duration::from_secs(parse_positive(
            "JWT_JWKS_REFRESH_SECS",
            &raw.jwt_jwks_refresh_secs,
            "is not a positive number of seconds",
        )?),
        jwks_min_refresh: Duration::from_secs(raw.jwt_jwks_min_refresh_secs.trim().parse().map_err(|_| {
            invalid("JWT_JWKS_MIN_REFRESH_SECS", &raw.jwt_jwks_min_refresh_secs, "is not a whole number of seconds")
        })?),
        issuers,
        audiences,
        session_claim: session_claim.to_owned(),
        scopes,
    }))
}

fn parse_positive<T>(var: &'static str, value: &str, reason: &str) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + Default,
{
    match value.trim().parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(invalid(var, value, reason)),
    }
}

fn parse_millis(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    parse_positive::<u64>(var, value, "is not a positive number of milliseconds").map(Duration::from_millis)
}

fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(var, value, "is not a boolean (true/false)")),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Reads the token from `path`, or generates one there if the file does not exist.
fn load_or_create_token(path: &Path) -> Result<(ApiToken, TokenOrigin), ConfigError> {
    if let Some(token) = read_token_file(path)? {
        return Ok((token, TokenOrigin::File(path.to_path_buf())));
    }

    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes[..]);
    let token = hex(&bytes);

    match create_private_file(path) {
        Ok(mut file) => {
            let written = file.write_all(format!("{token}\n").as_bytes()).and_then(|()| file.sync_all());
            written.map_err(|source| ConfigError::TokenFile { path: path.to_path_buf(), source })?;
            Ok((ApiToken::new(token), TokenOrigin::Generated(path.to_path_buf())))
        }
        // Another process created it between our read and our create: use theirs.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => match read_token_file(path)? {
            Some(token) => Ok((token, TokenOrigin::File(path.to_path_buf()))),
            None => Err(ConfigError::TokenFileEmpty { path: path.to_path_buf() }),
        },
        Err(source) => Err(ConfigError::TokenFile { path: path.to_path_buf(), source }),
    }
}

/// `Ok(None)` if the file does not exist; an error if it exists but is unreadable or blank.
fn read_token_file(path: &Path) -> Result<Option<ApiToken>, ConfigError> {
    match fs::read_to_string(path) {
        Ok(content) => {
            let token = content.trim();
            if token.is_empty() {
                Err(ConfigError::TokenFileEmpty { path: path.to_path_buf() })
            } else {
                Ok(Some(ApiToken::new(token)))
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::TokenFile { path: path.to_path_buf(), source }),
    }
}

/// Creates `path` exclusively, readable only by its owner (0600 on Unix).
fn create_private_file(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("wa-gateway-config-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Variables with a token so no token file is touched.
    fn with_token(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars = env(&[("API_STATIC_TOKEN", "0123456789abcdef0123")]);
        vars.extend(env(extra));
        vars
    }

    fn error_of(vars: Vec<(String, String)>) -> String {
        Config::from_sources(vars, None).unwrap_err().to_string()
    }

    #[test]
    fn a_fleet_member_is_named_and_its_lease_bounded() {
        let url = ("DATABASE_URL", "postgres://gw:secret@db/state");
        let config = Config::from_sources(with_token(&[url]), None).unwrap();
        let database = config.database.expect("Postgres");
        assert_eq!((database.gateway_id, database.lease_ttl), (None, Duration::from_secs(10)));
        let named =
            Config::from_sources(with_token(&[url, ("GATEWAY_ID", "gw-1:3000"), ("LEASE_TTL_SECS", "5")]), None)
                .unwrap()
                .database
                .expect("Postgres");
        assert_eq!(named.gateway_id.as_ref().map(GatewayId::as_str), Some("gw-1:3000"));
        assert_eq!(named.lease_ttl, Duration::from_secs(5));
        assert_eq!(database.max_sessions, None, "no bound but the share by default");
        let bounded = Config::from_sources(with_token(&[url, ("MAX_SESSIONS_PER_GATEWAY", "50")]), None).unwrap();
        assert_eq!(bounded.database.expect("Postgres").max_sessions, Some(50));
        for (var, bad) in [
            ("LEASE_TTL_SECS", "1"),
            ("LEASE_TTL_SECS", "301"),
            ("GATEWAY_ID", "gw 1"),
            ("MAX_SESSIONS_PER_GATEWAY", "0"),
            ("MAX_SESSIONS_PER_GATEWAY", "many"),
        ] {
            let error = error_of(with_token(&[url, (var, bad)]));
            assert!(error.contains(var), "{var}={bad}: {error}");
        }
        // The default names the host and the port the gateway listens on.
        assert!(default_gateway_id(3001).as_str().ends_with(":3001"));
    }

    #[test]
    fn defaults() {
        let config = Config::from_sources(with_token(&[]), None).unwrap();
        assert_eq!(config.port, 3000);
        assert_eq!(config.bind_addr(), "0.0.0.0:3000".parse().unwrap());
        assert_eq!(config.sessions_dir, PathBuf::from("./sessions"));
        assert_eq!(config.sessions_config, PathBuf::from("./sessions.config.json"));
        assert_eq!(config.log_level, "info");
        assert_eq!(config.whatsapp_url, None);
        assert_eq!(config.whatsapp_version, None);
        assert_eq!(config.whatsapp_ca_file, None);
        assert_eq!(config.max_body_bytes, 24_311_562);
        assert_eq!(config.retry_max_attempts, 10);
        assert_eq!(config.retry_base_delay, Duration::from_secs(1));
        assert_eq!(config.retry_max_delay, Duration::from_secs(300));
        assert!(!config.qr_terminal);
        assert!(!config.webhooks.allow_private, "only the admin's webhooks reach private addresses by default");
        assert_eq!(
            config.webhooks.retention,
            Some(Duration::from_secs(30 * 86_400)),
            "settled deliveries kept 30 days"
        );
        assert_eq!(config.api_token_file, PathBuf::from("./.api-token"));
        assert_eq!(config.token_origin, TokenOrigin::Configured);
        assert_eq!(config.api_token.expose(), "0123456789abcdef0123");
        assert!(!config.token_is_short());
        assert_eq!(config.generated_token_file(), None);
    }

    #[test]
    fn default_body_limit_fits_a_16_mib_pdf_in_base64() {
        let encoded_len = base64::encoded_len(crate::domain::MAX_PDF_BYTES, true).unwrap();
        assert!(DEFAULT_MAX_BODY_BYTES >= encoded_len + 64 * 1024);
    }

    #[test]
    fn env_overrides() {
        let vars = with_token(&[
            ("PORT", "8080"),
            ("HOST", "127.0.0.1"),
            ("SESSIONS_DIR", "/var/lib/wa"),
            ("LOG_LEVEL", "warn,whatsapp_gateway=debug"),
            ("WHATSAPP_URL", "ws://127.0.0.1:9000/ws/chat"),
            ("WHATSAPP_VERSION", "2.3000.1"),
            ("MAX_BODY_BYTES", "1024"),
            ("RETRY_MAX_ATTEMPTS", "3"),
            ("RETRY_BASE_DELAY_MS", "50"),
            ("RETRY_MAX_DELAY_MS", "200"),
            ("QR_TERMINAL", "TRUE"),
            ("UNRELATED", "ignored"),
        ]);
        let config = Config::from_sources(vars, None).unwrap();
        assert_eq!(config.bind_addr(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.sessions_dir, PathBuf::from("/var/lib/wa"));
        assert_eq!(config.log_level, "warn,whatsapp_gateway=debug");
        assert_eq!(config.whatsapp_url.as_deref(), Some("ws://127.0.0.1:9000/ws/chat"));
        assert_eq!(config.whatsapp_version, Some((2, 3000, 1)));
        assert_eq!(config.max_body_bytes, 1024);
        assert_eq!(config.retry_max_attempts, 3);
        assert_eq!(config.retry_base_delay, Duration::from_millis(50));
        assert_eq!(config.retry_max_delay, Duration::from_millis(200));
        assert!(config.qr_terminal);
    }

    #[test]
    fn http_protection_settings() {
        let config = Config::from_sources(with_token(&[]), None).unwrap();
        assert_eq!(config.http.header_timeout, Duration::from_secs(10));
        assert_eq!(config.http.body_timeout, Duration::from_secs(30));
        assert_eq!(config.http.request_timeout, Duration::from_secs(30));
        assert_eq!(config.http.max_connections, 1024);
        assert_eq!(config.http.max_header_bytes, 16384);
        assert_eq!(config.http.ws_max_message_bytes, 65536);
        assert_eq!(config.http.max_json_bytes, 65536);
        assert_eq!(config.http.max_connections_per_ip, 256);
        assert_eq!(config.http.ws_ping, Duration::from_secs(25));
        assert_eq!(config.http.ws_max_per_token, 64);
        assert_eq!(config.http.auth_failures_per_minute, 60);
        assert_eq!(config.rate_limit, Some(RateLimit { per_second: 100, burst: 200 }));
        assert!(config.cors_allowed_origins.is_empty());
        assert_eq!(config.metrics_listen, None);
        assert_eq!(config.api_tokens_file, None);

        let config = Config::from_sources(
            with_token(&[
                ("RATE_LIMIT_PER_SECOND", "0"),
                ("CORS_ALLOWED_ORIGINS", "https://admin.example.com, http://localhost:5173,"),
                ("METRICS_LISTEN", "127.0.0.1:9100"),
                ("HTTP_MAX_CONNECTIONS", "10"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(config.rate_limit, None);
        assert_eq!(config.cors_allowed_origins, ["https://admin.example.com", "http://localhost:5173"]);
        assert_eq!(config.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(config.http.max_connections, 10);

        assert!(error_of(with_token(&[("CORS_ALLOWED_ORIGINS", "admin.example.com")])).starts_with("invalid CORS"));
        assert!(error_of(with_token(&[("CORS_ALLOWED_ORIGINS", "https://a.com/path")])).starts_with("invalid CORS"));
        assert!(error_of(with_token(&[("METRICS_LISTEN", "9100")])).starts_with("invalid METRICS_LISTEN"));
        assert!(error_of(with_token(&[("HTTP_MAX_HEADER_BYTES", "100")])).starts_with("invalid HTTP_MAX_HEADER"));
        assert!(error_of(with_token(&[("HTTP_HEADER_TIMEOUT_SECS", "0")])).starts_with("invalid HTTP_HEADER"));
        assert!(error_of(with_token(&[("RATE_LIMIT_BURST", "0")])).starts_with("invalid RATE_LIMIT_BURST"));
        assert!(error_of(with_token(&[("HTTP_MAX_CONNECTIONS_PER_IP", "0")])).starts_with("invalid HTTP_MAX_CONN"));
        assert!(error_of(with_token(&[("WS_PING_SECS", "0")])).starts_with("invalid WS_PING_SECS"));
        assert!(error_of(with_token(&[("WS_MAX_PER_TOKEN", "x")])).starts_with("invalid WS_MAX_PER_TOKEN"));
        assert!(error_of(with_token(&[("AUTH_FAILURES_PER_MINUTE", "-1")])).starts_with("invalid AUTH_FAILURES"));
    }

    #[test]
    fn jwt_settings() {
        let config = Config::from_sources(with_token(&[]), None).unwrap();
        assert!(config.jwt.is_none(), "no JWT key, no JWTs");

        let secret = "s".repeat(MIN_JWT_SECRET_LEN);
        let config = Config::from_sources(
            with_token(&[
                ("JWT_SECRET", &secret),
                ("JWT_ISSUER", "https://x.supabase.co/auth/v1"),
                ("JWT_AUDIENCE", "authenticated, app"),
            ]),
            None,
        )
        .unwrap();
        let jwt = config.jwt.unwrap();
        assert_eq!(jwt.secret.as_ref().map(JwtSecret::expose), Some(secret.as_str()));
        assert!(!format!("{jwt:?}").contains(&secret), "the secret is redacted");
        assert_eq!(jwt.issuers, ["https://x.supabase.co/auth/v1"]);
        assert_eq!(jwt.audiences, ["authenticated", "app"]);
        assert_eq!(jwt.session_claim, "sub");
        assert_eq!(jwt.scopes, ["sessions:read", "sessions:write", "messages:send", "messages:read"]);
        assert_eq!((jwt.jwks_refresh, jwt.jwks_min_refresh), (Duration::from_secs(600), Duration::from_secs(30)));

        let config = Config::from_sources(
            with_token(&[
                ("JWT_JWKS_URL", "http://127.0.0.1:9/jwks.json"),
                ("JWT_SESSION_CLAIM", "user_id"),
                ("JWT_SCOPES", "messages:send"),
                ("JWT_JWKS_MIN_REFRESH_SECS", "0"),
            ]),
            None,
        )
        .unwrap();
        let jwt = config.jwt.unwrap();
        assert_eq!((jwt.jwks_url.as_deref(), jwt.secret.is_none()), (Some("http://127.0.0.1:9/jwks.json"), true));
        assert_eq!(
            (jwt.session_claim.as_str(), jwt.scopes.as_slice()),
            ("user_id", ["messages:send".to_owned()].as_slice())
        );
        assert_eq!(jwt.jwks_min_refresh, Duration::ZERO);

        let short = error_of(with_token(&[("JWT_SECRET", "short")]));
        assert!(short.starts_with("invalid JWT_SECRET") && !short.contains("short'"), "{short}");
        assert!(error_of(with_token(&[("JWT_JWKS_URL", "ftp://x")])).starts_with("invalid JWT_JWKS_URL"));
        assert!(error_of(with_token(&[("JWT_PUBLIC_KEY_FILE", "/nonexistent.pem")])).starts_with("invalid JWT_PUBLIC"));
        assert!(error_of(with_token(&[("JWT_ISSUER", "https://x")])).contains("no JWT key is"));
        assert!(
            error_of(with_token(&[("JWT_SECRET", &secret), ("JWT_SCOPES", " , ")])).starts_with("invalid JWT_SCOPES")
        );
        assert!(
            error_of(with_token(&[("JWT_SECRET", &secret), ("JWT_JWKS_REFRESH_SECS", "0")]))
                .starts_with("invalid JWT_JWKS_REFRESH_SECS")
        );
    }

    #[test]
    fn rust_log_overrides_log_level_when_it_is_a_filter() {
        let level = |vars: &[(&str, &str)]| Config::from_sources(with_token(vars), None).unwrap().log_level;
        assert_eq!(level(&[("LOG_LEVEL", "error"), ("RUST_LOG", "whatsapp_gateway=debug")]), "whatsapp_gateway=debug");
        assert_eq!(level(&[("LOG_LEVEL", "error"), ("RUST_LOG", "[[[")]), "error", "an invalid one is ignored");
        assert_eq!(level(&[("LOG_LEVEL", "error"), ("RUST_LOG", " ")]), "error");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = Config::from_sources(with_token(&[("PORT", ""), ("WHATSAPP_URL", "")]), None).unwrap();
        assert_eq!(config.port, 3000);
        assert_eq!(config.whatsapp_url, None);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        assert_eq!(error_of(with_token(&[("PORT", "abc")])), "invalid PORT: 'abc' is not a port number");
        assert_eq!(error_of(with_token(&[("PORT", "70000")])), "invalid PORT: '70000' is not a port number");
        for bad in ["2.3000", "2.3000.1.4", "2.x.1", "v2.3000.1", "2..1"] {
            assert_eq!(
                error_of(with_token(&[("WHATSAPP_VERSION", bad)])),
                format!("invalid WHATSAPP_VERSION: '{bad}' is not a version like 2.3000.1")
            );
        }
        assert!(error_of(with_token(&[("HOST", "example.com")])).starts_with("invalid HOST:"));
        assert!(error_of(with_token(&[("WHATSAPP_URL", "https://x")])).starts_with("invalid WHATSAPP_URL:"));
        assert!(
            error_of(with_token(&[("WHATSAPP_CA_FILE", "/nonexistent/ca.pem")]))
                .starts_with("invalid WHATSAPP_CA_FILE:")
        );
        assert!(error_of(with_token(&[("MAX_BODY_BYTES", "0")])).starts_with("invalid MAX_BODY_BYTES:"));
        assert!(error_of(with_token(&[("RETRY_MAX_ATTEMPTS", "-1")])).starts_with("invalid RETRY_MAX_ATTEMPTS:"));
        assert!(error_of(with_token(&[("QR_TERMINAL", "maybe")])).starts_with("invalid QR_TERMINAL:"));
        assert!(
            error_of(with_token(&[("WEBHOOK_ALLOW_PRIVATE", "maybe")])).starts_with("invalid WEBHOOK_ALLOW_PRIVATE:")
        );
        assert!(error_of(with_token(&[("LOG_LEVEL", "[[[")])).starts_with("invalid LOG_LEVEL:"));
        assert_eq!(
            error_of(with_token(&[("WEBHOOK_RETENTION_DAYS", "a week")])),
            "invalid WEBHOOK_RETENTION_DAYS: 'a week' is not a whole number of days"
        );
        assert_eq!(
            error_of(with_token(&[("RETRY_BASE_DELAY_MS", "5000"), ("RETRY_MAX_DELAY_MS", "1000")])),
            "invalid RETRY_BASE_DELAY_MS: '5000' must not exceed RETRY_MAX_DELAY_MS (1000)"
        );
    }

    #[test]
    fn compat_api_names_dialects_and_picks_the_callbacks_format() {
        use crate::domain::WebhookFormat;
        let config = Config::from_sources(with_token(&[]), None).unwrap();
        assert!(config.compat_api.is_empty(), "off by default");
        assert!(config.webhooks.backend_url.is_none() && config.webhooks.backend_base_url.is_none());

        let config = Config::from_sources(with_token(&[("COMPAT_API", " seed002, SEED000 ,")]), None).unwrap();
        let on: Vec<_> = config.compat_api.iter().collect();
        assert_eq!(on, [CompatDialect::Seed000, CompatDialect::Seed002]);
        assert!(!config.compat_api.contains(CompatDialect::Seed003));
        assert_eq!(
            error_of(with_token(&[("COMPAT_API", "seed000,seed001")])),
            "invalid COMPAT_API: 'seed001' is not a dialect (known: seed000, seed002, seed003, seed004)"
        );

        let format = |pairs: &[(&str, &str)]| {
            let config = Config::from_sources(with_token(pairs), None).unwrap();
            (
                config.webhooks.backend_url.map(|e| (e.url, e.format)),
                config.webhooks.backend_base_url.map(|e| (e.url, e.format)),
            )
        };
        let url = "http://127.0.0.1:8000";
        assert_eq!(
            format(&[("COMPAT_API", "seed000"), ("BACKEND_URL", url)]),
            (Some((url.into(), WebhookFormat::Seed000)), None)
        );
        assert_eq!(
            format(&[("COMPAT_API", "seed002"), ("BACKEND_URL", url)]),
            (Some((url.into(), WebhookFormat::Seed002)), None),
            "seed 002 alone: BACKEND_URL is its backend"
        );
        assert_eq!(
            format(&[("COMPAT_API", "seed000,seed002"), ("BACKEND_URL", url), ("BACKEND_BASE_URL", "http://b")]),
            (Some((url.into(), WebhookFormat::Seed000)), Some(("http://b".into(), WebhookFormat::Seed002))),
            "both: each seed's own variable"
        );
        assert!(error_of(with_token(&[("BACKEND_URL", url)])).starts_with("invalid BACKEND_URL:"));
        assert!(
            error_of(with_token(&[("COMPAT_API", "seed000"), ("BACKEND_BASE_URL", url)]))
                .starts_with("invalid BACKEND_BASE_URL:")
        );
        assert!(
            error_of(with_token(&[("COMPAT_API", "seed002"), ("BACKEND_URL", url), ("BACKEND_BASE_URL", url)]))
                .contains("set one")
        );
        assert!(
            error_of(with_token(&[("COMPAT_API", "seed000"), ("BACKEND_URL", "ftp://x")]))
                .starts_with("invalid BACKEND_URL:")
        );
    }

    #[test]
    fn file_layer_sits_between_defaults_and_env() {
        let dir = TempDir::new();
        let file = dir.0.join("gateway.toml");
        fs::write(&file, "port = 4000\nqr_terminal = true\nwhatsapp_version = \"2.1.3\"\n").unwrap();

        let config = Config::from_sources(with_token(&[]), Some(&file)).unwrap();
        assert_eq!(config.port, 4000);
        assert!(config.qr_terminal);
        assert_eq!(config.whatsapp_version, Some((2, 1, 3)));

        let config = Config::from_sources(with_token(&[("PORT", "5000")]), Some(&file)).unwrap();
        assert_eq!(config.port, 5000);

        let missing = dir.0.join("missing.toml");
        assert!(Config::from_sources(with_token(&[]), Some(&missing)).is_err());
    }

    #[test]
    fn token_is_generated_once_with_mode_0600() {
        let dir = TempDir::new();
        let path = dir.0.join(".api-token");
        let path_str = path.to_str().unwrap();

        let first = Config::from_sources(env(&[("API_TOKEN_FILE", path_str)]), None).unwrap();
        assert_eq!(first.generated_token_file(), Some(path.as_path()));
        let token = first.api_token.expose().to_owned();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fs::read_to_string(&path).unwrap().trim(), token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // Second start: same token, read from the file, not announced again.
        let second =
            Config::from_sources(env(&[("API_TOKEN_FILE", path_str), ("API_STATIC_TOKEN", "")]), None).unwrap();
        assert_eq!(second.token_origin, TokenOrigin::File(path.clone()));
        assert_eq!(second.generated_token_file(), None);
        assert_eq!(second.api_token.expose(), token);
    }

    #[test]
    fn token_file_is_trimmed_and_blank_file_is_an_error() {
        let dir = TempDir::new();
        let path = dir.0.join("token");
        fs::write(&path, "  short-token \n").unwrap();
        let config = Config::from_sources(env(&[("API_TOKEN_FILE", path.to_str().unwrap())]), None).unwrap();
        assert_eq!(config.api_token.expose(), "short-token");
        assert!(config.token_is_short());

        fs::write(&path, "\n").unwrap();
        let err = Config::from_sources(env(&[("API_TOKEN_FILE", path.to_str().unwrap())]), None).unwrap_err();
        assert!(matches!(err, ConfigError::TokenFileEmpty { .. }));
    }

    #[test]
    fn short_configured_token_is_flagged_and_redacted() {
        let config = Config::from_sources(env(&[("API_STATIC_TOKEN", "abc")]), None).unwrap();
        assert!(config.token_is_short());
        assert_eq!(config.api_token.to_string(), "[REDACTED]");
        let debug = format!("{config:?}");
        assert!(debug.contains("[REDACTED]"));
        assert!(!debug.contains("abc"));
    }
}
