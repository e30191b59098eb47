//! Socket.IO on the HTTP port, at `/socket.io/`, for the frontends of seeds 003 and 004
//! (`COMPAT_API`), with socketioxide: both transports (long polling, which a default `io()`
//! starts with, and WebSocket, which seed 003's `transports: ['websocket']` asks for).
//!
//! **Where it sits.** A tower layer on the router, inside the request id, trace, CORS and metrics
//! layers and outside the per-route deadline: a long poll is held up to the ping interval. Its
//! connections are the accept loop's like any other (the connection cap, the per-address
//! share, the idle clock; an upgraded WebSocket is exempt from the idle clock, and kept honest
//! by Engine.IO's ping every `WS_PING_SECS`). Without seed003 or seed004 in `COMPAT_API` there
//! is no layer and `/socket.io/` is a 404.
//!
//! **Who is calling.** A token (ours, or a JWT once those are accepted) in the handshake's
//! `auth.token` (seed 004's `io(url, {auth: {token}})`) binds the socket at once; a wrong one
//! is refused with a `connect_error` whose message starts with our error code. Seed 003's
//! clients connect without one and carry `{token}` in each event instead; their socket is bound
//! by its first `join` or `get-qr`. Every token is checked by
//! [`Authenticator::check_token`](crate::api::auth::Authenticator::check_token) (failures
//! counted per address, the token's rate applied), and a bound socket holds one of the token's
//! `WS_MAX_PER_TOKEN` places, like our WebSockets. The session is always the caller's own
//! ([`Caller::home_session`]).
//!
//! **Rooms.** A bound socket joins its session's room of its dialect (`seed003:<id>`,
//! `seed004:<id>`). One forwarder task reads the event bus and emits each event to the rooms of
//! its session, as each dialect spells it (`seed003::socket_event`, `seed004::socket_event`):
//! no socket ever gets another session's events.
//!
//! **Tasks.** The forwarder and the work of every event a client sends run on the shutdown
//! tracker and stop when the gateway stops; socketioxide's own per-socket tasks end when
//! [`SocketIo::close`] disconnects every socket, which shutdown calls.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler as _;
use socketioxide::layer::SocketIoLayer;
use socketioxide::{SendError, SocketIo};
use tokio::sync::broadcast;

use crate::api::auth::{Caller, Scope, SocketSlot};
use crate::api::compat::{common, seed003, seed004};
use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::domain::SessionId;
use crate::events::GatewayEvent;
use crate::session::Watcher;

/// The Socket.IO dialects this gateway speaks, from `COMPAT_API`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Dialects {
    pub seed003: bool,
    pub seed004: bool,
}

/// One of the dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Seed003,
    Seed004,
}

impl Dialect {
    /// What the rooms of this dialect start with.
    fn prefix(self) -> &'static str {
        match self {
            Dialect::Seed003 => "seed003:",
            Dialect::Seed004 => "seed004:",
        }
    }

    /// The room of a session's sockets of this dialect.
    fn room(self, session: &SessionId) -> String {
        format!("{}{session}", self.prefix())
    }
}

/// What a dialect emits for an event of the bus: an event name and its arguments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Emit {
    pub event: &'static str,
    pub payload: Payload,
}

/// The arguments of an emitted event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    /// `socket.emit("chats-updated")`: no argument.
    Nothing,
    /// One argument.
    One(Value),
}

impl Emit {
    pub(crate) fn one(event: &'static str, value: impl Serialize) -> Option<Emit> {
        serde_json::to_value(value).ok().map(|value| Emit { event, payload: Payload::One(value) })
    }
}

