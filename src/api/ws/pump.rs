//! One admin WebSocket watching one session: pushes `{event, data}` frames (status, QR codes,
//! errors) until the session is connected, then closes with 1000.
//!
//! Generic over any `Sink + Stream` of tungstenite messages, so it is tested with channels. A
//! client that breaks the protocol is answered with the close code RFC 6455 asks for: 1002 for
//! an invalid frame, 1007 for invalid UTF-8, 1009 for a message over the size limit; a client's
//! own Close is answered with a Close (see [`super::answer_close`]).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::{Keepalive, answer_close, close_for};
use crate::session::{SessionState, Status, Watcher};

/// A watcher that cannot take a frame within this time is hopeless: it is closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The frames of the Node.js service, byte for byte.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "event", content = "data", rename_all = "lowercase")]
pub enum Frame {
    Status(StatusFrame),
    Qr(String),
    Error(String),
}

#[derive(Debug, Serialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum StatusFrame {
    Initializing,
    AlreadyConnected,
    Connected,
    Disconnected,
}

#[derive(Debug, thiserror::Error)]
enum SocketError {
    #[error(transparent)]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("peer too slow")]
    Slow,
    #[error("the peer closed")]
    ClosedByPeer,
}

/// Serves one upgraded socket.
pub async fn serve<S>(mut socket: S, mut watcher: Watcher, ping: Duration, cancel: CancellationToken)
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    match pump(&mut socket, &mut watcher, ping, &cancel).await {
        Ok(Some((code, reason))) => {
            let frame = CloseFrame { code, reason: reason.into() };
            let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
            let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close()).await;
        }
        Ok(None) => {}
        Err(SocketError::ClosedByPeer) => answer_close(&mut socket).await,
        Err(SocketError::Ws(e)) => match close_for(&e) {
            Some((code, reason)) => {
                tracing::debug!(error = %e, code = u16::from(code), "closing a websocket that broke the protocol");
                let frame = CloseFrame { code, reason: reason.into() };
                let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
                let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close()).await;
            }
            None => tracing::debug!(error = %e, "watcher socket ended"),
        },
        Err(e) => tracing::debug!(error = %e, "watcher socket ended"),
    }
}

async fn send<S>(socket: &mut S, frame: &Frame) -> Result<(), SocketError>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let text = serde_json::to_string(frame).unwrap_or_default();
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::text(text))).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SocketError::Slow),
    }
}

/// Returns the close code to send, or `None` if the peer is already gone.
async fn pump<S>(
    socket: &mut S,
    watcher: &mut Watcher,
    ping: Duration,
    cancel: &CancellationToken,
) -> Result<Option<(CloseCode, &'static str)>, SocketError>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    let first: SessionState = watcher.state().borrow_and_update().clone();
    if first.status == Status::Connected {
        send(socket, &Frame::Status(StatusFrame::AlreadyConnected)).await?;
        return Ok(Some((CloseCode::Normal, "already connected")));
    }
    send(socket, &Frame::Status(StatusFrame::Initializing)).await?;
    let mut shown = Shown { status: StatusFrame::Initializing, qr: None, error: None };
    let mut keepalive = Keepalive::new(ping);
    let mut current = first;
    let deleted = watcher.deleted();
    loop {
        if let Some(close) = show(socket, &mut shown, &current).await? {
            return Ok(Some(close));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(Some((CloseCode::Away, "server shutting down"))),
            _ = deleted.cancelled() => {
                send(socket, &Frame::Error("the session was deleted".into())).await?;
                return Ok(Some((CloseCode::Away, "session deleted")));
            }
            changed = watcher.state().changed() => {
                if changed.is_err() {
                    return Ok(Some((CloseCode::Away, "session closed")));
                }
                current = watcher.state().borrow_and_update().clone();
            }
            incoming = socket.next() => match incoming {
                None => return Ok(None),
                Some(Ok(Message::Close(_))) => return Err(SocketError::ClosedByPeer),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(_)) => keepalive.heard(),
            },
            alive = keepalive.due() => {
                if !alive {
                    return Ok(Some(super::NO_PONG));
                }
                match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Ping(Default::default()))).await {
                    Ok(result) => result?,
                    Err(_) => return Err(SocketError::Slow),
                }
            }
        }
    }
}

