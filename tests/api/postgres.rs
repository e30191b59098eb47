//! The whole gateway on Postgres (`DATABASE_URL`): the journal, the inbox, the session registry
//! and the numbers' credentials in one schema, nothing of them on disk; a restart on the same
//! database finds everything; and Postgres going away under load answers 503 with `Retry-After`,
//! makes `/health/ready` say why, loses nothing accepted, and everything resumes by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::support::postgres::{Cuttable, Schema};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_nothing_is_on_disk_and_a_restart_finds_everything() {
    let fake = fake().await;
    let dir = temp_dir();
    let schema = Schema::fresh().await;
    let url = schema.url();
    let settings = [("DATABASE_URL", url.as_str())];

    let app = TestApp::spawn_with(config(&fake, &dir, &settings)).await;
    let gateway_phone = "51900000093";
    let jid = link(&app, &fake, "nube", gateway_phone).await;
    let (status, accepted) = app.send_pdf("nube", "51987000093", &pdf("en la nube"), None).await;
    assert_eq!(status, 202, "{accepted}");
    let pdf_id = accepted["messageId"].as_str().expect("id").to_owned();
    app.wait_status(&pdf_id, "delivered").await;
    // An idempotency key holds on Postgres too.
    let body = TestApp::send_pdf_body("nube", "51987000093", &pdf("una vez"), None);
    let headers = [("Idempotency-Key", "factura-93")];
    let (first, _, once) = app.request_with("POST", "/api/send-pdf", Some(TOKEN), Some(body.clone()), &headers).await;
    let (again, _, twice) = app.request_with("POST", "/api/send-pdf", Some(TOKEN), Some(body), &headers).await;
    assert_eq!((first, again), (202, 202));
    assert_eq!(once["messageId"], twice["messageId"], "one message for one key");
    // What the phone sends is kept in the inbox.
    let customer = "51987000094";
    let text_id = fake.admin().send_text(customer, gateway_phone, "¿Llegó la factura?").await.expect("text");
    tokio::time::timeout(WAIT, async {
        loop {
            let (_, page) = app.request("GET", "/api/sessions/nube/messages?direction=in", Some(TOKEN), None).await;
            if page.to_string().contains(text_id.as_str()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the received text is listed");
    app.stop().await;

    // None of the state went to the folders.
    for gone in
        ["data/journal.db", "data/inbox.db", "data/webhooks.db", "sessions.config.json", "sessions/nube/whatsapp.db"]
    {
        assert!(!dir.join(gone).exists(), "{gone} is not written on Postgres");
    }

    // A new gateway on the same database: the session, its link, its messages and statuses.
    let mut events = fake.subscribe();
    let app = TestApp::spawn_with(config(&fake, &dir, &settings)).await;
    wait_event(&mut events, |e| {
        matches!(e, fake_whatsapp::FakeEvent::DeviceLoggedIn { jid: j } if *j == jid).then_some(())
    })
    .await;
    wait_session(&app, "nube", "connected again, without a scan", |s| s["status"] == "connected").await;
    app.wait_status(&pdf_id, "delivered").await;
    let (_, page) = app.request("GET", "/api/sessions/nube/messages?direction=in", Some(TOKEN), None).await;
    assert!(page.to_string().contains(text_id.as_str()), "the inbox survived: {page}");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_under_load_is_503_then_everything_resumes_and_nothing_is_lost() {
    let _ = tracing_subscriber::fmt().with_env_filter("whatsapp_gateway=warn").with_test_writer().try_init();
    let fake = fake().await;
    let dir = temp_dir();
    let schema = Schema::fresh().await;
    let proxy = Cuttable::start(Schema::server_addr()).await;
    let url = schema.url_via(proxy.addr);
    let app = Arc::new(TestApp::spawn_with(config(&fake, &dir, &[("DATABASE_URL", url.as_str())])).await);
    link(&app, &fake, "corte", "51900000095").await;
    let (status, ready) = app.request("GET", "/health/ready", None, None).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));

    // Load: PDFs one after another until told to stop; every 202 is remembered.
    let stop = Arc::new(AtomicBool::new(false));
    // How many of its requests were refused so far: the outage lasts until one is.
    let refusals = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (app, stop, refusals) = (Arc::clone(&app), Arc::clone(&stop), Arc::clone(&refusals));
        async move {
            let (mut accepted, mut refused) = (Vec::new(), Vec::new());
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let body = TestApp::send_pdf_body("corte", "51987000095", &pdf(&format!("carga {n}")), None);
                let (status, headers, answer) =
                    app.request_with("POST", "/api/send-pdf", Some(TOKEN), Some(body), &[]).await;
                match status {
                    202 => accepted.push(answer["messageId"].as_str().expect("id").to_owned()),
                    503 => {
                        assert_eq!(answer["error"]["code"], "STORAGE_UNAVAILABLE", "{answer}");
                        assert!(headers.iter().any(|(k, _)| k == "retry-after"), "503 says when to retry");
                        refused.push(n);
                        refusals.fetch_add(1, Ordering::SeqCst);
                    }
                    other => panic!("send-pdf answered {other}: {answer}"),
                }
            }
            (accepted, refused)
        }
    });

    // Let some through, then cut Postgres off.
    wait_for(|| async {
        app.request("GET", "/api/sessions/corte/messages?direction=out", Some(TOKEN), None).await.1["items"]
            .as_array()
            .is_some_and(|items| items.len() >= 3)
    })
    .await;
    proxy.cut();
    wait_for(|| async {
        let (status, ready) = app.request("GET", "/health/ready", None, None).await;
        status == 503 && ready["status"] == "database_unreachable"
    })
    .await;
    // While it is down, intake is refused with 503 (seen by the load), not accepted and lost.
    let body = TestApp::send_pdf_body("corte", "51987000095", &pdf("durante el corte"), None);
    let (status, headers, answer) = app.request_with("POST", "/api/send-pdf", Some(TOKEN), Some(body), &[]).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("STORAGE_UNAVAILABLE")), "{answer}");
    assert!(headers.iter().any(|(k, v)| k == "retry-after" && v == "2"), "{headers:?}");

    // The load meets the outage too (its request in flight at the cut may take a while to fail).
    wait_for(|| async { refusals.load(Ordering::SeqCst) > 0 }).await;

    // Back: ready again by itself, intake accepted again, every accepted PDF delivered once.
    proxy.restore();
    wait_for(|| async { app.request("GET", "/health/ready", None, None).await.0 == 200 }).await;
    let (status, after) = app.send_pdf("corte", "51987000095", &pdf("después del corte"), None).await;
    assert_eq!(status, 202, "{after}");
    stop.store(true, Ordering::SeqCst);
    let (mut accepted, refused) = tokio::time::timeout(WAIT, load).await.expect("the load stops").expect("load");
    assert!(!refused.is_empty(), "the load met the outage");
    accepted.push(after["messageId"].as_str().expect("id").to_owned());
    for id in &accepted {
        app.wait_status(id, "delivered").await;
    }
    // The phone shows exactly the accepted messages, each once; nothing refused got through.
    let shown: Vec<String> = fake.admin().messages("51987000095").into_iter().map(|m| m.id).collect();
    let shown_set: std::collections::HashSet<&String> = shown.iter().collect();
    assert_eq!(shown.len(), shown_set.len(), "a message shown twice: {shown:?}");
    assert_eq!(shown_set, accepted.iter().collect(), "the phone shows exactly what was accepted");
    wait_session(&app, "corte", "still linked", |s| s["status"] == "connected").await;
    Arc::into_inner(app).expect("the only handle").stop().await;
    fake.shutdown().await;
}

