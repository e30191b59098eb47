//! A chaos run of the fleet: three real gateway processes on one Postgres, killed (SIGKILL),
//! stopped (SIGTERM) and started again at random while PDFs are posted through whichever are up.
//! Customers write to the numbers meanwhile. At the end every number runs again without a scan,
//! every accepted PDF reached its phone exactly once, the webhook posted a `sent` (or later)
//! status for each, and a `message.received` for every text the customers sent, each under one
//! event id (a redelivery after a failover is kept once). The totals are printed.
//!
//! `CHAOS_SECS` (default 20) sets how long the chaos lasts, `CHAOS_NUMBERS` (default 6) how many
//! numbers, and `CHAOS_SEED` replays a run (each run prints its seed):
//! `CHAOS_SECS=300 TEST_BACKEND=postgres cargo test --workspace --locked chaos -- --nocapture`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::crash::{Gateway, start_with};
use crate::fleet::{each_delivered_once, member, signal, until_placed};
use crate::support::postgres::Schema;
use crate::support::*;

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small seeded generator (splitmix64), so that a run can be replayed from its seed.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from))
    }
}

/// What the chaos did, and what came of it.
#[derive(Debug, Default)]
struct Totals {
    kills: usize,
    graceful_stops: usize,
    restarts: usize,
    accepted: usize,
    delivered_once: usize,
    received: usize,
    webhook_posts: usize,
    replaced_conflicts: u64,
}

