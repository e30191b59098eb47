//! Messages, documents, receipts, logout and reconnect with real whatsapp-rust clients.

mod support;

use sha2::{Digest, Sha256};
use support::*;
use whatsapp_rust::Jid;
use whatsapp_rust::download::MediaType;
use whatsapp_rust::media::{DocumentOptions, document_message};
use whatsapp_rust::types::events::Event;
use whatsapp_rust::upload::UploadOptions;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_between_two_linked_devices_and_to_the_phone() {
    let fake = fake().await;
    let (alice, _) = linked_client(&fake, "15550001").await;
    let (mut bob, _) = linked_client(&fake, "15550002").await;
    let mut events = fake.subscribe();

    let sent = alice.client.send_text(Jid::pn("15550002"), "hola bob").await.expect("send");
    // Bob's linked device decrypts it...
    let text = bob
        .wait_for("bob's message", |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| m.message.conversation.clone()),
            _ => None,
        })
        .await;
    assert_eq!(text, "hola bob");
    // ...and so does Bob's phone (device 0), which records it.
    let recorded = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(fake_whatsapp::FakeEvent::MessageReceived { phone, message }) = events.recv().await
                && phone == "15550002"
            {
                return message;
            }
        }
    })
    .await
    .expect("phone records the message");
    assert_eq!(recorded.id, sent.message_id);
    assert_eq!(recorded.text.as_deref(), Some("hola bob"));
    assert_eq!(fake.admin().messages("15550002").len(), 1);
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdf_reaches_the_phone_with_its_hash_and_a_delivery_receipt_comes_back() {
    let fake = fake().await;
    let (mut alice, _) = linked_client(&fake, "15550001").await;
    let pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n".repeat(200);
    let upload = alice.client.upload(pdf.clone(), MediaType::Document, UploadOptions::default()).await.expect("upload");
    let message = document_message(
        upload,
        DocumentOptions {
            mimetype: Some("application/pdf".into()),
            file_name: Some("Factura-001.pdf".into()),
            title: Some("Factura-001.pdf".into()),
            ..Default::default()
        },
    );
    let sent = alice.client.send_message(Jid::pn("15550003"), message).await.expect("send");
    let receipt_for = alice
        .wait_for("delivery receipt", |e| match e {
            Event::Receipt(r) => Some(r.message_ids.clone()),
            _ => None,
        })
        .await;
    assert!(receipt_for.iter().any(|id| id == &sent.message_id));
    let messages = fake.admin().messages("15550003");
    assert_eq!(messages.len(), 1);
    let doc = messages[0].document.as_ref().expect("a document");
    assert_eq!(doc.file_name.as_deref(), Some("Factura-001.pdf"));
    assert_eq!(doc.mimetype.as_deref(), Some("application/pdf"));
    assert_eq!(doc.sha256, hex(&Sha256::digest(&pdf)));
    assert_eq!(doc.size, pdf.len() as u64);
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_drop_and_reconnect() {
    let fake = fake().await;
    let (mut client, linked) = linked_client(&fake, "15550001").await;

    fake.admin().drop_connection(&linked.jid).expect("drop");
    client.wait_for("Disconnected", |e| matches!(e, Event::Disconnected(_)).then_some(())).await;
    client.connected().await;
    assert!(client.client.is_logged_in(), "reconnected without relinking");

    fake.admin().logout(&linked.jid).expect("logout");
    client.wait_for("LoggedOut", |e| matches!(e, Event::LoggedOut(_)).then_some(())).await;
    assert!(fake.admin().devices()[0].removed);
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_text_and_document_from_a_virtual_phone() {
    let fake = fake().await;
    let (mut client, _) = linked_client(&fake, "15550001").await;
    fake.admin().send_text("15550009", "15550001", "hola desde el teléfono").await.expect("phone sends");
    let (text, from) = client
        .wait_for("inbound text", |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| {
                m.message
                    .conversation
                    .clone()
                    .map(|t| (t, m.info.source.sender_alt.as_ref().map(|j| j.user.to_string())))
            }),
            _ => None,
        })
        .await;
    assert_eq!(text, "hola desde el teléfono");
    assert_eq!(from.as_deref(), Some("15550009"), "the phone speaks as its LID, its number beside it");

    let pdf = b"%PDF-1.7\nrecibo\n%%EOF".to_vec();
    fake.admin()
        .send_document("15550009", "15550001", "recibo.pdf", "application/pdf", pdf.clone(), None)
        .await
        .expect("phone sends a document");
    let doc = client
        .wait_for("inbound document", |e| match e {
            Event::Messages(batch) => {
                batch.messages.iter().find_map(|m| m.message.document_message.as_option().cloned())
            }
            _ => None,
        })
        .await;
    assert_eq!(doc.file_name.as_deref(), Some("recibo.pdf"));
    let bytes = client.client.download(&doc).await.expect("download through the fake media server");
    assert_eq!(bytes, pdf);
    fake.shutdown().await;
}

