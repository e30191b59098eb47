//! What an outside probe of the built gateway found, each hole shown closed against a real
//! gateway over real sockets: silent and crowding connections, WebSockets that never answer,
//! protocol errors and Close frames on both sockets, failed-token floods, idempotency keys of two
//! tokens, received files that could run as pages, and the smaller points.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::platform::{
    close_code, closed_within, frame, header, parse_response, raw, raw_ws_at, read_frame, write_tokens_file,
};
use crate::support::*;

const SHORT: Duration = Duration::from_secs(5);

/// A TCP connection to `addr` from the loopback address `from` (another client, as the gateway
/// sees it).
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends one kept-alive request on `tcp` and reads the status line, so the connection is known
/// to be accepted and holding its place.
async fn hold(tcp: &mut TcpStream) {
    tcp.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(SHORT, tcp.read_exact(&mut head)).await.expect("served").unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

fn code(body: &serde_json::Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn connections_that_send_nothing_are_closed_and_cannot_hold_every_slot() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(
        &fake,
        &dir,
        &[("HTTP_HEADER_TIMEOUT_SECS", "1"), ("HTTP_MAX_CONNECTIONS", "3"), ("HTTP_MAX_CONNECTIONS_PER_IP", "3")],
    ))
    .await;
    // Three plain connects that never send a byte take every slot…
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // …until the first-byte deadline closes them, and a waiting request is served.
    let (status, _, _) =
        tokio::time::timeout(SHORT, raw(app.addr, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
            .await
            .expect("/health is answered once the silent connections are closed");
    assert_eq!(status, 200);
    for tcp in &mut silent {
        assert!(closed_within(tcp, SHORT).await, "a connection that sends nothing is closed");
    }
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn one_client_address_holds_only_its_share_of_the_connections() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("HTTP_MAX_CONNECTIONS_PER_IP", "2")])).await;
    let mut first = connect_from([127, 0, 0, 1], app.addr).await;
    let mut second = connect_from([127, 0, 0, 1], app.addr).await;
    hold(&mut first).await;
    hold(&mut second).await;

    // A third from the same address is answered 503 at once and closed.
    let mut third = connect_from([127, 0, 0, 1], app.addr).await;
    let mut answer = Vec::new();
    tokio::time::timeout(SHORT, third.read_to_end(&mut answer)).await.expect("answered at once").unwrap();
    let (status, headers, body) = parse_response(&answer);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(code(&body), "TOO_MANY_CONNECTIONS");

    // Another client is served meanwhile.
    let mut other = connect_from([127, 0, 0, 2], app.addr).await;
    hold(&mut other).await;
    // A place freed is a place again.
    drop(first);
    let served = tokio::time::timeout(SHORT, async {
        loop {
            let mut again = connect_from([127, 0, 0, 1], app.addr).await;
            if again.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.is_ok() {
                let mut head = [0u8; 12];
                if again.read_exact(&mut head).await.is_ok() && &head == b"HTTP/1.1 200" {
                    return;
                }
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(served.is_ok(), "the address gets its place back once a connection closes");
    drop((second, other));
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn websockets_are_pinged_and_closed_when_their_pongs_stop() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("WS_PING_SECS", "1")])).await;
    // A raw socket reads but never answers: a ping comes, then Close 1008, on both sockets.
    for path in ["/ws/events", "/ws/session/sordo"] {
        let mut tcp = raw_ws_at(app.addr, path).await;
        let (pinged, close) = tokio::time::timeout(SHORT, async {
            let mut pinged = false;
            loop {
                match read_frame(&mut tcp).await {
                    (0x9, _) => pinged = true,
                    (0x8, payload) => return (pinged, u16::from_be_bytes([payload[0], payload[1]])),
                    _ => {}
                }
            }
        })
        .await
        .expect("closed when the pong does not come");
        assert!(pinged, "{path}: pinged first");
        assert_eq!(close, 1008, "{path}");
    }

    // A client that answers (tungstenite pongs as it reads) stays open through three pings.
    let url = format!("ws://{}/ws/events?token={TOKEN}", app.addr);
    let (mut events, _) = tokio_tungstenite::connect_async(url).await.expect("events socket");
    let pings = tokio::time::timeout(SHORT, async {
        let mut pings = 0;
        while pings < 3 {
            match events.next().await {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Close(frame))) => panic!("closed although it answered: {frame:?}"),
                Some(Ok(_)) => {}
                other => panic!("the socket ended: {other:?}"),
            }
        }
        pings
    })
    .await
    .expect("three pings in time");
    assert_eq!(pings, 3);
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn a_token_holds_at_most_ws_max_per_token_websockets() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("WS_MAX_PER_TOKEN", "2")])).await;
    let url = format!("ws://{}/ws/events?token={TOKEN}", app.addr);
    let (first, _) = tokio_tungstenite::connect_async(&url).await.expect("first");
    let (_second, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/session/cupo?token={TOKEN}", app.addr))
        .await
        .expect("second, on the other socket");
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).expect("a JSON error");
            assert_eq!(code(&body), "TOO_MANY_WEBSOCKETS", "{body}");
        }
        other => panic!("a third socket must be refused: {other:?}"),
    }
    // Closing one gives its place back (once the server has seen the close).
    let mut first = first;
    first.close(None).await.expect("close");
    while first.next().await.is_some() {}
    let reopened = tokio::time::timeout(SHORT, async {
        loop {
            if let Ok((socket, _)) = tokio_tungstenite::connect_async(&url).await {
                return socket;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "the token may open another once one closed");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn ws_events_closes_protocol_errors_with_their_codes() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("WS_MAX_MESSAGE_BYTES", "1024")])).await;
    let unmasked = [0x81u8, 0x02, b'h', b'i'];
    let cases: [(&str, Vec<u8>, u16); 4] = [
        ("reserved bits set", frame(0x80 | 0x40 | 0x1, b"hi"), 1002),
        ("unmasked", unmasked.to_vec(), 1002),
        ("invalid utf-8", frame(0x81, &[0xff, 0xfe, 0xfd]), 1007),
        ("too big", frame(0x82, &[0u8; 4096]), 1009),
    ];
    for path in ["/ws/events", "/ws/session/protocolo"] {
        for (what, bytes, expected) in &cases {
            let mut tcp = raw_ws_at(app.addr, path).await;
            tcp.write_all(bytes).await.unwrap();
            assert_eq!(close_code(&mut tcp).await, *expected, "{path}: {what}");
        }
    }
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn a_clients_close_is_answered_with_a_close() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    // 1000 is echoed; 999 is not a code a peer may send, so the answer is 1002 (RFC 6455 §7.4).
    for (sent, expected) in [(1000u16, 1000u16), (999, 1002)] {
        for path in ["/ws/events", "/ws/session/adios"] {
            let mut tcp = raw_ws_at(app.addr, path).await;
            tcp.write_all(&frame(0x88, &sent.to_be_bytes())).await.unwrap();
            assert_eq!(close_code(&mut tcp).await, expected, "{path}: Close {sent}");
            assert!(closed_within(&mut tcp, SHORT).await, "{path}: then the connection ends");
        }
    }
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn failed_authentications_are_throttled_per_address() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("AUTH_FAILURES_PER_MINUTE", "5")])).await;
    for _ in 0..5 {
        let (status, body) = app.request("GET", "/api/sessions", Some("wrong-token-0123456789"), None).await;
        assert_eq!((status, code(&body)), (403, "INVALID_TOKEN"));
    }
    let (status, headers, body) = app.request_with("GET", "/api/sessions", None, None, &[]).await;
    assert_eq!((status, code(&body)), (429, "TOO_MANY_AUTH_FAILURES"), "{body}");
    let wait: u64 = header(&headers, "retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=12).contains(&wait), "one failure's worth comes back in 12 s: {wait}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("AUTH_FAILURES_PER_MINUTE"));
    // The WebSocket's token check counts too.
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws/events?token=nope", app.addr)).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 429),
        "{refused:?}"
    );
    // The right token still works, and another address is not held to this one's failures.
    let (status, _) = app.request("GET", "/api/sessions", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let mut other = connect_from([127, 0, 0, 3], app.addr).await;
    other.write_all(b"GET /api/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(SHORT, other.read_to_end(&mut answer)).await.expect("answered").unwrap();
    assert_eq!(parse_response(&answer).0, 401);
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn idempotency_keys_of_two_tokens_never_collide() {
    let fake = fake().await;
    let dir = temp_dir();
    given_sessions(&dir, r#"[{"sessionId":"tienda_a"}]"#).await;
    let tokens = write_tokens_file(&dir);
    let app = TestApp::spawn_with(config(&fake, &dir, &[("API_TOKENS_FILE", tokens.to_str().unwrap())])).await;
    let body = TestApp::send_pdf_body("tienda_a", "51987654321", &pdf("factura"), None);
    let send = |token: &'static str, key: &'static str| {
        let body = body.clone();
        let app = &app;
        async move {
            let (status, _, answer) =
                app.request_with("POST", "/api/send-pdf", Some(token), Some(body), &[("Idempotency-Key", key)]).await;
            assert_eq!(status, 202, "{answer}");
            answer["messageId"].as_str().expect("messageId").to_owned()
        }
    };
    // The admin's key "ventas:K1" once meant the same entry as the key "K1" of the token "ventas".
    let admins = send(TOKEN, "ventas:K1").await;
    let ventas = send("ventas-token-0123456789", "K1").await;
    assert_ne!(admins, ventas, "two callers, two messages");
    assert_eq!(send("ventas-token-0123456789", "K1").await, ventas, "each replays its own");
    assert_eq!(send(TOKEN, "ventas:K1").await, admins);
    // And another body under the admin's key does not tell "ventas" anything about it.
    let (status, _, answer) = app
        .request_with(
            "POST",
            "/api/send-pdf",
            Some("ventas-token-0123456789"),
            Some(TestApp::send_pdf_body("tienda_a", "51987654321", &pdf("otra"), None)),
            &[("Idempotency-Key", "ventas:K1")],
        )
        .await;
    assert_eq!(status, 202, "a key of its own, new: {answer}");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn received_files_can_never_run_as_a_page() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    link(&app, &fake, "recibe", "51900000071").await;
    let url = format!("ws://{}/ws/events?token={TOKEN}&types=message.received", app.addr);
    let (mut events, _) = tokio_tungstenite::connect_async(url).await.expect("events socket");
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#.to_vec();
    let jpeg = b"\xff\xd8\xff\xe0 not really a jpeg".to_vec();
    let svg_id = fake.admin().send_image("51987000071", "51900000071", "image/svg+xml", svg, None).await.unwrap();
    let jpeg_id = fake.admin().send_image("51987000071", "51900000071", "image/jpeg", jpeg, None).await.unwrap();
    let mut pending = vec![svg_id.clone(), jpeg_id.clone()];
    tokio::time::timeout(WAIT, async {
        while !pending.is_empty() {
            if let Some(Ok(Message::Text(text))) = events.next().await {
                let event: serde_json::Value = serde_json::from_str(&text).unwrap();
                pending.retain(|id| event["data"]["messageId"] != id.as_str());
            }
        }
    })
    .await
    .expect("both stored");

    let media = |id: &str| {
        let url = app.url(&format!("/api/messages/{id}/media"));
        async move {
            tokio::task::spawn_blocking(move || {
                let response = ureq::get(&url).header("Authorization", format!("Bearer {TOKEN}")).call().unwrap();
                let get = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                (
                    get("content-type"),
                    get("content-disposition"),
                    get("x-content-type-options"),
                    get("content-security-policy"),
                )
            })
            .await
            .unwrap()
        }
    };
    let (kind, disposition, nosniff, csp) = media(&svg_id).await;
    assert_eq!(kind.as_deref(), Some("image/svg+xml"));
    assert_eq!(disposition.as_deref(), Some("attachment"), "an SVG can hold script: never inline");
    assert_eq!(nosniff.as_deref(), Some("nosniff"));
    assert!(csp.is_some_and(|csp| csp.starts_with("sandbox")));
    let (kind, disposition, nosniff, _) = media(&jpeg_id).await;
    assert_eq!((kind.as_deref(), disposition, nosniff.as_deref()), (Some("image/jpeg"), None, Some("nosniff")));
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_even_when_the_request_timeout_is_shorter() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(
        &fake,
        &dir,
        &[("HTTP_BODY_TIMEOUT_SECS", "2"), ("HTTP_REQUEST_TIMEOUT_SECS", "1")],
    ))
    .await;
    let request = format!(
        "POST /api/send-pdf HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n{{\"sessionId\":\"a\",\"pdfBase64\":\"{}",
        "A".repeat(64 * 1024)
    );
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(SHORT, tcp.read(&mut response)).await.expect("answered in time").unwrap();
    let (status, _, body) = parse_response(&response[..n]);
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!((status, code(&body)), (408, "BODY_TIMEOUT"), "the client is told its body never came");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn a_route_that_takes_longer_than_the_request_timeout_gets_503_timeout() {
    let fake = fake().await;
    let dir = temp_dir();
    // Nothing listens on port 1: no QR comes, and GET …/qr would wait its 10 s for one.
    let app = TestApp::spawn_with(config(
        &fake,
        &dir,
        &[("WHATSAPP_URL", "ws://127.0.0.1:1/ws/chat"), ("HTTP_REQUEST_TIMEOUT_SECS", "1")],
    ))
    .await;
    let (status, _) = app.request("POST", "/api/sessions", Some(TOKEN), Some(r#"{"sessionId":"lenta"}"#.into())).await;
    assert_eq!(status, 201);
    let (status, body) = tokio::time::timeout(SHORT, app.request("GET", "/api/sessions/lenta/qr", Some(TOKEN), None))
        .await
        .expect("answered by the request timeout, not by the QR wait");
    assert_eq!((status, code(&body)), (503, "TIMEOUT"), "{body}");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn the_smaller_points() {
    let fake = fake().await;
    let dir = temp_dir();
    given_sessions(&dir, r#"[{"sessionId":"tienda_a"},{"sessionId":"tienda_b"}]"#).await;
    let tokens = write_tokens_file(&dir);
    let app = TestApp::spawn_with(config(&fake, &dir, &[("API_TOKENS_FILE", tokens.to_str().unwrap())])).await;

    // A description keeps no bidi override or zero-width space.
    let body = r#"{"sessionId":"caja","description":"Caja\u202e 1\u200b"}"#;
    let (status, session) = app.request("POST", "/api/sessions", Some(TOKEN), Some(body.into())).await;
    assert_eq!((status, session["description"].as_str()), (201, Some("Caja 1")), "{session}");

    // sessions.config.json names the business's numbers: private. (On Postgres the registry is
    // a table, and the gateway writes no such file.)
    if !on_postgres() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("sessions.config.json")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // Another session's message is answered as an unknown one.
    let (status, sent) = app.send_pdf("tienda_b", "51987654321", &pdf("b"), None).await;
    assert_eq!(status, 202, "{sent}");
    let other = format!("/api/messages/{}", sent["messageId"].as_str().unwrap());
    let ventas = Some("ventas-token-0123456789");
    let (status, body) = app.request("GET", &other, ventas, None).await;
    assert_eq!((status, code(&body)), (404, "MESSAGE_NOT_FOUND"));
    let (status, body) = app.request("GET", &format!("{other}/media"), ventas, None).await;
    assert_eq!((status, code(&body)), (404, "MESSAGE_NOT_FOUND"));
    let (status, body) = app.request("GET", "/api/messages/3EB0UNKNOWN", ventas, None).await;
    assert_eq!((status, code(&body)), (404, "MESSAGE_NOT_FOUND"));

    // A number no country code starts with is refused.
    for to in ["0000000", "2951234567"] {
        let (status, body) = app.send_pdf("tienda_a", to, &pdf("x"), None).await;
        assert_eq!((status, code(&body)), (400, "INVALID_PHONE"), "{to}");
    }
    app.stop().await;
    fake.shutdown().await;
}
