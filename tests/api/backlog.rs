//! A backlog waits on disk, not in memory: PDFs queued while the session is down are read back
//! from the journal's segments when their turn comes, after a restart too, in order and intact;
//! one whose bytes were damaged on disk fails and the others still go.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use fake_whatsapp::{FakeEvent, FakeWhatsApp};

const BACKLOG: usize = 30;

/// A distinct PDF of about 64 KiB.
fn big_pdf(tag: &str) -> Vec<u8> {
    let mut bytes = pdf(tag);
    bytes.extend(tag.bytes().cycle().take(64 * 1024));
    bytes
}

/// (waiting messages, waiting bytes) of a session, from `GET /api/sessions/{id}`.
async fn depth(app: &TestApp, session: &str) -> (u64, u64) {
    let (status, view) = app.request("GET", &format!("/api/sessions/{session}"), Some(TOKEN), None).await;
    assert_eq!(status, 200, "{view}");
    (view["queue"]["pending"].as_u64().unwrap_or(0), view["queue"]["bytes"].as_u64().unwrap_or(0))
}

/// Queues `count` PDFs for `to`; returns (message id, sha256, size) of each, in order.
async fn queue_pdfs(app: &TestApp, session: &str, to: &str, count: usize) -> Vec<(String, String, u64)> {
    let mut queued = Vec::new();
    for n in 0..count {
        let bytes = big_pdf(&format!("backlog {session} {n:02}"));
        let (status, body) = app.send_pdf(session, to, &bytes, Some(&format!("backlog-{n:02}.pdf"))).await;
        assert_eq!(status, 202, "{body}");
        let id = body["messageId"].as_str().expect("messageId").to_owned();
        queued.push((id, sha256_hex(&bytes), bytes.len() as u64));
    }
    queued
}

