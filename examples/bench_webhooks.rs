//! Benchmark (not a test): webhook deliveries per second to a local receiver, and event →
//! delivered latency. One linked session on an in-process fake WhatsApp server; virtual phones
//! send it `count` texts (at most 256 in flight), each becoming a `message.received` event that the
//! gateway writes to its outbox and posts, signed, to a receiver on loopback.
//!
//! ```text
//! cargo run --release --example bench_webhooks -- [count=3000]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // A command-line example: failing loudly is its error handling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use tokio::sync::mpsc;

mod support;
const GATEWAY_PHONE: &str = "51900000098";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A receiver that answers 200 and reports (event, its timestamp, when it arrived).
async fn receiver() -> (String, mpsc::UnboundedReceiver<(String, u64, u64)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                        let _ = tx.send((
                            event["event"].as_str().unwrap_or_default().to_owned(),
                            event["timestamp"].as_u64().unwrap_or(0),
                            now_ms(),
                        ));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Empty::<bytes::Bytes>::new(),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/hooks"), rx)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3000);
    let dir = std::env::temp_dir().join(format!("wg-bench-webhooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (url, mut received) = receiver().await;
    let linked = support::linked::start(
        &dir,
        GATEWAY_PHONE,
        &[("WEBHOOK_URL", url), ("WEBHOOK_EVENTS", "message.received".into())],
    )
    .await?;
    let fake = &linked.fake;

    let window = Arc::new(tokio::sync::Semaphore::new(256));
    let started = Instant::now();
    for phone in 0..8 {
        let (admin, window) = (fake.admin(), Arc::clone(&window));
        tokio::spawn(async move {
            for n in (phone..count).step_by(8) {
                window.acquire().await.expect("open").forget();
                let from = format!("5198700{phone:04}");
                admin.send_text(&from, GATEWAY_PHONE, &format!("evento {n}")).await.expect("send");
            }
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        let (event, timestamp, arrived) = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .map_err(|_| anyhow::anyhow!("{} of {count} delivered", latencies.len()))?
            .ok_or_else(|| anyhow::anyhow!("receiver stopped"))?;
        if event == "message.received" {
            window.add_permits(1);
            latencies.push(Duration::from_millis(arrived.saturating_sub(timestamp)));
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "webhooks: {count} events delivered to a local receiver at {:.0}/s; event -> delivered p50 {:?}  p99 {:?}",
        count as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );
    linked.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
