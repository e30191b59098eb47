//! Who is calling: one extractor turns a bearer token into a typed [`Caller`] with scopes and
//! sessions, and applies the token's rate limit.
//!
//! `API_STATIC_TOKEN` is the admin token: every scope, every session, no request rate (the
//! queue's bounds answer 429 `QUEUE_FULL` when the gateway is really full, as the Node service's
//! callers expect nothing else). `API_TOKENS_FILE` adds scoped tokens, each with its own rate.
//! With `JWT_*` set, a token shaped like a JWT that is none of those is a user's own JWT
//! ([`jwt`](super::jwt)): a caller named `jwt:<session>` bound to that one session, with
//! `JWT_SCOPES` and a rate of its own; a refused one is a 401 with its reason's code, counted as
//! a failed authentication.
//! Requests with a missing or unknown token are counted per client address: past
//! `AUTH_FAILURES_PER_MINUTE`, that address's unauthenticated requests get 429. Tokens are kept only as SHA-256 digests and a candidate is compared with every
//! one of them in constant time ([`subtle::ConstantTimeEq`], no early exit), so neither timing nor
//! a memory dump reveals them. Rejection reasons are logged at debug; tokens are never logged.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::error::ApiError;
use crate::api::jwt::{JwtSetupError, JwtVerifier, looks_like_jwt};
use crate::api::state::AppState;
use crate::config::{ApiToken, JwtSettings, RateLimit};
use crate::domain::SessionId;

/// The name of `API_STATIC_TOKEN`'s caller; the tokens file may not use it.
const ADMIN_NAME: &str = "admin";

/// Prefix of a WebSocket subprotocol that carries the token: `bearer.<token>`.
const PROTOCOL_PREFIX: &str = "bearer.";

/// Prefix of a JWT user's caller name, `jwt:<session>`; the tokens file may not use it.
const JWT_NAME_PREFIX: &str = "jwt:";

/// JWT users' callers remembered (for their rate and their WebSocket count) before idle ones
/// are forgotten.
const JWT_CALLERS: usize = 10_000;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// List and inspect sessions.
    SessionsRead,
    /// Create, link (the QR WebSocket), restart, log out and delete sessions.
    SessionsWrite,
    /// Send messages (`/api/send-pdf`).
    MessagesSend,
    /// Read message statuses.
    MessagesRead,
    /// Manage webhooks.
    WebhooksWrite,
    /// Scrape `/metrics`.
    MetricsRead,
    /// Everything.
    Admin,
}

impl Scope {
    /// Every scope, in the order the docs list them.
    pub const ALL: [Scope; 7] = [
        Scope::SessionsRead,
        Scope::SessionsWrite,
        Scope::MessagesSend,
        Scope::MessagesRead,
        Scope::WebhooksWrite,
        Scope::MetricsRead,
        Scope::Admin,
    ];

