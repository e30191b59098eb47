//! What the journal promises: idempotent intake, delivery status, dead letters, bounded
//! queues and a full disk handled without losing or half-writing anything.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_the_first_answer_and_sends_once() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    link(&app, &fake, "caja", "51900000030").await;
    let mut events = fake.subscribe();

    let body = TestApp::send_pdf_body("caja", "51987000030", &pdf("idem"), None);
    let key = [("Idempotency-Key", "factura-F001-30")];
    let (s1, _, first) = app.request_with("POST", "/api/send-pdf", Some(TOKEN), Some(body.clone()), &key).await;
    let (s2, _, again) = app.request_with("POST", "/api/send-pdf", Some(TOKEN), Some(body.clone()), &key).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["messageId"], again["messageId"], "the retry gets the first answer");

    let other = TestApp::send_pdf_body("caja", "51987000030", &pdf("other"), None);
    let (s, _, err) = app.request_with("POST", "/api/send-pdf", Some(TOKEN), Some(other), &key).await;
    assert_eq!(s, 422, "{err}");
    assert_eq!(err["error"]["code"], "IDEMPOTENCY_KEY_REUSED");
    let (s, _, _) =
        app.request_with("POST", "/api/send-pdf", Some(TOKEN), Some(body), &[("Idempotency-Key", "bad key")]).await;
    assert_eq!(s, 400);

    let got = wait_message(&mut events, "51987000030").await;
    assert_eq!(got.id, first["messageId"].as_str().unwrap_or_default());
    app.wait_status(&got.id, "delivered").await;
    assert_eq!(fake.admin().messages("51987000030").len(), 1, "sent once");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_goes_queued_sent_delivered_read_and_not_on_whatsapp_fails_at_once() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    link(&app, &fake, "norte", "51900000031").await;

    let (s, body) = app.send_pdf("norte", "51987000031", &pdf("estado"), Some("estado.pdf")).await;
    assert_eq!(s, 202);
    let id = body["messageId"].as_str().unwrap_or_default().to_owned();
    let record = app.wait_status(&id, "delivered").await;
    assert_eq!(record["sessionId"], "norte");
    assert_eq!(record["to"], "51987000031");
    assert!(record["createdAt"].as_u64().is_some() && record["updatedAt"].as_u64().is_some(), "{record}");
    fake.admin().mark_read("51987000031", &id).expect("phone reads it");
    app.wait_status(&id, "read").await;

    // 15550999 is "not on WhatsApp" in the fake: it fails at once, with the reason, and is kept.
    let (s, body) = app.send_pdf("norte", "15550999", &pdf("nadie"), None).await;
    assert_eq!(s, 202);
    let failed = app.wait_status(body["messageId"].as_str().unwrap_or_default(), "failed").await;
    assert!(failed["lastError"].as_str().unwrap_or_default().contains("not on WhatsApp"), "{failed}");

    let (s, _) = app.request("GET", "/api/messages/3EB0NOPE", Some(TOKEN), None).await;
    assert_eq!(s, 404);
    let (s, _) = app.request("GET", &format!("/api/messages/{id}"), None, None).await;
    assert_eq!(s, 401);
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_429_with_retry_after() {
    let fake = fake().await;
    let dir = temp_dir();
    // The default maximum age (a day): nothing expires while the test runs, however slow.
    let app = TestApp::spawn_with(config(&fake, &dir, &[("QUEUE_MAX_PER_SESSION", "2")])).await;
    // A session that exists but was never linked: nothing can leave its lane.
    let mut ws = app.ws("sur").await;
    ws.expect("status", "initializing").await;
    drop(ws);

    for n in 0..2 {
        let (s, body) = app.send_pdf("sur", "51987000032", &pdf(&format!("n{n}")), None).await;
        assert_eq!(s, 202, "{body}");
    }
    let body = TestApp::send_pdf_body("sur", "51987000032", &pdf("n2"), None);
    let (s, headers, err) = app.request_with("POST", "/api/send-pdf", Some(TOKEN), Some(body), &[]).await;
    assert_eq!(s, 429, "{err}");
    assert_eq!(err["error"]["code"], "QUEUE_FULL");
    assert!(
        headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("retry-after") && v.parse::<u64>().is_ok()),
        "{headers:?}"
    );
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_older_than_the_max_age_is_dead_lettered_and_frees_its_place() {
    let fake = fake().await;
    let dir = temp_dir();
    // Queued under the default maximum age (a day), on a session that is never linked.
    given_sessions(&dir, r#"[{"sessionId":"sur"}]"#).await;
    let app = TestApp::spawn_with(config(&fake, &dir, &[("QUEUE_MAX_PER_SESSION", "2")])).await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let (s, body) = app.send_pdf("sur", "51987000032", &pdf(&format!("n{n}")), None).await;
        assert_eq!(s, 202, "{body}");
        ids.push(body["messageId"].as_str().unwrap_or_default().to_owned());
    }
    for id in &ids {
        let (s, record) = app.request("GET", &format!("/api/messages/{id}"), Some(TOKEN), None).await;
        assert_eq!((s, record["status"].as_str()), (200, Some("queued")), "a day's age keeps it: {record}");
    }
    app.stop().await;

    // Restarted with a maximum age of 1 s: both expire (bounded wait on their status), are kept
    // for inspection as failed, and leave room in the queue.
    let app =
        TestApp::spawn_with(config(&fake, &dir, &[("QUEUE_MAX_PER_SESSION", "2"), ("RETRY_MAX_AGE_SECS", "1")])).await;
    for id in &ids {
        let record = app.wait_status(id, "failed").await;
        assert_eq!(record["lastError"], "expired: not delivered within 1 s", "{record}");
    }
    for n in 3..5 {
        let (s, body) = app.send_pdf("sur", "51987000032", &pdf(&format!("n{n}")), None).await;
        assert_eq!(s, 202, "room again: {body}");
    }
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_507_writes_nothing_and_recovers() {
    let fake = fake().await;
    let dir = temp_dir();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    // A tiny tmpfs as the data directory; needs root (as on CI).
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=640k", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "mounting a tmpfs needs root, as on CI");
    let _unmount = Unmount(data.clone());
    let app = TestApp::spawn_with(files_config(&fake, &dir, &[])).await;
    let mut ws = app.ws("oeste").await;
    ws.expect("status", "initializing").await;
    drop(ws);

    let big = {
        let mut b = pdf("big");
        b.extend(std::iter::repeat_n(b'x', 200 * 1024));
        b
    };
    let mut accepted = Vec::new();
    let mut refused = None;
    for _ in 0..10 {
        let (s, body) = app.send_pdf("oeste", "51987000033", &big, None).await;
        match s {
            202 => accepted.push(body["messageId"].as_str().unwrap_or_default().to_owned()),
            507 => {
                refused = Some(body);
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let refused = refused.expect("the disk fills up");
    assert_eq!(refused["error"]["code"], "INSUFFICIENT_STORAGE");
    // The refused PDF left nothing behind: the segments hold exactly the accepted ones.
    assert_eq!(
        stored_file_bytes(&dir),
        big.len() as u64 * accepted.len() as u64,
        "segments hold the {} accepted PDFs and nothing of the refused one: {:?}",
        accepted.len(),
        segments(&dir)
    );
    for id in &accepted {
        let (s, record) = app.request("GET", &format!("/api/messages/{id}"), Some(TOKEN), None).await;
        assert_eq!((s, record["status"].as_str()), (200, Some("queued")), "accepted ones are intact");
    }

    // Space comes back: the next PDF is accepted.
    let grown = std::process::Command::new("mount").args(["-o", "remount,size=8m"]).arg(&data).status();
    assert!(grown.is_ok_and(|s| s.success()));
    let (s, body) = app.send_pdf("oeste", "51987000033", &big, None).await;
    assert_eq!(s, 202, "{body}");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_says_when_the_journal_cannot_be_written_and_recovers_by_itself() {
    let fake = fake().await;
    let dir = temp_dir();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    // A small tmpfs as the data directory; needs root (as on CI).
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "mounting a tmpfs needs root, as on CI");
    let _unmount = Unmount(data.clone());
    std::fs::write(dir.join("sessions.config.json"), r#"[{"sessionId":"lleno"}]"#).unwrap();
    let app = TestApp::spawn_with(files_config(&fake, &dir, &[])).await;
    let (status, ready) = app.request("GET", "/health/ready", None, None).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));

    // Fill the disk to the last byte, then a PDF is refused.
    let filler = data.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
    }
    let (status, _) = app.send_pdf("lleno", "51987000034", &pdf("lleno"), None).await;
    assert_eq!(status, 507);
    let (status, ready) = app.request("GET", "/health/ready", None, None).await;
    assert_eq!((status, ready["status"].as_str()), (503, Some("journal_unwritable")));
    let (status, _) = app.request("GET", "/health/live", None, None).await;
    assert_eq!(status, 200, "alive all the same");

    // Space comes back: ready again without any request having to succeed first.
    std::fs::remove_file(&filler).unwrap();
    let (status, ready) = app.request("GET", "/health/ready", None, None).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    app.stop().await;
    fake.shutdown().await;
}

/// Unmounts the test's tmpfs even when an assertion fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
