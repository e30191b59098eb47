//! `GET /ws/events`: every event the caller may see, as `{"id","event","sessionId","timestamp",
//! "data"}` text frames (the shape webhooks will post). `?sessions=a,b&types=message.received`
//! narrow it. A reader that falls more than the bus's capacity behind gets
//! `{"event":"lagged","data":{"missed":N}}` and goes on from the newest events: never unbounded
//! memory.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::{Keepalive, answer_close, close_for};
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::domain::SessionId;
use crate::events::{EventKind, GatewayEvent};

/// A frame that takes longer than this to send means the reader is gone or stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What a subscriber asked for, and may see.
pub(super) struct Filter {
    caller: Caller,
    sessions: Option<HashSet<String>>,
    types: Option<HashSet<EventKind>>,
}

impl Filter {
    /// From `?sessions=a,b&types=x,y`: unknown types or malformed session ids are 400.
    pub(super) fn from_query(caller: Caller, query: Option<&str>) -> Result<Filter, ApiError> {
        let mut filter = Filter { caller, sessions: None, types: None };
        for (key, value) in url_pairs(query.unwrap_or_default()) {
            let items = value.split(',').map(str::trim).filter(|s| !s.is_empty());
            match key.as_str() {
                "sessions" => {
                    let mut set = HashSet::new();
                    for item in items {
                        set.insert(SessionId::parse(item)?.as_str().to_owned());
                    }
                    filter.sessions = Some(set);
                }
                "types" => {
                    let mut set = HashSet::new();
                    for item in items {
                        set.insert(EventKind::parse(item).ok_or(ApiError::InvalidEventType)?);
                    }
                    filter.types = Some(set);
                }
                _ => {}
            }
        }
        Ok(filter)
    }

    /// Whether it asks for `message.status` events.
    pub(super) fn wants_statuses(&self) -> bool {
        self.types.as_ref().is_none_or(|types| types.contains(&EventKind::MessageStatus))
    }

    fn wants(&self, event: &GatewayEvent) -> bool {
        self.types.as_ref().is_none_or(|types| types.contains(&event.event))
            && self.sessions.as_ref().is_none_or(|sessions| sessions.contains(&event.session_id))
            && SessionId::parse(&event.session_id).is_ok_and(|id| self.caller.may_use(&id))
    }
}

