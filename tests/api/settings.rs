//! Each documented setting that no other test sets, set to a value whose effect a client can
//! see: the queue's bounds, the JSON body and header limits, inbound retention, the
//! environment's webhook endpoint secret, the webhook outbox bound, the QR link window, the send
//! retry limit, and, through the real binary, `CONFIG_FILE`, `.env` and `RUST_LOG`. Each test
//! fails when its setting is ignored (the default would behave differently).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::platform::parse_response;
use crate::support::*;

/// A bound that a broken setting turns into a timeout: shorter than [`WAIT`] so it fails fast.
const SOON: Duration = Duration::from_secs(10);

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

fn retry_after(headers: &[(String, String)]) -> Option<u64> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("retry-after")).and_then(|(_, v)| v.parse().ok())
}

/// A PDF of exactly `size` bytes (a comment pads it).
fn sized_pdf(tag: &str, size: usize) -> Vec<u8> {
    let mut bytes = pdf(tag);
    assert!(bytes.len() < size);
    let pad = size - bytes.len();
    let mut padded = b"%".to_vec();
    padded.extend(std::iter::repeat_n(b'x', pad.saturating_sub(2)));
    padded.push(b'\n');
    bytes.splice(9..9, padded);
    assert_eq!(bytes.len(), size);
    bytes
}

async fn create_session(app: &TestApp, id: &str) {
    let (status, body) =
        app.request("POST", "/api/sessions", Some(TOKEN), Some(json!({"sessionId": id}).to_string())).await;
    assert_eq!(status, 201, "{body}");
}

/// Sends a PDF and expects 202; returns the message id.
async fn accepted(app: &TestApp, session: &str, pdf: &[u8]) -> String {
    let (status, body) = app.send_pdf(session, "51987000070", pdf, None).await;
    assert_eq!(status, 202, "{session}: {body}");
    body["messageId"].as_str().expect("messageId").to_owned()
}

/// Sends a PDF and expects 429 QUEUE_FULL with a Retry-After.
async fn refused(app: &TestApp, session: &str, pdf: &[u8]) {
    let body = TestApp::send_pdf_body(session, "51987000070", pdf, None);
    let (status, headers, answer) = app.request_with("POST", "/api/send-pdf", Some(TOKEN), Some(body), &[]).await;
    assert_eq!((status, code(&answer)), (429, "QUEUE_FULL"), "{session}: {answer}");
    assert!(retry_after(&headers).is_some_and(|secs| secs >= 1), "{headers:?}");
}

/// The ids of the messages stored for `session` to send.
async fn stored_out(app: &TestApp, session: &str) -> Vec<String> {
    let (status, page) =
        app.request("GET", &format!("/api/sessions/{session}/messages?direction=out"), Some(TOKEN), None).await;
    assert_eq!(status, 200, "{page}");
    let mut ids: Vec<String> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["messageId"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_max_bytes_per_session_refuses_past_the_sessions_bytes() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("QUEUE_MAX_BYTES_PER_SESSION", "2500")])).await;
    // Never linked: nothing leaves the lanes.
    create_session(&app, "bytes_a").await;
    create_session(&app, "bytes_b").await;
    let mut ids = vec![accepted(&app, "bytes_a", &sized_pdf("a1", 1000)).await];
    ids.push(accepted(&app, "bytes_a", &sized_pdf("a2", 1000)).await);
    // 3000 bytes would wait: refused, though two messages are far from QUEUE_MAX_PER_SESSION.
    refused(&app, "bytes_a", &sized_pdf("a3", 1000)).await;
    assert_eq!(stored_out(&app, "bytes_a").await, sorted(ids.clone()), "nothing stored for the refused one");
    // A smaller one still fits (2400 bytes), and the bound is this session's alone.
    ids.push(accepted(&app, "bytes_a", &sized_pdf("a4", 400)).await);
    accepted(&app, "bytes_b", &sized_pdf("b1", 1000)).await;
    assert_eq!(stored_out(&app, "bytes_a").await, sorted(ids));
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_max_total_refuses_past_the_count_of_every_session() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("QUEUE_MAX_TOTAL", "3")])).await;
    create_session(&app, "total_a").await;
    create_session(&app, "total_b").await;
    let a = vec![accepted(&app, "total_a", &pdf("a1")).await, accepted(&app, "total_a", &pdf("a2")).await];
    let b = vec![accepted(&app, "total_b", &pdf("b1")).await];
    // Three wait in all: each session is refused, with one or two of its own waiting.
    refused(&app, "total_b", &pdf("b2")).await;
    refused(&app, "total_a", &pdf("a3")).await;
    assert_eq!(stored_out(&app, "total_a").await, sorted(a), "nothing stored for the refused ones");
    assert_eq!(stored_out(&app, "total_b").await, sorted(b));
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_max_total_bytes_refuses_past_the_bytes_of_every_session() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("QUEUE_MAX_TOTAL_BYTES", "2500")])).await;
    create_session(&app, "tbytes_a").await;
    create_session(&app, "tbytes_b").await;
    let a = vec![accepted(&app, "tbytes_a", &sized_pdf("a1", 1000)).await];
    let mut b = vec![accepted(&app, "tbytes_b", &sized_pdf("b1", 1000)).await];
    // 3000 bytes in all: refused, though each session holds only 1000.
    refused(&app, "tbytes_b", &sized_pdf("b2", 1000)).await;
    refused(&app, "tbytes_a", &sized_pdf("a2", 1000)).await;
    assert_eq!(stored_out(&app, "tbytes_a").await, sorted(a), "nothing stored for the refused ones");
    assert_eq!(stored_out(&app, "tbytes_b").await, sorted(b.clone()));
    // 2400 in all fits.
    b.push(accepted(&app, "tbytes_b", &sized_pdf("b3", 400)).await);
    assert_eq!(stored_out(&app, "tbytes_b").await, sorted(b));
    app.stop().await;
    fake.shutdown().await;
}

