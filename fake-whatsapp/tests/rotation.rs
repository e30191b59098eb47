//! QR rotation, on tokio's paused clock: the client shows each ref for 60 s, then 20 s, and a
//! test should not wait that long for real.

mod support;

use std::time::Duration;

use support::*;

/// Long enough for several rotations on the virtual clock.
const ROTATION_WAIT: Duration = Duration::from_secs(300);

async fn next_qr_within(client: &mut TestClient) -> String {
    tokio::time::timeout(ROTATION_WAIT, client.next_qr_unbounded()).await.expect("the next QR on the virtual clock")
}

fn reference(qr: &str) -> &str {
    qr.split(',').next().unwrap_or_default()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_rotated_qr_links_and_the_old_one_is_expired() {
    let fake = fake().await;
    let mut client = start_client(&fake, memory_backend()).await;
    let first = next_qr_within(&mut client).await;
    let second = next_qr_within(&mut client).await;
    assert_ne!(reference(&first), reference(&second), "the client rotated to the next ref");

    let err = fake.admin().scan(&first, "15550001").await.expect_err("the first ref has expired");
    assert!(matches!(err, fake_whatsapp::ScanError::Expired), "{err:?}");
    fake.admin().scan(&second, "15550001").await.expect("the second QR links");
    tokio::time::timeout(ROTATION_WAIT, client.connected_unbounded()).await.expect("Connected");
    assert!(client.client.is_logged_in());
    fake.shutdown().await;
}