/// A POST to the fake's HTTP admin API: status and JSON answer.
async fn admin_post(
    fake: &fake_whatsapp::FakeWhatsApp,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let url = format!("{}{path}", fake.admin_url());
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
        let mut resp = agent.post(&url).send(body.to_string()).expect("admin call");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    })
    .await
    .expect("blocking task")
}

async fn admin_get(fake: &fake_whatsapp::FakeWhatsApp, path: &str) -> serde_json::Value {
    let url = format!("{}{path}", fake.admin_url());
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
        let text = agent.get(&url).call().expect("admin call").body_mut().read_to_string().expect("body");
        serde_json::from_str(&text).expect("JSON")
    })
    .await
    .expect("blocking task")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The first message the client receives that `pick` accepts.
async fn inbound<T>(client: &mut TestClient, what: &str, pick: impl Fn(&waproto::whatsapp::Message) -> Option<T>) -> T {
    client
        .wait_for(what, |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| pick(&m.message)),
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_sends_an_image_a_document_a_location_and_a_reaction() {
    let fake = fake().await;
    let (mut client, _) = linked_client(&fake, "15550001").await;
    let mut events = fake.subscribe();

    // Image, over the HTTP admin API: encrypted and uploaded, the client downloads and decrypts it.
    let image: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let body = serde_json::json!({"to": "15550001", "image": {"mimetype": "image/png", "base64": b64(&image), "caption": "mira"}});
    let (status, answer) = admin_post(&fake, "/admin/phones/15550009/send", body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["id"].as_str().is_some_and(|id| id.starts_with("3EB0")), "{answer}");
    let got = inbound(&mut client, "an image", |m| m.image_message.as_option().cloned()).await;
    assert_eq!(got.caption.as_deref(), Some("mira"));
    assert_eq!(got.mimetype.as_deref(), Some("image/png"));
    let bytes = client.client.download(&got).await.expect("image downloads and decrypts");
    assert_eq!(hex(&Sha256::digest(&bytes)), hex(&Sha256::digest(&image)));

    // Document.
    let pdf = b"%PDF-1.7\nfactura\n%%EOF".to_vec();
    let body = serde_json::json!({"to": "15550001", "document": {"file_name": "f.pdf", "base64": b64(&pdf), "caption": "tu factura"}});
    assert_eq!(admin_post(&fake, "/admin/phones/15550009/send", body).await.0, 200);
    let doc = inbound(&mut client, "a document", |m| m.document_message.as_option().cloned()).await;
    assert_eq!((doc.file_name.as_deref(), doc.caption.as_deref()), (Some("f.pdf"), Some("tu factura")));
    assert_eq!(client.client.download(&doc).await.expect("document downloads"), pdf);

    // Location.
    let body = serde_json::json!({"to": "15550001", "location": {"latitude": -12.0464, "longitude": -77.0428, "name": "Lima"}});
    assert_eq!(admin_post(&fake, "/admin/phones/15550009/send", body).await.0, 200);
    let loc = inbound(&mut client, "a location", |m| m.location_message.as_option().cloned()).await;
    assert_eq!((loc.degrees_latitude, loc.degrees_longitude), (Some(-12.0464), Some(-77.0428)));
    assert_eq!(loc.name.as_deref(), Some("Lima"));

    // Reaction to a message the client sent the phone.
    let sent = client.client.send_text(Jid::pn("15550009"), "¿llegó?").await.expect("send");
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(fake_whatsapp::FakeEvent::MessageReceived { message, .. }) = events.recv().await
                && message.id == sent.message_id
            {
                return;
            }
        }
    })
    .await
    .expect("the phone has the message before it reacts");
    let body = serde_json::json!({"to": "15550001", "reaction": {"message_id": sent.message_id, "emoji": "👍"}});
    assert_eq!(admin_post(&fake, "/admin/phones/15550009/send", body).await.0, 200);
    let reaction = inbound(&mut client, "a reaction", |m| m.reaction_message.as_option().cloned()).await;
    assert_eq!(reaction.text.as_deref(), Some("👍"));
    let key = reaction.key.as_option().expect("the reacted message's key");
    assert_eq!(key.id.as_deref(), Some(sent.message_id.as_str()));
    assert_eq!(key.from_me, Some(false), "the phone reacts to a message it received");

    // Nonsense is refused before anything is sent.
    let two = serde_json::json!({"to": "15550001", "text": "a", "location": {"latitude": 0.0, "longitude": 0.0}});
    assert_eq!(admin_post(&fake, "/admin/phones/15550009/send", two).await.0, 400);
    let off_earth = serde_json::json!({"to": "15550001", "location": {"latitude": 91.0, "longitude": 0.0}});
    assert_eq!(admin_post(&fake, "/admin/phones/15550009/send", off_earth).await.0, 400);
    let bad_image = serde_json::json!({"to": "15550001", "image": {"base64": "%%%"}});
    assert_eq!(admin_post(&fake, "/admin/phones/15550009/send", bad_image).await.0, 400);
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_phone_receives_is_recorded_with_its_type_and_media_details() {
    use waproto::whatsapp as wa;
    let fake = fake().await;
    let (alice, _) = linked_client(&fake, "15550001").await;
    let mut events = fake.subscribe();
    let to = Jid::pn("15550003");

    let image: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
    let upload = alice.client.upload(image.clone(), MediaType::Image, UploadOptions::default()).await.expect("upload");
    let message = whatsapp_rust::media::image_message(
        upload,
        whatsapp_rust::media::ImageOptions {
            caption: Some("la foto".into()),
            mimetype: Some("image/png".into()),
            ..Default::default()
        },
    );
    let image_id = alice.client.send_message(to.clone(), message).await.expect("image").message_id;

    let pdf = b"%PDF-1.4\nboleta\n%%EOF".repeat(50);
    let upload = alice.client.upload(pdf.clone(), MediaType::Document, UploadOptions::default()).await.expect("upload");
    let options = DocumentOptions {
        mimetype: Some("application/pdf".into()),
        file_name: Some("Boleta.pdf".into()),
        caption: Some("la boleta".into()),
        ..Default::default()
    };
    alice.client.send_message(to.clone(), document_message(upload, options)).await.expect("document");

    let location = wa::Message {
        location_message: buffa::MessageField::some(wa::message::LocationMessage {
            degrees_latitude: Some(-13.5319),
            degrees_longitude: Some(-71.9675),
            name: Some("Cusco".into()),
            address: Some("Plaza de Armas".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    alice.client.send_message(to.clone(), location).await.expect("location");

    let reaction = wa::Message {
        reaction_message: buffa::MessageField::some(wa::message::ReactionMessage {
            key: buffa::MessageField::some(wa::MessageKey {
                remote_jid: Some(to.to_string()),
                from_me: Some(true),
                id: Some(image_id.clone()),
                participant: None,
            }),
            text: Some("❤️".into()),
            sender_timestamp_ms: Some(1_700_000_000_000),
            ..Default::default()
        }),
        ..Default::default()
    };
    alice.client.send_message(to.clone(), reaction).await.expect("reaction");

    tokio::time::timeout(WAIT, async {
        let mut seen = 0;
        while seen < 4 {
            if let Ok(fake_whatsapp::FakeEvent::MessageReceived { phone, .. }) = events.recv().await
                && phone == "15550003"
            {
                seen += 1;
            }
        }
    })
    .await
    .expect("the phone records all four");
    let records = fake.admin().messages("15550003");
    let kinds: Vec<_> = records.iter().map(|r| r.kind).collect();
    use fake_whatsapp::MessageKind::*;
    assert_eq!(kinds, [Image, Document, Location, Reaction]);

    let media = records[0].media.as_ref().expect("image details");
    assert_eq!(media.sha256, hex(&Sha256::digest(&image)));
    assert_eq!((media.size, media.mimetype.as_deref()), (image.len() as u64, Some("image/png")));
    assert_eq!(media.caption.as_deref(), Some("la foto"));
    let media = records[1].media.as_ref().expect("document details");
    assert_eq!(media.sha256, hex(&Sha256::digest(&pdf)));
    assert_eq!((media.file_name.as_deref(), media.caption.as_deref()), (Some("Boleta.pdf"), Some("la boleta")));
    assert_eq!(records[1].document.as_ref().map(|d| d.sha256.clone()), Some(media.sha256.clone()), "old field kept");
    let location = records[2].location.as_ref().expect("location details");
    assert_eq!((location.latitude, location.longitude, location.name.as_deref()), (-13.5319, -71.9675, Some("Cusco")));
    let reaction = records[3].reaction.as_ref().expect("reaction details");
    assert_eq!((reaction.message_id.as_deref(), reaction.emoji.as_str()), (Some(image_id.as_str()), "❤️"));

    // The HTTP listing carries the same, in JSON.
    let listed = admin_get(&fake, "/admin/phones/15550003/messages").await;
    assert_eq!(listed[0]["type"], "image");
    assert_eq!(listed[0]["media"]["sha256"], hex(&Sha256::digest(&image)));
    assert_eq!(listed[0]["text"], "la foto");
    assert_eq!(listed[1]["type"], "document");
    assert_eq!(listed[1]["document"]["file_name"], "Boleta.pdf");
    assert_eq!(listed[2]["location"]["name"], "Cusco");
    assert_eq!(listed[3]["reaction"]["emoji"], "❤️");
    let lid = admin_get(&fake, "/admin/phones/15550003/lid").await;
    assert_eq!(lid["lid"].as_str(), fake.admin().lid("15550003").as_deref());
    fake.shutdown().await;
}

/// Waits (bounded) for the client to report a message with this id; returns its text.
async fn received_id(client: &mut TestClient, what: &str, id: &str) -> Option<String> {
    client
        .wait_for(what, |e| match e {
            Event::Messages(batch) => {
                batch.messages.iter().find(|m| m.info.id == id).map(|m| m.message.conversation.clone())
            }
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_kept_until_receipted_and_can_be_redelivered_under_its_id() {
    let fake = fake().await;
    let (mut client, linked) = linked_client(&fake, "15550001").await;
    let mut events = fake.subscribe();
    let id = fake.admin().send_text("15550009", "15550001", "¿llegó?").await.expect("phone sends");
    assert_eq!(received_id(&mut client, "the message", &id).await.as_deref(), Some("¿llegó?"));
    // The client's delivery receipt reaches the phone (bounded wait)...
    tokio::time::timeout(WAIT, async {
        while !fake.admin().receipts("15550009").iter().any(|r| r.id == id) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the client receipts the message");
    // ...so a new login does not get it again: anything redelivered goes before the offline
    // marker, which the client waits for before `Connected`.
    fake.admin().drop_connection(&linked.jid).expect("drop");
    client.wait_for("Disconnected", |e| matches!(e, Event::Disconnected(_)).then_some(())).await;
    client.connected().await;
    while let Ok(event) = events.try_recv() {
        assert!(!matches!(event, fake_whatsapp::FakeEvent::MessageRedelivered { .. }), "{event:?}");
    }

    // Redelivered on demand: encrypted anew under the same id, the client reports it again.
    let (status, answer) = admin_post(&fake, "/admin/phones/15550001/redeliver", serde_json::json!({"id": id})).await;
    assert_eq!((status, answer["devices"].as_u64()), (200, Some(1)), "{answer}");
    let again = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(fake_whatsapp::FakeEvent::MessageRedelivered { jid, id }) = events.recv().await {
                return (jid, id);
            }
        }
    })
    .await
    .expect("the fake announces the redelivery");
    assert_eq!(again, (linked.jid.clone(), id.clone()));
    assert_eq!(received_id(&mut client, "the message again", &id).await.as_deref(), Some("¿llegó?"));

    // Unknown ids, and messages that were for another number, are 404.
    let (status, _) =
        admin_post(&fake, "/admin/phones/15550001/redeliver", serde_json::json!({"id": "3EB0NOPE"})).await;
    assert_eq!(status, 404);
    let (status, _) = admin_post(&fake, "/admin/phones/15550002/redeliver", serde_json::json!({"id": id})).await;
    assert_eq!(status, 404);
    fake.shutdown().await;
}
