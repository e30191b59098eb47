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
