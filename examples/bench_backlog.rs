//! Benchmark (not a test): the memory a backlog costs. Accepts N `POST /api/send-pdf` requests
//! with a 100 KiB PDF for a session that is not linked (so nothing leaves the queue), and prints
//! the process RSS before and after, per queued message; then restarts the gateway on the same
//! directory, so the queue is rebuilt from the journal, and prints the RSS again.
//!
//! ```text
//! cargo run --release --example bench_backlog -- [messages] [concurrency]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // A command-line example: failing loudly is its error handling.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use base64::Engine as _;
use support::TOKEN;
use whatsapp_gateway::{App, Config};

const SESSION: &str = "bench";
const PDF_BYTES: usize = 100 * 1024;

/// A running in-process gateway and the way to stop it.
struct Running {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let dir = std::env::current_dir()?.join(format!("target/bench-backlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("sessions.config.json"), format!(r#"[{{"sessionId":"{SESSION}"}}]"#))?;

    let gateway = start(&dir).await?;
    let before = rss_kib();
    println!("RSS before: {} MiB (gateway started, queue empty)", mib(before));

    let started = Instant::now();
    let accepted = send_all(gateway.addr, total, concurrency).await?;
    let elapsed = started.elapsed();
    let after = rss_kib();
    let (pending, bytes) = queue_depth(gateway.addr).await?;
    println!(
        "accepted {accepted} of {total} 100 KiB PDFs in {elapsed:.2?} ({concurrency} clients); \
         queued: {pending} messages, {} MiB",
        bytes / (1024 * 1024)
    );
    println!("RSS after:  {} MiB", mib(after));
    println!("RSS per queued message: {:.1} KiB", per_message(before, after, accepted));

    stop(gateway).await?;
    let restarted = start(&dir).await?;
    let (pending, _) = queue_depth(restarted.addr).await?;
    let after_restart = rss_kib();
    println!("after a restart: {pending} messages restored from the journal, RSS {} MiB", mib(after_restart));
    stop(restarted).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Builds and runs a gateway on `dir`, with bounds far above the backlog and no rate limit.
async fn start(dir: &Path) -> anyhow::Result<Running> {
    let env = support::intake_env(dir);
    let app = App::build(Config::from_sources(env, None)?).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run(async {
            let _ = stopped.await;
        })
        .await
        .map_err(anyhow::Error::from)
    });
    Ok(Running { addr, stop, server })
}

/// Graceful shutdown; returns once the gateway (and its journal) is closed.
async fn stop(running: Running) -> anyhow::Result<()> {
    let _ = running.stop.send(());
    running.server.await?
}

/// Posts `total` PDFs from `concurrency` blocking clients; returns how many got a 202.
async fn send_all(addr: SocketAddr, total: usize, concurrency: usize) -> anyhow::Result<usize> {
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.resize(PDF_BYTES, b'x');
    let body = Arc::new(
        serde_json::json!({
            "sessionId": SESSION,
            "to": "51987654321",
            "pdfBase64": base64::engine::general_purpose::STANDARD.encode(&pdf),
        })
        .to_string(),
    );
    let url = Arc::new(format!("http://{addr}/api/send-pdf"));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (url, body, next) = (url.clone(), body.clone(), next.clone());
        workers.push(tokio::task::spawn_blocking(move || {
            let agent =
                ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
            let mut accepted = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let ok = agent
                    .post(url.as_str())
                    .header("Authorization", format!("Bearer {TOKEN}"))
                    .content_type("application/json")
                    .send(body.as_str())
                    .map(|r| r.status().as_u16() == 202)
                    .unwrap_or(false);
                accepted += usize::from(ok);
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for worker in workers {
        accepted += worker.await?;
    }
    Ok(accepted)
}

/// (waiting messages, waiting bytes) of the bench session, from `GET /api/sessions/{id}`.
async fn queue_depth(addr: SocketAddr) -> anyhow::Result<(u64, u64)> {
    let url = format!("http://{addr}/api/sessions/{SESSION}");
    let session: serde_json::Value = tokio::task::spawn_blocking(move || {
        let text =
            ureq::get(&url).header("Authorization", format!("Bearer {TOKEN}")).call()?.into_body().read_to_string()?;
        anyhow::Ok(serde_json::from_str(&text)?)
    })
    .await??;
    Ok((session["queue"]["pending"].as_u64().unwrap_or(0), session["queue"]["bytes"].as_u64().unwrap_or(0)))
}

/// This process's resident set size in KiB, from `/proc/self/status` (`VmRSS`).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn per_message(before: u64, after: u64, messages: usize) -> f64 {
    after.saturating_sub(before) as f64 / messages.max(1) as f64
}