/// The layer that serves `/socket.io/`, or `None` when neither dialect is on.
pub(crate) fn layer(state: &AppState, dialects: Dialects) -> Option<SocketIoLayer> {
    if !dialects.seed003 && !dialects.seed004 {
        return None;
    }
    let limit = u64::try_from(state.limits.ws_max_message_bytes).unwrap_or(u64::MAX);
    let (layer, io) = SocketIo::builder()
        .ping_interval(state.limits.ws_ping)
        .max_payload(limit)
        .ws_max_message_size(state.limits.ws_max_message_bytes)
        .build_layer();
    let (on_connect_state, auth_state) = (state.clone(), state.clone());
    let on_connect = move |socket: SocketRef| {
        let state = on_connect_state.clone();
        async move { on_connect(&state, &socket, dialects) }
    };
    let authenticate = move |socket: SocketRef, TryData(auth): TryData<Value>| {
        let state = auth_state.clone();
        async move { authenticate(&state, &socket, auth.ok(), dialects).await }
    };
    io.ns("/", on_connect.with(authenticate));
    state.shutdown.spawn(forward(io, state.clone(), dialects));
    Some(layer)
}

/// A socket's caller, and its place among the token's open sockets.
#[derive(Clone)]
struct Bound {
    caller: Caller,
    _slot: Arc<SocketSlot>,
}

/// A socket that asked for a QR: its session keeps linking while it is open.
#[derive(Clone)]
struct KeepLinking {
    session: SessionId,
    _watcher: Arc<Watcher>,
}

/// Why a handshake was refused: our error code and message, as the `connect_error` message.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Refused {
        Refused(format!("{}: {error}", error.code()))
    }
}

/// The handshake: a token in `auth.token` binds the socket now; none is fine for seed 003's
/// clients, which send theirs with each event.
async fn authenticate(
    state: &AppState,
    socket: &SocketRef,
    auth: Option<Value>,
    dialects: Dialects,
) -> Result<(), Refused> {
    let token = auth.as_ref().and_then(|auth| auth.get("token")).and_then(Value::as_str);
    let Some(token) = token else {
        return if dialects.seed003 { Ok(()) } else { Err(ApiError::MissingToken.into()) };
    };
    let caller = state.auth.check_token(token, client_ip(socket)).await?;
    // A token in the handshake is seed 004's way, whose socket reads its session's events.
    common::home(&caller, Scope::MessagesRead)?;
    bind(state, socket, caller)?;
    Ok(())
}

fn on_connect(state: &AppState, socket: &SocketRef, dialects: Dialects) {
    tracing::debug!(sid = %socket.id, transport = ?socket.transport_type(), "socket.io client connected");
    if dialects.seed003 {
        seed003::register(state, socket);
    }
    if dialects.seed004 {
        seed004::register(state, socket);
    }
    socket.on_disconnect(async |socket: SocketRef| {
        // Its session stops linking (if nobody else watches) and its token's place is free.
        socket.extensions.remove::<KeepLinking>();
        socket.extensions.remove::<Bound>();
        tracing::debug!(sid = %socket.id, "socket.io client disconnected");
    });
}

/// The client's address, as the accept loop tagged the handshake request.
fn client_ip(socket: &SocketRef) -> Option<IpAddr> {
    crate::api::serve::ClientAddr::of(&socket.req_parts().extensions)
}

/// Checks a token an event carries (seed 003's `{token}`).
pub(crate) async fn check_token(state: &AppState, socket: &SocketRef, token: Option<&str>) -> Result<Caller, ApiError> {
    let token = token.filter(|t| !t.is_empty()).ok_or(ApiError::MissingField("token"))?;
    state.auth.check_token(token, client_ip(socket)).await
}

/// The caller the handshake bound the socket to, if any.
pub(crate) fn bound_caller(socket: &SocketRef) -> Option<Caller> {
    socket.extensions.get::<Bound>().map(|bound| bound.caller)
}

/// Binds the socket to `caller`, taking one of the token's socket places unless the socket holds
/// one of this caller's already.
fn bind(state: &AppState, socket: &SocketRef, caller: Caller) -> Result<(), ApiError> {
    if let Some(bound) = socket.extensions.get::<Bound>()
        && bound.caller.name() == caller.name()
        && bound.caller.home_session() == caller.home_session()
    {
        return Ok(());
    }
    let slot = caller.open_socket(state.limits.ws_max_per_token)?;
    socket.extensions.insert(Bound { caller, _slot: Arc::new(slot) });
    Ok(())
}

