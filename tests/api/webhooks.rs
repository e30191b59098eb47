//! Webhooks end to end, with a real HTTP receiver: events arrive signed (checked with the
//! independent `standardwebhooks` crate), failures are retried under the same id, a 410 disables
//! the endpoint, dead letters are listed and replayed, and pending deliveries survive a restart.
//! A token other than the admin manages only its own endpoints, for its own sessions, posting to
//! public addresses only.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::support::*;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    headers: hyper::HeaderMap,
    pub(crate) body: Vec<u8>,
    status: u16,
}

/// A status the receiver never answers with: it holds the request unanswered.
const HANG: u16 = 0;

/// A webhook receiver on loopback: answers with the queued statuses, then 200 ([`HANG`]: no
/// answer at all).
pub(crate) struct Receiver {
    addr: SocketAddr,
    statuses: Arc<Mutex<VecDeque<u16>>>,
    got: broadcast::Sender<Received>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let statuses: Arc<Mutex<VecDeque<u16>>> = Arc::default();
        let (got, _) = broadcast::channel(1024);
        let accepted: Arc<AtomicUsize> = Arc::default();
        let (statuses2, got2, accepted2) = (Arc::clone(&statuses), got.clone(), Arc::clone(&accepted));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted2.fetch_add(1, Ordering::SeqCst);
                let (statuses, got) = (Arc::clone(&statuses2), got2.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (statuses, got) = (Arc::clone(&statuses), got.clone());
                        async move {
                            let headers = req.headers().clone();
                            let body =
                                req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            let status = statuses.lock().unwrap().pop_front().unwrap_or(200);
                            let _ = got.send(Received { headers, body, status });
                            if status == HANG {
                                std::future::pending::<()>().await;
                            }
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, statuses, got, accepted, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Every request from now on.
    pub(crate) fn requests(&self) -> broadcast::Receiver<Received> {
        self.got.subscribe()
    }

    pub(crate) fn answer(&self, statuses: &[u16]) {
        self.statuses.lock().unwrap().extend(statuses);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The next request whose event `pick` wants.
async fn next_post(rx: &mut broadcast::Receiver<Received>, pick: impl Fn(&Value) -> bool) -> (Received, Value) {
    tokio::time::timeout(WAIT, async {
        loop {
            let got = rx.recv().await.expect("receiver open");
            let event: Value = serde_json::from_slice(&got.body).expect("json body");
            if pick(&event) {
                return (got, event);
            }
        }
    })
    .await
    .expect("the webhook in time")
}

pub(crate) async fn create(app: &TestApp, body: Value) -> Value {
    let (status, created) = app.request("POST", "/api/webhooks", Some(TOKEN), Some(body.to_string())).await;
    assert_eq!(status, 201, "{created}");
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_and_failures_are_retried_under_the_same_id() {
    let fake = fake().await;
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let mut posts = receiver.got.subscribe();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("WEBHOOK_RETRY_BASE_MS", "50")])).await;
    let created = create(&app, json!({"url": receiver.url()})).await;
    let secret = created["secret"].as_str().expect("the secret, shown once").to_owned();
    assert!(secret.starts_with("whsec_"));
    let verifier = standardwebhooks::Webhook::new(&secret).expect("secret");

    // Linking posts the QR (with its PNG) and the connection, signed.
    let gateway_phone = "51900000090";
    link(&app, &fake, "ganchos", gateway_phone).await;
    let (qr, event) = next_post(&mut posts, |e| e["event"] == "session.qr").await;
    verifier.verify(&qr.body, &qr.headers).expect("a valid Standard Webhooks signature");
    assert!(event["data"]["qrPng"].as_str().is_some_and(|p| p.starts_with("data:image/png;base64,")));
    assert_eq!(qr.headers["webhook-id"], event["id"].as_str().expect("id"), "the event id is the webhook id");
    let (_, connected) = next_post(&mut posts, |e| e["event"] == "session.connected").await;
    assert_eq!(connected["data"]["phone"].as_str(), Some(gateway_phone));

    // The receiver fails twice: the same event comes back under the same id until it is taken.
    receiver.answer(&[500, 503]);
    let id = fake.admin().send_text("51987000090", gateway_phone, "¿Hay delivery?").await.expect("text");
    let mut attempts = Vec::new();
    loop {
        let (got, event) = next_post(&mut posts, |e| e["event"] == "message.received").await;
        assert_eq!(event["data"]["messageId"].as_str(), Some(id.as_str()));
        verifier.verify(&got.body, &got.headers).expect("signed on every attempt");
        attempts.push((got.headers["webhook-id"].to_str().expect("ascii").to_owned(), got.status));
        if got.status == 200 {
            break;
        }
    }
    assert_eq!(attempts.iter().map(|(_, s)| *s).collect::<Vec<_>>(), [500, 503, 200]);
    assert!(attempts.iter().all(|(id, _)| *id == attempts[0].0), "one webhook-id for every retry: {attempts:?}");

    // The list shows the endpoint without its secret.
    let (_, list) = app.request("GET", "/api/webhooks", Some(TOKEN), None).await;
    assert_eq!(list["items"][0]["id"], created["id"]);
    assert!(list["items"][0].get("secret").is_none(), "{list}");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_and_410_disables() {
    let fake = fake().await;
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let mut posts = receiver.got.subscribe();
    // Retries stop at once: a failure is a dead letter.
    let app = TestApp::spawn_with(config(&fake, &dir, &[("WEBHOOK_MAX_RETRY_SECS", "0")])).await;
    let created = create(&app, json!({"url": receiver.url(), "events": ["session.status"]})).await;
    let id = created["id"].as_str().expect("id").to_owned();

    receiver.answer(&[500]);
    let _watch = app.ws("muertos").await;
    let (first, _) = next_post(&mut posts, |e| e["event"] == "session.status").await;
    assert_eq!(first.status, 500);
    let failed = tokio::time::timeout(WAIT, async {
        loop {
            let (_, page) =
                app.request("GET", &format!("/api/webhooks/{id}/deliveries?status=failed"), Some(TOKEN), None).await;
            if let Some(items) = page["items"].as_array().filter(|items| !items.is_empty()) {
                return items.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a dead letter");
    assert_eq!(failed[0]["lastError"].as_str(), Some("the endpoint answered 500"));

    // Replayed: the same event, same id, delivered now.
    let delivery = failed[0]["id"].as_i64().expect("delivery id");
    let (status, retried) =
        app.request("POST", &format!("/api/webhooks/{id}/deliveries/{delivery}/retry"), Some(TOKEN), None).await;
    assert_eq!((status, retried["retried"].as_u64()), (202, Some(1)));
    let first_id = first.headers["webhook-id"].to_str().expect("ascii").to_owned();
    let (again, _) = next_post(&mut posts, |e| e["id"] == first_id.as_str()).await;
    assert_eq!(again.status, 200, "the replayed event, under its id, delivered");

    // 410 Gone disables the endpoint.
    receiver.answer(&[410]);
    let _other = app.ws("muertos_dos").await;
    // The next post, whichever session's event it carries, gets the 410.
    loop {
        let (got, _) = next_post(&mut posts, |_| true).await;
        if got.status == 410 {
            break;
        }
    }
    let disabled = tokio::time::timeout(WAIT, async {
        loop {
            let (_, list) = app.request("GET", "/api/webhooks", Some(TOKEN), None).await;
            if let Some(reason) = list["items"][0]["disabled"].as_str() {
                return reason.to_owned();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("disabled");
    assert!(disabled.contains("410"), "{disabled}");

    let (status, answer) =
        app.request("POST", "/api/webhooks", Some(TOKEN), Some(json!({"url": "ftp://x/y"}).to_string())).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("INVALID_URL")));
    let (status, answer) = app
        .request(
            "POST",
            "/api/webhooks",
            Some(TOKEN),
            Some(json!({"url": receiver.url(), "secret": "nope"}).to_string()),
        )
        .await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("INVALID_SECRET")));
    let (status, _) = app.request("DELETE", &format!("/api/webhooks/{id}"), Some(TOKEN), None).await;
    assert_eq!(status, 204);
    let (status, _) = app.request("DELETE", &format!("/api/webhooks/{id}"), Some(TOKEN), None).await;
    assert_eq!(status, 404);
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_a_restart() {
    let fake = fake().await;
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let mut posts = receiver.got.subscribe();
    let extra = [("WEBHOOK_RETRY_BASE_MS", "50"), ("WEBHOOK_URL", receiver.url().leak() as &str)];
    let app = TestApp::spawn_with(config(&fake, &dir, &extra)).await;
    // The receiver is down for everything until the gateway restarts.
    receiver.answer(&[503; 1000]);
    let _watch = app.ws("reinicio").await;
    let (first, event) = next_post(&mut posts, |e| e["sessionId"] == "reinicio").await;
    assert_eq!(first.status, 503);
    app.stop().await;

    receiver.statuses.lock().unwrap().clear();
    let app = TestApp::spawn_with(config(&fake, &dir, &extra)).await;
    let (again, _) = next_post(&mut posts, |e| e["id"] == event["id"]).await;
    assert_eq!(again.status, 200, "delivered after the restart, under the same id");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_gets_every_event_in_order() {
    let fake = fake().await;
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let mut posts = receiver.got.subscribe();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("WEBHOOK_RETRY_BASE_MS", "20")])).await;
    create(&app, json!({"url": receiver.url(), "events": ["session.status"]})).await;
    receiver.answer(&[503, 503, 503, 503, 503]);
    let sessions = ["orden_a", "orden_b", "orden_c"];
    let mut watchers = Vec::new();
    for session in sessions {
        watchers.push(app.ws(session).await);
    }
    // Every event is attempted in the order it happened, and delivered in that same order.
    let mut first_seen: Vec<String> = Vec::new();
    let mut delivered: Vec<String> = Vec::new();
    let mut timestamps: std::collections::HashMap<String, Vec<u64>> = std::collections::HashMap::new();
    tokio::time::timeout(WAIT, async {
        loop {
            let (got, event) = next_post(&mut posts, |_| true).await;
            let id = event["id"].as_str().expect("id").to_owned();
            if !first_seen.contains(&id) {
                first_seen.push(id.clone());
            }
            if got.status == 200 {
                delivered.push(id);
                let session = event["sessionId"].as_str().expect("session").to_owned();
                timestamps.entry(session).or_default().push(event["timestamp"].as_u64().expect("timestamp"));
            }
            let every_session = sessions.iter().all(|s| timestamps.contains_key(*s));
            if every_session && delivered.len() == first_seen.len() {
                return;
            }
        }
    })
    .await
    .expect("everything delivered once the receiver is back");
    assert_eq!(delivered, first_seen, "delivered in the order they were first tried");
    for (session, times) in &timestamps {
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{session} in order: {times:?}");
    }
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_holds_up_neither_qr_frames_nor_sends() {
    let fake = fake().await;
    let dir = temp_dir();
    // Accepts connections and reads nothing back: every post waits for its timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_url = format!("http://{}/hooks", silent.local_addr().expect("addr"));
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
            let _ = accepted_tx.send(());
        }
    });
    let app = TestApp::spawn_with(config(&fake, &dir, &[("WEBHOOK_URL", silent_url.leak() as &str)])).await;
    let mut events = fake.subscribe();
    link(&app, &fake, "sin_respuesta", "51900000091").await;
    tokio::time::timeout(WAIT, accepted.recv()).await.expect("the webhook was posted").expect("open");
    let bytes = pdf("no espera");
    let (status, body) = app.send_pdf("sin_respuesta", "51987000091", &bytes, None).await;
    assert_eq!(status, 202, "{body}");
    let got = wait_message(&mut events, "51987000091").await;
    assert_eq!(got.document.expect("a document").sha256, sha256_hex(&bytes));
    // Linked and sent while the first post still hangs: the endpoint holds only its own queue.
    let (_, list) = app.request("GET", "/api/webhooks", Some(TOKEN), None).await;
    let pending = list["items"][0]["pending"].as_u64().expect("pending");
    assert!(pending >= 2, "the events wait for the silent endpoint, nothing else does: {list}");
    holder.abort();
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_pending_when_the_gateway_is_killed_arrive_after_it_restarts() {
    let fake = fake().await;
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let mut posts = receiver.got.subscribe();
    receiver.answer(&[503; 10_000]);
    // On the backend of the pass: on Postgres, a gateway killed while it posts leaves a claim on
    // the endpoint that nobody renews, which ends within `LEASE_TTL_SECS` (10 s); the restarted
    // gateway (another id) then takes the endpoint.
    let env = [
        ("WEBHOOK_URL", receiver.url()),
        ("WEBHOOK_EVENTS", "session.status".to_owned()),
        ("WEBHOOK_RETRY_BASE_MS", "20".to_owned()),
    ];
    let gateway = crate::crash::start_with(&fake, &dir, &env).await;
    let port = gateway.port;
    let call = move |method: &'static str, path: String, body: Option<String>| {
        tokio::task::spawn_blocking(move || {
            let agent =
                ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
            let url = format!("http://127.0.0.1:{port}{path}");
            let request = ureq::http::Request::builder()
                .method(method)
                .uri(url)
                .header("Authorization", format!("Bearer {TOKEN}"))
                .header("Content-Type", "application/json");
            let response = match body {
                Some(body) => agent.run(request.body(body).expect("request")),
                None => agent.run(request.body(()).expect("request")),
            }
            .expect("round trip");
            let text = response.into_body().read_to_string().unwrap_or_default();
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
        })
    };
    let mut watchers = Vec::new();
    for session in ["muerte_a", "muerte_b", "muerte_c"] {
        let url = format!("ws://127.0.0.1:{port}/ws/session/{session}?token={TOKEN}");
        watchers.push(tokio_tungstenite::connect_async(url).await.expect("websocket").0);
    }
    // Wait until they are in the outbox (and the receiver is failing the first), then SIGKILL.
    let pending = tokio::time::timeout(WAIT, async {
        loop {
            let page = call("GET", "/api/webhooks/env/deliveries?status=pending".into(), None).await.expect("task");
            let ids: Vec<String> = page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["eventId"].as_str().map(str::to_owned))
                .collect();
            if ids.len() >= 3 {
                return ids;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("pending deliveries");
    next_post(&mut posts, |_| true).await;
    drop(watchers);
    gateway.kill();

    receiver.statuses.lock().unwrap().clear();
    let gateway = crate::crash::start_with(&fake, &dir, &env).await;
    let mut delivered = std::collections::HashSet::new();
    tokio::time::timeout(WAIT, async {
        while !pending.iter().all(|id| delivered.contains(id)) {
            let (got, event) = next_post(&mut posts, |_| true).await;
            if got.status == 200 {
                delivered.insert(event["id"].as_str().expect("id").to_owned());
            }
        }
    })
    .await
    .expect("every pending delivery arrives after the restart, under its id");
    gateway.kill();
    fake.shutdown().await;
}

/// Opens `/ws/session/:id` on the gateway at `port`, which creates the session there.
async fn watch_session(
    port: u16,
    session: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://127.0.0.1:{port}/ws/session/{session}?token={TOKEN}");
    tokio_tungstenite::connect_async(url).await.expect("websocket").0
}

/// The event ids of the endpoint's pending deliveries, oldest first, once there are at least
/// `least`.
async fn pending_at_least(app: &TestApp, endpoint: &str, least: usize) -> Vec<String> {
    tokio::time::timeout(WAIT, async {
        loop {
            let path = format!("/api/webhooks/{endpoint}/deliveries?status=pending");
            let (_, page) = app.request("GET", &path, Some(TOKEN), None).await;
            let mut ids: Vec<String> = page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["eventId"].as_str().map(str::to_owned))
                .collect();
            if ids.len() >= least {
                ids.reverse();
                return ids;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("pending deliveries")
}

/// Two gateways of a fleet on one Postgres schema. A is killed with SIGKILL while it posts (the
/// receiver holds the post unanswered), with deliveries written after it waiting behind it; B,
/// which finds the endpoint claimed by A and posts nothing meanwhile, takes the endpoint once
/// A's unrenewed claim runs out and posts every one of them, in order, under its webhook-id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_gateway_resumes_the_deliveries_of_one_killed_while_it_posts() {
    let fake = fake().await;
    let schema = crate::support::postgres::Schema::fresh().await;
    let url = schema.url();
    let receiver = Receiver::start().await;
    let mut posts = receiver.got.subscribe();
    receiver.answer(&[HANG]);
    let settings = |gateway: &str| {
        let mut settings = crate::fleet::member(&url, gateway);
        settings.push(("WEBHOOK_URL", receiver.url()));
        settings.push(("WEBHOOK_EVENTS", "session.status".to_owned()));
        // Longer than the test: A's held post never times out on its own.
        settings.push(("WEBHOOK_TIMEOUT_MS", "120000".to_owned()));
        settings
    };

    // A posts the first event of a session created on it, and the receiver holds that post.
    let dir_a = temp_dir();
    let a = crate::crash::start_with(&fake, &dir_a, &settings("gw-a")).await;
    let mut watchers = vec![watch_session(a.port, "relevo_a").await];
    let (held, _) = next_post(&mut posts, |_| true).await;
    assert_eq!(held.status, HANG);

    // B joins; more events are written behind the held one, by A (and B).
    let b_settings = settings("gw-b");
    let b_settings: Vec<(&str, &str)> = b_settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let b = TestApp::spawn_with(config(&fake, &temp_dir(), &b_settings)).await;
    for session in ["relevo_b", "relevo_c"] {
        watchers.push(watch_session(a.port, session).await);
    }
    pending_at_least(&b, "env", 3).await;
    // A renews its claim while its post is held: for longer than the fleet's lease, nobody
    // posts anything else to the endpoint.
    let quiet = tokio::time::timeout(std::time::Duration::from_secs(3), posts.recv()).await;
    assert!(quiet.is_err(), "a post while A held the endpoint: {quiet:?}");
    let pending = pending_at_least(&b, "env", 3).await;

    let killed = std::time::Instant::now();
    drop(watchers);
    a.kill();
    let mut delivered: Vec<String> = Vec::new();
    tokio::time::timeout(WAIT, async {
        while !pending.iter().all(|id| delivered.contains(id)) {
            let (got, _) = next_post(&mut posts, |_| true).await;
            let id = got.headers["webhook-id"].to_str().expect("webhook-id").to_owned();
            if got.status == 200 && !delivered.contains(&id) {
                delivered.push(id);
            }
        }
    })
    .await
    .expect("every delivery pending when A died is posted by B, under its id");
    let took = killed.elapsed();
    eprintln!("webhook endpoint taken over after SIGKILL: {took:?}");
    assert!(took < std::time::Duration::from_secs(15), "taken over in {took:?}");
    let order: Vec<&String> = delivered.iter().filter(|id| pending.contains(id)).collect();
    assert_eq!(order, pending.iter().collect::<Vec<_>>(), "in the order they were written");
    b.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_times_out_is_retried_under_the_same_id() {
    use tokio::io::AsyncReadExt as _;
    let fake = fake().await;
    let dir = temp_dir();
    // The first connection gets its request read and no answer; later ones get 200.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    let (heads_tx, mut heads) = tokio::sync::mpsc::unbounded_channel::<(bool, String)>();
    let server = tokio::spawn(async move {
        let mut first = true;
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head).to_lowercase();
            let id = text.lines().find_map(|l| l.strip_prefix("webhook-id: ")).unwrap_or_default().trim().to_owned();
            let _ = heads_tx.send((first, id));
            if first {
                first = false;
                held.push(stream); // never answered
            } else {
                use tokio::io::AsyncWriteExt as _;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            }
        }
    });
    let extra = [
        ("WEBHOOK_URL", url.leak() as &str),
        ("WEBHOOK_TIMEOUT_MS", "200"),
        ("WEBHOOK_RETRY_BASE_MS", "20"),
        ("WEBHOOK_EVENTS", "session.status"),
    ];
    let app = TestApp::spawn_with(config(&fake, &dir, &extra)).await;
    let _watch = app.ws("lento").await;
    let (first, timed_out_id) = tokio::time::timeout(WAIT, heads.recv()).await.expect("a post").expect("open");
    assert!(first);
    let (_, retried_id) = tokio::time::timeout(WAIT, heads.recv()).await.expect("a retry").expect("open");
    assert_eq!(retried_id, timed_out_id, "the timed-out post comes again under its id");
    server.abort();
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdf_send_posts_each_of_its_statuses_in_order() {
    let fake = fake().await;
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let mut posts = receiver.got.subscribe();
    let app = TestApp::spawn(&fake, &dir).await;
    create(&app, json!({"url": receiver.url(), "events": ["message.status"]})).await;
    link(&app, &fake, "estados", "51900000092").await;
    let (status, body) = app.send_pdf("estados", "51987000092", &pdf("estados"), None).await;
    assert_eq!(status, 202, "{body}");
    let id = body["messageId"].as_str().expect("id").to_owned();
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("delivered") {
        let (_, event) = next_post(&mut posts, |e| e["data"]["messageId"] == id.as_str()).await;
        assert_eq!((event["sessionId"].as_str(), event["data"]["type"].as_str()), (Some("estados"), Some("document")));
        seen.push(event["data"]["status"].as_str().expect("status").to_owned());
    }
    // Each once, in order; `sent` may be passed over when the delivery receipt beats the ack.
    let order = ["queued", "sending", "sent", "delivered"];
    let ranks: Vec<usize> = seen.iter().map(|s| order.iter().position(|o| o == s).expect("a known status")).collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!((seen.first().map(String::as_str), seen.len() >= 3), (Some("queued"), true), "{seen:?}");
    app.stop().await;
    fake.shutdown().await;
}

/// The schema `value` points to, following a `$ref` into `components/schemas`.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => &doc["components"]["schemas"][name],
        None => value,
    }
}

#[tokio::test]
async fn the_document_describes_delivery_statuses_apart_from_message_statuses() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let (status, doc) = app.request("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let schemas = &doc["components"]["schemas"];
    let delivery_status = resolve(&doc, &schemas["Delivery"]["properties"]["status"]);
    assert_eq!(delivery_status["enum"], json!(["pending", "delivered", "failed"]), "{delivery_status}");
    // The message statuses keep their own schema, under another name.
    let message_statuses = schemas["DeliveryStatus"]["enum"].as_array().expect("the message statuses");
    assert!(message_statuses.contains(&json!("queued")), "{message_statuses:?}");
    assert!(!message_statuses.contains(&json!("pending")), "{message_statuses:?}");
    app.stop().await;
    fake.shutdown().await;
}

/// `webhooks:write` limited to `tienda_a`.
const HOOKS_A: &str = "hooks-a-token-0123456789";
/// `webhooks:write` limited to `tienda_b`.
const HOOKS_B: &str = "hooks-b-token-0123456789";

/// An `API_TOKENS_FILE` with [`HOOKS_A`] and [`HOOKS_B`].
fn hooks_tokens(dir: &std::path::Path) -> String {
    let path = dir.join("tokens.json");
    let tokens = json!([
        {"name": "hooks_a", "token": HOOKS_A, "scopes": ["webhooks:write"], "sessions": ["tienda_a"]},
        {"name": "hooks_b", "token": HOOKS_B, "scopes": ["webhooks:write"], "sessions": ["tienda_b"]},
    ]);
    std::fs::write(&path, tokens.to_string()).unwrap();
    path.display().to_string()
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or_default()
}

async fn create_as(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, created) = app.request("POST", "/api/webhooks", Some(token), Some(body.to_string())).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// The ids `token` lists, sorted.
async fn listed(app: &TestApp, token: &str) -> Vec<String> {
    let (status, list) = app.request("GET", "/api/webhooks", Some(token), None).await;
    assert_eq!(status, 200, "{list}");
    let mut ids: Vec<String> =
        list["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

fn sorted<const N: usize>(ids: [&String; N]) -> Vec<String> {
    let mut ids: Vec<String> = ids.into_iter().cloned().collect();
    ids.sort();
    ids
}

/// Polls `GET /api/webhooks/{id}/deliveries?status=` as `token` until `pick` finds a delivery.
async fn wait_delivery(app: &TestApp, token: &str, id: &str, status: &str, pick: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let path = format!("/api/webhooks/{id}/deliveries?status={status}");
            let (code, page) = app.request("GET", &path, Some(token), None).await;
            assert_eq!(code, 200, "{page}");
            if let Some(found) = page["items"].as_array().and_then(|items| items.iter().find(|d| pick(d))) {
                return found.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a {status} delivery of {id} in time"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_scoped_endpoint_never_receives_another_sessions_events() {
    let fake = fake().await;
    let dir = temp_dir();
    let admin_receiver = Receiver::start().await;
    let mut admin_posts = admin_receiver.got.subscribe();
    let scoped_receiver = Receiver::start().await;
    let mut scoped_posts = scoped_receiver.got.subscribe();
    let tokens = hooks_tokens(&dir);
    // Receivers are on loopback: tokens other than the admin may post there only with this.
    let extra = [("API_TOKENS_FILE", tokens.as_str()), ("WEBHOOK_ALLOW_PRIVATE", "true")];
    let app = TestApp::spawn_with(config(&fake, &dir, &extra)).await;

    // Sessions outside the token's are refused, alone or with its own; nothing is registered.
    for sessions in [json!(["tienda_b"]), json!(["tienda_a", "tienda_b"])] {
        let body = json!({"url": scoped_receiver.url(), "sessions": sessions});
        let (status, answer) = app.request("POST", "/api/webhooks", Some(HOOKS_A), Some(body.to_string())).await;
        assert_eq!((status, code(&answer)), (403, "FORBIDDEN"), "{sessions}: {answer}");
    }
    assert!(listed(&app, TOKEN).await.is_empty());
    // No filter: the token's sessions.
    let scoped = create_as(&app, HOOKS_A, json!({"url": scoped_receiver.url()})).await;
    assert_eq!((scoped["sessions"].clone(), scoped["owner"].as_str()), (json!(["tienda_a"]), Some("hooks_a")));
    let own = create_as(&app, HOOKS_A, json!({"url": scoped_receiver.url(), "sessions": ["tienda_a"]})).await;
    assert_eq!(own["sessions"], json!(["tienda_a"]));
    let (status, _) =
        app.request("DELETE", &format!("/api/webhooks/{}", own["id"].as_str().unwrap()), Some(HOOKS_A), None).await;
    assert_eq!(status, 204);
    let admin = create(&app, json!({"url": admin_receiver.url()})).await;
    assert_eq!((admin["sessions"].clone(), admin["owner"].as_str()), (Value::Null, Some("admin")));

    let (phone_a, phone_b) = ("51900000180", "51900000181");
    link(&app, &fake, "tienda_b", phone_b).await;
    link(&app, &fake, "tienda_a", phone_a).await;

    // B's events: a customer's text, then every status of a PDF sent. The admin gets them.
    fake.admin().send_text("51987000180", phone_b, "solo para la tienda B").await.expect("text");
    let (_, received) = next_post(&mut admin_posts, |e| e["event"] == "message.received").await;
    assert_eq!(
        (received["sessionId"].as_str(), received["data"]["text"].as_str()),
        (Some("tienda_b"), Some("solo para la tienda B"))
    );
    let (status, sent) = app.send_pdf("tienda_b", "51987000181", &pdf("solo B"), None).await;
    assert_eq!(status, 202, "{sent}");
    let message = sent["messageId"].as_str().unwrap().to_owned();
    next_post(&mut admin_posts, |e| e["data"]["messageId"] == message.as_str() && e["data"]["status"] == "delivered")
        .await;

    // Then A's: everything the scoped endpoint got until it is A's, with nothing of B before it.
    // Deliveries go in event order, so anything of B it had been given would have come first.
    fake.admin().send_text("51987000182", phone_a, "para la tienda A").await.expect("text");
    let mut sessions_seen = Vec::new();
    loop {
        let (_, event) = next_post(&mut scoped_posts, |_| true).await;
        sessions_seen.push(event["sessionId"].as_str().unwrap().to_owned());
        if event["event"] == "message.received" {
            assert_eq!(event["data"]["text"], "para la tienda A");
            break;
        }
    }
    assert!(sessions_seen.iter().all(|s| s == "tienda_a"), "{sessions_seen:?}");
    let (_, page) = app
        .request("GET", &format!("/api/webhooks/{}/deliveries", scoped["id"].as_str().unwrap()), Some(HOOKS_A), None)
        .await;
    let items = page["items"].as_array().unwrap();
    assert!(!items.is_empty() && items.iter().all(|d| d["sessionId"] == "tienda_a"), "{page}");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_see_and_manage_only_their_own_endpoints() {
    let fake = fake().await;
    let dir = temp_dir();
    let receivers = [Receiver::start().await, Receiver::start().await, Receiver::start().await];
    for receiver in &receivers {
        receiver.answer(&[500]);
    }
    let tokens = hooks_tokens(&dir);
    // Retries stop at once: the first failure of each endpoint is a dead letter.
    let extra =
        [("API_TOKENS_FILE", tokens.as_str()), ("WEBHOOK_ALLOW_PRIVATE", "true"), ("WEBHOOK_MAX_RETRY_SECS", "0")];
    let app = TestApp::spawn_with(config(&fake, &dir, &extra)).await;
    let only_status = |receiver: &Receiver| json!({"url": receiver.url(), "events": ["session.status"]});
    let admin = create(&app, only_status(&receivers[0])).await["id"].as_str().unwrap().to_owned();
    let a = create_as(&app, HOOKS_A, only_status(&receivers[1])).await["id"].as_str().unwrap().to_owned();
    let b = create_as(&app, HOOKS_B, only_status(&receivers[2])).await["id"].as_str().unwrap().to_owned();

    let _a = app.ws("tienda_a").await;
    let _b = app.ws("tienda_b").await;
    let admin_failed = wait_delivery(&app, TOKEN, &admin, "failed", |_| true).await;
    let a_failed = wait_delivery(&app, HOOKS_A, &a, "failed", |_| true).await;
    assert_eq!(a_failed["sessionId"], "tienda_a");
    wait_delivery(&app, HOOKS_B, &b, "failed", |_| true).await;

    // Lists: each token its own, the admin every one, with who registered it.
    assert_eq!(listed(&app, HOOKS_A).await, sorted([&a]));
    assert_eq!(listed(&app, HOOKS_B).await, sorted([&b]));
    let (_, all) = app.request("GET", "/api/webhooks", Some(TOKEN), None).await;
    let mut owners: Vec<(&str, &str)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["owner"].as_str().unwrap(), e["id"].as_str().unwrap()))
        .collect();
    owners.sort();
    assert_eq!(owners, [("admin", admin.as_str()), ("hooks_a", a.as_str()), ("hooks_b", b.as_str())]);

    // Another's endpoint, on every route, answers exactly as an unknown one.
    let admin_delivery = admin_failed["id"].as_i64().unwrap();
    for other in [admin.as_str(), b.as_str(), "wh_00000000000000ff"] {
        for (method, path) in [
            ("GET", format!("/api/webhooks/{other}/deliveries")),
            ("GET", format!("/api/webhooks/{other}/deliveries?status=failed")),
            ("POST", format!("/api/webhooks/{other}/deliveries/{admin_delivery}/retry")),
            ("POST", format!("/api/webhooks/{other}/deliveries/retry")),
            ("DELETE", format!("/api/webhooks/{other}")),
        ] {
            let (status, answer) = app.request(method, &path, Some(HOOKS_A), None).await;
            assert_eq!((status, code(&answer)), (404, "WEBHOOK_NOT_FOUND"), "{method} {path}: {answer}");
        }
    }
    // Through its own endpoint's path, another endpoint's delivery is not there to replay.
    let (status, retried) =
        app.request("POST", &format!("/api/webhooks/{a}/deliveries/{admin_delivery}/retry"), Some(HOOKS_A), None).await;
    assert_eq!((status, retried["retried"].as_u64()), (202, Some(0)));
    // So nothing of the others changed: their endpoints are there, their dead letters still dead.
    assert_eq!(listed(&app, TOKEN).await, sorted([&admin, &a, &b]));
    let still = wait_delivery(&app, TOKEN, &admin, "failed", |d| d["id"] == admin_failed["id"]).await;
    assert_eq!(still["attempts"], admin_failed["attempts"]);

    // Its own: listed, replayed one by one and all at once, deleted.
    let page = app.request("GET", &format!("/api/webhooks/{a}/deliveries"), Some(HOOKS_A), None).await.1;
    assert!(page["items"].as_array().unwrap().iter().all(|d| d["sessionId"] == "tienda_a"), "{page}");
    let delivery = a_failed["id"].as_i64().unwrap();
    let mut a_posts = receivers[1].got.subscribe();
    let (status, retried) =
        app.request("POST", &format!("/api/webhooks/{a}/deliveries/{delivery}/retry"), Some(HOOKS_A), None).await;
    assert_eq!((status, retried["retried"].as_u64()), (202, Some(1)));
    let event_id = a_failed["eventId"].as_str().unwrap().to_owned();
    let (again, _) = next_post(&mut a_posts, |e| e["id"] == event_id.as_str()).await;
    assert_eq!(again.status, 200, "the replayed event, delivered");
    let (status, _) = app.request("POST", &format!("/api/webhooks/{a}/deliveries/retry"), Some(HOOKS_A), None).await;
    assert_eq!(status, 202);
    let (status, _) = app.request("DELETE", &format!("/api/webhooks/{a}"), Some(HOOKS_A), None).await;
    assert_eq!(status, 204);
    assert!(listed(&app, HOOKS_A).await.is_empty());

    // The admin manages everyone's.
    let (status, _) = app.request("GET", &format!("/api/webhooks/{b}/deliveries"), Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let (status, _) = app.request("DELETE", &format!("/api/webhooks/{b}"), Some(TOKEN), None).await;
    assert_eq!(status, 204);
    assert_eq!(listed(&app, TOKEN).await, [admin]);
    app.stop().await;
    fake.shutdown().await;
}

/// URLs a token other than the admin may not register: loopback, the metadata address and the
/// rest of link-local, private, shared (CGNAT), unspecified, unique-local, IPv4-mapped forms, and
/// names or numeric forms that resolve to them.
const PRIVATE_URLS: [&str; 17] = [
    "http://127.0.0.1:3000/hooks",
    "http://localhost:8080/hooks",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/hooks",
    "http://172.16.5.4:8443/hooks",
    "https://192.168.1.10/hooks",
    "http://100.64.0.1/hooks",
    "http://0.0.0.0:3000/hooks",
    "http://[::1]:3000/hooks",
    "http://[::]/hooks",
    "http://[fd00::1]/hooks",
    "http://[fe80::1]/hooks",
    "http://[::ffff:127.0.0.1]:3000/hooks",
    "http://[::ffff:a9fe:a9fe]/latest",
    "http://2130706433/hooks",
    "http://127.1/hooks",
    "http://does-not-resolve.invalid/hooks",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_registers_private_addresses() {
    let fake = fake().await;
    let dir = temp_dir();
    let tokens = hooks_tokens(&dir);
    let app = TestApp::spawn_with(config(&fake, &dir, &[("API_TOKENS_FILE", tokens.as_str())])).await;
    for url in PRIVATE_URLS {
        let body = json!({"url": url, "events": ["session.qr"]}).to_string();
        let (status, answer) = app.request("POST", "/api/webhooks", Some(HOOKS_A), Some(body)).await;
        assert_eq!((status, code(&answer)), (400, "WEBHOOK_URL_NOT_ALLOWED"), "{url}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains("127.") && !message.contains("169.254"), "names no address: {message}");
    }
    assert!(listed(&app, TOKEN).await.is_empty(), "nothing registered");
    // A public address is fine (nothing is ever posted: no session has events here).
    let public =
        create_as(&app, HOOKS_A, json!({"url": "http://192.0.2.10:8080/hooks", "events": ["session.qr"]})).await;
    assert_eq!(public["owner"], "hooks_a");
    // The admin's backend on the same host or network is the common case.
    for url in ["http://127.0.0.1:3000/hooks", "http://localhost:8080/hooks", "http://[fd00::1]/hooks"] {
        create(&app, json!({"url": url, "events": ["session.qr"]})).await;
    }
    app.stop().await;

    // WEBHOOK_ALLOW_PRIVATE lets every token register them (a host that does not resolve stays refused).
    let extra = [("API_TOKENS_FILE", tokens.as_str()), ("WEBHOOK_ALLOW_PRIVATE", "true")];
    let app = TestApp::spawn_with(config(&fake, &dir, &extra)).await;
    for url in PRIVATE_URLS.iter().filter(|url| !url.contains(".invalid")) {
        create_as(&app, HOOKS_A, json!({"url": url, "events": ["session.qr"]})).await;
    }
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_to_a_private_address_is_refused_again_at_connect() {
    let fake = fake().await;
    let dir = temp_dir();
    let scoped_receiver = Receiver::start().await;
    let mut scoped_posts = scoped_receiver.got.subscribe();
    let admin_receiver = Receiver::start().await;
    let tokens = hooks_tokens(&dir);
    // Registered while private addresses are allowed, by name: `localhost` resolves to loopback.
    let allowed = [("API_TOKENS_FILE", tokens.as_str()), ("WEBHOOK_ALLOW_PRIVATE", "true")];
    let app = TestApp::spawn_with(config(&fake, &dir, &allowed)).await;
    let url = format!("http://localhost:{}/hooks", scoped_receiver.addr.port());
    let scoped = create_as(&app, HOOKS_A, json!({"url": url, "events": ["session.status"]})).await;
    let scoped = scoped["id"].as_str().unwrap().to_owned();
    create(&app, json!({"url": admin_receiver.url(), "events": ["session.status"]})).await;
    let watch = app.ws("tienda_a").await;
    let (first, _) = next_post(&mut scoped_posts, |e| e["sessionId"] == "tienda_a").await;
    assert_eq!(first.status, 200, "delivered while allowed");
    drop(watch);
    app.stop().await;

    // Now they are not: the name still resolves to loopback, and the worker does not connect.
    let app = TestApp::spawn_with(config(&fake, &dir, &[("API_TOKENS_FILE", tokens.as_str())])).await;
    let connections = scoped_receiver.accepted.load(Ordering::SeqCst);
    let mut admin_posts = admin_receiver.got.subscribe();
    let _watch = app.ws("tienda_a").await;
    let refused = wait_delivery(&app, HOOKS_A, &scoped, "pending", |d| d["lastError"].is_string()).await;
    assert_eq!(
        refused["lastError"].as_str(),
        Some("the address is not allowed: this endpoint may post only to public addresses"),
        "{refused}"
    );
    assert_eq!(scoped_receiver.accepted.load(Ordering::SeqCst), connections, "no connection was made");
    // The admin's endpoint on the same host still gets the same events.
    let (got, _) = next_post(&mut admin_posts, |e| e["sessionId"] == "tienda_a").await;
    assert_eq!(got.status, 200);
    app.stop().await;
    fake.shutdown().await;
}