/// Links a session that was created but never linked: a new watcher, its QR scanned by `phone`.
async fn link_later(app: &TestApp, fake: &FakeWhatsApp, session: &str, phone: &str) {
    let mut ws = app.ws(session).await;
    let qr = ws.next_qr().await;
    fake.admin().scan(&qr, phone).await.expect("scan");
    loop {
        match ws.next().await {
            Got::Frame(e, d) if e == "status" && d == "connected" => return,
            Got::Frame(..) => continue,
            other => panic!("expected connected, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_queued_while_down_is_rebuilt_from_disk_and_arrives_in_order() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let jid = link(&app, &fake, "atrasos", "51900000050").await;
    let mut events = fake.subscribe();

    // The connection drops and WhatsApp refuses every reconnect until the test lets it in.
    fake.admin().refuse_for(Duration::from_secs(3600));
    fake.admin().drop_connection(&jid).expect("drop");
    wait_event(&mut events, |e| matches!(e, FakeEvent::DeviceDisconnected { jid: j } if *j == jid).then_some(())).await;
    let queued = queue_pdfs(&app, "atrasos", "51987000050", BACKLOG).await;
    let total_bytes: u64 = queued.iter().map(|(_, _, size)| size).sum();
    assert_eq!(depth(&app, "atrasos").await, (BACKLOG as u64, total_bytes));
    assert_eq!(stored_bytes(&dir).await, total_bytes, "every waiting PDF is stored");
    assert!(fake.admin().messages("51987000050").is_empty(), "nothing left while down");

    // A restart: the queue is rebuilt from the journal, with the same bounds accounting.
    app.stop().await;
    let app = TestApp::spawn(&fake, &dir).await;
    assert_eq!(depth(&app, "atrasos").await, (BACKLOG as u64, total_bytes), "rebuilt from disk");
    fake.admin().refuse_for(Duration::ZERO);

    for (n, (id, sha, _)) in queued.iter().enumerate() {
        let got = wait_message(&mut events, "51987000050").await;
        assert_eq!(&got.id, id, "PDF {n} arrives in its turn");
        assert_eq!(&got.document.expect("a document").sha256, sha, "PDF {n} arrives intact");
    }
    let (last, _, _) = &queued[BACKLOG - 1];
    app.wait_status(last, "delivered").await;
    assert_eq!(fake.admin().messages("51987000050").len(), BACKLOG, "each sent once");
    // The phone's receipt can be recorded before the worker has recorded the last `sent` and
    // let go of its place (on Postgres each is a round trip): wait for both, bounded.
    tokio::time::timeout(WAIT, async {
        while depth(&app, "atrasos").await != (0, 0) || stored_bytes(&dir).await != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .ok();
    assert_eq!(depth(&app, "atrasos").await, (0, 0), "the queue lets go of what was sent");
    assert_eq!(stored_bytes(&dir).await, 0, "sent PDFs leave the store");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_pdf_damaged_on_disk_fails_and_the_others_are_sent() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    // A session that exists but is not linked yet: its PDFs wait.
    let mut ws = app.ws("perdidos").await;
    ws.expect("status", "initializing").await;
    drop(ws);
    let queued = queue_pdfs(&app, "perdidos", "51987000051", 3).await;
    let (lost, _, _) = &queued[1];
    damage_second(&dir, &queued).await;

    let mut events = fake.subscribe();
    link_later(&app, &fake, "perdidos", "51900000051").await;
    for n in [0, 2] {
        let (id, sha, _) = &queued[n];
        let got = wait_message(&mut events, "51987000051").await;
        assert_eq!(&got.id, id, "PDF {n} arrives in its turn");
        assert_eq!(&got.document.expect("a document").sha256, sha);
    }
    let failed = app.wait_status(lost, "failed").await;
    assert_eq!(failed["lastError"], "stored pdf is damaged (checksum mismatch)", "{failed}");
    app.stop().await;
    fake.shutdown().await;
}

/// Flips one bit, 1000 bytes into the second of `queued`, where the journal keeps it: in the one
/// segment on the files (the three were written one after the other), in its row on Postgres.
async fn damage_second(dir: &Path, queued: &[(String, String, u64)]) {
    match backend_url(dir) {
        None => {
            let [segment] = segments(dir).try_into().expect("one segment");
            let mut bytes = std::fs::read(&segment).expect("read the segment");
            let inside_second = queued[0].2 as usize + 1000;
            bytes[inside_second] ^= 0x10;
            std::fs::write(&segment, &bytes).expect("damage the segment");
        }
        Some(url) => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("Postgres");
            let damaged = sqlx::query(
                "UPDATE journal_messages SET payload = set_byte(payload, 1000, get_byte(payload, 1000) # 16) \
                 WHERE message_id = $1",
            )
            .bind(&queued[1].0)
            .execute(&mut conn)
            .await
            .expect("damage the row");
            assert_eq!(damaged.rows_affected(), 1, "the second PDF's row");
        }
    }
}

/// Copies the fixture journal written by the release before segments into `dir/data`, with its
/// timestamps moved so that its newest message was accepted `age` ago. The fixture was written on
/// one day; without the move it expires under `RETRY_MAX_AGE_SECS` a day later.
fn install_v1_journal(dir: &Path, age: Duration) -> serde_json::Value {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v1");
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("outbox")).expect("data dir");
    std::fs::copy(fixture.join("journal.db"), data.join("journal.db")).expect("copy db");
    for entry in std::fs::read_dir(fixture.join("outbox")).expect("fixture outbox").flatten() {
        std::fs::copy(entry.path(), data.join("outbox").join(entry.file_name())).expect("copy pdf");
    }
    let db = rusqlite::Connection::open(data.join("journal.db")).expect("open the fixture");
    let newest: i64 = db.query_row("SELECT MAX(created_at) FROM messages", [], |row| row.get(0)).expect("newest");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let shift = now - age.as_millis() as i64 - newest;
    db.execute("UPDATE messages SET created_at = created_at + ?1, updated_at = updated_at + ?1", [shift])
        .expect("move the messages");
    db.execute("UPDATE idempotency_keys SET created_at = created_at + ?1", [shift]).expect("move the keys");
    drop(db);
    serde_json::from_slice(&std::fs::read(fixture.join("manifest.json")).expect("manifest")).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_from_the_previous_release_delivers_its_pending_pdfs() {
    let fake = fake().await;
    let dir = temp_dir();
    let manifest = install_v1_journal(&dir, Duration::from_secs(60));
    let session = manifest["session"].as_str().expect("session");
    let to = manifest["to"].as_str().expect("to");
    std::fs::write(dir.join("sessions.config.json"), format!(r#"[{{"sessionId":"{session}"}}]"#)).expect("config");
    let app = TestApp::spawn_with(files_config(&fake, &dir, &[])).await;
    let expected = manifest["messages"].as_array().expect("messages");
    assert_eq!(depth(&app, session).await.0, expected.len() as u64, "its queue is rebuilt");

    let mut events = fake.subscribe();
    link_later(&app, &fake, session, "51900000052").await;
    for want in expected {
        let got = wait_message(&mut events, to).await;
        assert_eq!(got.id, want["messageId"].as_str().expect("id"), "in their order, under their ids");
        let document = got.document.expect("a document");
        assert_eq!(document.sha256, want["sha256"].as_str().expect("sha"), "intact");
        assert_eq!(document.file_name.as_deref(), want["fileName"].as_str());
    }
    let last = expected[expected.len() - 1]["messageId"].as_str().expect("id");
    app.wait_status(last, "delivered").await;
    let outbox = std::fs::read_dir(dir.join("data").join("outbox")).expect("outbox").count();
    assert_eq!(outbox, 0, "the old PDF files go once delivered");

    // The old idempotency key is still known.
    let (status, _, body) = app
        .request_with(
            "POST",
            "/api/send-pdf",
            Some(TOKEN),
            Some(TestApp::send_pdf_body(session, to, &pdf("otro"), None)),
            &[("Idempotency-Key", "clave-uno")],
        )
        .await;
    assert_eq!(status, 422, "the key is taken by the old message, with another body: {body}");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdfs_from_the_previous_release_older_than_the_retry_age_fail_as_expired() {
    let fake = fake().await;
    let dir = temp_dir();
    // A day and an hour old, under the default RETRY_MAX_AGE_SECS of a day.
    let manifest = install_v1_journal(&dir, Duration::from_secs(25 * 3600));
    let session = manifest["session"].as_str().expect("session");
    std::fs::write(dir.join("sessions.config.json"), format!(r#"[{{"sessionId":"{session}"}}]"#)).expect("config");
    let app = TestApp::spawn_with(files_config(&fake, &dir, &[])).await;
    for want in manifest["messages"].as_array().expect("messages") {
        let id = want["messageId"].as_str().expect("id");
        let failed = app.wait_status(id, "failed").await;
        assert_eq!(failed["lastError"], "expired: not delivered within 86400 s", "{failed}");
        assert_eq!(failed["attempts"], 0, "never tried: {failed}");
    }
    assert_eq!(depth(&app, session).await, (0, 0), "nothing waits");
    let outbox = std::fs::read_dir(dir.join("data").join("outbox")).map_or(0, |files| files.count());
    assert_eq!(outbox, 0, "the expired PDFs' old files are freed");
    app.stop().await;
    fake.shutdown().await;
}
