//! Benchmark (not a test): a fleet of gateway processes on one Postgres and an in-process fake
//! WhatsApp server. Links N numbers, starts G gateways, then prints:
//!
//! * SIGKILL of the busiest gateway: when each of its numbers was connected elsewhere;
//! * a rolling restart with SIGTERM: each number's handoff, gateway after gateway;
//! * one more gateway joining: when the fleet was balanced again;
//!
//! and the `replaced` conflicts the fake server counted during each (there should be none).
//!
//! ```text
//! cargo build --release --bin whatsapp-gateway
//! cargo run --release --example bench_fleet -- [numbers=60] [gateways=3]
//! ```
//!
//! `BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`) names the database;
//! the schema `bench_fleet` is emptied first. `GATEWAY_BIN` (default
//! `target/release/whatsapp-gateway`) is the gateway; `LEASE_TTL_SECS` (default 10) its lease.
//! Each gateway runs at most numbers ÷ (gateways − 1), so that the first to start does not take
//! every number (and hand most over again) while the survivors of a SIGKILL still have room.
//! `BENCH_SKIP_ROLLING=1` skips the rolling restart (long with hundreds of numbers: each
//! gateway that comes back takes its share at 30 numbers a minute from each of the others).
#![allow(clippy::unwrap_used, clippy::expect_used)] // A command-line example: failing loudly is its error handling.

mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_whatsapp::{FakeConfig, FakeWhatsApp};
use futures_util::StreamExt as _;
use support::TOKEN;
use tokio_tungstenite::tungstenite::Message;
use whatsapp_gateway::{App, Config};

const SCHEMA: &str = "bench_fleet";

/// One gateway process of the fleet.
struct Member {
    id: String,
    port: u16,
    child: Option<Child>,
}

