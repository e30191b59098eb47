//! The API platform: timeouts, the connection cap, running out of descriptors, header size,
//! scoped tokens, rate limits, CORS, request ids, the OpenAPI document, metrics, health probes and
//! WebSocket protocol errors, each shown against a real gateway over real sockets.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const SHORT: Duration = Duration::from_secs(5);

/// A raw HTTP/1.1 exchange: writes `request` and reads the answer until the server closes.
pub(crate) async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(SHORT, tcp.read_to_end(&mut response)).await.expect("an answer in time").expect("read");
    parse_response(&response)
}

pub(crate) fn parse_response(bytes: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Waits for the server to close `tcp` (EOF or reset), within `wait`.
pub(crate) async fn closed_within(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(wait, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn slow_and_idle_clients_are_closed_while_health_stays_fast() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("HTTP_HEADER_TIMEOUT_SECS", "1")])).await;

    // Half a request: the headers never end.
    let mut half = TcpStream::connect(app.addr).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    // Meanwhile /health answers at once on another connection.
    let (status, _) = tokio::time::timeout(SHORT, app.request("GET", "/health", None, None)).await.expect("fast");
    assert_eq!(status, 200);
    assert!(closed_within(&mut half, SHORT).await, "a half-sent request is closed after the header timeout");

    // An idle keep-alive connection is closed too.
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(closed_within(&mut idle, SHORT).await, "an idle keep-alive connection is closed");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn a_body_sent_too_slowly_gets_408() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("HTTP_BODY_TIMEOUT_SECS", "1")])).await;
    let request = format!(
        "POST /api/send-pdf HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\nX-Request-Id: slow-body-1\r\n\r\n{{\"sessionId\":"
    );
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(SHORT, tcp.read(&mut response)).await.expect("answered in time").unwrap();
    let (status, headers, body) = parse_response(&response[..n]);
    assert_eq!(status, 408, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(body["error"]["code"], "BODY_TIMEOUT");
    assert_eq!(body["requestId"], "slow-body-1");
    assert_eq!(header(&headers, "x-request-id"), Some("slow-body-1"));
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn the_connection_cap_holds() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("HTTP_MAX_CONNECTIONS", "2")])).await;
    let first = TcpStream::connect(app.addr).await.unwrap();
    let mut second = TcpStream::connect(app.addr).await.unwrap();
    // Make sure both are accepted (and hold their places) before the third comes.
    second.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(SHORT, second.read_exact(&mut head)).await.expect("second served").unwrap();

    let mut third = TcpStream::connect(app.addr).await.unwrap();
    third.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(500), third.read_to_end(&mut answer)).await;
    assert!(early.is_err() && answer.is_empty(), "a third connection waits while two are open: {answer:?}");

    drop(first);
    tokio::time::timeout(SHORT, third.read_to_end(&mut answer)).await.expect("served once a place frees").unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    drop(second);
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn a_huge_header_gets_431() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let request = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    // The server may answer and close before it has read everything we write.
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(SHORT, tcp.read_to_end(&mut response)).await.expect("answered in time");
    assert!(response.starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&response));
    let (status, _) = app.request("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    app.stop().await;
    fake.shutdown().await;
}

pub(crate) fn write_tokens_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tokens.json");
    std::fs::write(
        &path,
        r#"[
          {"name":"ventas","token":"ventas-token-0123456789","scopes":["messages:send","messages:read"],"sessions":["tienda_a"]},
          {"name":"linker","token":"linker-token-0123456789","scopes":["sessions:write"],"sessions":"*"},
          {"name":"prometheus","token":"metrics-token-0123456789","scopes":["metrics:read"]}
        ]"#,
    )
    .unwrap();
    path
}