/// What a watcher has been shown: the seed's frames know three statuses, a QR and an error.
struct Shown {
    status: StatusFrame,
    qr: Option<String>,
    error: Option<String>,
}

/// The seed's status frame for a session status.
fn status_frame(status: Status) -> StatusFrame {
    match status {
        Status::Connected => StatusFrame::Connected,
        Status::Connecting | Status::QrReady | Status::PairingCode => StatusFrame::Initializing,
        Status::Disconnected | Status::LoggedOut | Status::Error => StatusFrame::Disconnected,
    }
}

/// Sends whatever changed between what the watcher saw and the session's state.
async fn show<S>(
    socket: &mut S,
    shown: &mut Shown,
    now: &SessionState,
) -> Result<Option<(CloseCode, &'static str)>, SocketError>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    if let Some(qr) = &now.qr
        && shown.qr.as_ref() != Some(&qr.code)
    {
        send(socket, &Frame::Qr(qr.code.clone())).await?;
    }
    let status = status_frame(now.status);
    if status != shown.status {
        send(socket, &Frame::Status(status)).await?;
        if status == StatusFrame::Connected {
            return Ok(Some((CloseCode::Normal, "connected")));
        }
    }
    if let Some(error) = &now.error
        && shown.error.as_ref() != Some(error)
    {
        send(socket, &Frame::Error(error.clone())).await?;
    }
    *shown = Shown { status, qr: now.qr.as_ref().map(|qr| qr.code.clone()), error: now.error.clone() };
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};

    #[test]
    fn protocol_errors_get_their_close_codes() {
        use tokio_tungstenite::tungstenite::Error;
        let code = |e: Error| close_for(&e).map(|(code, _)| u16::from(code));
        assert_eq!(code(Error::Protocol(ProtocolError::NonZeroReservedBits)), Some(1002));
        assert_eq!(code(Error::Utf8("bad".into())), Some(1007));
        assert_eq!(code(Error::Capacity(CapacityError::MessageTooLong { size: 2, max_size: 1 })), Some(1009));
        assert_eq!(code(Error::ConnectionClosed), None);
    }

    #[tokio::test]
    async fn an_error_that_repeats_on_every_retry_is_shown_once() {
        use tokio_tungstenite::WebSocketStream;
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let mut shown = Shown { status: StatusFrame::Initializing, qr: None, error: None };
        let mut retrying = SessionState::new(Status::Connecting);
        retrying.error = Some("cannot reach WhatsApp (refused)".into());
        for attempt in 0..3 {
            // Each retry may reword the reason; the error a person acts on stays the same.
            retrying.reason = Some(format!("cannot reach WhatsApp (refused); retrying, attempt {attempt}"));
            show(&mut server, &mut shown, &retrying).await.expect("shown");
        }
        // A QR then comes: everything before it is what the retries showed.
        let mut linking = SessionState::new(Status::QrReady);
        linking.qr = Some(crate::session::Qr { code: "2@fin".into(), expires_at: 1 });
        show(&mut server, &mut shown, &linking).await.expect("shown");
        let mut frames = Vec::new();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), client.next()).await.expect("a frame in time");
            let Some(Ok(Message::Text(text))) = frame else { panic!("the socket ended: {frame:?}") };
            if text.contains("2@fin") {
                break;
            }
            frames.push(text.to_string());
        }
        assert_eq!(
            frames,
            [r#"{"event":"error","data":"cannot reach WhatsApp (refused)"}"#],
            "one error frame, not three"
        );
    }

    #[test]
    fn frames_match_the_node_service() {
        let j = |f: &Frame| serde_json::to_string(f).unwrap();
        assert_eq!(j(&Frame::Status(StatusFrame::Initializing)), r#"{"event":"status","data":"initializing"}"#);
        assert_eq!(
            j(&Frame::Status(StatusFrame::AlreadyConnected)),
            r#"{"event":"status","data":"already_connected"}"#
        );
        assert_eq!(j(&Frame::Qr("2@abc".into())), r#"{"event":"qr","data":"2@abc"}"#);
        assert_eq!(j(&Frame::Error("boom".into())), r#"{"event":"error","data":"boom"}"#);
    }
}
