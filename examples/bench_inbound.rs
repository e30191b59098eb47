//! Benchmark (not a test): how fast received messages are stored and pushed. One linked
//! session on an in-process fake WhatsApp server; virtual phones send it texts, and each is timed
//! from the phone's send to its `message.received` frame on `/ws/events` (so: WhatsApp's relay,
//! the client's decryption, the inbox's durable insert and the push).
//!
//! Phase 1 paces `count` messages at `per_minute`; phase 2 sends `flood` messages from 8 phones
//! at once, as fast as the gateway takes them (at most 256 sent and not yet pushed: beyond that
//! the fake server's outbox to the device fills and holds messages for the next login, as
//! WhatsApp does), and reports the rate the gateway kept up with.
//!
//! ```text
//! cargo run --release --example bench_inbound -- [count=500] [per_minute=1000] [flood=2000]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // A command-line example: failing loudly is its error handling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

mod support;

use support::TOKEN;
const GATEWAY_PHONE: &str = "51900000099";

type Sent = Arc<Mutex<HashMap<String, Instant>>>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Collects `expected` latencies from the events socket (send time looked up by message id).
async fn collect(
    events: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    sent: &Sent,
    expected: usize,
    window: &tokio::sync::Semaphore,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(expected);
    let mut early: HashMap<String, Instant> = HashMap::new();
    while latencies.len() < expected {
        let Ok(frame) = tokio::time::timeout(Duration::from_secs(20), events.next()).await else {
            anyhow::bail!(
                "{} of {expected} arrived; {} sent but not pushed",
                latencies.len(),
                sent.lock().unwrap().len()
            );
        };
        let Some(Ok(Message::Text(text))) = frame else { continue };
        let arrived = Instant::now();
        let event: serde_json::Value = serde_json::from_str(&text)?;
        if event["event"] == "lagged" {
            anyhow::bail!("the events socket lagged: {event}");
        }
        let Some(id) = event["data"]["messageId"].as_str() else { continue };
        window.add_permits(1);
        match sent.lock().unwrap().remove(id) {
            Some(at) => latencies.push(arrived - at),
            // Pushed before the sender recorded its id: settle it when the id shows up.
            None => {
                early.insert(id.to_owned(), arrived);
            }
        }
        let mut sent = sent.lock().unwrap();
        early.retain(|id, arrived| match sent.remove(id) {
            Some(at) => {
                latencies.push(arrived.saturating_duration_since(at));
                false
            }
            None => true,
        });
    }
    latencies.sort();
    Ok(latencies)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arg = |n: usize, default: usize| std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (count, per_minute, flood) = (arg(1, 500), arg(2, 1000), arg(3, 2000));
    whatsapp_gateway::telemetry::init(&std::env::var("LOG_LEVEL").unwrap_or_else(|_| "warn".into()));
    let dir = std::env::temp_dir().join(format!("wg-bench-inbound-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let linked = support::linked::start(&dir, GATEWAY_PHONE, &[]).await?;
    let (fake, addr) = (&linked.fake, linked.addr);
    let url = format!("ws://{addr}/ws/events?token={TOKEN}&types=message.received");
    let (mut events, _) = tokio_tungstenite::connect_async(url).await?;

    // Phase 1: paced.
    let sent: Sent = Arc::default();
    let interval = Duration::from_secs(60) / per_minute.max(1) as u32;
    let sender = {
        let (fake_admin, sent) = (fake.admin(), Arc::clone(&sent));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            for n in 0..count {
                tick.tick().await;
                let at = Instant::now();
                let id =
                    fake_admin.send_text("51987000099", GATEWAY_PHONE, &format!("pedido {n}")).await.expect("send");
                sent.lock().unwrap().insert(id, at);
            }
        })
    };
    let unbounded = tokio::sync::Semaphore::new(0);
    let paced = collect(&mut events, &sent, count, &unbounded).await?;
    sender.await?;
    println!(
        "paced: {count} texts at {per_minute}/min to one session: receive -> stored -> pushed p50 {:?}  p99 {:?}  max {:?}",
        percentile(&paced, 0.5),
        percentile(&paced, 0.99),
        paced.last().copied().unwrap_or_default()
    );

    // Phase 2: as fast as 8 phones can send.
    let window = Arc::new(tokio::sync::Semaphore::new(256));
    let started = Instant::now();
    let mut senders = Vec::new();
    for phone in 0..8 {
        let (fake_admin, sent, window) = (fake.admin(), Arc::clone(&sent), Arc::clone(&window));
        senders.push(tokio::spawn(async move {
            for n in (phone..flood).step_by(8) {
                window.acquire().await.expect("open").forget();
                let at = Instant::now();
                let from = format!("5198700{phone:04}");
                let id = fake_admin.send_text(&from, GATEWAY_PHONE, &format!("flood {n}")).await.expect("send");
                sent.lock().unwrap().insert(id, at);
            }
        }));
    }
    let flooded = collect(&mut events, &sent, flood, &window).await?;
    let elapsed = started.elapsed();
    for sender in senders {
        sender.await?;
    }
    println!(
        "flood: {flood} texts from 8 phones: {:.0} stored and pushed per second; p50 {:?}  p99 {:?}",
        flood as f64 / elapsed.as_secs_f64(),
        percentile(&flooded, 0.5),
        percentile(&flooded, 0.99),
    );
    linked.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
