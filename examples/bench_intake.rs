//! Benchmark (not a test): accepted `POST /api/send-pdf` requests per second with a 100 KiB PDF
//! and 32 concurrent clients, durable (journaled and fsynced before the 202), and the latency
//! percentiles. The session exists but is not linked, so nothing is sent: this measures intake.
//!
//! ```text
//! cargo run --release --example bench_intake -- [requests] [concurrency] [none|page|all]
//! ```
//!
//! The third argument keeps a `/ws/events` reader open during the run: `page` subscribes as the
//! admin page does (every event but `message.status`), `all` to every event, which makes the
//! journal record each status change for it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A command-line example: failing loudly is its error handling.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use support::TOKEN;
use whatsapp_gateway::{App, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the binary's main does.
    whatsapp_gateway::app::tune_sqlite_for_many_stores();
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let reader = args.next().unwrap_or_else(|| "none".into());
    let types = match reader.as_str() {
        "none" => None,
        "page" => Some("?types=session.status,session.qr,session.connected,session.logged_out,message.received"),
        "all" => Some(""),
        other => anyhow::bail!("unknown reader {other:?}: none, page or all"),
    };
    let dir = std::env::current_dir()?.join(format!("target/bench-intake-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("sessions.config.json"), r#"[{"sessionId":"bench"}]"#)?;
    let env = support::intake_env(&dir);
    let app = App::build(Config::from_sources(env, None)?).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));

    let events_seen = Arc::new(AtomicUsize::new(0));
    let _reader = match types {
        None => None,
        Some(query) => {
            use futures_util::StreamExt as _;
            use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
            let mut request = format!("ws://{addr}/ws/events{query}").into_client_request()?;
            request.headers_mut().insert("Authorization", format!("Bearer {TOKEN}").parse()?);
            let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
            let seen = events_seen.clone();
            Some(tokio::spawn(async move {
                while let Some(Ok(_)) = socket.next().await {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            }))
        }
    };

    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.resize(100 * 1024, b'x');
    let body = Arc::new(
        serde_json::json!({
            "sessionId": "bench",
            "to": "51987654321",
            "pdfBase64": base64::engine::general_purpose::STANDARD.encode(&pdf),
        })
        .to_string(),
    );
    let url = Arc::new(format!("http://{addr}/api/send-pdf"));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (url, body, next) = (url.clone(), body.clone(), next.clone());
        workers.push(tokio::task::spawn_blocking(move || {
            let agent =
                ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
            let mut latencies = Vec::new();
            let mut failures = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                let ok = agent
                    .post(url.as_str())
                    .header("Authorization", format!("Bearer {TOKEN}"))
                    .content_type("application/json")
                    .send(body.as_str())
                    .map(|r| r.status().as_u16() == 202)
                    .unwrap_or(false);
                if ok {
                    latencies.push(t.elapsed());
                } else {
                    failures += 1;
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    let mut failures = 0;
    for worker in workers {
        let (l, f) = worker.await?;
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct =
        |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default();
    println!(
        "accepted {} of {total} (failures {failures}) with {concurrency} concurrent clients, 100 KiB PDF",
        latencies.len()
    );
    println!(
        "throughput: {:.0} accepted requests/s over {:.2?}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        elapsed
    );
    println!("latency: p50 {:.1?}  p90 {:.1?}  p99 {:.1?}  max {:.1?}", pct(0.5), pct(0.9), pct(0.99), pct(1.0));
    if types.is_some() {
        println!("/ws/events reader ({reader}): {} frames", events_seen.load(Ordering::Relaxed));
    }
    let _ = stop.send(());
    server.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
