//! One admin WebSocket watching one session: pushes `{event, data}` frames (status, QR codes,
//! errors) until the session is connected, then closes with 1000.
//!
//! Generic over any `Sink + Stream` of tungstenite messages, so it is tested with channels. A
//! client that breaks the protocol is answered with the close code RFC 6455 asks for: 1002 for
//! an invalid frame, 1007 for invalid UTF-8, 1009 for a message over the size limit.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::session::{SessionState, Status, Watcher};

const PING_EVERY: Duration = Duration::from_secs(25);
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
}

/// Serves one upgraded socket.
pub async fn serve<S>(mut socket: S, mut watcher: Watcher, cancel: CancellationToken)
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    match pump(&mut socket, &mut watcher, &cancel).await {
        Ok(Some((code, reason))) => {
            let frame = CloseFrame { code, reason: reason.into() };
            let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
            let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close()).await;
        }
        Ok(None) => {}
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

/// The close code for a read error the peer caused, if the socket can still carry it.
fn close_for(error: &tokio_tungstenite::tungstenite::Error) -> Option<(CloseCode, &'static str)> {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Protocol(_) => Some((CloseCode::Protocol, "protocol error")),
        Error::Utf8(_) => Some((CloseCode::Invalid, "invalid utf-8")),
        Error::Capacity(_) => Some((CloseCode::Size, "message too big")),
        _ => None,
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
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut awaiting_pong = false;
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
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if awaiting_pong {
                    return Ok(Some((CloseCode::Policy, "no pong")));
                }
                awaiting_pong = true;
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