/// Binds the socket to `caller` and puts it in `session`'s room of `dialect` (and in no other
/// session's room of it).
pub(crate) fn join(
    state: &AppState,
    socket: &SocketRef,
    dialect: Dialect,
    caller: Caller,
    session: &SessionId,
) -> Result<(), ApiError> {
    bind(state, socket, caller)?;
    let room = dialect.room(session);
    for other in socket.rooms() {
        if other.starts_with(dialect.prefix()) && *other != room {
            socket.leave(other);
        }
    }
    socket.join(room);
    Ok(())
}

/// Keeps `session` linking while the socket is open (a `get-qr`), as an open
/// `/ws/session/{id}` does.
pub(crate) async fn keep_linking(state: &AppState, socket: &SocketRef, session: &SessionId) -> Result<(), ApiError> {
    if socket.extensions.get::<KeepLinking>().is_some_and(|keep| &keep.session == session) {
        return Ok(());
    }
    let watcher = state.sessions.watch(session).await?;
    socket.extensions.insert(KeepLinking { session: session.clone(), _watcher: Arc::new(watcher) });
    Ok(())
}

/// Emits to one socket. A socket whose buffer is full is not reading: it is disconnected.
pub(crate) fn emit(socket: &SocketRef, emit: &Emit) {
    let sent = match &emit.payload {
        Payload::Nothing => socket.emit(emit.event, &[(); 0]),
        Payload::One(value) => socket.emit(emit.event, value),
    };
    match sent {
        Ok(()) => {}
        Err(SendError::Socket(socketioxide::SocketError::InternalChannelFull)) => {
            tracing::debug!(sid = %socket.id, "socket.io client too slow; disconnected");
            let _ = socket.clone().disconnect();
        }
        Err(e) => tracing::debug!(sid = %socket.id, error = %e, "socket.io emit failed"),
    }
}

/// Registers `work` for the client event `event`: it runs on the shutdown tracker, with the
/// event's first argument (`null` when there is none), and stops when the gateway stops.
pub(crate) fn on<F, Fut>(state: &AppState, socket: &SocketRef, event: &'static str, work: F)
where
    F: Fn(AppState, SocketRef, Value) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let state = state.clone();
    socket.on(event, move |socket: SocketRef, TryData(data): TryData<Value>| {
        let (state, work) = (state.clone(), work.clone());
        async move {
            let cancel = state.shutdown.token();
            let task = work(state.clone(), socket, data.unwrap_or(Value::Null));
            state.shutdown.spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = task => {}
                }
            });
        }
    });
}

/// The forwarder: every event of the bus, to its session's rooms, in each dialect's words.
/// Closes every socket when the gateway stops.
async fn forward(io: SocketIo, state: AppState, dialects: Dialects) {
    let mut events = state.events.subscribe();
    loop {
        let event = tokio::select! {
            () = state.shutdown.cancelled() => break,
            event = events.recv() => event,
        };
        match event {
            Ok(event) => {
                if dialects.seed003 {
                    to_room(&io, Dialect::Seed003, &event, seed003::socket_event(&event)).await;
                }
                if dialects.seed004 {
                    to_room(&io, Dialect::Seed004, &event, seed004::socket_event(&event)).await;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "socket.io clients missed events: the event bus ran ahead of them");
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    io.close().await;
}

async fn to_room(io: &SocketIo, dialect: Dialect, event: &GatewayEvent, emit: Option<Emit>) {
    let Some(emit) = emit else { return };
    let Ok(session) = SessionId::parse(&event.session_id) else { return };
    let room = io.to(dialect.room(&session));
    let sent = match &emit.payload {
        Payload::Nothing => room.emit(emit.event, &[(); 0]).await,
        Payload::One(value) => room.emit(emit.event, value).await,
    };
    if let Err(e) = sent {
        tracing::debug!(event = emit.event, error = %e, "socket.io broadcast incomplete");
    }
}
