//! Benchmark (not a test): the gateway's memory per linked idle session, whether it grows while
//! idle, and how long a restart takes to bring every session back.
//!
//! The fake WhatsApp server runs as a child process (its own binary), so `VmRSS` read from
//! `/proc/self/status` is the gateway's alone. The gateway runs in this process (`App::build`,
//! `App::run`) against it. N sessions are created and linked over HTTP, 16 at a time
//! (`POST /api/sessions`, `GET /api/sessions/{id}/qr`, the fake's `POST /admin/scan`, then
//! `GET /api/sessions/{id}` until `connected`). It prints the RSS before linking, with N linked
//! idle sessions and per session; the RSS after idling `idle_secs` and its drift; then it stops
//! the gateway gracefully, starts a new one on the same folders and prints the time until all N
//! are `connected` again and the RSS after that restore.
//!
//! The gateway must be built with the `fake-whatsapp` feature (no verification of WhatsApp's
//! certificate chain, which the fake cannot present):
//!
//! ```text
//! cargo build --release -p fake-whatsapp
//! cargo run --release --features fake-whatsapp --example bench_memory -- <N> [idle_secs]
//! ```
//!
//! The fake's binary is looked up next to this example's (`target/release/fake-whatsapp`), or
//! taken from `FAKE_WHATSAPP_BIN`. Its stderr goes to `target/bench-memory-<pid>/fake.log`.
//! Like the binary, it turns SQLite's per-connection lookaside allocator off before anything
//! opens a database (`whatsapp_gateway::app::tune_sqlite_for_many_stores`);
//! `KEEP_SQLITE_LOOKASIDE=1` measures without that.
//!
//! `BENCH_DATABASE_URL=postgres://…` runs the gateway on that (empty) database or schema
//! (`DATABASE_URL`: the journal, inbox, registry and credentials there, one pool of
//! `DATABASE_MAX_CONNECTIONS`, 16 by default) instead of the files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A command-line example: failing loudly is its error handling.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use whatsapp_gateway::{App, Config};

const TOKEN: &str = "bench-token-0123456789abcdef";
/// Sessions being linked at once.
const CONCURRENCY: usize = 16;
/// One link (create, QR, scan, connected).
const LINK_TIMEOUT: Duration = Duration::from_secs(120);
/// All sessions back after a restart (the goal is 60 s; this only bounds the wait).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(600);
/// Linked sessions settle (prekey upload, first writes) before memory is read.
const SETTLE: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct FakeAddresses {
    ws_url: String,
    admin_url: String,
    ca_file: PathBuf,
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn own_rss() -> u64 {
    rss_kib("self")
}

/// `RssAnon` and `RssFile` of this process, in KiB (mapped files count in `VmRSS` too).
fn own_rss_split() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).unwrap_or("?").to_owned()
    };
    // SAFETY: reads SQLite's global allocation counter; no connection or pointer is involved.
    let sqlite = unsafe { rusqlite::ffi::sqlite3_memory_used() } / 1024;
    format!(
        "anon {} KiB, file {} KiB, SQLite heap {sqlite} KiB, threads {}",
        field("RssAnon:"),
        field("RssFile:"),
        field("Threads:")
    )
}

fn fake_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FAKE_WHATSAPP_BIN") {
        return PathBuf::from(path);
    }
    // target/release/examples/bench_memory -> target/release/fake-whatsapp
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().join("fake-whatsapp")
}

