//! The seed's admin WebSocket, `/ws/session/{sessionId}`: `handshake` checks and answers the
//! upgrade (RFC 6455, with typed rejections in our error shape), `pump` pushes the session's
//! frames. The upgraded socket leaves hyper's tracking, so it is spawned on the shutdown
//! tracker and closed with 1001 when the gateway stops.

mod events;
mod handshake;
mod pump;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use std::time::Duration;

use futures_util::SinkExt as _;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::auth::Scope;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::openapi::SessionPath;
use crate::api::state::AppState;
use crate::session::SessionError;

pub use pump::{Frame, StatusFrame};

/// How long a close reply may take to leave.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The close a socket gets when its pongs stopped.
const NO_PONG: (CloseCode, &str) = (CloseCode::Policy, "no pong");

/// The close code for a read error the peer caused, if the socket can still carry it: 1002 for
/// an invalid frame (unmasked, reserved bits, a bad close code), 1007 for invalid UTF-8, 1009
/// for a message over `WS_MAX_MESSAGE_BYTES`.
fn close_for(error: &tokio_tungstenite::tungstenite::Error) -> Option<(CloseCode, &'static str)> {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Protocol(_) => Some((CloseCode::Protocol, "protocol error")),
        Error::Utf8(_) => Some((CloseCode::Invalid, "invalid utf-8")),
        Error::Capacity(_) => Some((CloseCode::Size, "message too big")),
        _ => None,
    }
}

/// Answers the peer's Close (RFC 6455 §5.5.1). tungstenite queued the reply when it read the
/// Close: the peer's code echoed, or 1002 when that code is not one a peer may send. Flushing
/// sends it.
async fn answer_close<S>(socket: &mut S)
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
}

/// A ping every `WS_PING_SECS`; a peer that let the previous ping go unanswered by the next one
/// (and sent nothing else meanwhile) is gone.
struct Keepalive {
    tick: tokio::time::Interval,
    heard: bool,
}

impl Keepalive {
    fn new(every: Duration) -> Keepalive {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Keepalive { tick, heard: true }
    }

    /// The peer sent something: a pong, or any frame.
    fn heard(&mut self) {
        self.heard = true;
    }

    /// Waits for the next ping's turn: `true` to send it, `false` if the last one went unanswered.
    async fn due(&mut self) -> bool {
        self.tick.tick().await;
        if !self.heard {
            metrics::counter!(crate::metrics::WS_PING_TIMEOUTS).increment(1);
            return false;
        }
        self.heard = false;
        true
    }
}

/// The headers of a WebSocket opening handshake (RFC 6455 §4.1); browsers send them.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Only documents the headers; `handshake` checks them.
struct UpgradeHeaders {
    /// `Upgrade` (a token list that contains it).
    #[param(rename = "Connection", pattern = "^[Uu]pgrade$", example = "Upgrade")]
    connection: String,
    /// `websocket`.
    #[param(rename = "Upgrade", pattern = "^websocket$", example = "websocket")]
    upgrade: String,
    /// `13`.
    #[param(rename = "Sec-WebSocket-Version", pattern = "^13$", example = "13")]
    version: String,
    /// 16 random bytes, base64.
    #[param(
        rename = "Sec-WebSocket-Key",
        pattern = "^[A-Za-z0-9+/]{21}[AQgw]==$",
        example = "dGhlIHNhbXBsZSBub25jZQ=="
    )]
    key: String,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(session_socket)).routes(routes!(events_socket))
}

