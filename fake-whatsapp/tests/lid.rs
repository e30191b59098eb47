//! LID addressing with the real whatsapp-rust client: usync `lid`, LID-addressed sends,
//! phones that speak as their LID, and the QR link form.

mod support;

use std::time::Duration;

use fake_whatsapp::{FakeEvent, FakeWhatsApp, ReceivedMessage};
use support::*;
use whatsapp_rust::Jid;
use whatsapp_rust::types::events::Event;

/// The next message a virtual phone records.
async fn recorded(events: &mut tokio::sync::broadcast::Receiver<FakeEvent>, phone: &str) -> ReceivedMessage {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(FakeEvent::MessageReceived { phone: p, message }) if p == phone => return message,
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("phone {phone} recorded nothing"))
}

/// The first text a client receives, with its sender and the sender's other address.
async fn received_text(client: &mut TestClient) -> (String, Jid, Option<Jid>) {
    client
        .wait_for("a text", |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| {
                m.message
                    .conversation
                    .clone()
                    .map(|t| (t, m.info.source.sender.clone(), m.info.source.sender_alt.clone()))
            }),
            _ => None,
        })
        .await
}

fn lid_of(fake: &FakeWhatsApp, phone: &str) -> Jid {
    fake.admin().lid(phone).expect("a number on WhatsApp has a LID").parse().expect("a LID JID")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_learns_the_lid_by_usync_and_a_pn_send_reaches_the_phone() {
    let fake = fake().await;
    let (alice, linked) = linked_client(&fake, "15550001").await;
    let mut events = fake.subscribe();

    let sent = alice.client.send_text(Jid::pn("15550003"), "hola por LID").await.expect("send");
    let got = recorded(&mut events, "15550003").await;
    assert_eq!(got.id, sent.message_id);
    assert_eq!(got.text.as_deref(), Some("hola por LID"));
    assert_eq!(got.from, linked.jid, "recorded under the sender's phone-number device JID");
    assert_eq!(got.from_lid.as_deref(), Some(linked.lid.as_str()), "and its LID beside it");

    // The client asked usync for the LID and learned the same one the server hands out.
    let learned = alice.client.get_lid_pn_entry(&Jid::pn("15550003")).await.expect("lookup").expect("a mapping");
    assert_eq!(&*learned.lid, lid_of(&fake, "15550003").user.as_str());
    assert_eq!(&*learned.phone_number, "15550003");

    // A second message rides the session the client keyed by LID.
    alice.client.send_text(Jid::pn("15550003"), "otra vez").await.expect("second send");
    assert_eq!(recorded(&mut events, "15550003").await.text.as_deref(), Some("otra vez"));
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lid_addressed_send_reaches_the_right_device_and_phone() {
    let fake = fake().await;
    let (mut alice, alice_linked) = linked_client(&fake, "15550001").await;
    let (mut bob, bob_linked) = linked_client(&fake, "15550002").await;
    let (_carol, _) = linked_client(&fake, "15550004").await;
    let mut events = fake.subscribe();
    let bob_lid = lid_of(&fake, "15550002");
    assert_eq!(bob_linked.lid, Jid::lid_device(bob_lid.user.to_string(), 1).to_string());
    assert!(fake.admin().devices().iter().any(|d| d.jid == bob_linked.jid && d.lid == bob_linked.lid));

    // Addressed by LID: device list, prekeys and the stanza all go by bob's LID.
    let sent = alice.client.send_text(bob_lid.clone(), "hola bob, por LID").await.expect("send to a LID");
    let (text, sender, sender_alt) = received_text(&mut bob).await;
    assert_eq!(text, "hola bob, por LID");
    assert_eq!(sender.to_string(), alice_linked.lid, "a LID-addressed message comes from the sender's LID device");
    assert_eq!(sender_alt, Some(Jid::pn("15550001")), "with the sender's phone number in sender_pn");

    let got = recorded(&mut events, "15550002").await;
    assert_eq!(got.id, sent.message_id);
    assert_eq!(got.text.as_deref(), Some("hola bob, por LID"));
    assert_eq!(got.from, alice_linked.jid);
    assert!(fake.admin().messages("15550004").is_empty(), "nothing strays to another account");

    // Receipts come back by LID too: from bob's phone, and relayed from bob's device.
    let mut from: Vec<String> = Vec::new();
    while from.len() < 2 {
        let sender = alice
            .wait_for("receipts for the LID-addressed message", |e| match e {
                Event::Receipt(r) if r.message_ids.iter().any(|id| id == &sent.message_id) => {
                    Some(r.source.sender.to_string())
                }
                _ => None,
            })
            .await;
        if !from.contains(&sender) {
            from.push(sender);
        }
    }
    from.sort();
    let mut expected = vec![bob_lid.to_string(), bob_linked.lid.clone()];
    expected.sort();
    assert_eq!(from, expected);
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_speaks_as_its_lid_with_its_number_beside_it() {
    let fake = fake().await;
    let (mut alice, _) = linked_client(&fake, "15550001").await;
    let mut events = fake.subscribe();
    let phone_lid = lid_of(&fake, "15550009");

    fake.admin().send_text("15550009", "15550001", "hola desde mi LID").await.expect("phone sends");
    let (text, sender, sender_alt) = received_text(&mut alice).await;
    assert_eq!(text, "hola desde mi LID");
    assert_eq!(sender, phone_lid);
    assert_eq!(sender_alt, Some(Jid::pn("15550009")), "the phone number the client can show");
    let learned = alice.client.get_lid_pn_entry(&phone_lid).await.expect("lookup").expect("mapping learned");
    assert_eq!(&*learned.phone_number, "15550009");

    // The client answers by phone number; it rides the session the phone opened by LID.
    alice.client.send_text(Jid::pn("15550009"), "recibido").await.expect("reply");
    assert_eq!(recorded(&mut events, "15550009").await.text.as_deref(), Some("recibido"));
    // And back again, on the now acknowledged session.
    fake.admin().send_text("15550009", "15550001", "perfecto").await.expect("phone sends again");
    assert_eq!(received_text(&mut alice).await.0, "perfecto");
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wa_me_link_form_of_the_qr_scans() {
    let fake = fake().await;
    let mut client = start_client(&fake, memory_backend()).await;
    let qr = client.next_qr().await;
    let link = format!("https://wa.me/settings/linked_devices#{}", qr.replace('+', "%2B"));
    let linked = fake.admin().scan(&link, "15550001").await.expect("the link form scans");
    assert!(linked.jid.starts_with("15550001:"), "{linked:?}");
    client.connected().await;

    let mut other = start_client(&fake, memory_backend()).await;
    let qr = other.next_qr().await;
    let bad = format!("https://wa.me/settings/linked_devices#{}", qr.replacen(',', "%zz,", 1));
    assert!(matches!(fake.admin().scan(&bad, "15550002").await, Err(fake_whatsapp::ScanError::Malformed(_))));
    let wrong_site = format!("https://example.com/settings/linked_devices#{qr}");
    assert!(fake.admin().scan(&wrong_site, "15550002").await.is_err());
    tokio::time::timeout(Duration::from_secs(1), other.handle.shutdown()).await.ok();
    fake.shutdown().await;
}
