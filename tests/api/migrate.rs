//! `whatsapp-gateway migrate --to postgres://…`: a number linked on SQLite, with PDFs waiting
//! and a message received, is copied into Postgres; a gateway started there reconnects it
//! without a scan, delivers each waiting PDF once and lists what was received. The copy refuses
//! to run beside a gateway, and a second run adds nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use fake_whatsapp::FakeEvent;
use whatsapp_gateway::migrate::{MigrateError, Sources, migrate};

use serde_json::json;

use crate::support::postgres::Schema;
use crate::support::*;
use crate::webhooks::{Receiver, create};

const GATEWAY_PHONE: &str = "51900000095";
const WAITING_FOR: &str = "51987000095";
const DELIVERED_TO: &str = "51987000096";
const CUSTOMER: &str = "51987000097";

/// `GET path` until the body mentions `needle` (bounded).
async fn wait_listed(app: &TestApp, path: &str, needle: &str) {
    tokio::time::timeout(WAIT, async {
        loop {
            let (_, body) = app.request("GET", path, Some(TOKEN), None).await;
            if body.to_string().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{needle} never listed at {path}"))
}

/// `GET path`'s status and bytes.
async fn get_bytes(app: &TestApp, path: &str) -> (u16, Vec<u8>) {
    let url = format!("http://{}{}", app.addr, path);
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
        let mut response = agent.get(&url).header("Authorization", format!("Bearer {TOKEN}")).call().expect("get");
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_vec().unwrap_or_default())
    })
    .await
    .expect("request task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_linked_on_sqlite_moves_to_postgres_without_a_scan_and_delivers_its_queue_once() {
    let fake = fake().await;
    let dir = temp_dir();
    // On the files, whatever TEST_BACKEND says: they are what is moved.
    // Webhook retries stop at once: a failure is a dead letter.
    let app = TestApp::spawn_with(config(&fake, &dir, &[("DATABASE_URL", ""), ("WEBHOOK_MAX_RETRY_SECS", "0")])).await;
    let jid = link(&app, &fake, "mudanza", GATEWAY_PHONE).await;
    let receiver = Receiver::start().await;
    let hook = create(&app, json!({"url": receiver.url(), "events": ["message.received"]})).await;
    let hook = hook["id"].as_str().expect("webhook id").to_owned();
    receiver.answer(&[500]);

    // History: a PDF delivered under an idempotency key, and a text received.
    let keyed = TestApp::send_pdf_body("mudanza", DELIVERED_TO, &pdf("entregado"), None);
    let key = [("Idempotency-Key", "factura-95")];
    let (status, _, first) = app.request_with("POST", "/api/send-pdf", Some(TOKEN), Some(keyed.clone()), &key).await;
    assert_eq!(status, 202, "{first}");
    let delivered = first["messageId"].as_str().expect("id").to_owned();
    app.wait_status(&delivered, "delivered").await;
    let text_id = fake.admin().send_text(CUSTOMER, GATEWAY_PHONE, "¿Me mandan la guía?").await.expect("text");
    wait_listed(&app, "/api/sessions/mudanza/messages?direction=in", &text_id).await;
    let failed = format!("/api/webhooks/{hook}/deliveries?status=failed");
    wait_listed(&app, &failed, "\"items\":[{").await;
    let order = pdf("orden de compra");
    let doc_id = fake
        .admin()
        .send_document(CUSTOMER, GATEWAY_PHONE, "orden.pdf", "application/pdf", order.clone(), None)
        .await
        .expect("document");
    let media = format!("/api/messages/{doc_id}/media");
    tokio::time::timeout(WAIT, async {
        while get_bytes(&app, &media).await != (200, order.clone()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the received document is kept");

    // WhatsApp goes away: three PDFs wait in the journal.
    let mut events = fake.subscribe();
    fake.admin().refuse_for(Duration::from_secs(3600));
    fake.admin().drop_connection(&jid).expect("drop");
    wait_event(&mut events, |e| matches!(e, FakeEvent::DeviceDisconnected { jid: j } if *j == jid).then_some(())).await;
    let mut waiting = BTreeSet::new();
    let mut waiting_bytes = 0;
    for n in 0..3 {
        let bytes = pdf(&format!("en espera {n}"));
        waiting_bytes += bytes.len() as u64;
        let (status, body) = app.send_pdf("mudanza", WAITING_FOR, &bytes, Some(&format!("guia-{n}.pdf"))).await;
        assert_eq!(status, 202, "{body}");
        waiting.insert(body["messageId"].as_str().expect("id").to_owned());
    }

    // Not beside a running gateway.
    let schema = Schema::fresh().await;
    let url = schema.url();
    let sources = Sources {
        data_dir: dir.join("data"),
        sessions_dir: dir.join("sessions"),
        sessions_config: dir.join("sessions.config.json"),
    };
    match migrate(&sources, &url).await {
        Err(MigrateError::InUse(held)) => assert_eq!(held, sources.data_dir),
        other => panic!("expected a refusal while the gateway runs, got {other:?}"),
    }
    app.stop().await;
    assert!(fake.admin().messages(WAITING_FOR).is_empty(), "nothing was sent while WhatsApp was away");

    // The copy, then a second run that finds everything there.
    let report = migrate(&sources, &url).await.expect("migrate");
    assert_eq!((report.sessions.found, report.sessions.moved), (1, 1), "{report}");
    assert_eq!((report.messages.found, report.messages.moved), (4, 4), "{report}");
    assert_eq!((report.pending, report.pending_bytes), (3, waiting_bytes), "{report}");
    assert_eq!(report.idempotency_keys.moved, 1, "{report}");
    assert_eq!(report.inbox_messages.moved, 2, "{report}");
    assert_eq!((report.inbox_files, report.inbox_file_bytes), (1, order.len() as u64), "{report}");
    assert_eq!(report.numbers.moved, 1, "{report}");
    assert!(report.credential_rows.moved > 10, "keys, sessions and the device: {report}");
    assert_eq!((report.webhook_endpoints.moved, report.dead_letters), (1, 1), "{report}");
    assert!(!report.is_noop());
    let text = report.to_string();
    assert!(text.contains("journal: 4 messages (3 pending,"), "{text}");
    let again = migrate(&sources, &url).await.expect("migrate again");
    assert!(again.is_noop(), "a second run adds nothing: {again}");
    assert_eq!(again.messages.found, 4);
    assert_eq!(again.credential_rows.found, report.credential_rows.found);
    assert!(again.to_string().contains("journal: 0 messages (0 pending, 0 B), 4 already there"), "{again}");

    // The command, as a person runs it: the same, and it says nothing is new.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_whatsapp-gateway"))
        .args(["migrate", "--to", &url])
        .current_dir(&dir)
        .env("API_STATIC_TOKEN", TOKEN)
        .env("DATA_DIR", &sources.data_dir)
        .env("SESSIONS_DIR", &sources.sessions_dir)
        .env("SESSIONS_CONFIG", &sources.sessions_config)
        .env("API_TOKEN_FILE", dir.join(".api-token"))
        .env_remove("DATABASE_URL")
        .output()
        .expect("run the binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("nothing new"), "{stdout}");
    assert!(stdout.contains("registry: 0 sessions, 1 already there"), "{stdout}");

    // A gateway on Postgres, in an empty folder: everything comes from the database.
    fake.admin().refuse_for(Duration::ZERO);
    let elsewhere = temp_dir();
    let mut events = fake.subscribe();
    let app = TestApp::spawn_with(config(&fake, &elsewhere, &[("DATABASE_URL", url.as_str())])).await;
    wait_event(&mut events, |e| matches!(e, FakeEvent::DeviceLoggedIn { jid: j } if *j == jid).then_some(())).await;
    for id in &waiting {
        app.wait_status(id, "delivered").await;
    }
    let shown: Vec<String> = fake.admin().messages(WAITING_FOR).into_iter().map(|m| m.id).collect();
    assert_eq!(shown.len(), waiting.len(), "each waiting PDF sent once: {shown:?}");
    assert_eq!(shown.into_iter().collect::<BTreeSet<_>>(), waiting, "the accepted PDFs, no others");
    // The history came along: the delivered PDF, its key, the received text.
    app.wait_status(&delivered, "delivered").await;
    let (status, _, replay) = app.request_with("POST", "/api/send-pdf", Some(TOKEN), Some(keyed), &key).await;
    assert_eq!(status, 202, "{replay}");
    assert_eq!(replay["messageId"], first["messageId"], "the key still names its message");
    wait_listed(&app, "/api/sessions/mudanza/messages?direction=in", &text_id).await;
    assert_eq!(get_bytes(&app, &media).await, (200, order), "the received file's bytes came along");
    // The dead letter came along, and is replayed from here.
    let (_, page) = app.request("GET", &failed, Some(TOKEN), None).await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    let delivery = items[0]["id"].as_i64().expect("delivery id");
    let (status, retried) =
        app.request("POST", &format!("/api/webhooks/{hook}/deliveries/{delivery}/retry"), Some(TOKEN), None).await;
    assert_eq!((status, retried["retried"].as_u64()), (202, Some(1)), "{retried}");
    let delivered_hooks = format!("/api/webhooks/{hook}/deliveries?status=delivered");
    wait_listed(&app, &delivered_hooks, &format!("\"id\":{delivery}")).await;
    assert_eq!(fake.admin().messages(DELIVERED_TO).len(), 1, "the replay sent nothing");
    app.stop().await;
    fake.shutdown().await;
}