    /// The name used in the tokens file, e.g. `messages:send`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::SessionsRead => "sessions:read",
            Scope::SessionsWrite => "sessions:write",
            Scope::MessagesSend => "messages:send",
            Scope::MessagesRead => "messages:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::MetricsRead => "metrics:read",
            Scope::Admin => "admin",
        }
    }

    /// The scope named `name`, if any.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == name)
    }

    /// What a caller without it is told it may not do.
    fn action(self) -> &'static str {
        match self {
            Scope::SessionsRead => "read sessions (needs sessions:read)",
            Scope::SessionsWrite => "manage or link sessions (needs sessions:write)",
            Scope::MessagesSend => "send messages (needs messages:send)",
            Scope::MessagesRead => "read messages (needs messages:read)",
            Scope::WebhooksWrite => "manage webhooks (needs webhooks:write)",
            Scope::MetricsRead => "read metrics (needs metrics:read)",
            Scope::Admin => "do this (needs admin)",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The sessions a token may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionAccess {
    /// `"*"`.
    All,
    /// A list of session ids.
    Only(HashSet<SessionId>),
}

/// An authenticated caller. Cheap to clone.
#[derive(Clone)]
pub struct Caller {
    inner: Arc<CallerInner>,
}

struct CallerInner {
    name: String,
    scopes: u8,
    sessions: SessionAccess,
    limiter: Option<DefaultDirectRateLimiter>,
    /// WebSockets open with this token.
    sockets: AtomicUsize,
    /// A user's own JWT, bound to its session, which is created on first use.
    jwt_user: bool,
}

/// One open WebSocket of a token, counted until dropped.
pub(crate) struct SocketSlot(Caller);

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.inner.sockets.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Caller {
    fn new(name: String, scopes: &[Scope], sessions: SessionAccess, rate: Option<RateLimit>) -> Caller {
        let scopes = scopes.iter().fold(0, |bits, scope| bits | scope.bit());
        let limiter = rate.and_then(|rate| {
            let per_second = NonZeroU32::new(rate.per_second)?;
            let burst = NonZeroU32::new(rate.burst).unwrap_or(per_second);
            Some(RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)))
        });
        Caller {
            inner: Arc::new(CallerInner {
                name,
                scopes,
                sessions,
                limiter,
                sockets: AtomicUsize::new(0),
                jwt_user: false,
            }),
        }
    }

    /// The caller of a user's own JWT naming `session`.
    fn jwt_user(session: SessionId, scopes: &[Scope], rate: Option<RateLimit>) -> Caller {
        let mut caller = Caller::new(
            format!("{JWT_NAME_PREFIX}{session}"),
            scopes,
            SessionAccess::Only(HashSet::from([session])),
            rate,
        );
        if let Some(inner) = Arc::get_mut(&mut caller.inner) {
            inner.jwt_user = true;
        }
        caller
    }

    /// An admin caller without a rate limit (tests of code that takes a caller).
    #[cfg(test)]
    pub(crate) fn admin_for_tests() -> Caller {
        Caller::new(ADMIN_NAME.into(), &[Scope::Admin], SessionAccess::All, None)
    }

    /// A caller limited to `sessions`, with `messages:read` (tests of code that takes a caller).
    #[cfg(test)]
    pub(crate) fn scoped_for_tests(sessions: &[&str]) -> Caller {
        let ids = sessions.iter().filter_map(|id| SessionId::parse(id).ok()).collect();
        Caller::new("scoped".into(), &[Scope::MessagesRead], SessionAccess::Only(ids), None)
    }

    /// True for a user's own JWT: its one session ([`Caller::home_session`]) is created on first
    /// use ([`crate::api::home_session`]).
    pub fn is_jwt_user(&self) -> bool {
        self.inner.jwt_user
    }

    /// The token's name (`admin` for `API_STATIC_TOKEN`, `jwt:<session>` for a user's JWT):
    /// safe to log.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// True if the token has `scope`, or `admin`.
    pub fn has(&self, scope: Scope) -> bool {
        self.inner.scopes & (scope.bit() | Scope::Admin.bit()) != 0
    }

    /// `Ok` if the token has `scope` (or `admin`), else 403 `FORBIDDEN`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(scope) {
            Ok(())
        } else {
            tracing::debug!(caller = self.name(), scope = scope.as_str(), "scope missing");
            Err(ApiError::Forbidden(scope.action()))
        }
    }

    /// True for `API_STATIC_TOKEN` alone (its name is reserved), not for a file token that has
    /// the `admin` scope too.
    pub(crate) fn is_static_admin(&self) -> bool {
        self.inner.name == ADMIN_NAME
    }

    /// The sessions the token may act on.
    pub fn sessions(&self) -> &SessionAccess {
        &self.inner.sessions
    }

    /// True for the admin: the `admin` scope and every session (`API_STATIC_TOKEN`, or a file
    /// token given both). Only the admin sees every caller's webhooks and may post to private
    /// addresses.
    pub fn is_admin(&self) -> bool {
        self.inner.scopes & Scope::Admin.bit() != 0 && self.inner.sessions == SessionAccess::All
    }

    /// The one session this caller is bound to, for the sibling services' routes that name no
    /// session (seeds 003 and 004 give each user one number): a token limited to exactly one
    /// session. `None` for a caller that may act on several.
    pub fn home_session(&self) -> Option<SessionId> {
        match &self.inner.sessions {
            SessionAccess::Only(ids) if ids.len() == 1 => ids.iter().next().cloned(),
            _ => None,
        }
    }

    /// `Ok` if the token may act on `session`.
    pub fn may_use(&self, session: &SessionId) -> bool {
        match &self.inner.sessions {
            SessionAccess::All => true,
            SessionAccess::Only(ids) => ids.contains(session),
        }
    }

    /// `Ok` if the token has `scope` and may act on `session`, else 403 `FORBIDDEN`.
    pub fn require_session(&self, scope: Scope, session: &SessionId) -> Result<(), ApiError> {
        self.require(scope)?;
        if self.may_use(session) {
            Ok(())
        } else {
            tracing::debug!(caller = self.name(), %session, "session not allowed for this token");
            Err(ApiError::Forbidden("act on this session"))
        }
    }

    /// A place for one more open WebSocket, or 429 `TOO_MANY_WEBSOCKETS` when the token holds
    /// `limit` already.
    pub(crate) fn open_socket(&self, limit: usize) -> Result<SocketSlot, ApiError> {
        let taken = self
            .inner
            .sockets
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < limit).then_some(open + 1));
        match taken {
            Ok(_) => Ok(SocketSlot(self.clone())),
            Err(_) => {
                tracing::debug!(caller = self.name(), limit, "websocket cap reached");
                Err(ApiError::TooManyWebSockets { limit })
            }
        }
    }

    /// Takes one request from the token's bucket, or 429 `RATE_LIMITED` with the wait.
    fn check_rate(&self) -> Result<(), ApiError> {
        let Some(limiter) = &self.inner.limiter else { return Ok(()) };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            tracing::debug!(caller = self.name(), "rate limited");
            ApiError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
        })
    }
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

/// One entry of `API_TOKENS_FILE`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    token: String,
    scopes: Vec<String>,
    #[serde(default)]
    sessions: Option<SessionsField>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SessionsField {
    Star(String),
    List(Vec<String>),
}

/// Why `API_TOKENS_FILE` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    #[error("API_TOKENS_FILE '{}': {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("API_TOKENS_FILE '{}' is not a JSON list of tokens: {source}", path.display())]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("API_TOKENS_FILE '{}', token '{name}': {reason}", path.display())]
    Invalid { path: PathBuf, name: String, reason: String },
}

/// Checks request credentials against the admin token, the scoped tokens and, when configured,
/// the users' own JWTs.
pub struct Authenticator {
    tokens: Vec<([u8; 32], Caller)>,
    failures: FailedAuth,
    jwt: Option<JwtUsers>,
}

