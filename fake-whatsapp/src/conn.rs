//! One task per client WebSocket: the Noise handshake, then a loop that decrypts frames,
//! dispatches stanzas and writes what others queued for this connection.

use std::sync::Arc;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wacore_binary::Node;
use wacore_binary::consts::WA_CONN_HEADER;
use wacore_noise::framing::{FrameDecoder, encode_frame};

use crate::noise::{self, Transport};
use crate::shared::Shared;
use crate::state::{ConnEntry, ConnId, DeviceKey, Outbound};
use crate::{handlers, login, pairing};

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Why a connection ended abnormally (logged, never propagated).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("handshake: {0}")]
    Noise(#[from] noise::NoiseFailure),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("peer closed during the handshake")]
    ClosedEarly,
}

/// Who is on the other end, once the handshake told us.
pub(crate) enum Role {
    /// An unregistered client waiting for its QR to be scanned.
    Pairing,
    /// A linked device that logged in.
    Device(DeviceKey),
}

/// A connection after its handshake: what handlers use to answer.
pub(crate) struct Conn {
    pub(crate) id: ConnId,
    pub(crate) shared: Arc<Shared>,
    pub(crate) role: Role,
    socket: Socket,
    transport: Transport,
    /// Set when the connection should end after the current stanza.
    pub(crate) closing: bool,
}

impl Conn {
    /// Encrypts and sends one stanza.
    pub(crate) async fn send(&mut self, node: &Node) -> Result<(), ConnError> {
        let plain = wacore_binary::marshal(node).map_err(|e| ConnError::Protocol(e.to_string()))?;
        let sealed = self.transport.seal(&plain)?;
        let framed = encode_frame(&sealed, None).map_err(|e| ConnError::Protocol(e.to_string()))?;
        self.socket.send(WsMessage::Binary(framed.into())).await?;
        Ok(())
    }

    pub(crate) fn device(&self) -> Option<&DeviceKey> {
        match &self.role {
            Role::Device(key) => Some(key),
            Role::Pairing => None,
        }
    }
}

/// Serves one upgraded WebSocket until it closes or the server shuts down.
pub(crate) async fn serve(shared: Arc<Shared>, socket: Socket) {
    let id = shared.next_conn_id();
    match run(shared.clone(), id, socket).await {
        Ok(()) => tracing::debug!(conn = id, "connection closed"),
        Err(ConnError::ClosedEarly) => tracing::debug!(conn = id, "peer left during handshake"),
        Err(e) => tracing::warn!(conn = id, error = %e, "connection ended with an error"),
    }
    let device = {
        let mut reg = shared.lock();
        let device = reg.conns.get(&id).and_then(|c| c.device.clone());
        reg.remove_conn(id);
        device
    };
    match device {
        Some(device) => shared.emit(crate::shared::FakeEvent::DeviceDisconnected { jid: device.jid().to_string() }),
        None => shared.emit(crate::shared::FakeEvent::UnlinkedDisconnected),
    }
}

async fn run(shared: Arc<Shared>, id: ConnId, mut socket: Socket) -> Result<(), ConnError> {
    let mut decoder = FrameDecoder::new();
    let mut header_checked = Header::default();

    let hello = next_frame(&mut socket, &mut decoder, &mut header_checked).await?;
    let (responder, server_hello) = noise::answer_hello(&shared.identity, &hello)?;
    let framed = encode_frame(&server_hello, None).map_err(|e| ConnError::Protocol(e.to_string()))?;
    socket.send(WsMessage::Binary(framed.into())).await?;
    let finish = next_frame(&mut socket, &mut decoder, &mut header_checked).await?;
    let finished = noise::finish(responder, &finish)?;

    let (tx, mut rx) = mpsc::channel::<Outbound>(1024);
    let mut conn =
        Conn { id, shared: shared.clone(), role: Role::Pairing, socket, transport: finished.transport, closing: false };
    shared.lock().conns.insert(id, ConnEntry { tx, device: None, unpaired: None });

    if finished.payload.device_pairing_data.is_set() {
        pairing::start(&mut conn, finished.client_static, &finished.payload).await?;
    } else {
        login::login(&mut conn, finished.client_static, &finished.payload).await?;
    }

    let cancel = shared.cancel.clone();
    while !conn.closing {
        tokio::select! {
            _ = cancel.cancelled() => break,
            outbound = rx.recv() => match outbound {
                Some(Outbound::Node(node)) => conn.send(&node).await?,
                Some(Outbound::NodeThenClose(node)) => {
                    conn.send(&node).await?;
                    let _ = conn.socket.close(None).await;
                    break;
                }
                Some(Outbound::Drop) | None => break,
            },
            incoming = conn.socket.next() => match incoming {
                None => break,
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(WsMessage::Binary(data))) => {
                    decoder.feed(&data);
                    while let Some(mut frame) = decoder.decode_frame() {
                        let node = open_node(&mut conn.transport, &mut frame)?;
                        handlers::dispatch(&mut conn, node).await?;
                        if conn.closing { break; }
                    }
                }
                Some(Ok(WsMessage::Close(_))) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    Ok(())
}

fn open_node(transport: &mut Transport, frame: &mut BytesMut) -> Result<Node, ConnError> {
    transport.open(frame)?;
    let unpacked = wacore_binary::util::unpack(frame).map_err(|e| ConnError::Protocol(e.to_string()))?;
    let node =
        wacore_binary::marshal::unmarshal_ref(&unpacked).map_err(|e| ConnError::Protocol(e.to_string()))?.to_owned();
    Ok(node)
}

/// The connection's first bytes: the `WA` header, collected until complete.
#[derive(Default)]
struct Header {
    seen: Vec<u8>,
    done: bool,
}

/// Reads until one whole handshake frame is buffered. The very first bytes must be the
/// `WA` connection header, which is checked and stripped.
async fn next_frame(
    socket: &mut Socket,
    decoder: &mut FrameDecoder,
    header: &mut Header,
) -> Result<BytesMut, ConnError> {
    loop {
        if header.done
            && let Some(frame) = decoder.decode_frame()
        {
            return Ok(frame);
        }
        let data = match socket.next().await {
            None | Some(Ok(WsMessage::Close(_))) => return Err(ConnError::ClosedEarly),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(WsMessage::Binary(data))) => data,
            Some(Ok(_)) => continue,
        };
        if header.done {
            decoder.feed(&data);
            continue;
        }
        header.seen.extend_from_slice(&data);
        if header.seen.len() < WA_CONN_HEADER.len() {
            continue;
        }
        if header.seen[..WA_CONN_HEADER.len()] != WA_CONN_HEADER {
            return Err(ConnError::Protocol("connection does not start with the WA header".into()));
        }
        decoder.feed(&header.seen[WA_CONN_HEADER.len()..]);
        header.seen = Vec::new();
        header.done = true;
    }
}
