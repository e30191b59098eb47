//! A gateway and a fake WhatsApp server on port 0, driven by a real WebSocket and HTTP client.
#![allow(dead_code)]

pub mod browser;
pub mod postgres;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fake_whatsapp::{FakeConfig, FakeEvent, FakeWhatsApp};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use whatsapp_gateway::{App, Config};

pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const WAIT: Duration = Duration::from_secs(30);

pub struct TestApp {
    pub addr: SocketAddr,
    /// The token-free metrics listener, with `METRICS_LISTEN`.
    pub metrics_addr: Option<SocketAddr>,
    pub dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The address in a gateway's `whatsapp-gateway listening addr=…` log line, found in `log` (one
/// line or a whole log), as child gateways started with `PORT=0` say where they listen.
pub fn listening_addr(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|line| line.contains("whatsapp-gateway listening"))
        .find_map(|line| line.split("addr=").nth(1)?.split_whitespace().next()?.parse().ok())
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wg-test-{}-{}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub async fn fake() -> FakeWhatsApp {
    whatsapp_gateway::telemetry::init_for_tests();
    FakeWhatsApp::start(FakeConfig { unregistered: vec!["15550999".into()], ..FakeConfig::default() })
        .await
        .expect("fake server starts")
}

pub fn config(fake: &FakeWhatsApp, dir: &std::path::Path, extra: &[(&str, &str)]) -> Config {
    let mut env: Vec<(String, String)> = [
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", "0".to_string()),
        ("API_STATIC_TOKEN", TOKEN.to_string()),
        ("SESSIONS_DIR", dir.join("sessions").display().to_string()),
        ("SESSIONS_CONFIG", dir.join("sessions.config.json").display().to_string()),
        ("API_TOKEN_FILE", dir.join(".api-token").display().to_string()),
        ("WHATSAPP_URL", fake.ws_url()),
        ("WHATSAPP_VERSION", "2.3000.1".to_string()),
        ("WHATSAPP_CA_FILE", fake.ca_file().display().to_string()),
        ("RETRY_BASE_DELAY_MS", "200".to_string()),
        ("RETRY_MAX_DELAY_MS", "1000".to_string()),
        ("DATA_DIR", dir.join("data").display().to_string()),
        ("SEND_MIN_INTERVAL_MS", "0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(backend_settings(dir));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_sources(env, None).expect("config")
}

/// `TEST_BACKEND=postgres` runs every gateway of the suite on Postgres (`DATABASE_URL`), each
/// test folder in a schema of its own (`tb_…`, created on first use, so a restarted gateway
/// finds its state); `sqlite` or unset keeps the files. A test about the files themselves sets
/// `DATABASE_URL` to "" in its own settings.
pub fn backend_settings(dir: &std::path::Path) -> Vec<(String, String)> {
    match backend_url(dir) {
        Some(url) => vec![
            ("DATABASE_URL".into(), url),
            // Tests run side by side: small pools keep them under the server's max_connections.
            ("DATABASE_MAX_CONNECTIONS".into(), "4".into()),
        ],
        None => Vec::new(),
    }
}

/// Whether the suite runs on Postgres (`TEST_BACKEND=postgres`).
pub fn on_postgres() -> bool {
    match std::env::var("TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("TEST_BACKEND={other}: use sqlite or postgres"),
    }
}

/// The `DATABASE_URL` of the test folder `dir` when the suite runs on Postgres: its own schema,
/// created here if it is new.
pub fn backend_url(dir: &std::path::Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    let name: String = format!("tb_{folder}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    let url = postgres::url();
    let create = format!("CREATE SCHEMA IF NOT EXISTS {name}");
    let target = url.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&target).await.unwrap_or_else(|e| {
                panic!("TEST_BACKEND=postgres needs Postgres at {target} (TEST_DATABASE_URL): {e}")
            });
            sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&mut conn).await.expect("create the schema");
        });
    })
    .join()
    .expect("schema thread");
    let separator = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{separator}options[search_path]={name}"))
}

