//! The HTTP side: the accept loop with graceful shutdown, routing, and the handlers of
//! `/api/send-pdf`, `/health` and the `/ws/session/:sessionId` upgrade.

pub mod auth;
pub mod error;
pub mod send_pdf;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::journal::IdempotencyKey;
use crate::queue::{EnqueueError, Queue};
use crate::session::{SessionId, SessionManager};
use crate::shutdown::Shutdown;
use crate::ws;
use auth::Authenticator;
use error::ApiError;
use send_pdf::{SendPdfAccepted, SendPdfRequest};
use sha2::{Digest, Sha256};

/// How long in-flight HTTP requests get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// What every request handler needs.
pub(crate) struct Ctx {
    pub(crate) auth: Authenticator,
    pub(crate) sessions: SessionManager,
    pub(crate) queue: Queue,
    pub(crate) shutdown: Shutdown,
    pub(crate) max_body_bytes: usize,
}

/// The routes, by method and path.
enum Route {
    Health,
    SendPdf,
    MessageStatus(String),
    SessionSocket(String),
}

fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let allow = |allow: &'static str| ApiError::MethodNotAllowed { allow };
    match path {
        "/health" => (method == Method::GET || method == Method::HEAD).then_some(Route::Health).ok_or(allow("GET")),
        "/api/send-pdf" => (method == Method::POST).then_some(Route::SendPdf).ok_or(allow("POST")),
        _ => {
            let tail = |prefix: &str| path.strip_prefix(prefix).filter(|id| !id.is_empty() && !id.contains('/'));
            if let Some(id) = tail("/ws/session/") {
                (method == Method::GET).then(|| Route::SessionSocket(id.to_owned())).ok_or(allow("GET"))
            } else if let Some(id) = tail("/api/messages/") {
                (method == Method::GET).then(|| Route::MessageStatus(id.to_owned())).ok_or(allow("GET"))
            } else {
                Err(ApiError::NotFound)
            }
        }
    }
}

/// Accepts connections until shutdown, then lets in-flight requests finish.
pub(crate) async fn serve(listener: TcpListener, ctx: Arc<Ctx>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let cancel = ctx.shutdown.token();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let ctx = ctx.clone();
        let service = hyper::service::service_fn(move |req| handle(ctx.clone(), req));
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).into_owned();
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

async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match route(req.method(), req.uri().path()) {
        Ok(Route::Health) => Ok(health(&ctx)),
        Ok(Route::SendPdf) => send_pdf(&ctx, req).await,
        Ok(Route::MessageStatus(id)) => message_status(&ctx, &id, &req).await,
        Ok(Route::SessionSocket(id)) => session_socket(&ctx, id, req).await,
        Err(e) => Err(e),
    };
    Ok(response.unwrap_or_else(ApiError::into_response))
}

/// A JSON response: the one place that serialises a body and sets the content type.
pub(crate) fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    // Our bodies are plain structs of strings and numbers; an empty object beats a panic.
    let json = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn health(ctx: &Ctx) -> Response<Full<Bytes>> {
    let (sessions, connected) = ctx.sessions.counts();
    json_response(StatusCode::OK, &serde_json::json!({"status": "ok", "sessions": sessions, "connected": connected}))
}

async fn send_pdf(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
    ctx.auth.check_bearer(req.headers())?;
    send_pdf::check_content_type(req.headers())?;
    let idempotency = idempotency_key(req.headers())?;
    let limit = ctx.max_body_bytes;
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let body = Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::BadJson
            }
        })?
        .to_bytes();
    let request = SendPdfRequest::parse(&body)?;
    if !ctx.sessions.contains(&request.session_id) {
        return Err(ApiError::SessionNotFound);
    }
    let idempotency = idempotency.map(|key| IdempotencyKey { key, fingerprint: Sha256::digest(&body).into() });
    let enqueued =
        ctx.queue.enqueue(&request.session_id, request.to, request.pdf, request.file_name, idempotency).await.map_err(
            |e| match e {
                EnqueueError::Full { retry_after } => {
                    ApiError::QueueFull { retry_after_secs: retry_after.as_secs_f64().ceil() as u64 }
                }
                EnqueueError::KeyReused => ApiError::IdempotencyKeyReused,
                EnqueueError::DiskFull => ApiError::InsufficientStorage,
                EnqueueError::Journal(e) => ApiError::internal(e),
            },
        )?;
    Ok(SendPdfAccepted::new(enqueued.id()).into_response())
}

/// `Idempotency-Key`: optional; 1–255 visible ASCII characters.
fn idempotency_key(headers: &hyper::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().map_err(|_| ApiError::InvalidIdempotencyKey)?.trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    Ok(Some(key.to_owned()))
}

async fn message_status(ctx: &Ctx, id: &str, req: &Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
    ctx.auth.check_bearer(req.headers())?;
    match ctx.queue.status(id).await.map_err(ApiError::internal)? {
        Some(record) => Ok(json_response(StatusCode::OK, &record)),
        None => Err(ApiError::MessageNotFound),
    }
}

async fn session_socket(
    ctx: &Ctx,
    raw_id: String,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let id = SessionId::parse(&raw_id)?;
    let protocol = ctx.auth.check_ws(req.headers(), req.uri().query())?;
    let upgrade = match ws::handshake::validate_upgrade(&req) {
        Ok(info) => info,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let watcher = ctx.sessions.watch(&id).await.map_err(ApiError::internal)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let cancel = ctx.shutdown.token();
    ctx.shutdown.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws::handshake::socket_config()),
                )
                .await;
                ws::socket::serve(socket, watcher, cancel).await;
            }
            Err(e) => tracing::debug!(session = %id, error = %e, "websocket upgrade failed"),
        }
    });
    Ok(upgrade.switching_protocols(protocol.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(route(&Method::GET, "/health"), Ok(Route::Health)));
        assert!(matches!(route(&Method::POST, "/api/send-pdf"), Ok(Route::SendPdf)));
        assert!(matches!(route(&Method::GET, "/api/send-pdf"), Err(ApiError::MethodNotAllowed { .. })));
        assert!(matches!(route(&Method::GET, "/ws/session/tienda"), Ok(Route::SessionSocket(id)) if id == "tienda"));
        assert!(matches!(route(&Method::GET, "/ws/session/a/b"), Err(ApiError::NotFound)));
        assert!(matches!(route(&Method::GET, "/nope"), Err(ApiError::NotFound)));
        assert!(matches!(route(&Method::GET, "/api/messages/3EB0AA"), Ok(Route::MessageStatus(id)) if id == "3EB0AA"));
        assert!(matches!(route(&Method::POST, "/api/messages/3EB0AA"), Err(ApiError::MethodNotAllowed { .. })));
    }
}
