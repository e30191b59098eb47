//! What a linked number receives: stored once, listed newest first, pushed on `/ws/events`,
//! media kept and served with its bytes intact; a LID sender carries its phone number.

use futures_util::StreamExt as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// A 1×1 PNG.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\xff\xff?\0\x05\xfe\x02\xfe\xa7\x35\x81\x84\0\0\0\0IEND\xaeB`\x82";

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a subscription asked for: these event types, of this session if one is named. Every
/// frame it delivers is checked against it, so a filter that lets others through fails.
struct Asked {
    types: &'static [&'static str],
    session: Option<&'static str>,
}

impl Asked {
    fn allows(&self, event: &Value) -> bool {
        let kind = event["event"].as_str().unwrap_or_default();
        self.types.contains(&kind) && self.session.is_none_or(|session| event["sessionId"] == session)
    }
}

/// The next event frame of `/ws/events` for which `pick` says yes; every frame on the way must be
/// one the subscription `asked` for.
async fn next_event(socket: &mut Socket, asked: &Asked, pick: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let event: Value = serde_json::from_str(&text).expect("json frame");
                    assert!(asked.allows(&event), "a frame the filter should have held back: {event}");
                    if pick(&event) {
                        return event;
                    }
                }
                Some(Ok(_)) => continue,
                other => panic!("events socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the event in time")
}