/// The users' own JWTs: how they are verified, what they may do, and their callers.
struct JwtUsers {
    verifier: JwtVerifier,
    scopes: Vec<Scope>,
    rate: Option<RateLimit>,
    /// One caller per session, so a user's rate and open WebSockets are counted across requests.
    callers: Mutex<HashMap<SessionId, Caller>>,
}

impl JwtUsers {
    fn caller(&self, session: SessionId) -> Caller {
        let mut callers = self.callers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(caller) = callers.get(&session) {
            return caller.clone();
        }
        if callers.len() >= JWT_CALLERS {
            // Forget the idle ones: no request or WebSocket holds them.
            callers.retain(|_, caller| Arc::strong_count(&caller.inner) > 1);
        }
        let caller = Caller::jwt_user(session.clone(), &self.scopes, self.rate);
        callers.insert(session, caller.clone());
        caller
    }
}

impl Authenticator {
    /// Only the admin token, which has no request rate.
    pub fn new(admin: &ApiToken) -> Authenticator {
        let caller = Caller::new(ADMIN_NAME.into(), &[Scope::Admin], SessionAccess::All, None);
        Authenticator {
            tokens: vec![(sha256(admin.expose().as_bytes()), caller)],
            failures: FailedAuth::new(0),
            jwt: None,
        }
    }

