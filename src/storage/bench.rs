//! Durable intake, store by store: the same 100 KiB accepts through [`JournalStore`] on SQLite
//! and on Postgres, in one run.
//!
//! `cargo test --release --workspace --locked -- --ignored --exact storage::bench::accepts_of_100_kib_on_both_backends --nocapture`
//!
//! Postgres' own ceiling for the same insert is `bench/pg-ceiling.sh` (pgbench, 32 clients).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::JournalStore;
use super::journal::{Accepted, NewMessage};
use crate::domain::{FileName, OutgoingContent, PdfDocument, PhoneNumber, SessionId};

const TOTAL: usize = 4000;
const TASKS: usize = 32;

fn message(id: String, body: &Bytes) -> NewMessage {
    let file_name = FileName::parse("factura.pdf").expect("file name");
    NewMessage {
        message_id: id,
        session_id: SessionId::parse("tienda").expect("id"),
        to: PhoneNumber::parse("+51 987 654 321").expect("phone"),
        content: OutgoingContent::pdf(PdfDocument::from_bytes(body.clone()).expect("pdf"), file_name),
        idempotency: None,
    }
}

/// Accepts/s and the p50 and p99 latency of `TOTAL` accepts from `TASKS` tasks.
async fn run(journal: Arc<dyn JournalStore>) -> (f64, Duration, Duration) {
    let mut body = b"%PDF-1.4\n".to_vec();
    body.extend((0..100 * 1024 - body.len()).map(|i| (i as u8).wrapping_mul(31)));
    let body = Bytes::from(body);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let (journal, body, next) = (Arc::clone(&journal), body.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= TOTAL {
                    return latencies;
                }
                let t = Instant::now();
                let accepted = journal.accept(message(format!("b-{i:05}"), &body)).await;
                assert!(matches!(accepted, Ok(Accepted::New)), "{accepted:?}");
                latencies.push(t.elapsed());
            }
        });
    }
    let mut latencies: Vec<Duration> = tasks.join_all().await.into_iter().flatten().collect();
    let elapsed = started.elapsed();
    latencies.sort();
    (TOTAL as f64 / elapsed.as_secs_f64(), latencies[TOTAL / 2], latencies[TOTAL * 99 / 100])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints accepts/s and latencies of 100 KiB accepts on SQLite and on Postgres"]