/// Everything that happens, live: a WebSocket of `{"id","event","sessionId","timestamp","data"}`
/// text frames (needs `messages:read`; only the token's sessions).
///
/// Events: `session.status` (`{"status","reason"}`), `session.qr` (`{"qr","qrPng","expiresAt"}`),
/// `session.connected` (`{"me"}`), `message.received` (the stored message, as
/// `GET /api/sessions/{id}/messages` lists it), `message.status` (`{"messageId","status","type",
/// "lastError"}`). A reader that falls behind gets `{"event":"lagged","data":{"missed":N}}`. The
/// token may come as a bearer header, `?token=`, or the subprotocol `bearer.TOKEN`.
///
/// In a fleet (`DATABASE_URL`), any gateway shows the events of every gateway: session events
/// from the state the number's gateway records, message events passed on through Postgres at
/// most once each. Those a gateway's database listener misses while it reconnects are not sent
/// again: webhooks are the durable way to receive every event.
#[utoipa::path(get, path = "/ws/events", tag = "messages",
    params(UpgradeHeaders,
        ("token" = Option<String>, Query, description = "The API token, for browsers (prefer the bearer.TOKEN subprotocol)"),
        ("sessions" = Option<String>, Query, description = "Only these sessions, comma-separated"),
        ("types" = Option<String>, Query, description = "Only these events, comma-separated, e.g. message.received,session.status"),
    ),
    security(("bearer" = []), ("query_token" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Invalid filter (INVALID_SESSION_ID, INVALID_EVENT_TYPE) or Sec-WebSocket-Key (BAD_WEBSOCKET_KEY)", body = ErrorBody),
        (status = 401, description = "No token (MISSING_TOKEN), or a user's JWT refused (TOKEN_MALFORMED, TOKEN_ALGORITHM, TOKEN_SIGNATURE, TOKEN_EXPIRED, TOKEN_NOT_YET_VALID, TOKEN_ISSUER, TOKEN_AUDIENCE, TOKEN_CLAIM_MISSING)", body = ErrorBody),
        (status = 403, description = "Unknown token (INVALID_TOKEN) or not allowed (FORBIDDEN)", body = ErrorBody),
        (status = 426, description = "Not a WebSocket upgrade (UPGRADE_REQUIRED, UNSUPPORTED_WEBSOCKET_VERSION)", body = ErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED), too many failed authentications from this address (TOO_MANY_AUTH_FAILURES), or the token holds WS_MAX_PER_TOKEN sockets already (TOO_MANY_WEBSOCKETS)", body = ErrorBody),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Shutting down (SHUTTING_DOWN), or the JWT keys cannot be fetched (TOKEN_KEYS_UNAVAILABLE)", body = ErrorBody),
    ))]
async fn events_socket(State(state): State<AppState>, mut req: Request) -> Result<Response, ApiError> {
    let (headers, query, from) = credentials(&req);
    let (caller, protocol) = state.auth.check_ws(&headers, query.as_deref(), from).await?;
    caller.require(Scope::MessagesRead)?;
    let filter = events::Filter::from_query(caller.clone(), req.uri().query())?;
    let upgrade = match handshake::validate_upgrade(&req) {
        Ok(info) => info,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let slot = caller.open_socket(state.limits.ws_max_per_token)?;
    let ping = state.limits.ws_ping;
    // Subscribed before the 101: nothing published after the answer is missed. While it is
    // open, the journal records message.status events for it (in a fleet, every gateway's).
    let subscription = state.events.subscribe();
    let statuses = filter.wants_statuses().then(|| (state.journal.want_status_events(), state.events.want_statuses()));
    spawn_upgraded(&state, &mut req, tracing::info_span!("ws_events"), move |socket, cancel| async move {
        events::serve(socket, subscription, filter, ping, cancel).await;
        drop(statuses);
        drop(slot);
    });
    Ok(upgrade.switching_protocols(protocol.as_deref()))
}

/// Link a number: a WebSocket that pushes `{"event","data"}` frames (needs `sessions:write`).
///
/// Frames: `{"event":"status","data":"initializing"}`, `{"event":"qr","data":"2@…"}` (fresh ones
/// keep coming while someone watches), `{"event":"status","data":"connected"}` then close 1000,
/// `{"event":"status","data":"already_connected"}` then close 1000,
/// `{"event":"status","data":"disconnected"}`, `{"event":"error","data":"…"}`. The token may come
/// as a bearer header, as `?token=`, or as the subprotocol `bearer.TOKEN` (echoed). A new session
/// id is added to `sessions.config.json`.
#[utoipa::path(get, path = "/ws/session/{sessionId}", tag = "sessions",
    params(SessionPath, UpgradeHeaders,
        ("token" = Option<String>, Query, description = "The API token, for browsers (prefer the bearer.TOKEN subprotocol)"),
    ),
    security(("bearer" = []), ("query_token" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Invalid session id (INVALID_SESSION_ID) or Sec-WebSocket-Key (BAD_WEBSOCKET_KEY)", body = ErrorBody),
        (status = 401, description = "No token (MISSING_TOKEN), or a user's JWT refused (TOKEN_MALFORMED, TOKEN_ALGORITHM, TOKEN_SIGNATURE, TOKEN_EXPIRED, TOKEN_NOT_YET_VALID, TOKEN_ISSUER, TOKEN_AUDIENCE, TOKEN_CLAIM_MISSING)", body = ErrorBody),
        (status = 403, description = "Unknown token (INVALID_TOKEN) or not allowed (FORBIDDEN)", body = ErrorBody),
        (status = 426, description = "Not a WebSocket upgrade (UPGRADE_REQUIRED, UNSUPPORTED_WEBSOCKET_VERSION)", body = ErrorBody),
        (status = 429, description = "Rate limited (RATE_LIMITED), too many failed authentications from this address (TOO_MANY_AUTH_FAILURES), or the token holds WS_MAX_PER_TOKEN sockets already (TOO_MANY_WEBSOCKETS)", body = ErrorBody),
        (status = 500, description = "Internal error (INTERNAL)", body = ErrorBody),
        (status = 503, description = "Shutting down (SHUTTING_DOWN), or the JWT keys cannot be fetched (TOKEN_KEYS_UNAVAILABLE)", body = ErrorBody),
    ))]