/// The sessions a test starts with, as an operator has them: `sessions.config.json` in the test
/// folder (`json` is its text). On Postgres they are moved in with `migrate`, as a user moving up
/// would, so the gateway finds them in its registry.
pub async fn given_sessions(dir: &std::path::Path, json: &str) {
    std::fs::write(dir.join("sessions.config.json"), json).expect("write sessions.config.json");
    if let Some(url) = backend_url(dir) {
        let sources = whatsapp_gateway::migrate::Sources {
            data_dir: dir.join("data"),
            sessions_dir: dir.join("sessions"),
            sessions_config: dir.join("sessions.config.json"),
        };
        whatsapp_gateway::migrate::migrate(&sources, &url).await.expect("move the sessions into Postgres");
    }
}

impl TestApp {
    pub async fn spawn(fake: &FakeWhatsApp, dir: &std::path::Path) -> TestApp {
        Self::spawn_with(config(fake, dir, &[])).await
    }

    pub async fn spawn_with(config: Config) -> TestApp {
        Self::spawn_built(config, None).await
    }

    /// A gateway keeping the numbers' credentials in `credentials` (Postgres's, say).
    pub async fn spawn_with_credentials(
        config: Config,
        credentials: std::sync::Arc<dyn whatsapp_gateway::storage::CredentialStore>,
    ) -> TestApp {
        Self::spawn_built(config, Some(credentials)).await
    }