async fn accepts_of_100_kib_on_both_backends() {
    let dir = std::env::temp_dir().join(format!("wg-bench-{}-{}", std::process::id(), super::now_ms()));
    let sqlite = super::sqlite::journal::SqliteJournal::open(&dir).expect("open");
    let on_sqlite = run(Arc::new(sqlite)).await;
    let _ = std::fs::remove_dir_all(&dir);
    let test = super::postgres::testing::fresh(u32::try_from(TASKS).unwrap_or(16)).await;
    let on_postgres = run(Arc::new(test.db.journal())).await;
    for (name, (rate, p50, p99)) in [("sqlite", on_sqlite), ("postgres", on_postgres)] {
        println!(
            "intake bench {name}: {TOTAL} accepts x 100 KiB, {TASKS} tasks: {rate:.0} accepts/s, \
             p50 {:.1} ms, p99 {:.1} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
}

/// Settled deliveries the prune benchmark deletes, 1 KiB of body each.
const SETTLED: usize = 100_000;

/// What the prune benchmark measured on one backend.
struct Pruned {
    took: Duration,
    rounds: usize,
    longest: Duration,
    /// p50 and max of an outbox write with nothing else running.
    alone: (Duration, Duration),
    /// The same while the prune runs.
    meanwhile: (Duration, Duration),
}

fn delivery_of(endpoint: &crate::domain::Endpoint, n: usize) -> crate::domain::NewDelivery {
    crate::domain::NewDelivery {
        endpoint_id: endpoint.id.clone(),
        event_id: format!("evt_{n:07}"),
        event: crate::domain::EventKind::MessageStatus,
        session_id: "tienda".into(),
        body: format!("{{\"id\":\"evt_{n:07}\",\"pad\":\"{}\"}}", "x".repeat(1000)),
        path: String::new(),
    }
}

/// Writes one delivery of `endpoint` every 10 ms from event number `from` until `until`; the
/// p50 and max of the writes.
fn write_until(
    store: &Arc<dyn super::WebhookStore>,
    endpoint: &crate::domain::Endpoint,
    from: usize,
    until: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<(Duration, Duration)> {
    let (store, endpoint) = (Arc::clone(store), endpoint.clone());
    tokio::spawn(async move {
        let mut waits = Vec::new();
        let mut n = from;
        while !until.is_cancelled() {
            let t = Instant::now();
            store.enqueue(&[delivery_of(&endpoint, n)], u64::MAX, super::now_ms()).await.expect("enqueue");
            waits.push(t.elapsed());
            n += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        waits.sort();
        (waits[waits.len() / 2], waits[waits.len() - 1])
    })
}

/// Deletes [`SETTLED`] delivered deliveries in rounds of the webhooks' own batch while another
/// endpoint's outbox is written every 10 ms (and those writes alone for two seconds before).
async fn prune(store: Arc<dyn super::WebhookStore>) -> Pruned {
    let endpoint = |n| super::webhooks_conformance::endpoint(crate::domain::Owner::admin(), n);
    let (old, busy) = (endpoint(1), endpoint(2));
    store.create(&old).await.expect("create");
    store.create(&busy).await.expect("create");
    let lease = Duration::from_secs(60);
    for start in (0..SETTLED).step_by(1000) {
        let batch: Vec<_> = (start..start + 1000).map(|n| delivery_of(&old, n)).collect();
        store.enqueue(&batch, u64::MAX, 1_000).await.expect("enqueue");
        let claim = store.claim(&old.id, 1000, 1_000, lease).await.expect("claim").expect("enabled");
        let ids: Vec<i64> = claim.deliveries.iter().map(|d| d.id).collect();
        store.settle(&old.id, claim.until.expect("lease"), &ids, None, 1_001).await.expect("settle");
    }

    let stop = tokio_util::sync::CancellationToken::new();
    let writer = write_until(&store, &busy, 0, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let alone = writer.await.expect("writer");

    let stop = tokio_util::sync::CancellationToken::new();
    let writer = write_until(&store, &busy, SETTLED, stop.clone());
    let started = Instant::now();
    let (mut rounds, mut longest) = (0, Duration::ZERO);
    loop {
        let t = Instant::now();
        let deleted = store.prune(2_000, super::webhooks::PRUNE_BATCH).await.expect("prune");
        longest = longest.max(t.elapsed());
        rounds += 1;
        if deleted < super::webhooks::PRUNE_BATCH as u64 {
            break;
        }
    }
    let took = started.elapsed();
    stop.cancel();
    let meanwhile = writer.await.expect("writer");
    let left =
        store.deliveries(&old.id, &crate::domain::Viewer::Admin, None, 10).await.expect("list").expect("visible");
    assert!(left.is_empty(), "every settled delivery pruned");
    Pruned { took, rounds, longest, alone, meanwhile }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints how long pruning settled webhook deliveries takes on SQLite and on Postgres"]
async fn prune_of_settled_deliveries_on_both_backends() {
    let dir = std::env::temp_dir().join(format!("wg-bench-prune-{}-{}", std::process::id(), super::now_ms()));
    crate::files::private_dir(&dir).expect("dir");
    let sqlite = super::sqlite::SqliteWebhooks::open(&dir.join("webhooks.db")).expect("open");
    let on_sqlite = prune(Arc::new(sqlite)).await;
    let _ = std::fs::remove_dir_all(&dir);
    let test = super::postgres::testing::fresh(8).await;
    let on_postgres = prune(Arc::new(test.db.webhooks())).await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (name, p) in [("sqlite", on_sqlite), ("postgres", on_postgres)] {
        println!(
            "prune bench {name}: {SETTLED} settled deliveries x 1 KiB deleted in {:.2} s, {} rounds, the longest \
             {:.0} ms; an outbox write alone p50 {:.1} ms max {:.0} ms, during the prune p50 {:.1} ms max {:.0} ms",
            p.took.as_secs_f64(),
            p.rounds,
            ms(p.longest),
            ms(p.alone.0),
            ms(p.alone.1),
            ms(p.meanwhile.0),
            ms(p.meanwhile.1),
        );
    }
}