impl Member {
    fn start(id: &str, port: u16, env: &[(String, String)]) -> Member {
        let bin = std::env::var("GATEWAY_BIN").unwrap_or_else(|_| "target/release/whatsapp-gateway".into());
        let dir = std::env::temp_dir().join(format!("wg-fleet-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(&bin)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("GATEWAY_ID", id)
            .env("PORT", port.to_string())
            .env("SESSIONS_DIR", dir.join("sessions"))
            .env("SESSIONS_CONFIG", dir.join("sessions.config.json"))
            .env("DATA_DIR", dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (cargo build --release --bin whatsapp-gateway)"));
        Member { id: id.to_owned(), port, child: Some(child) }
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
        }
    }

    fn wait(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Who runs each number, as gateway `port` shows it: session → gateway, connected ones only.
async fn placement(port: u16) -> Option<HashMap<String, String>> {
    tokio::task::spawn_blocking(move || {
        let mut answer = ureq::get(format!("http://127.0.0.1:{port}/api/sessions"))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .config()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .call()
            .ok()?;
        let list: serde_json::Value = serde_json::from_str(&answer.body_mut().read_to_string().ok()?).ok()?;
        Some(
            list["sessions"]
                .as_array()?
                .iter()
                .filter(|s| s["status"] == "connected")
                .filter_map(|s| Some((s["sessionId"].as_str()?.to_owned(), s["gateway"].as_str()?.to_owned())))
                .collect(),
        )
    })
    .await
    .ok()
    .flatten()
}

async fn ready(port: u16) {
    for _ in 0..600 {
        let ok = tokio::task::spawn_blocking(move || {
            ureq::get(format!("http://127.0.0.1:{port}/health/ready")).call().is_ok()
        })
        .await
        .unwrap_or(false);
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway on port {port} never became ready");
}

/// Polls `via` every 100 ms until every number of `watched` is connected on a gateway other
/// than `away_from`; returns when each one was first seen so (from `since`).
async fn until_moved(via: u16, watched: &[String], away_from: &str, since: Instant, limit: Duration) -> Vec<Duration> {
    let mut moved: HashMap<String, Duration> = HashMap::new();
    while moved.len() < watched.len() && since.elapsed() < limit {
        if let Some(now) = placement(via).await {
            for session in watched {
                if now.get(session).is_some_and(|g| g != away_from) {
                    moved.entry(session.clone()).or_insert_with(|| since.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut times: Vec<Duration> = moved.into_values().collect();
    times.sort();
    times
}

/// Waits until every number is connected and no gateway runs more than one above another.
async fn until_balanced(via: u16, numbers: usize, gateways: &[&str], limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(now) = placement(via).await {
            let counts: Vec<usize> = gateways.iter().map(|g| now.values().filter(|v| v == g).count()).collect();
            let (min, max) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
            if now.len() == numbers && max - min <= 1 {
                println!("  placement: {counts:?}");
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

fn summary(what: &str, times: &[Duration], expected: usize) {
    let at = |p: f64| times.get(((times.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or_default();
    println!(
        "{what}: {}/{expected} moved; min {:.2?}  p50 {:.2?}  p90 {:.2?}  p100 {:.2?}",
        times.len(),
        at(0.0),
        at(0.5),
        at(0.9),
        at(1.0)
    );
}

async fn link_all(fake: &FakeWhatsApp, env: &[(String, String)], numbers: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("wg-fleet-{}-linker", std::process::id()));
    // The linker runs every number while it links them: no bound but the machine's.
    let mut env: Vec<(String, String)> = env.iter().filter(|(k, _)| k != "MAX_SESSIONS_PER_GATEWAY").cloned().collect();
    env.extend([
        ("PORT".to_string(), "0".to_string()),
        ("GATEWAY_ID".into(), "linker".into()),
        ("SESSIONS_DIR".into(), dir.join("sessions").display().to_string()),
        ("SESSIONS_CONFIG".into(), dir.join("sessions.config.json").display().to_string()),
        ("DATA_DIR".into(), dir.join("data").display().to_string()),
    ]);
    let app = App::build(Config::from_sources(env, None)?).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    for i in 0..numbers {
        let url = format!("ws://{addr}/ws/session/fleet_{i}?token={TOKEN}");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
        let mut scanned = false;
        while let Some(Ok(frame)) = tokio::time::timeout(Duration::from_secs(60), ws.next()).await? {
            let Message::Text(text) = frame else { continue };
            let frame: serde_json::Value = serde_json::from_str(&text)?;
            match (frame["event"].as_str(), frame["data"].as_str()) {
                (Some("qr"), Some(qr)) if !scanned => {
                    fake.admin().scan(qr, &format!("5191{i:07}")).await?;
                    scanned = true;
                }
                (Some("status"), Some("connected")) => break,
                _ => {}
            }
        }
    }
    let _ = stop.send(());
    server.await??;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let numbers: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(60);
    let count: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let ttl: u64 = std::env::var("LEASE_TTL_SECS").ok().and_then(|t| t.parse().ok()).unwrap_or(10);
    let base = std::env::var("BENCH_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let admin = sqlx::PgPool::connect(&base).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")))
        .execute(&admin)
        .await?;
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options[search_path]={SCHEMA}");

    let fake = FakeWhatsApp::start(FakeConfig::default()).await?;
    let env: Vec<(String, String)> = [
        ("HOST", "127.0.0.1".to_string()),
        ("API_STATIC_TOKEN", TOKEN.into()),
        ("DATABASE_URL", url),
        ("DATABASE_MAX_CONNECTIONS", "8".into()),
        ("LEASE_TTL_SECS", ttl.to_string()),
        ("MAX_SESSIONS_PER_GATEWAY", numbers.div_ceil(count.saturating_sub(1).max(1)).to_string()),
        ("WHATSAPP_URL", fake.ws_url()),
        ("WHATSAPP_VERSION", "2.3000.1".into()),
        ("WHATSAPP_CA_FILE", fake.ca_file().display().to_string()),
        ("LOG_LEVEL", "error".into()),
        ("RATE_LIMIT_PER_SECOND", "0".into()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into();

    let linking = Instant::now();
    link_all(&fake, &env, numbers).await?;
    println!("{numbers} numbers linked in {:.1?}; lease {ttl} s", linking.elapsed());

    let mut members: Vec<Member> = (1..=count).map(|n| Member::start(&format!("gw-{n}"), free_port(), &env)).collect();
    for member in &members {
        ready(member.port).await;
    }
    let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let took = until_balanced(members[0].port, numbers, &names, Duration::from_secs(300)).await;
    println!("{count} gateways started: balanced after {took:.1?}");

    // SIGKILL of the busiest gateway.
    let now = placement(members[0].port).await.unwrap_or_default();
    let victim = (0..members.len()).max_by_key(|&i| now.values().filter(|g| **g == members[i].id).count()).unwrap_or(0);
    let orphans: Vec<String> = now.iter().filter(|(_, g)| **g == members[victim].id).map(|(s, _)| s.clone()).collect();
    let via = members[(victim + 1) % members.len()].port;
    let replaced = fake.admin().replaced_conflicts();
    let killed = Instant::now();
    members[victim].signal("-KILL");
    members[victim].wait();
    let times = until_moved(via, &orphans, &members[victim].id, killed, Duration::from_secs(120)).await;
    summary(
        &format!("SIGKILL of {} ({} numbers) -> connected elsewhere", members[victim].id, orphans.len()),
        &times,
        orphans.len(),
    );
    println!("  replaced conflicts: {}", fake.admin().replaced_conflicts() - replaced);
    let (id, port) = (members[victim].id.clone(), members[victim].port);
    members[victim] = Member::start(&id, port, &env);
    ready(port).await;
    let took = until_balanced(via, numbers, &names, Duration::from_secs(300)).await;
    println!("{id} back: balanced after {took:.1?}");

    // A rolling restart with SIGTERM.
    let replaced = fake.admin().replaced_conflicts();
    let mut handoffs = Vec::new();
    let rolling = if std::env::var_os("BENCH_SKIP_ROLLING").is_some() { 0 } else { members.len() };
    for i in 0..rolling {
        let now = placement(members[i].port).await.unwrap_or_default();
        let held: Vec<String> = now.iter().filter(|(_, g)| **g == members[i].id).map(|(s, _)| s.clone()).collect();
        let via = members[(i + 1) % members.len()].port;
        let stopping = Instant::now();
        members[i].signal("-TERM");
        let times = until_moved(via, &held, &members[i].id, stopping, Duration::from_secs(60)).await;
        summary(&format!("SIGTERM of {} ({} numbers) -> handed over", members[i].id, held.len()), &times, held.len());
        handoffs.extend(times);
        members[i].wait();
        let (id, port) = (members[i].id.clone(), members[i].port);
        members[i] = Member::start(&id, port, &env);
        ready(port).await;
        let took = until_balanced(via, numbers, &names, Duration::from_secs(300)).await;
        println!("  {id} back: balanced after {took:.1?}");
    }
    handoffs.sort();
    summary("rolling restart, every handoff", &handoffs, handoffs.len());
    println!("  replaced conflicts: {}", fake.admin().replaced_conflicts() - replaced);

    // One more gateway joins.
    let replaced = fake.admin().replaced_conflicts();
    let joined = Instant::now();
    let id = format!("gw-{}", members.len() + 1);
    members.push(Member::start(&id, free_port(), &env));
    ready(members[members.len() - 1].port).await;
    let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let took = until_balanced(members[0].port, numbers, &names, Duration::from_secs(600)).await;
    println!(
        "{id} joined {count} gateways holding {numbers} numbers: balanced after {took:.1?} (from its start: {:.1?})",
        joined.elapsed()
    );
    println!("  replaced conflicts: {}", fake.admin().replaced_conflicts() - replaced);

    for member in &members {
        member.signal("-TERM");
    }
    for member in &mut members {
        member.wait();
    }
    fake.shutdown().await;
    Ok(())
}
