//! The real binary killed with SIGKILL during bursts of send-pdf calls, connected and while
//! disconnected: after restarts, the fake phone shows every accepted PDF exactly once, and
//! nothing that was refused.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use fake_whatsapp::FakeWhatsApp;
use rand::RngExt as _;
use tokio::sync::Mutex;

const SESSION: &str = "caja_central";
const RECIPIENT: &str = "51987000040";
const PER_ROUND: usize = 100;

pub(crate) struct Gateway {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

/// A test that fails midway leaves no gateway behind (its pool would hold Postgres connections
/// that the rest of the suite needs).
impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

/// The real binary against `fake`, in `dir`, ready once `/health` answers.
pub(crate) async fn start(fake: &FakeWhatsApp, dir: &Path) -> Gateway {
    start_with(fake, dir, &[]).await
}

/// [`start`] with more environment variables.
///
/// The child binds port 0 itself and the test reads the address it logs: a port found free
/// beforehand could be taken by anyone before the child binds it.
fn child_log() -> Option<String> {
    std::env::var("TEST_CHILD_LOG").ok().filter(|filter| !filter.is_empty())
}

pub(crate) async fn start_with(fake: &FakeWhatsApp, dir: &Path, extra: &[(&str, String)]) -> Gateway {
    let mut command = Command::new(env!("CARGO_BIN_EXE_whatsapp-gateway"));
    command.env_clear();
    // On Postgres with `TEST_BACKEND=postgres`, unless `extra` says otherwise.
    for (key, value) in backend_settings(dir) {
        command.env(key, value);
    }
    for (key, value) in extra {
        command.env(key, value);
    }
    let mut child = command
        .current_dir(dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("API_STATIC_TOKEN", TOKEN)
        .env("SESSIONS_DIR", dir.join("sessions"))
        .env("SESSIONS_CONFIG", dir.join("sessions.config.json"))
        .env("DATA_DIR", dir.join("data"))
        .env("WHATSAPP_URL", fake.ws_url())
        .env("WHATSAPP_VERSION", "2.3000.1")
        .env("WHATSAPP_CA_FILE", fake.ca_file())
        .env("SEND_MIN_INTERVAL_MS", "0")
        .env("RETRY_BASE_DELAY_MS", "100")
        .env("RETRY_MAX_DELAY_MS", "1000")
        // Warnings, and the line that names the bound address (kept under any filter: the test
        // reads the port from it); `TEST_CHILD_LOG` (a log filter) prints each child's log to the
        // test's output, to see what a failed run did.
        .env("LOG_LEVEL", format!("{},whatsapp_gateway::app=info", child_log().as_deref().unwrap_or("warn")))
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the gateway binary starts");
    let stdout = child.stdout.take().expect("the child's stdout");
    let name = extra.iter().find(|(key, _)| *key == "GATEWAY_ID").map_or("gateway".to_owned(), |(_, id)| id.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Reads the log until the child exits, so a full pipe never blocks it.
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut tx = Some(tx);
        let echo = child_log().is_some();
        let name = name.clone();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if echo {
                eprintln!("[{name}] {line}");
            }
            if let Some(port) = listening_addr(&line).map(|addr| addr.port())
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(port);
            }
        }
    });
    let port = tokio::time::timeout(WAIT, rx)
        .await
        .expect("the gateway logs its address in time")
        .expect("the gateway exited before it listened");
    // Ready when /health answers.
    let url = format!("http://127.0.0.1:{port}/health");
    tokio::time::timeout(WAIT, async {
        loop {
            let url = url.clone();
            let ok = tokio::task::spawn_blocking(move || ureq::get(&url).call().is_ok()).await.unwrap_or(false);
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the gateway answers /health");
    Gateway { child, port }
}

impl Gateway {
    /// SIGKILL, and wait for it to be gone.
    pub(crate) fn kill(self) {
        drop(self);
    }

    fn app(&self) -> TestAppRef {
        TestAppRef { port: self.port }
    }
}

/// Enough of `TestApp` to talk to a child process.
#[derive(Clone, Copy)]
struct TestAppRef {
    port: u16,
}

/// What a request came to.
enum Answer {
    Accepted(String),
    Refused,
    Unanswered,
}

async fn post(app: TestAppRef, body: String, key: String) -> Answer {
    let url = format!("http://127.0.0.1:{}/api/send-pdf", app.port);
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::config::Config::builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build(),
        );
        let request = agent
            .post(&url)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("Idempotency-Key", key)
            .content_type("application/json");
        match request.send(body) {
            Ok(response) if response.status().as_u16() == 202 => {
                let text = response.into_body().read_to_string().unwrap_or_default();
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                match v["messageId"].as_str() {
                    Some(id) => Answer::Accepted(id.to_owned()),
                    None => Answer::Unanswered,
                }
            }
            Ok(_) => Answer::Refused,
            Err(_) => Answer::Unanswered,
        }
    })
    .await
    .unwrap_or(Answer::Unanswered)
}

