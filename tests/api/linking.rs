//! QR linking over time, on tokio's paused clock: whatsapp-rust shows each ref for 60 s, then
//! 20 s, and gives up after six; the gateway must keep a watcher supplied and stop when nobody
//! watches.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::*;

/// Far more than a full round of refs (60 s + 5 × 20 s) on the virtual clock.
const LONG: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn fresh_qr_codes_keep_coming_after_the_refs_run_out_and_stop_without_watchers() {
    let fake = fake().await;
    let dir = temp_dir();
    // On files whatever `TEST_BACKEND` says: on this virtual clock a pool's connect timeout would
    // run out while Postgres answers in real time.
    let app = TestApp::spawn_with(files_config(&fake, &dir, &[])).await;

    let mut ws = app.ws("mostrador").await;
    ws.expect("status", "initializing").await;
    let mut refs = HashSet::new();
    let mut last = String::new();
    while refs.len() < 8 {
        match ws.next_within(LONG).await {
            Got::Frame(e, qr) if e == "qr" => {
                refs.insert(qr.split(',').next().unwrap_or_default().to_owned());
                last = qr;
            }
            Got::Frame(..) => {}
            other => panic!("the watcher lost its socket: {other:?}"),
        }
    }
    // The eighth code comes from a second client generation, and it links.
    fake.admin().scan(&last, "51900000020").await.expect("a late QR links");
    loop {
        match ws.next_within(LONG).await {
            Got::Frame(e, d) if e == "status" && d == "connected" => break,
            Got::Frame(..) => continue,
            other => panic!("expected connected, got {other:?}"),
        }
    }

    // A second, never-linked session: once its only watcher leaves, linking stops.
    let mut ws = app.ws("abandonada").await;
    ws.expect("status", "initializing").await;
    // Straight to a QR: no "disconnected" while the session starts for this watcher.
    assert!(matches!(ws.next_within(LONG).await, Got::Frame(e, _) if e == "qr"));
    let mut events = fake.subscribe();
    drop(ws);
    tokio::time::timeout(LONG, async {
        loop {
            match events.recv().await {
                Ok(fake_whatsapp::FakeEvent::UnlinkedDisconnected) => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("the abandoned session's client disconnects");
    app.stop().await;
    fake.shutdown().await;
}