    /// Also takes the users' own JWTs, verified as `settings` say, each user with its own
    /// bucket of `rate`. Reads `JWT_PUBLIC_KEY_FILE`; an unknown scope in `JWT_SCOPES` is an error.
    pub fn with_jwt(mut self, settings: &JwtSettings, rate: Option<RateLimit>) -> Result<Authenticator, JwtSetupError> {
        let scopes = settings
            .scopes
            .iter()
            .map(|name| Scope::parse(name).ok_or_else(|| JwtSetupError::UnknownScope(name.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let verifier = JwtVerifier::from_settings(settings)?;
        self.jwt = Some(JwtUsers { verifier, scopes, rate, callers: Mutex::default() });
        Ok(self)
    }

    /// Counts failed authentications per client address: past `per_minute` (0: no limit), that
    /// address's unauthenticated requests get 429 `TOO_MANY_AUTH_FAILURES`.
    pub fn with_failure_limit(mut self, per_minute: u32) -> Authenticator {
        self.failures = FailedAuth::new(per_minute);
        self
    }

    /// The admin token plus the scoped tokens of `path`, each with its own bucket of `rate`.
    pub fn with_tokens_file(
        admin: &ApiToken,
        path: &Path,
        rate: Option<RateLimit>,
    ) -> Result<Authenticator, TokensFileError> {
        let mut auth = Authenticator::new(admin);
        let text =
            std::fs::read_to_string(path).map_err(|source| TokensFileError::Read { path: path.into(), source })?;
        warn_if_readable_by_others(path);
        let entries: Vec<TokenEntry> =
            serde_json::from_str(&text).map_err(|source| TokensFileError::Parse { path: path.into(), source })?;
        for entry in entries {
            let invalid =
                |reason: String| TokensFileError::Invalid { path: path.into(), name: entry.name.clone(), reason };
            let token = entry.token.trim();
            if entry.name.trim().is_empty() {
                return Err(invalid("the name is empty".into()));
            }
            // A name owns webhook endpoints and idempotency keys, so it names one token only;
            // `admin` is `API_STATIC_TOKEN`'s.
            if auth.tokens.iter().any(|(_, caller)| caller.name() == entry.name) {
                return Err(invalid("the name is used twice (or is 'admin', the admin token's)".into()));
            }
            if entry.name.starts_with(JWT_NAME_PREFIX) {
                return Err(invalid(format!("names starting with '{JWT_NAME_PREFIX}' are the users' JWTs'")));
            }
            if token.len() < crate::config::MIN_TOKEN_LEN {
                return Err(invalid(format!("the token is shorter than {} characters", crate::config::MIN_TOKEN_LEN)));
            }
            let scopes = entry
                .scopes
                .iter()
                .map(|name| Scope::parse(name).ok_or_else(|| invalid(format!("unknown scope '{name}'"))))
                .collect::<Result<Vec<_>, _>>()?;
            let sessions = match &entry.sessions {
                None => SessionAccess::All,
                Some(SessionsField::Star(star)) if star == "*" => SessionAccess::All,
                Some(SessionsField::Star(other)) => {
                    return Err(invalid(format!("sessions must be \"*\" or a list, not '{other}'")));
                }
                Some(SessionsField::List(ids)) => SessionAccess::Only(
                    ids.iter()
                        .map(|id| SessionId::parse(id).map_err(|_| invalid(format!("invalid session id '{id}'"))))
                        .collect::<Result<_, _>>()?,
                ),
            };
            let digest = sha256(token.as_bytes());
            if auth.tokens.iter().any(|(known, _)| bool::from(known.ct_eq(&digest))) {
                return Err(invalid("the token is used twice (or is the admin token)".into()));
            }
            auth.tokens.push((digest, Caller::new(entry.name.clone(), &scopes, sessions, rate)));
        }
        Ok(auth)
    }

    /// How many tokens are known, the admin one included.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Checks a token given outside any header (a Socket.IO handshake's `auth.token`, or an
    /// event's `token` field): the caller, or [`ApiError::InvalidToken`] (a refused JWT: its
    /// 401), counted like any failed authentication; then the token's rate limit.
    pub async fn check_token(&self, token: &str, client: Option<IpAddr>) -> Result<Caller, ApiError> {
        let found = self.identify(token.as_bytes()).await.and_then(|caller| {
            caller.ok_or_else(|| {
                tracing::debug!(reason = "unknown token", "token not authenticated");
                ApiError::InvalidToken
            })
        });
        let caller = self.count_failure(found, client)?;
        caller.check_rate()?;
        Ok(caller)
    }

    /// The caller `candidate` belongs to, comparing it with every token.
    fn find(&self, candidate: &[u8]) -> Option<&Caller> {
        let digest = sha256(candidate);
        let mut found = None;
        for (known, caller) in &self.tokens {
            if bool::from(known.ct_eq(&digest)) {
                found = Some(caller);
            }
        }
        found
    }

    /// The caller of `candidate`: a known token first, else, if it is shaped like one, a user's
    /// JWT (its 401 when refused). `Ok(None)` when it is neither.
    async fn identify(&self, candidate: &[u8]) -> Result<Option<Caller>, ApiError> {
        if let Some(caller) = self.find(candidate) {
            return Ok(Some(caller.clone()));
        }
        let Some(jwt) = &self.jwt else { return Ok(None) };
        let Some(token) = std::str::from_utf8(candidate).ok().filter(|t| looks_like_jwt(t.as_bytes())) else {
            return Ok(None);
        };
        let session = jwt.verifier.verify(token).await?;
        Ok(Some(jwt.caller(session)))
    }

    /// REST check: `Authorization: Bearer <token>`, then the token's rate limit.
    ///
    /// No header, or another scheme → [`ApiError::MissingToken`] (401); an unknown token →
    /// [`ApiError::InvalidToken`] (403), as in the Node service; a refused JWT → its 401; each
    /// becomes 429 `TOO_MANY_AUTH_FAILURES` once `client` has failed too often.
    pub async fn check_bearer(&self, headers: &HeaderMap, client: Option<IpAddr>) -> Result<Caller, ApiError> {
        let found = match bearer_token(headers) {
            None => {
                tracing::debug!(reason = "no bearer token", "request not authenticated");
                Err(ApiError::MissingToken)
            }
            Some(candidate) => self.identify(candidate).await.and_then(|caller| {
                caller.ok_or_else(|| {
                    tracing::debug!(reason = "unknown bearer token", "request not authenticated");
                    ApiError::InvalidToken
                })
            }),
        };
        let caller = self.count_failure(found, client)?;
        caller.check_rate()?;
        Ok(caller)
    }

    /// Counts a failed authentication against the client's address; its error, or 429 once the
    /// address has failed more than its share. Keys we cannot fetch are our failure, not the
    /// client's: not counted.
    fn count_failure(&self, found: Result<Caller, ApiError>, client: Option<IpAddr>) -> Result<Caller, ApiError> {
        match (found, client) {
            (Err(error @ ApiError::TokenKeysUnavailable), _) => Err(error),
            (Err(error), Some(client)) => match self.failures.record(client, Instant::now()) {
                Some(wait) => {
                    tracing::debug!(%client, "too many failed authentications");
                    Err(ApiError::TooManyAuthFailures { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 })
                }
                None => Err(error),
            },
            (found, _) => found,
        }
    }

    /// WebSocket check. Browsers cannot set headers on a WebSocket, so besides
    /// `Authorization: Bearer` the token may come as a `token` query parameter (percent-decoded)
    /// or as a `Sec-WebSocket-Protocol` entry, either `bearer.<token>` or the bare token.
    ///
    /// Returns the caller and the offered protocol that carried the token, which the 101 response
    /// must echo (a browser fails the connection if the server selects none of the protocols it
    /// offered), or `None` when the token came from the header or the query.
    pub async fn check_ws(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<(Caller, Option<String>), ApiError> {
        let found = self.find_ws(headers, query).await;
        let protocol = found.as_ref().ok().and_then(|(_, protocol)| protocol.clone());
        let caller = self.count_failure(found.map(|(caller, _)| caller), client)?;
        caller.check_rate()?;
        Ok((caller, protocol))
    }

    async fn find_ws(&self, headers: &HeaderMap, query: Option<&str>) -> Result<(Caller, Option<String>), ApiError> {
        let mut offered = false;
        // The first refused JWT's reason, if no other candidate authenticates.
        let mut refused = None;

        // Protocols first: if the token is among them, that protocol must be echoed even when
        // the header or query also carried it.
        for protocol in offered_protocols(headers) {
            let (candidate, prefixed) = match protocol.split_at_checked(PROTOCOL_PREFIX.len()) {
                Some((head, tail)) if head.eq_ignore_ascii_case(PROTOCOL_PREFIX) => (tail, true),
                _ => (protocol, false),
            };
            // A bare protocol may be an ordinary application protocol, not a token attempt.
            offered |= prefixed;
            match self.identify(candidate.as_bytes()).await {
                Ok(Some(caller)) => return Ok((caller, Some(protocol.to_owned()))),
                Ok(None) => {}
                Err(error) => {
                    offered = true;
                    refused.get_or_insert(error);
                }
            }
        }

        if let Some(candidate) = bearer_token(headers) {
            offered = true;
            match self.identify(candidate).await {
                Ok(Some(caller)) => return Ok((caller, None)),
                Ok(None) => {}
                Err(error) => {
                    refused.get_or_insert(error);
                }
            }
        }

        if let Some(raw) = query.and_then(|q| query_param(q, "token")) {
            offered = true;
            if let Some(candidate) = percent_decode(raw) {
                match self.identify(&candidate).await {
                    Ok(Some(caller)) => return Ok((caller, None)),
                    Ok(None) => {}
                    Err(error) => {
                        refused.get_or_insert(error);
                    }
                }
            }
        }

        if let Some(error) = refused {
            Err(error)
        } else if offered {
            tracing::debug!(reason = "wrong token", "websocket not authenticated");
            Err(ApiError::InvalidToken)
        } else {
            tracing::debug!(reason = "no token", "websocket not authenticated");
            Err(ApiError::MissingToken)
        }
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authenticator { .. }")
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let client = crate::api::serve::ClientAddr::of(&parts.extensions);
        let caller = state.auth.check_bearer(&parts.headers, client).await?;
        tracing::Span::current().record("caller", caller.name());
        Ok(caller)
    }
}

/// Failed authentications per client address: a bucket of `per_minute` that refills evenly over
/// a minute. Only failures take from it; an empty bucket turns the address's failures into 429.
struct FailedAuth {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    left: f64,
    at: Instant,
}

/// Addresses remembered before full buckets are forgotten.
const FAILED_AUTH_ADDRESSES: usize = 10_000;

impl FailedAuth {
    fn new(per_minute: u32) -> FailedAuth {
        FailedAuth { per_minute, buckets: Mutex::default() }
    }

    /// Records a failure of `client` at `now`: `Some(wait)` if its bucket was empty.
    fn record(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        if self.per_minute == 0 {
            return None;
        }
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let refilled = |bucket: &Bucket| {
            (bucket.left + now.saturating_duration_since(bucket.at).as_secs_f64() * per_sec).min(capacity)
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= FAILED_AUTH_ADDRESSES {
            buckets.retain(|_, bucket| refilled(bucket) < capacity);
        }
        let key = crate::api::serve::client_key(client);
        let bucket = buckets.entry(key).or_insert(Bucket { left: capacity, at: now });
        let left = refilled(bucket);
        if left < 1.0 {
            *bucket = Bucket { left, at: now };
            return Some(Duration::from_secs_f64((1.0 - left) / per_sec));
        }
        *bucket = Bucket { left: left - 1.0, at: now };
        None
    }
}

/// Credentials files should be private: say so when group or others can read one.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(file = %path.display(), "API_TOKENS_FILE is readable by other users; chmod 600 it");
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive); `None` if the header
/// is absent, uses another scheme or has an empty token.
fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Every comma-separated entry of every `Sec-WebSocket-Protocol` header, trimmed.
fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| !protocol.is_empty())
}

/// The raw (still percent-encoded) value of the first `name=` parameter of a query string.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(key, _)| *key == name).map(|(_, value)| value)
}

/// Decodes `%XX` escapes; `None` on a malformed escape. `+` stays `+`: tokens may be base64,
/// where `+` is literal, and a token never contains a space.
fn percent_decode(raw: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = hex_value(bytes.next()?)?;
            let lo = hex_value(bytes.next()?)?;
            out.push((hi << 4) | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "s3cret+token/with=chars";

    fn auth() -> Authenticator {
        Authenticator::new(&ApiToken::new(TOKEN))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[tokio::test]
    async fn bearer_ok() {
        let h = headers(&[("authorization", &format!("Bearer {TOKEN}"))]);
        assert!(auth().check_bearer(&h, None).await.is_ok());
        let h = headers(&[("authorization", &format!("bearer   {TOKEN} "))]);
        assert!(auth().check_bearer(&h, None).await.is_ok());
    }

    #[tokio::test]
    async fn bearer_missing_or_other_scheme_is_401() {
        for h in [
            headers(&[]),
            headers(&[("authorization", "Basic dXNlcjpwYXNz")]),
            headers(&[("authorization", "Bearer")]),
            headers(&[("authorization", "Bearer   ")]),
            headers(&[("authorization", &format!("Bearer{TOKEN}"))]),
            headers(&[("authorization", TOKEN)]),
        ] {
            assert!(matches!(auth().check_bearer(&h, None).await, Err(ApiError::MissingToken)), "{h:?}");
        }
    }

    #[tokio::test]
    async fn bearer_wrong_token_is_403() {
        for wrong in ["nope", "s3cret+token/with=char", "S3CRET+TOKEN/WITH=CHARS"] {
            let h = headers(&[("authorization", &format!("Bearer {wrong}"))]);
            assert!(matches!(auth().check_bearer(&h, None).await, Err(ApiError::InvalidToken)));
        }
    }

    #[tokio::test]
    async fn ws_header_and_query() {
        let h = headers(&[("authorization", &format!("Bearer {TOKEN}"))]);
        assert_eq!(auth().check_ws(&h, None, None).await.unwrap().1, None);

        let encoded = "s3cret%2Btoken%2Fwith%3Dchars";
        let query = format!("foo=1&token={encoded}");
        assert_eq!(auth().check_ws(&headers(&[]), Some(&query), None).await.unwrap().1, None);
        // Unencoded reserved characters are literal too ('+' is not a space).
        let query = format!("token={TOKEN}");
        assert_eq!(auth().check_ws(&headers(&[]), Some(&query), None).await.unwrap().1, None);
    }

    #[tokio::test]
    async fn ws_query_errors() {
        let empty = headers(&[]);
        assert!(matches!(auth().check_ws(&empty, None, None).await, Err(ApiError::MissingToken)));
        assert!(matches!(auth().check_ws(&empty, Some("a=b"), None).await, Err(ApiError::MissingToken)));
        assert!(matches!(auth().check_ws(&empty, Some("token=wrong"), None).await, Err(ApiError::InvalidToken)));
        assert!(matches!(auth().check_ws(&empty, Some("token=%zz"), None).await, Err(ApiError::InvalidToken)));
        assert!(matches!(auth().check_ws(&empty, Some("token="), None).await, Err(ApiError::InvalidToken)));
        let h = headers(&[("authorization", "Bearer wrong")]);
        assert!(matches!(auth().check_ws(&h, None, None).await, Err(ApiError::InvalidToken)));
    }

    #[tokio::test]
    async fn ws_subprotocol_is_echoed() {
        let hex = "0123456789abcdef0123456789abcdef";
        let a = Authenticator::new(&ApiToken::new(hex));

        let h = headers(&[("sec-websocket-protocol", &format!("json, bearer.{hex}"))]);
        assert_eq!(a.check_ws(&h, None, None).await.unwrap().1.as_deref(), Some(format!("bearer.{hex}").as_str()));

        let h = headers(&[("sec-websocket-protocol", "json"), ("sec-websocket-protocol", hex)]);
        assert_eq!(a.check_ws(&h, None, None).await.unwrap().1.as_deref(), Some(hex));

        // Token also in the query: still echo the protocol that carried it.
        let h = headers(&[("sec-websocket-protocol", &format!("Bearer.{hex}"))]);
        let query = format!("token={hex}");
        assert_eq!(
            a.check_ws(&h, Some(&query), None).await.unwrap().1.as_deref(),
            Some(format!("Bearer.{hex}").as_str())
        );
    }

    #[tokio::test]
    async fn ws_subprotocol_errors() {
        let a = auth();
        let h = headers(&[("sec-websocket-protocol", "bearer.wrong")]);
        assert!(matches!(a.check_ws(&h, None, None).await, Err(ApiError::InvalidToken)));
        // A plain application protocol is not a token attempt.
        let h = headers(&[("sec-websocket-protocol", "json")]);
        assert!(matches!(a.check_ws(&h, None, None).await, Err(ApiError::MissingToken)));
        // ...but a valid token elsewhere still authenticates, with nothing to echo.
        let h = headers(&[("sec-websocket-protocol", "json"), ("authorization", &format!("Bearer {TOKEN}"))]);
        assert_eq!(a.check_ws(&h, None, None).await.unwrap().1, None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2f%2F+").unwrap(), b"a b//+");
        assert!(percent_decode("%").is_none());
        assert!(percent_decode("%4").is_none());
        assert!(percent_decode("%g0").is_none());
    }

    #[test]
    fn debug_does_not_leak() {
        assert_eq!(format!("{:?}", auth()), "Authenticator { .. }");
    }

    fn tokens_file(json: &str) -> Result<Authenticator, TokensFileError> {
        let path =
            std::env::temp_dir().join(format!("wg-tokens-{}-{}.json", std::process::id(), rand::random::<u64>()));
        std::fs::write(&path, json).unwrap();
        let result = Authenticator::with_tokens_file(&ApiToken::new(TOKEN), &path, None);
        let _ = std::fs::remove_file(&path);
        result
    }

    fn bearer(token: &str) -> HeaderMap {
        headers(&[("authorization", &format!("Bearer {token}"))])
    }

    #[tokio::test]
    async fn scoped_tokens_have_their_scopes_and_sessions() {
        let a = tokens_file(
            r#"[{"name":"ventas","token":"ventas-token-0123456789","scopes":["messages:send","messages:read"],"sessions":["tienda_lima"]},
                {"name":"linker","token":"linker-token-0123456789","scopes":["sessions:write"],"sessions":"*"}]"#,
        )
        .unwrap();
        assert_eq!(a.token_count(), 3);
        let lima = SessionId::parse("tienda_lima").unwrap();
        let cusco = SessionId::parse("cusco").unwrap();

        let ventas = a.check_bearer(&bearer("ventas-token-0123456789"), None).await.unwrap();
        assert_eq!(ventas.name(), "ventas");
        assert!(ventas.require_session(Scope::MessagesSend, &lima).is_ok());
        assert!(matches!(ventas.require_session(Scope::MessagesSend, &cusco), Err(ApiError::Forbidden(_))));
        assert!(matches!(ventas.require(Scope::SessionsWrite), Err(ApiError::Forbidden(_))));
        assert!(matches!(ventas.require(Scope::MetricsRead), Err(ApiError::Forbidden(_))));

        let linker = a.check_bearer(&bearer("linker-token-0123456789"), None).await.unwrap();
        assert!(linker.require_session(Scope::SessionsWrite, &cusco).is_ok());
        assert!(linker.require(Scope::MessagesSend).is_err());

        assert!(!ventas.is_admin() && !linker.is_admin());
        let admin = a.check_bearer(&bearer(TOKEN), None).await.unwrap();
        assert_eq!(admin.name(), "admin");
        assert!(admin.is_admin());
        for scope in Scope::ALL {
            assert!(admin.require_session(scope, &cusco).is_ok());
        }
        assert!(matches!(a.check_bearer(&bearer("nobody-token-0123456789"), None).await, Err(ApiError::InvalidToken)));
    }

    #[tokio::test]
    async fn only_the_admin_scope_with_every_session_is_the_admin() {
        let a = tokens_file(
            r#"[{"name":"ops","token":"ops-token-0123456789","scopes":["admin"]},
                {"name":"shop","token":"shop-token-0123456789","scopes":["admin"],"sessions":["tienda_lima"]},
                {"name":"hooks","token":"hooks-token-0123456789","scopes":["webhooks:write"],"sessions":"*"}]"#,
        )
        .unwrap();
        assert!(a.check_bearer(&bearer("ops-token-0123456789"), None).await.unwrap().is_admin());
        assert!(!a.check_bearer(&bearer("shop-token-0123456789"), None).await.unwrap().is_admin());
        assert!(!a.check_bearer(&bearer("hooks-token-0123456789"), None).await.unwrap().is_admin());
    }

    #[test]
    fn bad_tokens_files_are_refused_with_the_reason() {
        let err = |json: &str| tokens_file(json).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err("{").contains("not a JSON list"));
        assert!(err(r#"[{"name":"a","token":"short","scopes":[]}]"#).contains("shorter"));
        assert!(
            err(r#"[{"name":"a","token":"aaaaaaaaaaaaaaaaaaaa","scopes":["messages:sned"]}]"#)
                .contains("unknown scope 'messages:sned'")
        );
        assert!(
            err(r#"[{"name":"a","token":"aaaaaaaaaaaaaaaaaaaa","scopes":[],"sessions":["../x"]}]"#)
                .contains("invalid session id")
        );
        assert!(
            err(r#"[{"name":"a","token":"aaaaaaaaaaaaaaaaaaaa","scopes":[],"sessions":"all"}]"#)
                .contains("sessions must be")
        );
        assert!(err(&format!(r#"[{{"name":"a","token":"{TOKEN}","scopes":[]}}]"#)).contains("used twice"));
        assert!(
            err(r#"[{"name":"a","token":"aaaaaaaaaaaaaaaaaaaa","scopes":[]},{"name":"a","token":"bbbbbbbbbbbbbbbbbbbb","scopes":[]}]"#)
                .contains("name is used twice")
        );
        assert!(
            err(r#"[{"name":"admin","token":"aaaaaaaaaaaaaaaaaaaa","scopes":["webhooks:write"],"sessions":["a"]}]"#)
                .contains("name is used twice")
        );
        assert!(
            err(r#"[{"name":"a","token":"aaaaaaaaaaaaaaaaaaaa","scopes":[],"extra":1}]"#).contains("not a JSON list")
        );
    }

    #[tokio::test]
    async fn a_scoped_tokens_rate_limit_answers_429_with_retry_after_and_the_admin_has_none() {
        let path =
            std::env::temp_dir().join(format!("wg-tokens-{}-{}.json", std::process::id(), rand::random::<u64>()));
        std::fs::write(&path, r#"[{"name":"ventas","token":"ventas-token-0123456789","scopes":["messages:send"]}]"#)
            .unwrap();
        let rate = Some(RateLimit { per_second: 1, burst: 2 });
        let a = Authenticator::with_tokens_file(&ApiToken::new(TOKEN), &path, rate).unwrap();
        let _ = std::fs::remove_file(&path);
        let ventas = bearer("ventas-token-0123456789");
        assert!(a.check_bearer(&ventas, None).await.is_ok());
        assert!(a.check_bearer(&ventas, None).await.is_ok());
        match a.check_bearer(&ventas, None).await {
            Err(e @ ApiError::RateLimited { retry_after_secs: 1 }) => {
                assert!(e.to_string().contains("RATE_LIMIT_PER_SECOND"), "names the limit: {e}");
            }
            other => panic!("{other:?}"),
        }
        for _ in 0..1000 {
            assert!(a.check_bearer(&bearer(TOKEN), None).await.is_ok(), "the admin token has no request rate");
        }
    }

    #[tokio::test]
    async fn failed_authentications_are_limited_per_address_and_refill() {
        let a = auth().with_failure_limit(3);
        let from = |last: u8| Some(IpAddr::from([127, 0, 0, last]));
        for _ in 0..3 {
            assert!(matches!(
                a.check_bearer(&bearer("wrong-token-0123456789"), from(7)).await,
                Err(ApiError::InvalidToken)
            ));
        }
        assert!(matches!(a.check_bearer(&HeaderMap::new(), from(7)).await, Err(ApiError::TooManyAuthFailures { .. })));
        match a.check_ws(&HeaderMap::new(), Some("token=nope"), from(7)).await {
            Err(ApiError::TooManyAuthFailures { retry_after_secs }) => assert_eq!(retry_after_secs, 20),
            other => panic!("{other:?}"),
        }
        assert!(a.check_bearer(&bearer(TOKEN), from(7)).await.is_ok(), "a valid token still passes");
        assert!(
            matches!(a.check_bearer(&HeaderMap::new(), from(8)).await, Err(ApiError::MissingToken)),
            "another address"
        );

        // The bucket refills evenly over the minute.
        let failures = FailedAuth::new(3);
        let start = Instant::now();
        let ip = IpAddr::from([10, 0, 0, 1]);
        assert!((0..3).all(|_| failures.record(ip, start).is_none()));
        assert_eq!(failures.record(ip, start), Some(Duration::from_secs(20)));
        assert_eq!(failures.record(ip, start + Duration::from_secs(20)), None, "one failure's worth came back");
        assert!(failures.record(ip, start + Duration::from_secs(20)).is_some());
        assert!(FailedAuth::new(0).record(ip, start).is_none(), "0 means no limit");
    }

    #[tokio::test]
    async fn a_token_holds_at_most_its_share_of_websockets() {
        let a = auth();
        let caller = a.check_bearer(&bearer(TOKEN), None).await.unwrap();
        let first = caller.open_socket(2).unwrap();
        let _second = caller.open_socket(2).unwrap();
        assert!(matches!(caller.open_socket(2), Err(ApiError::TooManyWebSockets { limit: 2 })));
        drop(first);
        assert!(caller.open_socket(2).is_ok(), "a closed socket gives its place back");
    }

    const JWT_SECRET: &str = "a-supabase-jwt-secret-of-32-chars-at-least";

    fn with_users(rate: Option<RateLimit>) -> Authenticator {
        let settings = JwtSettings {
            secret: Some(crate::config::JwtSecret::new(JWT_SECRET)),
            public_key_file: None,
            jwks_url: None,
            jwks_refresh: Duration::from_secs(600),
            jwks_min_refresh: Duration::from_secs(30),
            issuers: vec![],
            audiences: vec![],
            session_claim: "sub".into(),
            scopes: crate::config::DEFAULT_JWT_SCOPES.split(',').map(str::to_owned).collect(),
        };
        auth().with_jwt(&settings, rate).unwrap()
    }

    fn user_jwt(sub: &str, secret: &str, exp_from_now: i64) -> String {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let claims = serde_json::json!({"sub": sub, "exp": now + exp_from_now, "aud": "authenticated"});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_users_jwt_is_a_caller_of_its_one_session_with_the_user_scopes() {
        let a = with_users(Some(RateLimit { per_second: 1, burst: 2 }));
        let token = user_jwt("ana@example.com", JWT_SECRET, 600);
        let caller = a.check_bearer(&bearer(&token), None).await.unwrap();
        let home = caller.home_session().expect("one session");
        assert_eq!(Some(home.clone()), SessionId::from_identity("ana@example.com"));
        assert_eq!(caller.name(), format!("jwt:{home}"));
        assert!(caller.is_jwt_user() && !caller.is_admin());
        for scope in [Scope::SessionsRead, Scope::SessionsWrite, Scope::MessagesSend, Scope::MessagesRead] {
            assert!(caller.require_session(scope, &home).is_ok());
        }
        assert!(caller.require(Scope::WebhooksWrite).is_err() && caller.require(Scope::MetricsRead).is_err());
        assert!(!caller.may_use(&SessionId::parse("otra").unwrap()));
        assert!(!format!("{caller:?}").contains(&token), "the token is never in the caller");

        // The same user is one caller across requests and ways in: one bucket, one socket count.
        let (again, protocol) = a.check_ws(&headers(&[]), Some(&format!("token={token}")), None).await.unwrap();
        assert_eq!((again.name(), protocol), (caller.name(), None));
        let _slot = caller.open_socket(1).unwrap();
        assert!(again.open_socket(1).is_err());
        assert!(matches!(a.check_token(&token, None).await, Err(ApiError::RateLimited { .. })));

        // A static token still wins, and an unknown one that is no JWT is still 403.
        assert!(a.check_bearer(&bearer(TOKEN), None).await.unwrap().is_admin());
        assert!(matches!(a.check_bearer(&bearer("nope"), None).await, Err(ApiError::InvalidToken)));
    }

    #[tokio::test]
    async fn refused_jwts_are_401s_counted_as_failed_authentications() {
        let a = with_users(None).with_failure_limit(2);
        let from = Some(IpAddr::from([127, 0, 0, 9]));
        let expired = user_jwt("ana", JWT_SECRET, -3600);
        assert!(matches!(a.check_bearer(&bearer(&expired), from).await, Err(ApiError::TokenExpired)));
        let forged = user_jwt("ana", "another-secret-of-at-least-32-chars!!", 600);
        let h = headers(&[("sec-websocket-protocol", &format!("bearer.{forged}"))]);
        assert!(matches!(a.check_ws(&h, None, from).await, Err(ApiError::TokenSignature)));
        assert!(matches!(a.check_token(&expired, from).await, Err(ApiError::TooManyAuthFailures { .. })));

        // Without JWT settings a JWT is just an unknown token.
        let good = user_jwt("ana", JWT_SECRET, 600);
        assert!(matches!(auth().check_bearer(&bearer(&good), None).await, Err(ApiError::InvalidToken)));
    }

    #[test]
    fn the_tokens_file_may_not_take_a_jwt_users_name() {
        let err = tokens_file(r#"[{"name":"jwt:ana","token":"aaaaaaaaaaaaaaaaaaaa","scopes":[]}]"#).err().unwrap();
        assert!(err.to_string().contains("users' JWTs"), "{err}");
    }

    #[test]
    fn an_unknown_jwt_scope_stops_the_start() {
        let settings = JwtSettings {
            secret: None,
            public_key_file: None,
            jwks_url: Some("http://127.0.0.1:9/jwks".into()),
            jwks_refresh: Duration::from_secs(600),
            jwks_min_refresh: Duration::ZERO,
            issuers: vec![],
            audiences: vec![],
            session_claim: "sub".into(),
            scopes: vec!["messages:send".into(), "messages:sned".into()],
        };
        let err = auth().with_jwt(&settings, None).err().unwrap();
        assert_eq!(err.to_string(), "invalid JWT_SCOPES: unknown scope 'messages:sned'");
    }

    #[test]
    fn scope_names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("Admin"), None);
    }
}