async fn session_socket(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let (headers, query, from) = credentials(&req);
    let (caller, protocol) = state.auth.check_ws(&headers, query.as_deref(), from).await?;
    let id = crate::api::sessions::session_id(path)?;
    caller.require_session(Scope::SessionsWrite, &id)?;
    let upgrade = match handshake::validate_upgrade(&req) {
        Ok(info) => info,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let slot = caller.open_socket(state.limits.ws_max_per_token)?;
    let ping = state.limits.ws_ping;
    let watcher = state.sessions.watch(&id).await.map_err(|e| match e {
        SessionError::ShuttingDown => ApiError::ShuttingDown,
        other => ApiError::internal(other),
    })?;
    spawn_upgraded(&state, &mut req, tracing::info_span!("ws", session = %id), move |socket, cancel| async move {
        let open = metrics::gauge!(crate::metrics::WS_OPEN);
        open.increment(1.0);
        pump::serve(socket, watcher, ping, cancel).await;
        open.decrement(1.0);
        drop(slot);
    });
    Ok(upgrade.switching_protocols(protocol.as_deref()))
}

/// What the WebSocket check reads, copied out of the request: its body is not `Sync`, so the
/// check's future may not hold a reference into it.
fn credentials(req: &Request) -> (axum::http::HeaderMap, Option<String>, Option<std::net::IpAddr>) {
    (req.headers().clone(), req.uri().query().map(str::to_owned), client(req))
}

/// The client's address, as the accept loop tagged the request.
fn client(req: &Request) -> Option<std::net::IpAddr> {
    crate::api::serve::ClientAddr::of(req.extensions())
}

/// The socket a successful upgrade hands over.
type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Runs `serve` on the socket once hyper hands the upgraded connection over. The upgraded
/// socket leaves hyper's tracking, so it runs on the shutdown tracker, with a token that fires
/// when the gateway stops.
fn spawn_upgraded<F, Fut>(state: &AppState, req: &mut Request, span: tracing::Span, serve: F)
where
    F: FnOnce(Socket, tokio_util::sync::CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let on_upgrade = hyper::upgrade::on(req);
    let cancel = state.shutdown.token();
    let config = handshake::socket_config(state.limits.ws_max_message_bytes);
    state.shutdown.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket =
                        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                    serve(socket, cancel).await;
                }
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            }
        }
        .instrument(span),
    );
}