/// `a=1&b=x%2Cy` → pairs, percent-decoded.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    query.split('&').filter_map(|pair| pair.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Pushes events until the peer leaves or the gateway stops.
pub(super) async fn serve<S>(
    mut socket: S,
    mut events: broadcast::Receiver<Arc<GatewayEvent>>,
    filter: Filter,
    ping: Duration,
    cancel: CancellationToken,
) where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    let mut keepalive = Keepalive::new(ping);
    let close = loop {
        tokio::select! {
            () = cancel.cancelled() => break Some((CloseCode::Away, "shutting down")),
            incoming = socket.next() => match incoming {
                None => break None,
                Some(Ok(Message::Close(_))) => {
                    answer_close(&mut socket).await;
                    return;
                }
                Some(Err(e)) => match close_for(&e) {
                    Some(close) => {
                        tracing::debug!(error = %e, code = u16::from(close.0), "closing a websocket that broke the protocol");
                        break Some(close);
                    }
                    None => break None,
                },
                // Pings are answered by tungstenite; text from the reader is ignored.
                Some(Ok(_)) => keepalive.heard(),
            },
            alive = keepalive.due() => {
                if !alive {
                    break Some(super::NO_PONG);
                }
                match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Ping(Default::default()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break None,
                    Err(_) => break Some((CloseCode::Again, "reader too slow")),
                }
            }
            event = events.recv() => {
                let text = match event {
                    Ok(event) if filter.wants(&event) => serde_json::to_string(&*event).unwrap_or_default(),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        serde_json::json!({"event": "lagged", "data": {"missed": missed}}).to_string()
                    }
                    Err(broadcast::error::RecvError::Closed) => break Some((CloseCode::Away, "shutting down")),
                };
                match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::text(text))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break None,
                    Err(_) => break Some((CloseCode::Again, "reader too slow")),
                }
            }
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_told_how_many_it_missed() {
        use tokio_tungstenite::WebSocketStream;
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (sender, receiver) = broadcast::channel(2);
        let event = |n: u64| {
            Arc::new(GatewayEvent {
                id: format!("evt_{n}"),
                event: EventKind::SessionStatus,
                session_id: "tienda".into(),
                timestamp: n,
                data: serde_json::json!({"n": n}),
            })
        };
        // Five events while nobody reads a channel that keeps two: three are lost.
        for n in 0..5 {
            sender.send(event(n)).expect("a receiver");
        }
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let cancel = CancellationToken::new();
        let filter = Filter::from_query(Caller::admin_for_tests(), None).expect("filter");
        let serving = tokio::spawn(serve(server, receiver, filter, Duration::from_secs(25), cancel.clone()));
        let mut frames: Vec<serde_json::Value> = Vec::new();
        while frames.len() < 3 {
            let frame = tokio::time::timeout(Duration::from_secs(10), client.next()).await.expect("a frame in time");
            match frame {
                Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text).expect("json")),
                Some(Ok(_)) => continue,
                // A closed stream would answer None at once, for ever: fail instead.
                other => panic!("the socket ended after {} frames: {other:?}", frames.len()),
            }
        }
        assert_eq!(frames[0], serde_json::json!({"event": "lagged", "data": {"missed": 3}}));
        assert_eq!(
            (frames[1]["id"].as_str(), frames[2]["id"].as_str()),
            (Some("evt_3"), Some("evt_4")),
            "then the newest"
        );
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), serving).await.expect("stops").expect("task");
    }

    fn event(kind: EventKind, session: &str) -> GatewayEvent {
        GatewayEvent {
            id: "evt_1".into(),
            event: kind,
            session_id: session.into(),
            timestamp: 1,
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_filter_lets_through_what_it_names_and_nothing_else() {
        use EventKind::{MessageReceived, MessageStatus, SessionStatus};
        let admin = || Caller::admin_for_tests();
        let everything = Filter::from_query(admin(), None).unwrap();
        assert!(everything.wants(&event(SessionStatus, "a")) && everything.wants(&event(MessageStatus, "b")));

        let types = Filter::from_query(admin(), Some("types=message.received,session.status")).unwrap();
        assert!(types.wants(&event(MessageReceived, "a")) && types.wants(&event(SessionStatus, "b")));
        assert!(!types.wants(&event(MessageStatus, "a")), "a type not asked for");
        assert!(!types.wants_statuses());

        let sessions = Filter::from_query(admin(), Some("sessions=a%2Cc")).unwrap();
        assert!(sessions.wants(&event(MessageStatus, "a")) && sessions.wants(&event(MessageStatus, "c")));
        assert!(!sessions.wants(&event(MessageStatus, "b")), "a session not asked for");

        let both = Filter::from_query(admin(), Some("sessions=a&types=message.received")).unwrap();
        assert!(both.wants(&event(MessageReceived, "a")));
        assert!(!both.wants(&event(MessageReceived, "b")) && !both.wants(&event(SessionStatus, "a")));

        // A token limited to some sessions sees only those, whatever it asks for.
        let scoped = Filter::from_query(Caller::scoped_for_tests(&["a"]), None).unwrap();
        assert!(scoped.wants(&event(MessageReceived, "a")));
        assert!(!scoped.wants(&event(MessageReceived, "b")), "not the token's session");
        let asks_more = Filter::from_query(Caller::scoped_for_tests(&["a"]), Some("sessions=a,b")).unwrap();
        assert!(!asks_more.wants(&event(MessageReceived, "b")), "asking does not widen the token");

        assert!(Filter::from_query(admin(), Some("types=message.nope")).is_err());
        assert!(Filter::from_query(admin(), Some("sessions=../x")).is_err());
    }

    #[test]
    fn query_pairs_are_decoded() {
        assert_eq!(
            url_pairs("sessions=a%2Cb&types=message.received,session.status&token=x"),
            [
                ("sessions".into(), "a,b".into()),
                ("types".into(), "message.received,session.status".into()),
                ("token".into(), "x".into())
            ]
        );
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
