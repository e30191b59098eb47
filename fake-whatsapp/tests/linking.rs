//! QR linking, login and the first `Connected` with the real whatsapp-rust client.

mod support;

use fake_whatsapp::FakeEvent;
use support::*;
use whatsapp_rust::types::events::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_scan_links_connects_and_the_key_share_is_confirmed() {
    let fake = fake().await;
    let mut client = start_client(&fake, memory_backend()).await;
    let qr = client.next_qr().await;
    assert_eq!(qr.split(',').count(), 5, "QR has ref,noise,identity,adv,type: {qr}");

    let mut events = fake.subscribe();
    let linked = fake.admin().scan(&qr, "15550001").await.expect("scan");
    assert!(linked.jid.starts_with("15550001:"), "{linked:?}");
    assert!(linked.lid.ends_with("@lid"), "{linked:?}");
    client.wait_for("PairSuccess", |e| matches!(e, Event::PairSuccess(_)).then_some(())).await;
    client.connected().await;
    assert!(client.client.is_logged_in());
    // The phone's app-state key share reached the client, which confirmed it with a receipt.
    let confirmed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match events.recv().await {
                Ok(FakeEvent::KeyShareConfirmed { jid }) => return jid,
                Ok(_) => continue,
                Err(e) => panic!("fake events ended: {e}"),
            }
        }
    })
    .await
    .expect("the key share is confirmed");
    assert_eq!(confirmed, linked.jid);

    let devices = fake.admin().devices();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].jid, linked.jid);
    assert!(devices[0].connected && !devices[0].removed);
    client.handle.shutdown().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_request_reaches_the_client_showing_the_qr() {
    let fake = fake().await;
    let mut client = start_client(&fake, memory_backend()).await;
    let qr = client.next_qr().await;
    fake.admin().passkey_request(&qr).expect("passkey request sent");
    let options = client
        .wait_for("PairPasskeyRequest", |e| match e {
            Event::PairPasskeyRequest(r) => Some(r.request_options_json.clone()),
            _ => None,
        })
        .await;
    let options: serde_json::Value = serde_json::from_str(&options).expect("JSON request options");
    assert!(options["challenge"].as_str().is_some_and(|c| c.len() == 43), "{options}");
    assert_eq!(options["userVerification"], "required");
    // Bad input changes nothing: a malformed QR is refused, an unknown ref is not found.
    assert!(matches!(fake.admin().passkey_request("nope"), Err(fake_whatsapp::ScanError::Malformed(_))));
    let unknown = format!("2@unknown,{}", qr.split_once(',').expect("fields").1);
    assert!(matches!(fake.admin().passkey_request(&unknown), Err(fake_whatsapp::ScanError::UnknownRef)));
    client.handle.shutdown().await;
    fake.shutdown().await;
}