#[tokio::test]
async fn scoped_tokens_reach_only_their_scopes_and_sessions() {
    let fake = fake().await;
    let dir = temp_dir();
    given_sessions(&dir, r#"[{"sessionId":"tienda_a"},{"sessionId":"tienda_b"}]"#).await;
    let tokens = write_tokens_file(&dir);
    let app = TestApp::spawn_with(config(&fake, &dir, &[("API_TOKENS_FILE", tokens.to_str().unwrap())])).await;
    let ventas = Some("ventas-token-0123456789");
    let code = |v: &serde_json::Value| v["error"]["code"].as_str().unwrap_or_default().to_owned();

    // Send-only token: sends on its own session...
    let body = TestApp::send_pdf_body("tienda_a", "51987654321", &pdf("a"), None);
    let (status, accepted) = app.request("POST", "/api/send-pdf", ventas, Some(body)).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["messageId"].as_str().unwrap().to_owned();
    let (status, message) = app.request("GET", &format!("/api/messages/{id}"), ventas, None).await;
    assert_eq!((status, message["sessionId"].as_str()), (200, Some("tienda_a")));
    // ...but not on another session, not on unknown ones, and manages nothing.
    let body = TestApp::send_pdf_body("tienda_b", "51987654321", &pdf("b"), None);
    let (status, error) = app.request("POST", "/api/send-pdf", ventas, Some(body)).await;
    assert_eq!((status, code(&error)), (403, "FORBIDDEN".to_owned()), "{error}");
    let body = TestApp::send_pdf_body("nobody", "51987654321", &pdf("c"), None);
    let (status, error) = app.request("POST", "/api/send-pdf", ventas, Some(body)).await;
    assert_eq!((status, code(&error)), (403, "FORBIDDEN".to_owned()), "{error}");
    let url = format!("ws://{}/ws/session/tienda_a?token=ventas-token-0123456789", app.addr);
    let err = tokio_tungstenite::connect_async(url).await.expect_err("no linking with a send-only token");
    assert!(err.to_string().contains("403"), "{err}");
    let (status, _) = app.request("GET", "/metrics", ventas, None).await;
    assert_eq!(status, 403);

    // A link-only token links but cannot send.
    let url = format!("ws://{}/ws/session/tienda_b?token=linker-token-0123456789", app.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("the linker links");
    let _ = futures_util::SinkExt::close(&mut socket).await;
    let body = TestApp::send_pdf_body("tienda_b", "51987654321", &pdf("d"), None);
    let (status, _) = app.request("POST", "/api/send-pdf", Some("linker-token-0123456789"), Some(body)).await;
    assert_eq!(status, 403);

    // The metrics token reads metrics and nothing else; unknown tokens stay 403 INVALID_TOKEN.
    let (status, _, _) = app.request_with("GET", "/metrics", Some("metrics-token-0123456789"), None, &[]).await;
    assert_eq!(status, 200);
    let (status, _) = app.request("GET", &format!("/api/messages/{id}"), Some("metrics-token-0123456789"), None).await;
    assert_eq!(status, 403);
    let (status, error) = app.request("GET", "/metrics", Some("nobody-token-0123456789"), None).await;
    assert_eq!((status, code(&error)), (403, "INVALID_TOKEN".to_owned()));
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn a_scoped_tokens_event_socket_carries_only_its_sessions() {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let fake = fake().await;
    let dir = temp_dir();
    given_sessions(&dir, r#"[{"sessionId":"tienda_a"},{"sessionId":"tienda_b"}]"#).await;
    let tokens = write_tokens_file(&dir);
    let app = TestApp::spawn_with(config(&fake, &dir, &[("API_TOKENS_FILE", tokens.to_str().unwrap())])).await;
    // No filter asked for: the token's sessions are the filter.
    let url = format!("ws://{}/ws/events?token=ventas-token-0123456789", app.addr);
    let (mut events, _) = tokio_tungstenite::connect_async(url).await.expect("events socket");
    // B's PDF is queued first, so its event would come first if it leaked.
    let (status, b) = app.send_pdf("tienda_b", "51987654321", &pdf("b"), None).await;
    assert_eq!(status, 202, "{b}");
    let (status, a) = app.send_pdf("tienda_a", "51987654321", &pdf("a"), None).await;
    assert_eq!(status, 202, "{a}");
    let a_id = a["messageId"].as_str().unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            match events.next().await {
                Some(Ok(Message::Text(text))) => {
                    let event: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(event["sessionId"], "tienda_a", "only the token's session: {event}");
                    if event["data"]["messageId"] == a_id {
                        return;
                    }
                }
                Some(Ok(_)) => continue,
                other => panic!("the socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("A's queued status arrives");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn a_scoped_token_over_its_rate_gets_429_naming_the_limit_and_the_admin_has_no_rate() {
    let fake = fake().await;
    let dir = temp_dir();
    let tokens = write_tokens_file(&dir);
    let app = TestApp::spawn_with(config(
        &fake,
        &dir,
        &[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "2"), ("API_TOKENS_FILE", tokens.to_str().unwrap())],
    ))
    .await;
    // The bucket refills one a second, so 50 requests run it dry unless each takes a second.
    let mut limited = None;
    for _ in 0..50 {
        let (status, headers, body) =
            app.request_with("GET", "/api/messages/3EB0NOPE", Some("ventas-token-0123456789"), None, &[]).await;
        if status == 429 {
            limited = Some((headers, body));
            break;
        }
        assert_eq!(status, 404);
    }
    let (headers, body) = limited.expect("the burst of 2 runs out");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("RATE_LIMIT_PER_SECOND"), "the body names the limit: {message}");
    let retry_after: u64 = header(&headers, "retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    // The admin token (a sales system's end-of-day run) is bounded by the queue, not by a rate.
    for _ in 0..50 {
        let (status, _) = app.request("GET", "/api/messages/3EB0NOPE", Some(TOKEN), None).await;
        assert_eq!(status, 404, "the admin token is never rate limited");
    }
    // Health probes carry no token and are never limited.
    let (status, _) = app.request("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn cors_preflight_from_allowed_and_refused_origins() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(
        &fake,
        &dir,
        &[("CORS_ALLOWED_ORIGINS", "https://admin.example.com, http://localhost:5173")],
    ))
    .await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /api/send-pdf HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: authorization, content-type, idempotency-key\r\nConnection: close\r\n\r\n"
        )
    };
    let (status, headers, _) = raw(app.addr, preflight("https://admin.example.com").as_bytes()).await;
    assert!((200..300).contains(&status), "{status}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("https://admin.example.com"));
    let allowed = header(&headers, "access-control-allow-headers").unwrap_or_default().to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("idempotency-key"), "{allowed}");
    assert!(header(&headers, "access-control-allow-methods").unwrap_or_default().contains("POST"));

    let (_, headers, _) = raw(app.addr, preflight("https://evil.example.com").as_bytes()).await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None, "a refused origin gets no CORS headers");

    // The actual request from the allowed origin carries the header too.
    let (status, headers, _) = app
        .request_with("GET", "/api/messages/3EB0NOPE", Some(TOKEN), None, &[("Origin", "http://localhost:5173")])
        .await;
    assert_eq!(status, 404);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("http://localhost:5173"));
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn request_ids_are_echoed_in_headers_and_error_bodies() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let (status, headers, body) = app
        .request_with("POST", "/api/send-pdf", None, Some("{}".into()), &[("X-Request-Id", "factura-F001-123")])
        .await;
    assert_eq!(status, 401);
    assert_eq!(header(&headers, "x-request-id"), Some("factura-F001-123"));
    assert_eq!(body["requestId"], "factura-F001-123");
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "MISSING_TOKEN");

    // Without one, or with an unsafe one, the gateway makes its own.
    for sent in [None, Some("bad id\twith tab")] {
        let extra: Vec<(&str, &str)> = sent.iter().map(|v| ("X-Request-Id", *v)).collect();
        let (status, headers, body) = app.request_with("GET", "/nothing/here", None, None, &extra).await;
        assert_eq!(status, 404);
        let echoed = header(&headers, "x-request-id").expect("a generated id");
        assert_eq!(echoed.len(), 32);
        assert_eq!(body["requestId"], echoed);
    }
    let (status, headers, _) = app.request_with("GET", "/health", None, None, &[]).await;
    assert_eq!(status, 200);
    assert!(header(&headers, "x-request-id").is_some(), "successes carry it too");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let (status, doc) = app.request("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap_or_default().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("post", "/api/send-pdf"),
        ("get", "/api/messages/{messageId}"),
        ("get", "/ws/session/{sessionId}"),
        ("get", "/health"),
        ("get", "/health/live"),
        ("get", "/health/ready"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("post", "/api/sessions"),
        ("get", "/api/sessions"),
        ("get", "/api/sessions/{sessionId}"),
        ("delete", "/api/sessions/{sessionId}"),
        ("get", "/api/sessions/{sessionId}/qr"),
        ("post", "/api/sessions/{sessionId}/restart"),
        ("post", "/api/sessions/{sessionId}/logout"),
        ("post", "/api/sessions/{sessionId}/pairing-code"),
        ("post", "/api/sessions/{sessionId}/messages"),
        ("get", "/api/sessions/{sessionId}/messages"),
        ("get", "/api/messages/{messageId}/media"),
        ("get", "/ws/events"),
        ("get", "/api/sessions/{sessionId}/contacts/{phone}"),
        ("post", "/api/sessions/{sessionId}/contacts/check"),
        ("get", "/api/sessions/{sessionId}/chats"),
        ("post", "/api/sessions/{sessionId}/chats/{chat}/read"),
        ("post", "/api/webhooks"),
        ("get", "/api/webhooks"),
        ("delete", "/api/webhooks/{id}"),
        ("get", "/api/webhooks/{id}/deliveries"),
        ("post", "/api/webhooks/{id}/deliveries/{deliveryId}/retry"),
        ("post", "/api/webhooks/{id}/deliveries/retry"),
        ("get", "/"),
        ("get", "/admin"),
        ("get", "/admin/"),
        ("get", "/admin/app.js"),
        ("get", "/admin/app.css"),
        ("get", "/admin/favicon.svg"),
    ];
    for (method, path) in expected {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is missing from the document");
    }
    assert_eq!(paths.values().map(|p| p.as_object().map_or(0, |m| m.len())).sum::<usize>(), expected.len());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    // Every documented operation is served (no route-level 404 or 405).
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{messageId}", "3EB0PROBE").replace("{sessionId}", "probe");
            let body = (method == "post").then(|| "{}".to_owned());
            let (status, _, body) = app.request_with(&method.to_uppercase(), &concrete, None, body, &[]).await;
            let code = body["error"]["code"].as_str().unwrap_or_default().to_owned();
            assert!(status != 405 && code != "NOT_FOUND", "{method} {path}: {status} {body}");
        }
    }
    app.stop().await;
    fake.shutdown().await;
}