    async fn spawn_built(
        config: Config,
        credentials: Option<std::sync::Arc<dyn whatsapp_gateway::storage::CredentialStore>>,
    ) -> TestApp {
        let dir = config.sessions_dir.clone();
        // A gateway restarted on the same folders waits for the previous one to let go of the
        // journal's lock, as a restarted process waits for the old one to exit: in-process, its
        // last connection tasks may still be dropping their handles.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let app = loop {
            let built = match &credentials {
                Some(credentials) => App::build_with_credentials(config.clone(), credentials.clone()).await,
                None => App::build(config.clone()).await,
            };
            match built {
                Err(whatsapp_gateway::StartError::Journal {
                    source: whatsapp_gateway::journal::JournalError::Locked,
                    ..
                }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                built => break built.expect("gateway builds"),
            }
        };
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run(async {
                let _ = stopped.await;
            })
            .await
            .expect("gateway runs");
        });
        TestApp { addr, metrics_addr, dir, stop: Some(stop), task: Some(task) }
    }

    /// Graceful shutdown, as on SIGTERM.
    /// Talks to a gateway that runs elsewhere (a child process) on `port`; [`TestApp::stop`]
    /// does nothing to it.
    pub fn attach(port: u16, dir: PathBuf) -> TestApp {
        TestApp { addr: SocketAddr::from(([127, 0, 0, 1], port)), metrics_addr: None, dir, stop: None, task: None }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("gateway stops in time")
                .expect("no panic");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn ws(&self, session: &str) -> Ws {
        let url = format!("ws://{}/ws/session/{}?token={}", self.addr, session, TOKEN);
        let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        Ws { socket }
    }

    /// (status, JSON body) of a request made with a real HTTP client.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (u16, serde_json::Value) {
        let (status, _, json) = self.request_with(method, path, token, body, &[]).await;
        (status, json)
    }

    /// (status, response headers, JSON body), with extra request headers.
    pub async fn request_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, serde_json::Value) {
        let url = self.url(path);
        let method = method.to_owned();
        let token = token.map(str::to_owned);
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        tokio::task::spawn_blocking(move || {
            let agent =
                ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
            let mut req = ureq::http::Request::builder().method(method.as_str()).uri(url);
            if let Some(token) = token {
                req = req.header("Authorization", format!("Bearer {token}"));
            }
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let response = match body {
                Some(body) => agent.run(req.header("Content-Type", "application/json").body(body).expect("request")),
                None => agent.run(req.body(()).expect("request")),
            }
            .expect("http round trip");
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            let text = response.into_body().read_to_string().unwrap_or_default();
            (status, headers, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
        })
        .await
        .expect("request task")
    }

    /// (status, response headers, JSON body) of a request with a raw body of `content_type`.
    pub async fn request_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
        content_type: &str,
    ) -> (u16, Vec<(String, String)>, serde_json::Value) {
        let url = self.url(path);
        let (method, token, content_type) = (method.to_owned(), token.map(str::to_owned), content_type.to_owned());
        tokio::task::spawn_blocking(move || {
            let agent =
                ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
            let mut req =
                ureq::http::Request::builder().method(method.as_str()).uri(url).header("Content-Type", content_type);
            if let Some(token) = token {
                req = req.header("Authorization", format!("Bearer {token}"));
            }
            let response = agent.run(req.body(body).expect("request")).expect("http round trip");
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            let text = response.into_body().read_to_string().unwrap_or_default();
            (status, headers, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
        })
        .await
        .expect("request task")
    }

    /// The JSON body of `POST /api/send-pdf`.
    pub fn send_pdf_body(session: &str, to: &str, pdf: &[u8], file_name: Option<&str>) -> String {
        use base64::Engine as _;
        let mut body = serde_json::json!({
            "sessionId": session,
            "to": to,
            "pdfBase64": base64::engine::general_purpose::STANDARD.encode(pdf),
        });
        if let Some(name) = file_name {
            body["fileName"] = serde_json::Value::String(name.to_owned());
        }
        body.to_string()
    }

    /// `GET /api/messages/{id}` until `status` is reached (bounded).
    pub async fn wait_status(&self, id: &str, status: &str) -> serde_json::Value {
        let last = std::sync::Mutex::new(serde_json::Value::Null);
        let reached = tokio::time::timeout(WAIT, async {
            loop {
                let (code, record) = self.request("GET", &format!("/api/messages/{id}"), Some(TOKEN), None).await;
                if code == 200 && record["status"] == status {
                    return record;
                }
                *last.lock().unwrap() = record;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        reached.unwrap_or_else(|_| panic!("message {id} never reached status {status}; last: {}", last.lock().unwrap()))
    }

    pub async fn send_pdf(
        &self,
        session: &str,
        to: &str,
        pdf: &[u8],
        file_name: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let body = Self::send_pdf_body(session, to, pdf, file_name);
        self.request("POST", "/api/send-pdf", Some(TOKEN), Some(body)).await
    }
}

pub struct Ws {
    pub socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

/// What a watcher receives.
#[derive(Debug, PartialEq)]
pub enum Got {
    Frame(String, String),
    Closed(Option<u16>),
}

impl Ws {
    pub async fn next(&mut self) -> Got {
        self.next_within(WAIT).await
    }

    pub async fn next_within(&mut self, wait: Duration) -> Got {
        loop {
            let msg = tokio::time::timeout(wait, self.socket.next()).await.expect("a websocket frame in time");
            match msg {
                None => return Got::Closed(None),
                Some(Err(_)) => return Got::Closed(None),
                Some(Ok(Message::Text(text))) => {
                    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON frame");
                    return Got::Frame(
                        v["event"].as_str().unwrap_or("").into(),
                        v["data"].as_str().unwrap_or("").into(),
                    );
                }
                Some(Ok(Message::Close(frame))) => return Got::Closed(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn expect(&mut self, event: &str, data: &str) {
        assert_eq!(self.next().await, Got::Frame(event.into(), data.into()));
    }

    pub async fn next_qr(&mut self) -> String {
        loop {
            match self.next().await {
                Got::Frame(e, d) if e == "qr" => return d,
                Got::Frame(..) => continue,
                other => panic!("expected a QR, got {other:?}"),
            }
        }
    }
}

pub async fn wait_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<FakeEvent>,
    mut pick: impl FnMut(&FakeEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(found) = pick(&e) {
                        return found;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("the expected fake-server event in time")
}

/// The next message the virtual phone `phone` records.
pub async fn wait_message(
    events: &mut tokio::sync::broadcast::Receiver<FakeEvent>,
    phone: &str,
) -> fake_whatsapp::ReceivedMessage {
    wait_event(events, |e| match e {
        FakeEvent::MessageReceived { phone: p, message } if p == phone => Some(message.clone()),
        _ => None,
    })
    .await
}

/// The segment files of the journal in `dir/data`, oldest first.
pub fn segments(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("data").join("segments"))
        .map(|entries| {
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "seg")).collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The bytes of the journal's segments on the files.
pub fn stored_file_bytes(dir: &std::path::Path) -> u64 {
    segments(dir).iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len())).sum()
}

/// The bytes the journal keeps for waiting PDFs: its segments on the files, the rows' payloads
/// on Postgres.
pub async fn stored_bytes(dir: &std::path::Path) -> u64 {
    match backend_url(dir) {
        None => stored_file_bytes(dir),
        Some(url) => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("Postgres");
            let total: i64 =
                sqlx::query_scalar("SELECT COALESCE(SUM(octet_length(payload)), 0)::bigint FROM journal_messages")
                    .fetch_one(&mut conn)
                    .await
                    .expect("sum the payloads");
            u64::try_from(total).expect("a size")
        }
    }
}

pub fn pdf(tag: &str) -> Vec<u8> {
    format!("%PDF-1.4\n% {tag}\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n").into_bytes()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens a watcher, scans its QR as `phone`, and waits for `connected` + close 1000.
pub async fn link(app: &TestApp, fake: &FakeWhatsApp, session: &str, phone: &str) -> String {
    // Bounded as a whole: a socket that keeps sending frames (new QRs) but never `connected`
    // fails the test instead of hanging it.
    tokio::time::timeout(2 * WAIT, link_unbounded(app, fake, session, phone))
        .await
        .unwrap_or_else(|_| panic!("{session} was not linked within {:?}", 2 * WAIT))
}

async fn link_unbounded(app: &TestApp, fake: &FakeWhatsApp, session: &str, phone: &str) -> String {
    let mut ws = app.ws(session).await;
    ws.expect("status", "initializing").await;
    let qr = ws.next_qr().await;
    let linked = fake.admin().scan(&qr, phone).await.expect("scan");
    loop {
        match ws.next().await {
            Got::Frame(e, d) if e == "status" && d == "connected" => break,
            Got::Frame(..) => continue,
            other => panic!("expected connected, got {other:?}"),
        }
    }
    assert_eq!(ws.next().await, Got::Closed(Some(1000)));
    linked.jid
}

/// The settings of a test about the files themselves (segments on disk, credential files, the
/// registry file): the SQLite backend, whatever `TEST_BACKEND` says.
pub fn files_config(fake: &FakeWhatsApp, dir: &std::path::Path, extra: &[(&str, &str)]) -> Config {
    let mut settings = vec![("DATABASE_URL", "")];
    settings.extend_from_slice(extra);
    config(fake, dir, &settings)
}

/// What the gateway of test folder `dir` keeps in its session registry, as the JSON text of
/// `sessions.config.json`: the file itself on the files, the registry's rows on Postgres.
pub async fn stored_registry(dir: &std::path::Path) -> String {
    use whatsapp_gateway::storage::SessionRegistry;
    match backend_url(dir) {
        None => std::fs::read_to_string(dir.join("sessions.config.json")).expect("sessions.config.json"),
        Some(url) => {
            let db = whatsapp_gateway::storage::postgres::Database::connect(&url, 1).await.expect("Postgres");
            let entries = db.registry().load().await.expect("the registry");
            db.close().await;
            serde_json::to_string_pretty(&entries).expect("json")
        }
    }
}

/// Whether the gateway of test folder `dir` keeps credentials for `session`: its `whatsapp.db`
/// on the files; its device or any of its prekeys on Postgres.
pub async fn has_credentials(dir: &std::path::Path, session: &str) -> bool {
    match backend_url(dir) {
        None => dir.join("sessions").join(session).join("whatsapp.db").exists(),
        Some(url) => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("Postgres");
            let rows: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM wa_device WHERE session_id = $1) \
                 + (SELECT count(*) FROM wa_prekeys WHERE session_id = $1)",
            )
            .bind(session)
            .fetch_one(&mut conn)
            .await
            .expect("count the credentials");
            rows > 0
        }
    }
}

/// `GET /api/sessions/{id}` until `pick` accepts it (bounded); the session as it was then.
pub async fn wait_session(
    app: &TestApp,
    id: &str,
    what: &str,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let (status, body) = app.request("GET", &format!("/api/sessions/{id}"), Some(TOKEN), None).await;
            if status == 200 && pick(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{id} never became {what}; last seen: {last}"))
}