fn start_fake(dir: &Path) -> (Child, FakeAddresses) {
    let bin = fake_binary();
    assert!(bin.exists(), "{} not found: run `cargo build --release -p fake-whatsapp` first", bin.display());
    let log = std::fs::File::create(dir.join("fake.log")).unwrap();
    let mut child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--media-listen", "127.0.0.1:0", "--ca-out"])
        .arg(dir.join("fake-ca.pem"))
        .env("RUST_LOG", std::env::var("FAKE_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addresses = serde_json::from_str(&line).unwrap_or_else(|e| panic!("fake-whatsapp printed {line:?}: {e}"));
    (child, addresses)
}

fn gateway_env(dir: &Path, fake: &FakeAddresses) -> Vec<(String, String)> {
    [
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", "0".into()),
        ("API_STATIC_TOKEN", TOKEN.into()),
        ("SESSIONS_DIR", dir.join("sessions").display().to_string()),
        ("SESSIONS_CONFIG", dir.join("sessions.config.json").display().to_string()),
        ("DATA_DIR", dir.join("data").display().to_string()),
        ("WHATSAPP_URL", fake.ws_url.clone()),
        ("WHATSAPP_VERSION", "2.3000.1".into()),
        ("WHATSAPP_CA_FILE", fake.ca_file.display().to_string()),
        ("RATE_LIMIT_PER_SECOND", "0".into()),
        ("SEND_MIN_INTERVAL_MS", "0".into()),
        ("LOG_LEVEL", "warn".into()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .to_vec()
}

/// A running gateway and the way to stop it.
struct Gateway {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), whatsapp_gateway::StartError>>,
}

async fn start_gateway(env: Vec<(String, String)>) -> Gateway {
    let mut env = env;
    if let Ok(url) = std::env::var("BENCH_DATABASE_URL") {
        env.push(("DATABASE_URL".into(), url));
    }
    let config = Config::from_sources(env, None).unwrap();
    let app = App::build(config).await.unwrap();
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    Gateway { addr, stop, server }
}

impl Gateway {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

fn get_json(agent: &ureq::Agent, url: &str) -> (u16, serde_json::Value) {
    let mut response = agent.get(url).header("Authorization", format!("Bearer {TOKEN}")).call().unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

fn post_json(agent: &ureq::Agent, url: &str, body: &serde_json::Value, auth: bool) -> u16 {
    let mut request = agent.post(url).content_type("application/json");
    if auth {
        request = request.header("Authorization", format!("Bearer {TOKEN}"));
    }
    request.send(body.to_string().as_str()).unwrap().status().as_u16()
}

/// Creates and links one session; panics with the reason when it cannot.
fn link(agent: &ureq::Agent, gateway: &str, admin: &str, i: usize) {
    let id = format!("mem_{i}");
    let created = post_json(agent, &format!("{gateway}/api/sessions"), &serde_json::json!({ "sessionId": id }), true);
    assert_eq!(created, 201, "create {id}");
    let (status, qr) = get_json(agent, &format!("{gateway}/api/sessions/{id}/qr"));
    assert_eq!(status, 200, "qr of {id}: {qr}");
    let qr = qr["qrText"].as_str().unwrap().to_owned();
    let phone = (51_900_000_001u64 + i as u64).to_string();
    let scanned =
        post_json(agent, &format!("{admin}/admin/scan"), &serde_json::json!({ "qr": qr, "phone": phone }), false);
    assert_eq!(scanned, 200, "scan for {id}");
    let started = Instant::now();
    loop {
        let (_, session) = get_json(agent, &format!("{gateway}/api/sessions/{id}"));
        if session["status"] == "connected" {
            return;
        }
        assert!(started.elapsed() < LINK_TIMEOUT, "{id} not connected after the scan: {session}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Links sessions 0..n, `CONCURRENCY` at a time.
async fn link_all(gateway: String, admin: String, n: usize) -> Duration {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let (gateway, admin) = (Arc::new(gateway), Arc::new(admin));
    let workers: Vec<_> = (0..CONCURRENCY.min(n))
        .map(|_| {
            let (next, gateway, admin) = (next.clone(), gateway.clone(), admin.clone());
            tokio::task::spawn_blocking(move || {
                let agent = agent();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    link(&agent, &gateway, &admin, i);
                    if (i + 1) % 100 == 0 {
                        eprintln!("  linked {} of {n} ({:.0?})", i + 1, started.elapsed());
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    started.elapsed()
}

/// How many sessions report `connected`.
async fn connected_count(gateway: String) -> usize {
    tokio::task::spawn_blocking(move || {
        let (_, list) = get_json(&agent(), &format!("{gateway}/api/sessions"));
        list["sessions"].as_array().map_or(0, |s| s.iter().filter(|s| s["status"] == "connected").count())
    })
    .await
    .unwrap()
}

fn per_session(after: u64, before: u64, n: usize) -> f64 {
    after.saturating_sub(before) as f64 / n as f64
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let idle_secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    // As the binary's main does; `KEEP_SQLITE_LOOKASIDE=1` measures without it.
    if std::env::var_os("KEEP_SQLITE_LOOKASIDE").is_none() {
        whatsapp_gateway::app::tune_sqlite_for_many_stores();
    }
    // The fake answers the reconnect-time prekey digest check with "unavailable" (one warning per session).
    whatsapp_gateway::telemetry::init("warn,whatsapp_rust::prekeys=error");
    let dir = std::env::current_dir().unwrap().join(format!("target/bench-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut fake, addresses) = start_fake(&dir);
    let fake_pid = fake.id().to_string();
    let env = gateway_env(&dir, &addresses);

    let gateway = start_gateway(env.clone()).await;
    let url = format!("http://{}", gateway.addr);
    // The HTTP client threads exist before the first reading, so they are not counted per session.
    assert_eq!(connected_count(url.clone()).await, 0);
    let rss_before = own_rss();
    println!("sessions: {n}; gateway RSS before linking: {rss_before} KiB ({})", own_rss_split());

    let took = link_all(url.clone(), addresses.admin_url.clone(), n).await;
    println!("linked {n} sessions in {took:.1?}");
    tokio::time::sleep(SETTLE).await;
    let rss_linked = own_rss();
    println!(
        "gateway RSS with {n} linked idle sessions: {rss_linked} KiB; {:.0} KiB per session ({}; fake server, separate process: {} KiB)",
        per_session(rss_linked, rss_before, n),
        own_rss_split(),
        rss_kib(&fake_pid)
    );

    if idle_secs > 0 {
        let idle_started = Instant::now();
        let step = Duration::from_secs(idle_secs.min(60));
        while idle_started.elapsed() < Duration::from_secs(idle_secs) {
            tokio::time::sleep(step.min(Duration::from_secs(idle_secs).saturating_sub(idle_started.elapsed()))).await;
            println!("  idle {:>4} s: RSS {} KiB", idle_started.elapsed().as_secs(), own_rss());
        }
        let rss_idle = own_rss();
        println!(
            "gateway RSS after {idle_secs} s idle: {rss_idle} KiB; drift {:+.1}% ({:.0} KiB per session); {} of {n} connected",
            (rss_idle as f64 - rss_linked as f64) / rss_linked as f64 * 100.0,
            per_session(rss_idle, rss_before, n),
            connected_count(url.clone()).await
        );
    }

    let t = Instant::now();
    gateway.shutdown().await;
    println!("graceful shutdown of {n} sessions: {:.1?}; RSS after it {} KiB", t.elapsed(), own_rss());

    let t = Instant::now();
    let gateway = start_gateway(env).await;
    let url = format!("http://{}", gateway.addr);
    let mut last = usize::MAX;
    let restored = loop {
        let connected = connected_count(url.clone()).await;
        if connected != last && (connected == n || connected / 100 != last / 100) {
            eprintln!("  {connected} of {n} connected ({:.1?})", t.elapsed());
        }
        last = connected;
        if connected == n {
            break true;
        }
        if t.elapsed() > RESTORE_TIMEOUT {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let restore = t.elapsed();
    if restored {
        println!("restart: all {n} sessions connected again in {restore:.1?}");
    } else {
        println!("restart: only {last} of {n} sessions connected after {restore:.1?}");
    }
    tokio::time::sleep(SETTLE).await;
    let rss_restored = own_rss();
    println!(
        "gateway RSS after restore: {rss_restored} KiB; {:.0} KiB per session over the first gateway's baseline",
        per_session(rss_restored, rss_before, n)
    );

    gateway.shutdown().await;
    let _ = fake.kill();
    let _ = fake.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
