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