/// The value of the series `name` whose labels include every one of `labels`, from Prometheus
/// text; `None` when no such series is there.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (head, value) = line.rsplit_once(' ')?;
        let (series_name, label_text) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (head, ""),
        };
        let have: Vec<(&str, &str)> = label_text
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        (series_name == name && labels.iter().all(|label| have.contains(label))).then(|| value.parse().ok())?
    })
}

/// `/metrics` with the admin token.
pub(crate) async fn scrape(app: &TestApp) -> String {
    let url = app.url("/metrics");
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .expect("metrics")
            .into_body()
            .read_to_string()
            .expect("text")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn metrics_count_what_this_session_did() {
    let fake = fake().await;
    let dir = temp_dir();
    // The recorder is shared by every gateway in this process: assertions are on this test's
    // session's series, or on deltas of a global one.
    let app = TestApp::spawn_with(config(&fake, &dir, &[("METRICS_LISTEN", "127.0.0.1:0")])).await;
    let session = "metricas";
    let (status, _) =
        app.request("POST", "/api/sessions", Some(TOKEN), Some(format!(r#"{{"sessionId":"{session}"}}"#))).await;
    assert_eq!(status, 201);
    let before = scrape(&app).await;
    let pdf_bytes = pdf("metrics");
    let (status, accepted) = app.send_pdf(session, "51987000071", &pdf_bytes, None).await;
    assert_eq!(status, 202);
    let id = accepted["messageId"].as_str().unwrap().to_owned();

    // Not linked yet: it waits, counted with its bytes.
    let waiting = scrape(&app).await;
    let on = [("session", session)];
    assert_eq!(series(&waiting, "gateway_queue_depth_messages", &on), Some(1.0), "{waiting}");
    assert_eq!(series(&waiting, "gateway_queue_depth_bytes", &on), Some(pdf_bytes.len() as f64));
    let accepted_202 = |text: &str| {
        series(text, "gateway_http_requests_total", &[("route", "/api/send-pdf"), ("status", "202")]).unwrap_or(0.0)
    };
    assert!(accepted_202(&waiting) >= accepted_202(&before) + 1.0, "the 202 is counted");

    let jid = link(&app, &fake, session, "51900000071").await;
    app.wait_status(&id, "delivered").await;
    let sent = scrape(&app).await;
    assert_eq!(series(&sent, "gateway_queue_depth_messages", &on), Some(0.0));
    assert_eq!(series(&sent, "gateway_queue_depth_bytes", &on), Some(0.0));
    assert_eq!(series(&sent, "gateway_sends_total", &[("session", session), ("outcome", "sent")]), Some(1.0));
    assert_eq!(series(&sent, "gateway_sends_total", &[("session", session), ("outcome", "retry")]), None);
    let count = |text: &str, name: &str| series(text, name, &[]).unwrap_or(0.0);
    for histogram in
        ["gateway_message_accepted_to_sent_seconds_count", "gateway_message_sent_to_delivered_seconds_count"]
    {
        assert!(count(&sent, histogram) >= count(&before, histogram) + 1.0, "{histogram} recorded the PDF");
    }
    assert!(series(&sent, "gateway_sessions", &[("status", "connected")]).is_some_and(|n| n >= 1.0));
    assert_eq!(series(&sent, "gateway_session_reconnects_total", &on), None, "no reconnect yet");

    // The connection drops and comes back: one reconnect, on this session.
    let mut events = fake.subscribe();
    fake.admin().drop_connection(&jid).expect("drop");
    wait_event(&mut events, |e| {
        matches!(e, fake_whatsapp::FakeEvent::DeviceDisconnected { jid: j } if *j == jid).then_some(())
    })
    .await;
    let reconnected = tokio::time::timeout(WAIT, async {
        loop {
            let text = scrape(&app).await;
            if let Some(n) = series(&text, "gateway_session_reconnects_total", &on) {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the reconnect is counted");
    assert_eq!(reconnected, 1.0);

    // The unauthenticated /metrics is refused; the private listener answers without a token.
    let (status, headers, _) = app.request_with("GET", "/metrics", None, None, &[]).await;
    assert_eq!(status, 401, "{headers:?}");
    let metrics_addr = app.metrics_addr.expect("METRICS_LISTEN is bound");
    let open = tokio::task::spawn_blocking(move || {
        ureq::get(&format!("http://{metrics_addr}/metrics")).call().expect("open metrics").into_body().read_to_string()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(series(&open, "gateway_sends_total", &[("session", session), ("outcome", "sent")]), Some(1.0));
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn health_probes() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let (status, live) = app.request("GET", "/health/live", None, None).await;
    assert_eq!((status, live["status"].as_str()), (200, Some("ok")));
    let (status, ready) = app.request("GET", "/health/ready", None, None).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (status, health) = app.request("GET", "/health", None, None).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    app.stop().await;
    fake.shutdown().await;
}

/// Opens `/ws/session/{session}` by hand and returns the socket after the 101.
pub(crate) async fn raw_ws(addr: SocketAddr, session: &str) -> TcpStream {
    raw_ws_at(addr, &format!("/ws/session/{session}")).await
}

/// Opens the WebSocket at `path` by hand and returns the socket after the 101.
pub(crate) async fn raw_ws_at(addr: SocketAddr, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(SHORT, tcp.read_exact(&mut byte)).await.expect("handshake").unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// A masked client frame.
pub(crate) fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// One server frame: (opcode, payload).
pub(crate) async fn read_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await.expect("a frame");
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            tcp.read_exact(&mut n).await.unwrap();
            u16::from_be_bytes(n) as usize
        }
        127 => {
            let mut n = [0u8; 8];
            tcp.read_exact(&mut n).await.unwrap();
            u64::from_be_bytes(n) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    (head[0] & 0x0f, payload)
}

/// Reads server frames until a close frame, and returns its code.
pub(crate) async fn close_code(tcp: &mut TcpStream) -> u16 {
    tokio::time::timeout(SHORT, async {
        loop {
            if let (0x8, payload) = read_frame(tcp).await {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    })
    .await
    .expect("a close frame in time")
}

#[tokio::test]
async fn websocket_protocol_errors_close_with_the_right_code() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("WS_MAX_MESSAGE_BYTES", "1024")])).await;
    let cases: [(&str, Vec<u8>, u16); 3] = [
        ("reserved bits set", frame(0x80 | 0x40 | 0x1, b"hi"), 1002),
        ("invalid utf-8", frame(0x81, &[0xff, 0xfe, 0xfd]), 1007),
        ("too big", frame(0x82, &[0u8; 4096]), 1009),
    ];
    for (what, bytes, expected) in cases {
        let mut tcp = raw_ws(app.addr, "protocolo").await;
        tcp.write_all(&bytes).await.unwrap();
        assert_eq!(close_code(&mut tcp).await, expected, "{what}");
    }
    app.stop().await;
    fake.shutdown().await;
}

/// The address a gateway child process says it listens on, from its log.
async fn wait_for_listening_addr(log: &Path) -> SocketAddr {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(addr) = crate::support::listening_addr(&std::fs::read_to_string(log).unwrap_or_default()) {
                return addr;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the gateway says where it listens")
}

#[tokio::test]
async fn out_of_descriptors_it_keeps_its_logs_and_recovers() {
    let dir = temp_dir();
    let log = dir.join("gateway.log");
    let bin = env!("CARGO_BIN_EXE_whatsapp-gateway");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n 256 && exec '{bin}' >'{}' 2>&1", log.display()))
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("API_STATIC_TOKEN", TOKEN)
        .env("SESSIONS_DIR", dir.join("sessions"))
        .env("SESSIONS_CONFIG", dir.join("sessions.config.json"))
        .env("DATA_DIR", dir.join("data"))
        .env("HTTP_HEADER_TIMEOUT_SECS", "60")
        .env("LOG_LEVEL", "warn,whatsapp_gateway::api=debug,whatsapp_gateway::app=info")
        .spawn()
        .expect("the gateway binary starts");
    // It binds port 0 and says where: no free port is guessed (and raced for) beforehand.
    let addr = wait_for_listening_addr(&log).await;
    let health = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(mut tcp) = TcpStream::connect(addr).await {
                let _ = tcp.write_all(health.as_bytes()).await;
                let mut answer = Vec::new();
                let _ = tcp.read_to_end(&mut answer).await;
                if answer.starts_with(b"HTTP/1.1 200") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the gateway answers /health");

    // A request id reaches the log lines of its request (a rejected token is logged at debug).
    let (status, _, _) = raw(
        addr,
        b"GET /api/messages/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-token-000000\r\n\
          X-Request-Id: trace-me-42\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);

    // Use up every descriptor the gateway has (its limit is 256; the listen backlog holds the
    // connections it cannot accept), then wait until it says so.
    let mut held = Vec::new();
    let ran_out = || std::fs::read_to_string(&log).unwrap_or_default().contains("accept failed");
    for _ in 0..400 {
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => held.push(tcp),
            // The backlog is full too: stop once the gateway has hit its limit.
            _ if ran_out() => break,
            _ => {}
        }
    }
    tokio::time::timeout(WAIT, async {
        while !ran_out() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("descriptors never ran out with {} connections", held.len()));
    // How fast it backs off and how little it logs are measured by the unit test of
    // `AcceptErrors` (with injected time), not here on the wall clock.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.lines().any(|l| l.contains("trace-me-42") && l.contains("not authenticated")),
        "the request id is in the request's log lines:\n{text}"
    );

    // Close them: it serves again straight away.
    drop(held);
    let (status, _, _) = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Ok(mut tcp)) = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
                let _ = tcp.write_all(health.as_bytes()).await;
                let mut answer = Vec::new();
                if tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut answer)).await.is_ok()
                    && answer.starts_with(b"HTTP/1.1 200")
                {
                    return parse_response(&answer);
                }
            }
        }
    })
    .await
    .expect("serves again once the sockets close");
    assert_eq!(status, 200);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_admin_page_needs_no_token_and_is_served_with_a_strict_policy() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    for (path, to) in [("/", "admin"), ("/admin/", "../admin")] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let (status, headers, _) = raw(app.addr, request.as_bytes()).await;
        assert_eq!((status, header(&headers, "location")), (302, Some(to)), "{path}");
    }
    let (status, headers, body) = raw(app.addr, b"GET /admin HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").await;
    assert_eq!((status, header(&headers, "content-type")), (200, Some("text/html; charset=utf-8")));
    let policy = header(&headers, "content-security-policy").expect("a CSP");
    for part in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(policy.contains(part), "{policy}");
    }
    assert_eq!(header(&headers, "x-frame-options"), Some("DENY"));
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    assert!(body.contains("id=\"qr\"") && !body.contains(TOKEN), "the page, with no secret in it");
    for (path, kind, size) in [
        ("/admin/app.js", "text/javascript; charset=utf-8", 1000),
        ("/admin/app.css", "text/css; charset=utf-8", 1000),
        ("/admin/favicon.svg", "image/svg+xml", 100),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let (status, headers, body) = raw(app.addr, request.as_bytes()).await;
        assert_eq!((status, header(&headers, "content-type")), (200, Some(kind)), "{path}");
        assert!(body.len() > size, "{path}");
        // The page's own headers on every asset.
        assert_eq!(header(&headers, "content-security-policy"), Some(policy), "{path}");
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(header(&headers, "x-frame-options"), Some("DENY"), "{path}");
    }
    assert!(body.contains(r#"<link rel="icon" href="admin/favicon.svg""#), "the page names its icon");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn error_messages_follow_accept_language_and_codes_stay() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    // (Accept-Language, the language of the answer)
    let cases = [
        (None, "en"),
        (Some("es"), "es"),
        (Some("es-PE,es;q=0.9,en;q=0.8"), "es"),
        (Some("en-US,en;q=0.9"), "en"),
        (Some("en;q=0.5, es;q=0.8"), "es"),
        (Some("es;q=0.2, en"), "en"),
        (Some("es;q=0"), "en"),
        (Some("fr-FR, es;q=0.3"), "es"),
        (Some("fr-FR"), "en"),
    ];
    for (accept, language) in cases {
        let extra: Vec<(&str, &str)> = accept.iter().map(|v| ("Accept-Language", *v)).collect();
        // An unknown session (a handler), no token (an extractor), an unknown path (the router's
        // fallback) and a wrong method (axum's own 405).
        let probes = [
            (
                "GET",
                "/api/sessions/nadie",
                Some(TOKEN),
                "SESSION_NOT_FOUND",
                "session not found",
                "no existe esa sesión",
            ),
            ("GET", "/api/sessions", None, "MISSING_TOKEN", "missing bearer token", "falta el token"),
            ("GET", "/nada/aqui", None, "NOT_FOUND", "not found", "no encontrado"),
            ("PUT", "/api/send-pdf", Some(TOKEN), "METHOD_NOT_ALLOWED", "method not allowed", "método no permitido"),
        ];
        for (method, path, token, code, english, spanish) in probes {
            let (_, headers, body) = app.request_with(method, path, token, None, &extra).await;
            assert_eq!(body["error"]["code"], code, "{accept:?} {path}: the code does not change: {body}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            let expected = if language == "es" { spanish } else { english };
            assert!(message.starts_with(expected), "{accept:?} {method} {path}: {message:?}");
            assert_eq!(header(&headers, "content-language"), Some(language), "{accept:?} {path}");
            assert!(
                headers.iter().any(|(k, v)| k == "vary" && v.to_ascii_lowercase().contains("accept-language")),
                "{accept:?} {path}: caches keep the two apart"
            );
            assert!(body["requestId"].as_str().is_some_and(|id| !id.is_empty()), "{body}");
        }
    }
    // Successes are not touched.
    let (status, headers, _) =
        app.request_with("GET", "/api/sessions", Some(TOKEN), None, &[("Accept-Language", "es")]).await;
    assert_eq!((status, header(&headers, "content-language")), (200, None));
    app.stop().await;
    fake.shutdown().await;
}