/// `GET` of raw bytes: (status, content type, body).
async fn get_bytes(app: &TestApp, path: &str) -> (u16, String, Vec<u8>) {
    let url = format!("http://{}{}", app.addr, path);
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
        let mut response = agent.get(&url).header("Authorization", format!("Bearer {TOKEN}")).call().expect("get");
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let body = response.body_mut().read_to_vec().unwrap_or_default();
        (status, content_type, body)
    })
    .await
    .expect("request task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_image_and_document_are_stored_listed_pushed_and_served() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let gateway_phone = "51900000070";
    link(&app, &fake, "entrada", gateway_phone).await;
    let url = format!("ws://{}/ws/events?token={TOKEN}&types=message.received&sessions=entrada", app.addr);
    let asked = Asked { types: &["message.received"], session: Some("entrada") };
    let (mut events, _) = tokio_tungstenite::connect_async(url).await.expect("events socket");

    let customer = "51987000070";
    let text_id = fake.admin().send_text(customer, gateway_phone, "Hola, ¿tienen stock?").await.expect("text");
    let pushed = next_event(&mut events, &asked, |e| e["data"]["messageId"] == text_id.as_str()).await;
    assert_eq!((pushed["event"].as_str(), pushed["sessionId"].as_str()), (Some("message.received"), Some("entrada")));
    let data = &pushed["data"];
    assert_eq!((data["type"].as_str(), data["text"].as_str()), (Some("text"), Some("Hola, ¿tienen stock?")));
    assert_eq!(data["from"].as_str(), Some(customer), "the phone number, though the phone sends from its LID");
    let lid = fake.admin().lid(customer).expect("the customer's LID");
    assert_eq!(data["fromLid"].as_str().map(|l| format!("{l}@lid")), Some(lid));

    let image_id = fake
        .admin()
        .send_image(customer, gateway_phone, "image/png", PNG.to_vec(), Some("la vitrina".into()))
        .await
        .expect("image");
    let pushed = next_event(&mut events, &asked, |e| e["data"]["messageId"] == image_id.as_str()).await;
    let media = &pushed["data"]["media"];
    assert_eq!(
        (pushed["data"]["type"].as_str(), pushed["data"]["caption"].as_str()),
        (Some("image"), Some("la vitrina"))
    );
    assert_eq!((media["stored"].as_bool(), media["sha256"].as_str()), (Some(true), Some(sha256_hex(PNG).as_str())));
    let (status, content_type, bytes) = get_bytes(&app, &format!("/api/messages/{image_id}/media")).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    assert_eq!(sha256_hex(&bytes), sha256_hex(PNG), "the bytes as sent");

    let pdf_bytes = pdf("pedido 42");
    let doc_id = fake
        .admin()
        .send_document(customer, gateway_phone, "pedido-42.pdf", "application/pdf", pdf_bytes.clone(), None)
        .await
        .expect("document");
    let pushed = next_event(&mut events, &asked, |e| e["data"]["messageId"] == doc_id.as_str()).await;
    assert_eq!(pushed["data"]["media"]["fileName"].as_str(), Some("pedido-42.pdf"));
    let (status, _, bytes) = get_bytes(&app, &format!("/api/messages/{doc_id}/media")).await;
    assert_eq!((status, bytes), (200, pdf_bytes));

    // Listed newest first, a page at a time.
    let (status, page) = app.request("GET", "/api/sessions/entrada/messages?limit=2", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> =
        page["items"].as_array().expect("items").iter().filter_map(|m| m["messageId"].as_str()).collect();
    assert_eq!(ids, [doc_id.as_str(), image_id.as_str()]);
    let next = page["next"].as_u64().expect("a next page");
    let (_, page) =
        app.request("GET", &format!("/api/sessions/entrada/messages?limit=2&before={next}"), Some(TOKEN), None).await;
    assert_eq!(page["items"][0]["messageId"].as_str(), Some(text_id.as_str()));
    assert_eq!(page["next"], Value::Null);
    let (status, page) = app.request("GET", "/api/sessions/entrada/messages?limit=0", Some(TOKEN), None).await;
    assert_eq!((status, page["error"]["code"].as_str()), (400, Some("INVALID_QUERY")));

    // One chat, three unread; marking it read sends the customer read receipts.
    let (status, chats) = app.request("GET", "/api/sessions/entrada/chats", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{chats}");
    let chat = &chats["items"][0];
    assert_eq!((chat["from"].as_str(), chat["unreadCount"].as_u64()), (Some(customer), Some(3)), "{chats}");
    let jid = chat["chat"].as_str().expect("chat jid").to_owned();
    let (status, read) =
        app.request("POST", &format!("/api/sessions/entrada/chats/{jid}/read"), Some(TOKEN), None).await;
    assert_eq!((status, read["marked"].as_u64(), read["receiptsSent"].as_bool()), (200, Some(3), Some(true)), "{read}");
    let (_, chats) = app.request("GET", "/api/sessions/entrada/chats", Some(TOKEN), None).await;
    assert_eq!(chats["items"][0]["unreadCount"].as_u64(), Some(0));
    tokio::time::timeout(WAIT, async {
        while !fake.admin().receipts(customer).iter().any(|r| r.id == text_id && r.kind == "read") {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the customer sees the read receipt");
    let (status, answer) =
        app.request("POST", "/api/sessions/entrada/chats/nadie@s.whatsapp.net/read", Some(TOKEN), None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("CHAT_NOT_FOUND")));
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_socket_checks_its_filter_and_token() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let bad_type = format!("ws://{}/ws/events?token={TOKEN}&types=message.nope", app.addr);
    let err = tokio_tungstenite::connect_async(bad_type).await.expect_err("refused");
    assert!(err.to_string().contains("400"), "{err}");
    let no_token = format!("ws://{}/ws/events", app.addr);
    let err = tokio_tungstenite::connect_async(no_token).await.expect_err("refused");
    assert!(err.to_string().contains("401"), "{err}");
    // Session events are pushed too: a new session's status.
    let url = format!("ws://{}/ws/events?token={TOKEN}&types=session.status,session.qr", app.addr);
    let (mut events, _) = tokio_tungstenite::connect_async(url).await.expect("events socket");
    let _watch = app.ws("nueva").await;
    let asked = Asked { types: &["session.status", "session.qr"], session: None };
    let event = next_event(&mut events, &asked, |e| e["sessionId"] == "nueva").await;
    assert!(matches!(event["event"].as_str(), Some("session.status" | "session.qr")), "{event}");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_the_gateway_was_stopped_arrive_and_a_redelivery_is_stored_once() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let gateway_phone = "51900000071";
    link(&app, &fake, "ausente", gateway_phone).await;
    app.stop().await;

    // While the gateway is down, WhatsApp keeps the message for the device.
    let customer = "51987000071";
    let id = fake.admin().send_text(customer, gateway_phone, "¿Siguen abiertos?").await.expect("queued for the device");

    let app = TestApp::spawn(&fake, &dir).await;
    let url = format!("ws://{}/ws/events?token={TOKEN}&types=message.received", app.addr);
    let (mut events, _) = tokio_tungstenite::connect_async(url).await.expect("events socket");
    let listed = tokio::time::timeout(WAIT, async {
        loop {
            let (_, page) = app.request("GET", "/api/sessions/ausente/messages", Some(TOKEN), None).await;
            if let Some(items) = page["items"].as_array().filter(|items| !items.is_empty()) {
                return items.clone();
            }
            // Bounded by the timeout; the offline queue is released when the session logs in.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the offline message is stored after the restart");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0]["messageId"].as_str(), listed[0]["text"].as_str()),
        (Some(id.as_str()), Some("¿Siguen abiertos?"))
    );
    drop(events.close(None).await);

    // While it is down again, WhatsApp delivers the message once more (as when the phone resends
    // it): the next login gets it, encrypted anew under the same id, so the client reports it
    // again. A later message from the same customer follows it on the same connection and in
    // the same chat: once that one is stored, the repeat has been handled.
    app.stop().await;
    let mut fake_events = fake.subscribe();
    assert_eq!(fake.admin().redeliver(gateway_phone, &id).await.expect("redelivered"), 1, "one linked device");
    let later = fake.admin().send_text(customer, gateway_phone, "¿Y mañana?").await.expect("queued for the device");
    let app = TestApp::spawn(&fake, &dir).await;
    wait_event(&mut fake_events, |e| {
        matches!(e, fake_whatsapp::FakeEvent::MessageRedelivered { id: again, .. } if *again == id).then_some(())
    })
    .await;
    let listed = tokio::time::timeout(WAIT, async {
        loop {
            let (_, page) = app.request("GET", "/api/sessions/ausente/messages", Some(TOKEN), None).await;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if items.iter().any(|m| m["messageId"] == later.as_str()) {
                return items;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the later message is stored");
    let ids: Vec<&str> = listed.iter().filter_map(|m| m["messageId"].as_str()).collect();
    assert_eq!(ids, [later.as_str(), id.as_str()], "the redelivered message is stored once");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_limit_is_recorded_without_its_bytes() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("INBOUND_MEDIA_MAX_BYTES", "100")])).await;
    let gateway_phone = "51900000072";
    link(&app, &fake, "limite", gateway_phone).await;
    let url = format!("ws://{}/ws/events?token={TOKEN}&types=message.received", app.addr);
    let (mut events, _) = tokio_tungstenite::connect_async(url).await.expect("events socket");
    let big = pdf(&"x".repeat(200));
    let id = fake
        .admin()
        .send_document("51987000072", gateway_phone, "grande.pdf", "application/pdf", big.clone(), None)
        .await
        .expect("document");
    let asked = Asked { types: &["message.received"], session: None };
    let pushed = next_event(&mut events, &asked, |e| e["data"]["messageId"] == id.as_str()).await;
    let media = &pushed["data"]["media"];
    assert_eq!((media["stored"].as_bool(), media["fileName"].as_str()), (Some(false), Some("grande.pdf")));
    assert!(media["error"].as_str().is_some_and(|e| e.contains("size limit")), "{media}");
    let (status, answer) = app.request("GET", &format!("/api/messages/{id}/media"), Some(TOKEN), None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("MEDIA_NOT_STORED")));
    app.stop().await;
    fake.shutdown().await;
}