/// A `POST /api/sessions` body of exactly `size` bytes.
fn create_body(id: &str, size: usize) -> String {
    let empty = json!({"sessionId": id, "metadata": {"note": ""}}).to_string();
    let body = json!({"sessionId": id, "metadata": {"note": "n".repeat(size - empty.len())}}).to_string();
    assert_eq!(body.len(), size);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_max_json_bytes_limits_json_routes_but_not_send_pdf() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("HTTP_MAX_JSON_BYTES", "1024")])).await;
    let (status, answer) =
        app.request("POST", "/api/sessions", Some(TOKEN), Some(create_body("json_over", 1025))).await;
    assert_eq!((status, code(&answer)), (413, "PAYLOAD_TOO_LARGE"), "{answer}");
    let (status, _) = app.request("GET", "/api/sessions/json_over", Some(TOKEN), None).await;
    assert_eq!(status, 404, "the refused body created nothing");
    let (status, answer) =
        app.request("POST", "/api/sessions", Some(TOKEN), Some(create_body("json_under", 1024))).await;
    assert_eq!(status, 201, "{answer}");
    // POST /api/send-pdf has its own limit (MAX_BODY_BYTES): a larger body is taken.
    let (status, answer) = app.send_pdf("json_under", "51987000071", &sized_pdf("big", 4096), None).await;
    assert_eq!(status, 202, "{answer}");
    app.stop().await;
    fake.shutdown().await;
}

/// A raw HTTP/1.1 exchange that tolerates the server answering (and closing) before it has read
/// the whole request.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.write_all(request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(SOON, tcp.read_to_end(&mut response)).await.expect("an answer in time");
    let (status, _, body) = parse_response(&response);
    (status, body)
}