/// One gateway slot: its folder, its id, the process while it runs.
struct Slot {
    dir: PathBuf,
    settings: Vec<(&'static str, String)>,
    running: Option<Gateway>,
    /// A SIGTERM'd process still shutting down: waited for before the slot starts again (two
    /// processes under one gateway id would both count as its holder).
    stopping: Option<tokio::task::JoinHandle<()>>,
    /// That process's id, to kill it should it not exit (its locks would hold up the schema's
    /// drop, and the test would hang instead of failing).
    stopping_pid: Option<u32>,
}

impl Slot {
    fn app(&self) -> Option<TestApp> {
        self.running.as_ref().map(|gateway| TestApp::attach(gateway.port, self.dir.join("sessions")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaos_run_of_kills_and_restarts_under_load_loses_nothing_and_sends_nothing_twice() {
    let secs: u64 = setting("CHAOS_SECS", 20);
    let numbers: usize = setting("CHAOS_NUMBERS", 6);
    let seed: u64 = setting("CHAOS_SEED", rand::random());
    eprintln!("chaos run: {secs} s, {numbers} numbers, 3 gateways, CHAOS_SEED={seed}");
    let mut dice = Dice(seed);
    let fake = fake().await;
    let schema = Schema::fresh().await;
    let url = schema.url();

    // Every message's statuses go to a webhook, collected as they come.
    let receiver = crate::webhooks::Receiver::start().await;
    let reported: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Each received text's message id, and the event ids it was posted under.
    let received: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
    let posts_read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let collector = tokio::spawn({
        let (mut posts, reported, received, posts_read) =
            (receiver.requests(), reported.clone(), received.clone(), posts_read.clone());
        async move {
            loop {
                match posts.recv().await {
                    Ok(post) => {
                        posts_read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let event: serde_json::Value = serde_json::from_slice(&post.body).unwrap_or_default();
                        if event["event"] == "message.received"
                            && let (Some(id), Some(event_id)) =
                                (event["data"]["messageId"].as_str(), event["id"].as_str())
                        {
                            received.lock().unwrap().entry(id.to_owned()).or_default().insert(event_id.to_owned());
                        }
                        if ["sent", "delivered", "read"].contains(&event["data"]["status"].as_str().unwrap_or_default())
                            && let Some(id) = event["data"]["messageId"].as_str()
                        {
                            reported.lock().unwrap().insert(id.to_owned());
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        panic!("the test lost {n} webhook posts")
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });

    let linker = crate::fleet::spawn_member(&fake, &url, "gw-link").await;
    crate::webhooks::create(
        &linker,
        serde_json::json!({"url": receiver.url(), "events": ["message.status", "message.received"]}),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..numbers {
        let id = format!("caos{n}");
        link(&linker, &fake, &id, &format!("519000004{n:02}")).await;
        ids.push(id);
    }
    linker.stop().await;

    // Three gateways; any of them may run every number, so that one alone can carry the load.
    let mut slots = Vec::new();
    for n in 1..=3 {
        let dir = temp_dir();
        let mut settings = member(&url, &format!("gw-{n}"));
        settings.push(("MAX_SESSIONS_PER_GATEWAY", numbers.to_string()));
        let running = Some(start_with(&fake, &dir, &settings).await);
        slots.push(Slot { dir, settings, running, stopping: None, stopping_pid: None });
    }
    let apps: Vec<TestApp> = slots.iter().filter_map(Slot::app).collect();
    until_placed(&apps.iter().collect::<Vec<_>>(), &ids, Duration::from_secs(60), "every number runs", |c| {
        c.iter().sum::<usize>() == numbers
    })
    .await;

    // The chaos: a PDF every 50 ms through a random running gateway, and every 1.5–4 s a kill, a
    // graceful stop or a restart.
    let mut totals = Totals::default();
    let mut accepted: Vec<(String, String)> = Vec::new();
    let mut written: Vec<String> = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut next_blow = Instant::now() + dice.millis(1500, 4000);
    while Instant::now() < end {
        let up: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].running.is_some()).collect();
        let through = up[dice.below(up.len())];
        let n = accepted.len();
        let (id, to) = (&ids[n % numbers], format!("5196{n:07}"));
        let app = slots[through].app().expect("a running gateway");
        let (status, body) = app.send_pdf(id, &to, &pdf(&format!("caos {n}")), None).await;
        assert_eq!(status, 202, "gw-{} refused a PDF: {body}", through + 1);
        accepted.push((body["messageId"].as_str().expect("messageId").to_owned(), to));
        // A customer writes to the number every fourth PDF (kept by WhatsApp while no gateway
        // runs it).
        if n.is_multiple_of(4) {
            let phone = format!("519000004{:02}", n % numbers);
            let text = fake.admin().send_text(&format!("5197{n:07}"), &phone, &format!("hola {n}")).await;
            written.push(text.expect("the fake takes a customer's text"));
        }

        if Instant::now() >= next_blow {
            next_blow = Instant::now() + dice.millis(1500, 4000);
            let down: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].running.is_none()).collect();
            // Keep one gateway up; otherwise a restart one time in three, or when most are down.
            if up.len() > 1 && (down.is_empty() || dice.below(3) > 0) {
                let victim = up[dice.below(up.len())];
                let gateway = slots[victim].running.take().expect("running");
                if dice.below(2) == 0 {
                    eprintln!("chaos: SIGKILL gw-{}", victim + 1);
                    gateway.kill();
                    totals.kills += 1;
                } else {
                    eprintln!("chaos: SIGTERM gw-{}", victim + 1);
                    signal(gateway.child.id(), "-TERM");
                    slots[victim].stopping_pid = Some(gateway.child.id());
                    let mut gateway = gateway;
                    slots[victim].stopping = Some(tokio::task::spawn_blocking(move || {
                        let _ = gateway.child.wait();
                    }));
                    totals.graceful_stops += 1;
                }
            } else if let Some(&back) = down.get(dice.below(down.len())) {
                restart(&fake, &mut slots[back]).await;
                eprintln!("chaos: gw-{} started again", back + 1);
                totals.restarts += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every gateway comes back; every number runs again, without a scan.
    for slot in &mut slots {
        if slot.running.is_none() {
            restart(&fake, slot).await;
            totals.restarts += 1;
        }
    }
    let apps: Vec<TestApp> = slots.iter().filter_map(Slot::app).collect();
    until_placed(&apps.iter().collect::<Vec<_>>(), &ids, Duration::from_secs(60), "every number runs again", |c| {
        c.iter().sum::<usize>() == numbers
    })
    .await;
    each_delivered_once(&fake, &accepted).await;
    totals.accepted = accepted.len();
    totals.delivered_once = accepted.len();
    tokio::time::timeout(Duration::from_secs(60), async {
        while reported.lock().unwrap().len() < accepted.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let reported = reported.lock().unwrap();
        let missing: Vec<&String> = accepted.iter().map(|(id, _)| id).filter(|id| !reported.contains(*id)).collect();
        panic!("the webhook never reported {missing:?} as sent")
    });
    tokio::time::timeout(Duration::from_secs(60), async {
        while written.iter().any(|id| !received.lock().unwrap().contains_key(id)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let received = received.lock().unwrap();
        let missing: Vec<&String> = written.iter().filter(|id| !received.contains_key(*id)).collect();
        panic!("the webhook never posted {missing:?} as received")
    });
    for (id, event_ids) in received.lock().unwrap().iter() {
        assert_eq!(event_ids.len(), 1, "{id} was posted under one event id: {event_ids:?}");
    }
    totals.received = written.len();
    totals.webhook_posts = posts_read.load(std::sync::atomic::Ordering::Relaxed);
    totals.replaced_conflicts = fake.admin().replaced_conflicts();
    eprintln!(
        "chaos totals after {secs} s: {} SIGKILLs, {} SIGTERMs, {} restarts; {} PDFs accepted, {} delivered exactly \
         once, 0 lost, 0 twice; every one reported sent by the webhook; {} customer texts, every one posted as \
         received under one event id ({} posts in all); {} numbers connected again with no scan; {} replaced \
         conflicts",
        totals.kills,
        totals.graceful_stops,
        totals.restarts,
        totals.accepted,
        totals.delivered_once,
        totals.received,
        totals.webhook_posts,
        numbers,
        totals.replaced_conflicts,
    );
    assert_eq!(totals.replaced_conflicts, 0, "no number ran on two gateways at once");
    collector.abort();
    drop(slots);
    fake.shutdown().await;
}

/// Starts a slot's gateway again under its id, once its previous process is gone.
async fn restart(fake: &fake_whatsapp::FakeWhatsApp, slot: &mut Slot) {
    if let Some(stopping) = slot.stopping.take() {
        let exited = tokio::time::timeout(Duration::from_secs(30), stopping).await;
        if exited.is_err()
            && let Some(pid) = slot.stopping_pid
        {
            signal(pid, "-KILL");
            panic!("a SIGTERM'd gateway (pid {pid}) did not exit within 30 s");
        }
    }
    slot.running = Some(start_with(fake, &slot.dir, &slot.settings).await);
}
