//! Benchmark (not a test): links N sessions through the gateway against an in-process fake
//! WhatsApp server and prints the time from WebSocket upgrade to the first QR frame, the time
//! to `connected` after the scan, and the process RSS for N linked idle sessions.
//!
//! ```text
//! cargo run --release --example bench_sessions -- 100
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // A command-line example: failing loudly is its error handling.

use std::time::{Duration, Instant};

use fake_whatsapp::{FakeConfig, FakeWhatsApp};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use whatsapp_gateway::{App, Config};

const TOKEN: &str = "bench-token-0123456789abcdef";

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

async fn next_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> anyhow::Result<(String, String)> {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await? {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t)?;
                return Ok((v["event"].as_str().unwrap_or("").into(), v["data"].as_str().unwrap_or("").into()));
            }
            Some(Ok(_)) => continue,
            other => anyhow::bail!("socket ended: {other:?}"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let dir = std::env::temp_dir().join(format!("wg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let fake = FakeWhatsApp::start(FakeConfig::default()).await?;
    let env = [
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", "0".into()),
        ("API_STATIC_TOKEN", TOKEN.into()),
        ("SESSIONS_DIR", dir.join("sessions").display().to_string()),
        ("SESSIONS_CONFIG", dir.join("sessions.config.json").display().to_string()),
        ("WHATSAPP_URL", fake.ws_url()),
        ("WHATSAPP_VERSION", "2.3000.1".into()),
        ("WHATSAPP_CA_FILE", fake.ca_file().display().to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let app = App::build(Config::from_sources(env, None)?).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    let rss_before = rss_kib();

    let mut to_qr = Vec::with_capacity(n);
    let mut to_connected = Vec::with_capacity(n);
    for i in 0..n {
        let url = format!("ws://{addr}/ws/session/bench_{i}?token={TOKEN}");
        let started = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
        let qr = loop {
            let (event, data) = next_frame(&mut ws).await?;
            if event == "qr" {
                break data;
            }
        };
        to_qr.push(started.elapsed());
        let scanned = Instant::now();
        fake.admin().scan(&qr, &format!("5190{i:07}")).await?;
        loop {
            let (event, data) = next_frame(&mut ws).await?;
            if event == "status" && data == "connected" {
                break;
            }
        }
        to_connected.push(scanned.elapsed());
    }
    // Let the linked sessions settle into idle before reading memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = rss_kib();
    to_qr.sort();
    to_connected.sort();
    println!("sessions linked: {n}");
    println!(
        "upgrade -> first QR frame: p50 {:?}  p99 {:?}  max {:?}",
        percentile(&to_qr, 0.5),
        percentile(&to_qr, 0.99),
        to_qr.last().copied().unwrap_or_default()
    );
    println!(
        "scan -> connected frame:   p50 {:?}  p99 {:?}  max {:?}",
        percentile(&to_connected, 0.5),
        percentile(&to_connected, 0.99),
        to_connected.last().copied().unwrap_or_default()
    );
    println!(
        "RSS (gateway + fake server in one process): {} KiB before, {} KiB with {n} linked idle sessions, {:.0} KiB per session",
        rss_before,
        rss_after,
        (rss_after.saturating_sub(rss_before)) as f64 / n as f64
    );
    let t = Instant::now();
    let _ = stop.send(());
    server.await??;
    println!("graceful shutdown of {n} sessions: {:?}", t.elapsed());
    fake.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