/// A raw `GET /health` whose request line and headers take `size` bytes.
fn request_of(size: usize) -> Vec<u8> {
    let head = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: ";
    let tail = "\r\n\r\n";
    let mut request = head.as_bytes().to_vec();
    request.extend(std::iter::repeat_n(b'a', size - head.len() - tail.len()));
    request.extend(tail.as_bytes());
    assert_eq!(request.len(), size);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_max_header_bytes_sets_where_431_begins() {
    let fake = fake().await;
    let dir = temp_dir();
    let extra = [("HTTP_MAX_HEADER_BYTES", "32768"), ("HTTP_HEADER_TIMEOUT_SECS", "60")];
    let app = TestApp::spawn_with(config(&fake, &dir, &extra)).await;
    // Twice the default of 16 KiB, just under the setting: served (the default answers 431).
    let (status, body) = exchange(app.addr, &request_of(32_000)).await;
    assert_eq!(status, 200, "{body}");
    // Headers still coming 1 KiB past it: 431, and the server goes on. They never end, so
    // nothing but the limit can answer (not the header timeout: that is a minute here).
    let mut endless = request_of(32_768 + 1024);
    endless.truncate(endless.len() - 4);
    let (status, body) = exchange(app.addr, &endless).await;
    assert_eq!(status, 431, "{body}");
    let (status, _) = app.request("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    app.stop().await;
    fake.shutdown().await;
}

/// The ids of the received messages `GET /api/sessions/{session}/messages` lists.
async fn received(app: &TestApp, session: &str) -> Vec<String> {
    let (status, page) = app.request("GET", &format!("/api/sessions/{session}/messages"), Some(TOKEN), None).await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().expect("items").iter().filter_map(|m| m["messageId"].as_str().map(str::to_owned)).collect()
}

/// Polls `check` every 50 ms until it holds, within `within`.
async fn until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(within, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {within:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_retention_days_prunes_older_received_messages_at_start() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let gateway_phone = "51900000072";
    link(&app, &fake, "retencion", gateway_phone).await;
    let old = fake.admin().send_text("51987000072", gateway_phone, "antiguo").await.expect("text");
    let recent = fake.admin().send_text("51987000072", gateway_phone, "reciente").await.expect("text");
    until(WAIT, "both messages stored", || async { received(&app, "retencion").await.len() == 2 }).await;
    app.stop().await;

    // Age them through a side connection: one by two days, the other by half a day.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let day_ms = 86_400_000_i64;
    let aged = [(&old, now_ms - 2 * day_ms), (&recent, now_ms - day_ms / 2)];
    match backend_url(&dir) {
        None => {
            let db = rusqlite::Connection::open(dir.join("data").join("inbox.db")).expect("inbox.db");
            for (id, stored_at) in aged {
                let changed = db
                    .execute(
                        "UPDATE incoming SET stored_at = ?1 WHERE message_id = ?2",
                        rusqlite::params![stored_at, id],
                    )
                    .expect("age a row");
                assert_eq!(changed, 1, "{id}");
            }
        }
        Some(url) => {
            use sqlx::Connection as _;
            let mut db = sqlx::PgConnection::connect(&url).await.expect("Postgres");
            for (id, stored_at) in aged {
                let changed = sqlx::query("UPDATE inbox_messages SET stored_at = $1 WHERE message_id = $2")
                    .bind(stored_at)
                    .bind(id.as_str())
                    .execute(&mut db)
                    .await
                    .expect("age a row");
                assert_eq!(changed.rows_affected(), 1, "{id}");
            }
        }
    }

    // A one-day retention prunes at start-up (the prune's first round is immediate).
    let app = TestApp::spawn_with(config(&fake, &dir, &[("INBOUND_RETENTION_DAYS", "1")])).await;
    until(SOON, "the two-day-old message pruned", || async { !received(&app, "retencion").await.contains(&old) }).await;
    assert_eq!(received(&app, "retencion").await, [recent], "the half-day-old one is kept");
    let (status, _) = app.request("GET", &format!("/api/messages/{old}/media"), Some(TOKEN), None).await;
    assert_eq!(status, 404);
    app.stop().await;
    fake.shutdown().await;
}

/// One request a [`Hooks`] receiver got.
struct Post {
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

/// A webhook receiver on loopback that answers every post with `status`.
struct Hooks {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Hooks {
    async fn start(status: u16) -> (Hooks, mpsc::UnboundedReceiver<Post>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (got, posts) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let got = got.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let got = got.clone();
                        async move {
                            let headers = req.headers().clone();
                            let body =
                                req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            let _ = got.send(Post { headers, body });
                            hyper::Response::builder().status(status).body(http_body_util::Empty::<bytes::Bytes>::new())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (Hooks { addr, task }, posts)
    }

    fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_secret_signs_the_environments_endpoint() {
    use base64::Engine as _;
    let fake = fake().await;
    let dir = temp_dir();
    let (hooks, mut posts) = Hooks::start(200).await;
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
    let url = hooks.url();
    let extra = [("WEBHOOK_URL", url.as_str()), ("WEBHOOK_SECRET", secret.as_str())];
    let app = TestApp::spawn_with(config(&fake, &dir, &extra)).await;
    let _watch = app.ws("firmada").await;
    let post = tokio::time::timeout(WAIT, posts.recv()).await.expect("a post in time").expect("receiver open");
    let event: Value = serde_json::from_slice(&post.body).expect("a JSON event");
    assert_eq!(event["sessionId"], "firmada", "{event}");
    standardwebhooks::Webhook::new(&secret)
        .expect("secret")
        .verify(&post.body, &post.headers)
        .expect("signed with WEBHOOK_SECRET");
    let other = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([8u8; 32]));
    assert!(
        standardwebhooks::Webhook::new(&other).expect("secret").verify(&post.body, &post.headers).is_err(),
        "another secret does not verify it"
    );
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_outbox_max_sends_the_overflow_to_dead_letters_at_once() {
    let fake = fake().await;
    let dir = temp_dir();
    // The receiver is down, and the next try is a minute away: what is pending stays pending.
    let (hooks, _posts) = Hooks::start(503).await;
    let extra = [("WEBHOOK_OUTBOX_MAX", "2"), ("WEBHOOK_RETRY_BASE_MS", "60000")];
    let app = TestApp::spawn_with(config(&fake, &dir, &extra)).await;
    let (status, created) =
        app.request("POST", "/api/webhooks", Some(TOKEN), Some(json!({"url": hooks.url()}).to_string())).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    // A watcher makes events: the session's statuses, its QR.
    let _watch = app.ws("desborde").await;
    let deliveries = |status: &'static str| {
        let (app, id) = (&app, &id);
        async move {
            let path = format!("/api/webhooks/{id}/deliveries?status={status}");
            let (code, page) = app.request("GET", &path, Some(TOKEN), None).await;
            assert_eq!(code, 200, "{page}");
            page["items"].as_array().expect("items").clone()
        }
    };
    let (pending, failed) = tokio::time::timeout(SOON, async {
        loop {
            let seen = (deliveries("pending").await, deliveries("failed").await);
            if seen.0.len() + seen.1.len() >= 3 {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("three deliveries recorded");
    assert_eq!(pending.len(), 2, "WEBHOOK_OUTBOX_MAX wait: {pending:?}");
    assert!(!failed.is_empty(), "{failed:?}");
    for dead in &failed {
        assert_eq!(dead["lastError"].as_str(), Some("outbox full"), "{dead}");
    }
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retention_days_prunes_settled_deliveries_at_start() {
    let fake = fake().await;
    let dir = temp_dir();
    let (hooks, _posts) = Hooks::start(200).await;
    let app = TestApp::spawn(&fake, &dir).await;
    let (status, created) =
        app.request("POST", "/api/webhooks", Some(TOKEN), Some(json!({"url": hooks.url()}).to_string())).await;
    assert_eq!(status, 201, "{created}");
    let endpoint = created["id"].as_str().expect("id").to_owned();
    let delivered = async |app: &TestApp| -> Vec<i64> {
        let path = format!("/api/webhooks/{endpoint}/deliveries?status=delivered");
        let (code, page) = app.request("GET", &path, Some(TOKEN), None).await;
        assert_eq!(code, 200, "{page}");
        page["items"].as_array().expect("items").iter().filter_map(|d| d["id"].as_i64()).collect()
    };
    // A watcher makes events (the session's statuses, its QR): two of them delivered.
    let watch = app.ws("poda").await;
    let ids = tokio::time::timeout(WAIT, async {
        loop {
            let ids = delivered(&app).await;
            if ids.len() >= 2 {
                return ids;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("two deliveries delivered");
    drop(watch);
    app.stop().await;

    // Through a side connection: one settled two days ago, another half a day ago.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let day_ms = 86_400_000_i64;
    let (old, recent) = (ids[ids.len() - 1], ids[ids.len() - 2]);
    let aged = [(old, now_ms - 2 * day_ms), (recent, now_ms - day_ms / 2)];
    match backend_url(&dir) {
        None => {
            let db = rusqlite::Connection::open(dir.join("data").join("webhooks.db")).expect("webhooks.db");
            for (id, settled_at) in aged {
                let changed = db
                    .execute("UPDATE deliveries SET updated_at = ?1 WHERE id = ?2", rusqlite::params![settled_at, id])
                    .expect("age a row");
                assert_eq!(changed, 1, "{id}");
            }
        }
        Some(url) => {
            use sqlx::Connection as _;
            let mut db = sqlx::PgConnection::connect(&url).await.expect("Postgres");
            for (id, settled_at) in aged {
                let changed = sqlx::query("UPDATE webhook_deliveries SET updated_at = $1 WHERE id = $2")
                    .bind(settled_at)
                    .bind(id)
                    .execute(&mut db)
                    .await
                    .expect("age a row");
                assert_eq!(changed.rows_affected(), 1, "{id}");
            }
        }
    }

    // A one-day retention prunes at start-up (the prune's first round is immediate).
    let app = TestApp::spawn_with(config(&fake, &dir, &[("WEBHOOK_RETENTION_DAYS", "1")])).await;
    until(SOON, "the delivery settled two days ago pruned", || async { !delivered(&app).await.contains(&old) }).await;
    let left = delivered(&app).await;
    assert!(left.contains(&recent), "the one settled half a day ago is kept: {left:?}");
    assert!(ids.iter().filter(|id| **id != old).all(|id| left.contains(id)), "only the old one went: {left:?}");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_link_window_secs_stops_linking_that_long_after_the_last_qr() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("QR_LINK_WINDOW_SECS", "1")])).await;
    create_session(&app, "ventana").await;
    let mut events = fake.subscribe();
    let asked = tokio::time::Instant::now();
    let (status, qr) = app.request("GET", "/api/sessions/ventana/qr", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{qr}");
    // Nobody asks again: the client showing QR codes leaves (the default window is 120 s).
    tokio::time::timeout(SOON, async {
        loop {
            match events.recv().await {
                Ok(fake_whatsapp::FakeEvent::UnlinkedDisconnected) => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("linking stops after QR_LINK_WINDOW_SECS");
    assert!(asked.elapsed() >= Duration::from_secs(1), "not before the window ends: {:?}", asked.elapsed());
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_max_attempts_gives_up_after_that_many_failed_sends() {
    let fake = fake().await;
    // Another fake's CA: the gateway trusts it alone, so every upload to this fake's media
    // server fails its TLS check, a failure worth retrying.
    let stranger = fake_whatsapp::FakeWhatsApp::start(fake_whatsapp::FakeConfig::default()).await.expect("fake");
    let dir = temp_dir();
    let ca = stranger.ca_file().display().to_string();
    let extra = [("RETRY_MAX_ATTEMPTS", "3"), ("WHATSAPP_CA_FILE", ca.as_str())];
    let app = TestApp::spawn_with(config(&fake, &dir, &extra)).await;
    link(&app, &fake, "reintentos", "51900000073").await;
    let id = accepted(&app, "reintentos", &pdf("reintento")).await;
    let failed = app.wait_status(&id, "failed").await;
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert!(failed["lastError"].as_str().is_some_and(|e| e.starts_with("gave up after 3 attempts")), "{failed}");
    assert!(fake.admin().messages("51987000070").is_empty(), "nothing reached the phone");
    app.stop().await;
    stranger.shutdown().await;
    fake.shutdown().await;
}

/// The real gateway binary, killed on drop, with its log.
struct Gateway {
    child: Child,
    log: std::path::PathBuf,
}

impl Gateway {
    /// Starts the binary in `cwd` with only `env` (and `PATH`), logging to `cwd/gateway.log`.
    fn start(cwd: &Path, env: &[(&str, &str)]) -> Gateway {
        let log = cwd.join("gateway.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_whatsapp-gateway"));
        command
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            command.env(k, v);
        }
        Gateway { child: command.spawn().expect("the gateway binary starts"), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where it listens, from its log line `whatsapp-gateway listening addr=…`.
    async fn addr(&mut self) -> SocketAddr {
        let found = tokio::time::timeout(SOON, async {
            loop {
                if let Some(addr) = listening_addr(&self.log()) {
                    return addr;
                }
                if let Ok(Some(exit)) = self.child.try_wait() {
                    panic!("the gateway exited ({exit}):\n{}", self.log());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("the gateway never said where it listens:\n{}", self.log()))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (status, JSON body) of a request to a gateway at `addr`.
async fn call(addr: SocketAddr, method: &str, path: &str, token: &str, body: Option<String>) -> (u16, Value) {
    let (url, method, token) = (format!("http://{addr}{path}"), method.to_owned(), token.to_owned());
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
        let req = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(url)
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json");
        let response = agent.run(req.body(body.unwrap_or_default()).expect("request")).expect("http round trip");
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    })
    .await
    .expect("request task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_names_the_file_that_is_read() {
    let dir = temp_dir();
    let elsewhere = temp_dir();
    let file = elsewhere.join("produccion.toml");
    std::fs::write(
        &file,
        "host = \"127.0.0.1\"\nport = 0\napi_static_token = \"file-token-0123456789\"\nhttp_max_json_bytes = 512\n",
    )
    .expect("config file");
    // The default file is there too, and is not read when CONFIG_FILE names another.
    std::fs::create_dir_all(dir.join("config")).expect("config dir");
    std::fs::write(dir.join("config/gateway.toml"), "api_static_token = \"default-file-token-0123\"\n").expect("file");
    let file = file.display().to_string();
    let mut gateway = Gateway::start(&dir, &[("CONFIG_FILE", file.as_str())]);
    let addr = gateway.addr().await;
    let (status, _) = call(addr, "GET", "/api/sessions", "file-token-0123456789", None).await;
    assert_eq!(status, 200, "the file's token:\n{}", gateway.log());
    let (status, _) = call(addr, "GET", "/api/sessions", "default-file-token-0123", None).await;
    assert!(status == 401 || status == 403, "not config/gateway.toml's: {status}");
    let (status, answer) =
        call(addr, "POST", "/api/sessions", "file-token-0123456789", Some(create_body("archivo", 513))).await;
    assert_eq!((status, code(&answer)), (413, "PAYLOAD_TOO_LARGE"), "the file's limit: {answer}");
    let (status, answer) =
        call(addr, "POST", "/api/sessions", "file-token-0123456789", Some(create_body("archivo", 512))).await;
    assert_eq!(status, 201, "{answer}");
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&elsewhere);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dot_env_file_fills_variables_and_the_real_environment_wins() {
    let dir = temp_dir();
    std::fs::write(
        dir.join(".env"),
        "HOST=127.0.0.1\nPORT=0\nAPI_STATIC_TOKEN=dotenv-token-0123456789\nHTTP_MAX_JSON_BYTES=64\n",
    )
    .expect(".env");
    let mut gateway = Gateway::start(&dir, &[("HTTP_MAX_JSON_BYTES", "2048")]);
    // HOST, PORT and the token come from .env alone.
    let addr = gateway.addr().await;
    let (status, _) = call(addr, "GET", "/api/sessions", "dotenv-token-0123456789", None).await;
    assert_eq!(status, 200, ".env's token:\n{}", gateway.log());
    // HTTP_MAX_JSON_BYTES is in both: the environment's 2048, not .env's 64.
    let (status, answer) =
        call(addr, "POST", "/api/sessions", "dotenv-token-0123456789", Some(create_body("entorno", 1024))).await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) =
        call(addr, "POST", "/api/sessions", "dotenv-token-0123456789", Some(create_body("entorno_2", 2049))).await;
    assert_eq!((status, code(&answer)), (413, "PAYLOAD_TOO_LARGE"), "{answer}");
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_overrides_log_level() {
    let dir = temp_dir();
    let env = [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("API_STATIC_TOKEN", TOKEN),
        ("LOG_LEVEL", "error"),
        ("RUST_LOG", "whatsapp_gateway=debug"),
    ];
    let mut gateway = Gateway::start(&dir, &env);
    // The "listening" line is at info: LOG_LEVEL=error alone would hide it.
    let addr = gateway.addr().await;
    // A refused token is logged at debug.
    let (status, _) = call(addr, "GET", "/api/sessions", "wrong-token-0123456789", None).await;
    assert!(status == 401 || status == 403, "{status}");
    until(SOON, "a debug line in the log", || async { gateway.log().contains("not authenticated") }).await;
    assert!(gateway.log().contains("DEBUG"), "{}", gateway.log());
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);

    // The README says every variable may come from `.env`: RUST_LOG too.
    let dir = temp_dir();
    std::fs::write(dir.join(".env"), "RUST_LOG=whatsapp_gateway=debug\n").unwrap();
    let env = [("HOST", "127.0.0.1"), ("PORT", "0"), ("API_STATIC_TOKEN", TOKEN), ("LOG_LEVEL", "error")];
    let mut gateway = Gateway::start(&dir, &env);
    let addr = gateway.addr().await;
    let (status, _) = call(addr, "GET", "/api/sessions", "wrong-token-0123456789", None).await;
    assert!(status == 401 || status == 403, "{status}");
    until(SOON, "a debug line in the log", || async { gateway.log().contains("not authenticated") }).await;
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}