/// How many messages wait in the session's queue (`GET /api/sessions/{id}`).
async fn waiting(app: TestAppRef) -> Option<u64> {
    let url = format!("http://127.0.0.1:{}/api/sessions/{SESSION}", app.port);
    tokio::task::spawn_blocking(move || {
        let text = ureq::get(&url)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .ok()?
            .into_body()
            .read_to_string()
            .ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()?["queue"]["pending"].as_u64()
    })
    .await
    .ok()
    .flatten()
}

#[derive(Default)]
struct Ledger {
    /// message id -> sha256 of the PDF, for every 202.
    accepted: HashMap<String, String>,
    /// sha256 of PDFs whose request was refused with an error status.
    refused: HashSet<String>,
}

/// Fires `PER_ROUND` requests from 8 concurrent senders and SIGKILLs the gateway at a random
/// moment in the middle; returns the restarted gateway.
async fn burst_with_kill(
    fake: &FakeWhatsApp,
    dir: &Path,
    gateway: Gateway,
    round: usize,
    ledger: Arc<Mutex<Ledger>>,
) -> Gateway {
    let kill_after = rand::rng().random_range(10..PER_ROUND - 10);
    let gateway = Arc::new(Mutex::new(Some(gateway)));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (gateway, next, ledger) = (gateway.clone(), next.clone(), ledger.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= PER_ROUND {
                    return;
                }
                let bytes = pdf(&format!("round {round} pdf {n} {}", rand::rng().random::<u64>()));
                let sha = sha256_hex(&bytes);
                let body = TestApp::send_pdf_body(SESSION, RECIPIENT, &bytes, Some(&format!("r{round}-{n}.pdf")));
                // Like a sales system: no answer means "try again with the same key".
                let key = format!("r{round}-{n}");
                let answer = tokio::time::timeout(WAIT, async {
                    loop {
                        let app = gateway.lock().await.as_ref().map(Gateway::app);
                        if let Some(app) = app {
                            match post(app, body.clone(), key.clone()).await {
                                Answer::Unanswered => {}
                                answer => return answer,
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
                .await
                .expect("an answer once the gateway is back");
                match answer {
                    Answer::Accepted(id) => {
                        ledger.lock().await.accepted.insert(id, sha);
                    }
                    Answer::Refused => {
                        ledger.lock().await.refused.insert(sha);
                    }
                    Answer::Unanswered => {}
                }
            }
        }));
        if senders.len() == 1 {
            tokio::task::yield_now().await;
        }
    }
    // Kill once `kill_after` requests were started, then restart on the same folders.
    while next.load(std::sync::atomic::Ordering::SeqCst) < kill_after {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(old) = gateway.lock().await.take() {
        old.kill();
    }
    let restarted = start(fake, dir).await;
    *gateway.lock().await = Some(restarted);
    for sender in senders {
        sender.await.expect("a sender panicked");
    }
    let restarted = gateway.lock().await.take();
    restarted.expect("the restarted gateway")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_bursts_loses_and_duplicates_nothing() {
    let fake = fake().await;
    let dir = temp_dir();
    let gateway = start(&fake, &dir).await;
    // Link the session through the child's WebSocket.
    let url = format!("ws://127.0.0.1:{}/ws/session/{SESSION}?token={TOKEN}", gateway.port);
    let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
    let mut ws = Ws { socket };
    ws.expect("status", "initializing").await;
    let qr = ws.next_qr().await;
    let linked = fake.admin().scan(&qr, "51900000040").await.expect("scan");
    drop(ws);
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    // Round 1: connected.
    let gateway = burst_with_kill(&fake, &dir, gateway, 1, ledger.clone()).await;
    // Round 2: WhatsApp unreachable while the burst arrives and the gateway dies. The restarted
    // gateway has logged in again (bounded wait), so there is a connection to drop.
    tokio::time::timeout(WAIT, async {
        while !fake.admin().devices().iter().any(|d| d.jid == linked.jid && d.connected) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the restarted gateway logs in again");
    fake.admin().refuse_for(Duration::from_secs(3));
    fake.admin().drop_connection(&linked.jid).expect("the gateway's connection drops");
    let gateway = burst_with_kill(&fake, &dir, gateway, 2, ledger.clone()).await;

    let ledger = ledger.lock().await;
    assert_eq!(ledger.accepted.len() + ledger.refused.len(), 2 * PER_ROUND, "every request got an answer");
    assert_eq!(ledger.accepted.len(), 2 * PER_ROUND, "nothing was refused: {} refused", ledger.refused.len());
    // Everything accepted arrives.
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let shown = fake.admin().messages(RECIPIENT);
            let ids: HashSet<&str> = shown.iter().map(|m| m.id.as_str()).collect();
            if ledger.accepted.keys().all(|id| ids.contains(id.as_str())) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("every accepted PDF arrives after the restarts");
    // Then the gateway's queue runs dry (bounded): nothing it might still send is missed below.
    tokio::time::timeout(WAIT, async {
        while waiting(gateway.app()).await != Some(0) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the gateway's queue empties");
    let shown = fake.admin().messages(RECIPIENT);
    // Nothing but what was accepted, each under its own id: a PDF resent under a new id would
    // show up here as an id the ledger does not have, and twice by its hash.
    let shown_ids: Vec<&str> = shown.iter().map(|m| m.id.as_str()).collect();
    let shown_set: HashSet<&str> = shown_ids.iter().copied().collect();
    let accepted_set: HashSet<&str> = ledger.accepted.keys().map(String::as_str).collect();
    assert_eq!(shown_ids.len(), shown_set.len(), "an id shown twice: {shown_ids:?}");
    let unknown: Vec<&&str> = shown_set.difference(&accepted_set).collect();
    assert!(unknown.is_empty(), "the phone shows messages nobody was told about: {unknown:?}");
    assert_eq!(shown_set, accepted_set, "the phone shows exactly the accepted messages");
    let mut by_sha: HashMap<&str, Vec<&str>> = HashMap::new();
    for message in &shown {
        let sha = message.document.as_ref().expect("a document").sha256.as_str();
        by_sha.entry(sha).or_default().push(message.id.as_str());
        assert_eq!(
            Some(&sha.to_owned()),
            ledger.accepted.get(&message.id),
            "message {} carries its own PDF",
            message.id
        );
        assert!(!ledger.refused.contains(sha), "a refused PDF was delivered");
    }
    for sha in ledger.accepted.values() {
        let ids = by_sha.get(sha.as_str()).map_or(&[][..], Vec::as_slice);
        assert_eq!(ids.len(), 1, "PDF {sha} arrived {} times, under {ids:?}", ids.len());
    }
    // Resent under the same id is allowed (at least once toward WhatsApp); the phone counts it.
    let repeats: u64 = shown.iter().map(|m| m.repeats).sum();
    assert_eq!(repeats, fake.admin().duplicates(RECIPIENT), "every resend is counted on its message");
    eprintln!(
        "accepted {}, refused {}, shown {}, resent under the same id {repeats}",
        ledger.accepted.len(),
        ledger.refused.len(),
        shown.len(),
    );
    gateway.kill();
    fake.shutdown().await;
}