/// Polls `check` until it holds (bounded by [`WAIT`]).
async fn wait_for<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(WAIT, async {
        while !check().await {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the condition in time")
}

/// A received message is acknowledged to WhatsApp only once the inbox has it and its event is in
/// the webhook outbox. While the database refuses it (here a trigger, as a full disk or a
/// constraint would), WhatsApp keeps it; the next login gets it again, and it is stored once and
/// posted once. Before, the client acknowledged it as soon as it was decrypted: it was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_message_the_database_refuses_is_delivered_again_and_kept_once() {
    let fake = fake().await;
    let dir = temp_dir();
    let schema = Schema::fresh().await;
    let url = schema.url();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("DATABASE_URL", url.as_str())])).await;
    let gateway_phone = "51900000096";
    link(&app, &fake, "terca", gateway_phone).await;
    let receiver = crate::webhooks::Receiver::start().await;
    let mut posts = receiver.requests();
    let endpoint =
        crate::webhooks::create(&app, serde_json::json!({"url": receiver.url(), "events": ["message.received"]})).await;

    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("connect");
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_inbox() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'no space left on device'; END $$; \
         CREATE TRIGGER refuse_inbox BEFORE INSERT ON inbox_messages FOR EACH ROW EXECUTE FUNCTION refuse_inbox();",
    )
    .execute(&mut db)
    .await
    .expect("the trigger");
    let not_kept = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("gateway_inbound_not_kept_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = not_kept(&crate::platform::scrape(&app).await);
    let customer = "51987000096";
    let id = fake.admin().send_text(customer, gateway_phone, "¿Tienen stock?").await.expect("sent");
    tokio::time::timeout(WAIT, async {
        while not_kept(&crate::platform::scrape(&app).await) <= before {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the inbox refuses the message");

    // The database takes it again; the next login gets the message again.
    sqlx::raw_sql("DROP TRIGGER refuse_inbox ON inbox_messages").execute(&mut db).await.expect("drop the trigger");
    let mut fake_events = fake.subscribe();
    let (status, body) = app.request("POST", "/api/sessions/terca/restart", Some(TOKEN), None).await;
    assert!(status < 300, "{status} {body}");
    wait_event(&mut fake_events, |e| {
        matches!(e, fake_whatsapp::FakeEvent::MessageRedelivered { id: again, .. } if *again == id).then_some(())
    })
    .await;
    let post = tokio::time::timeout(WAIT, async {
        loop {
            let post = posts.recv().await.expect("a webhook post");
            let event: serde_json::Value = serde_json::from_slice(&post.body).expect("json");
            if event["data"]["messageId"] == id.as_str() {
                return event;
            }
        }
    })
    .await
    .expect("its message.received is posted");
    assert_eq!(post["data"]["text"], "¿Tienen stock?");

    let (_, page) = app.request("GET", "/api/sessions/terca/messages?direction=in", Some(TOKEN), None).await;
    let ids: Vec<&str> =
        page["items"].as_array().expect("items").iter().filter_map(|m| m["messageId"].as_str()).collect();
    assert_eq!(ids, [id.as_str()], "stored once");
    let path = format!("/api/webhooks/{}/deliveries", endpoint["id"].as_str().expect("endpoint id"));
    let (_, deliveries) = app.request("GET", &path, Some(TOKEN), None).await;
    let items = deliveries["items"].as_array().expect("deliveries");
    let of_it = items.iter().filter(|d| d["eventId"] == post["id"]).count();
    assert_eq!((of_it, items.len()), (1, 1), "one delivery, of its event: {deliveries}");
    app.stop().await;
    fake.shutdown().await;
}
