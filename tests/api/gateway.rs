//! The gateway end to end: a real WebSocket and HTTP client against the gateway, which links
//! to and sends through the fake WhatsApp server.

use crate::support::*;
use fake_whatsapp::FakeEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_by_qr_then_send_a_pdf_that_arrives_intact() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;

    link(&app, &fake, "tienda_lima", "51900000001").await;
    // The new session was kept in the registry (sessions.config.json on the files).
    let config = stored_registry(&dir).await;
    assert!(config.contains("\"tienda_lima\""), "{config}");

    // A second watcher learns at once that it is already connected.
    let mut ws = app.ws("tienda_lima").await;
    ws.expect("status", "already_connected").await;
    assert_eq!(ws.next().await, Got::Closed(Some(1000)));

    let mut events = fake.subscribe();
    let bytes = pdf("factura 001");
    let (status, body) = app.send_pdf("tienda_lima", "+51 987-654-321", &bytes, Some("F001-123.pdf")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["message"], "Mensaje encolado para envío.");
    let message_id = body["messageId"].as_str().expect("messageId").to_owned();

    let got = wait_message(&mut events, "51987654321").await;
    assert_eq!(got.id, message_id, "the WhatsApp message id is the one we answered");
    let doc = got.document.expect("a document");
    assert_eq!(doc.sha256, sha256_hex(&bytes));
    assert_eq!(doc.file_name.as_deref(), Some("F001-123.pdf"));
    assert_eq!(doc.mimetype.as_deref(), Some("application/pdf"));

    let (status, health) = app.request("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(health["sessions"], 1);
    assert_eq!(health["connected"], 1);
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_while_down_delivered_after_reconnect_and_after_restart() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let jid = link(&app, &fake, "ventas", "51900000002").await;
    let mut events = fake.subscribe();

    // The connection drops and WhatsApp refuses reconnects for a while: the PDF waits.
    fake.admin().refuse_for(std::time::Duration::from_secs(2));
    fake.admin().drop_connection(&jid).expect("drop");
    wait_event(&mut events, |e| matches!(e, FakeEvent::DeviceDisconnected { jid: j } if *j == jid).then_some(())).await;
    let bytes = pdf("while down");
    let (status, body) = app.send_pdf("ventas", "51987000001", &bytes, None).await;
    assert_eq!(status, 202, "{body}");
    let got = wait_message(&mut events, "51987000001").await;
    assert_eq!(got.document.expect("document").file_name.as_deref(), Some("Comprobante.pdf"));

    // A restart reconnects the session from its stored credentials, without a scan.
    app.stop().await;
    let app = TestApp::spawn(&fake, &dir).await;
    wait_event(&mut events, |e| matches!(e, FakeEvent::DeviceLoggedIn { jid: j } if *j == jid).then_some(())).await;
    let bytes = pdf("after restart");
    let (status, _) = app.send_pdf("ventas", "51987000002", &bytes, Some("recibo.pdf")).await;
    assert_eq!(status, 202);
    let got = wait_message(&mut events, "51987000002").await;
    assert_eq!(got.document.expect("document").sha256, sha256_hex(&bytes));
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_clears_credentials_and_relinking_works() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let jid = link(&app, &fake, "soporte", "51900000003").await;
    assert!(has_credentials(&dir, "soporte").await);

    // The gateway's own event stream (subscribed before its 101) says when it has handled the
    // logout: it deletes the credentials before it announces it.
    let url = format!("ws://{}/ws/events?token={TOKEN}&types=session.logged_out", app.addr);
    let (mut gateway_events, _) = tokio_tungstenite::connect_async(url).await.expect("events socket");
    let mut events = fake.subscribe();
    fake.admin().logout(&jid).expect("logout");
    wait_event(&mut events, |e| matches!(e, FakeEvent::DeviceDisconnected { jid: j } if *j == jid).then_some(())).await;
    let announced = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt as _;
        loop {
            match gateway_events.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                    return serde_json::from_str::<serde_json::Value>(&text).expect("JSON frame");
                }
                Some(Ok(_)) => continue,
                other => panic!("events socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("session.logged_out in time");
    assert_eq!(
        (announced["event"].as_str(), announced["sessionId"].as_str()),
        (Some("session.logged_out"), Some("soporte"))
    );
    assert!(!has_credentials(&dir, "soporte").await, "credentials deleted after a logout from the phone");
    // The gateway learns of the logout from its client a moment after the server closed the
    // socket; until then a watcher may still hear `already_connected`. Then it can relink.
    let mut ws = tokio::time::timeout(WAIT, async {
        loop {
            let mut ws = app.ws("soporte").await;
            match ws.next().await {
                Got::Frame(e, d) if e == "status" && d == "initializing" => return ws,
                _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the session goes down after the logout");
    let qr = ws.next_qr().await;
    let relinked = fake.admin().scan(&qr, "51900000003").await.expect("scan again");
    assert_ne!(relinked.jid, jid, "a new device");
    loop {
        match ws.next().await {
            Got::Frame(e, d) if e == "status" && d == "connected" => break,
            Got::Frame(..) => continue,
            other => panic!("expected connected, got {other:?}"),
        }
    }
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_code_and_changes_nothing() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let valid = |session: &str| {
        use base64::Engine as _;
        serde_json::json!({"sessionId": session, "to": "51987654321", "pdfBase64": base64::engine::general_purpose::STANDARD.encode(pdf("x"))})
    };
    let code = |v: &serde_json::Value| v["error"]["code"].as_str().unwrap_or("").to_owned();

    // Every answer is (status, the stable code), checked together.
    let send = |token: Option<&'static str>, body: String| {
        let app = &app;
        async move {
            let (s, b) = app.request("POST", "/api/send-pdf", token, Some(body)).await;
            assert_eq!(b["success"], serde_json::Value::Bool(false), "{b}");
            (s, code(&b))
        }
    };
    let with = |field: &str, value: &str| {
        let mut body = valid("tienda");
        body[field] = value.into();
        body.to_string()
    };
    for (what, token, body, expected) in [
        ("no token", None, valid("x").to_string(), (401, "MISSING_TOKEN")),
        ("a wrong token", Some("wrong-token-xxxxxxxx"), valid("x").to_string(), (403, "INVALID_TOKEN")),
        ("an unknown session", Some(TOKEN), valid("nobody").to_string(), (404, "SESSION_NOT_FOUND")),
        ("not JSON", Some(TOKEN), "{not json".to_owned(), (400, "BAD_JSON")),
        ("no pdfBase64", Some(TOKEN), r#"{"sessionId":"a","to":"51987654321"}"#.to_owned(), (400, "MISSING_FIELD")),
        ("a bad phone", Some(TOKEN), with("to", "12-34"), (400, "INVALID_PHONE")),
        ("bad base64", Some(TOKEN), with("pdfBase64", "@@@"), (400, "INVALID_BASE64")),
        ("not a PDF", Some(TOKEN), with("pdfBase64", "aGVsbG8="), (400, "NOT_A_PDF")),
        ("a bad session id", Some(TOKEN), with("sessionId", "../etc"), (400, "INVALID_SESSION_ID")),
    ] {
        let (s, c) = send(token, body).await;
        assert_eq!((s, c.as_str()), expected, "{what}");
    }
    let (s, b) = app.request("GET", "/api/send-pdf", Some(TOKEN), None).await;
    assert_eq!((s, code(&b).as_str()), (405, "METHOD_NOT_ALLOWED"));
    let (s, b) = app.request("GET", "/nothing/here", Some(TOKEN), None).await;
    assert_eq!((s, code(&b).as_str()), (404, "NOT_FOUND"));

    let small = TestApp::spawn_with(config(&fake, &temp_dir(), &[("MAX_BODY_BYTES", "1024")])).await;
    let big = valid("tienda").to_string() + &" ".repeat(2048);
    let (s, b) = small.request("POST", "/api/send-pdf", Some(TOKEN), Some(big)).await;
    assert_eq!((s, code(&b).as_str()), (413, "PAYLOAD_TOO_LARGE"), "{b}");
    small.stop().await;

    // WebSocket: no token, a wrong one, or a bad session id never upgrade nor create anything.
    let no_token = format!("ws://{}/ws/session/tienda", app.addr);
    let err = tokio_tungstenite::connect_async(no_token).await.expect_err("refused");
    assert!(err.to_string().contains("401"), "{err}");
    let wrong = format!("ws://{}/ws/session/tienda?token=nope-nope-nope-nope", app.addr);
    let err = tokio_tungstenite::connect_async(wrong).await.expect_err("refused");
    assert!(err.to_string().contains("403"), "{err}");
    let bad_id = format!("ws://{}/ws/session/bad%20id?token={TOKEN}", app.addr);
    let err = tokio_tungstenite::connect_async(bad_id).await.expect_err("refused");
    assert!(err.to_string().contains("400"), "{err}");
    assert!(!dir.join("sessions.config.json").exists(), "nothing was created");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_stay_isolated() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let lima = link(&app, &fake, "lima", "51900000010").await;
    let cusco = link(&app, &fake, "cusco", "51900000011").await;
    let mut events = fake.subscribe();

    // Lima is logged out from its phone; Cusco keeps sending, from its own number.
    fake.admin().logout(&lima).expect("logout");
    wait_event(&mut events, |e| matches!(e, FakeEvent::DeviceDisconnected { jid } if *jid == lima).then_some(())).await;
    let bytes = pdf("cusco");
    let (status, _) = app.send_pdf("cusco", "51987000011", &bytes, None).await;
    assert_eq!(status, 202);
    let got = wait_message(&mut events, "51987000011").await;
    assert!(got.from.starts_with("51900000011:"), "sent by Cusco's number: {}", got.from);
    assert!(has_credentials(&dir, "cusco").await, "Cusco keeps its credentials");
    assert!(fake.admin().devices().iter().any(|d| d.jid == cusco && d.connected && !d.removed));
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_pdf_takes_what_the_node_service_takes() {
    use base64::Engine as _;
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    link(&app, &fake, "tienda_lima", "51900000009").await;
    let mut events = fake.subscribe();

    let bytes = {
        let mut b = pdf("como en node");
        b.extend((0u8..=255).cycle().take(3000)); // every byte value: '+', '/', '-' and '_' all appear
        b
    };
    let standard = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let urlsafe_wrapped: String = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(&bytes)
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect::<Vec<_>>()
        .join("\r\n");
    // (the JSON body as a client sends it, the file name the phone must see)
    let cases = [
        (
            format!(
                "\u{feff}{}",
                serde_json::json!({"sessionId":"tienda_lima","to":"+51 (987) 654-321","pdfBase64":standard})
            ),
            "Comprobante.pdf",
        ),
        (
            serde_json::json!({"sessionId":"tienda_lima","to":"51.987.654.321","fileName":"",
                "pdfBase64":format!("data:application/octet-stream;base64,{standard}")})
            .to_string(),
            "Comprobante.pdf",
        ),
        (
            serde_json::json!({"sessionId":"tienda_lima","to":"51987654321@s.whatsapp.net",
                "fileName":"Factura\u{202e}gnp.pdf","pdfBase64":format!("data:;base64,{urlsafe_wrapped}")})
            .to_string()
            .replace('/', "\\/"),
            "Facturagnp.pdf",
        ),
        (
            serde_json::json!({"sessionId":"tienda_lima","to":51987654321u64,"fileName":"F002",
                "pdfBase64":format!("data:application/x-pdf;name=F002.pdf;base64,{}", standard.trim_end_matches('='))})
            .to_string(),
            "F002.pdf",
        ),
    ];
    for (n, (body, file_name)) in cases.into_iter().enumerate() {
        let (status, answer) = app.request("POST", "/api/send-pdf", Some(TOKEN), Some(body)).await;
        assert_eq!(status, 202, "case {n}: {answer}");
        let got = wait_message(&mut events, "51987654321").await;
        assert_eq!(got.id, answer["messageId"].as_str().expect("id"), "case {n}");
        let document = got.document.expect("a document");
        assert_eq!(document.sha256, sha256_hex(&bytes), "case {n}: the same bytes");
        assert_eq!(document.file_name.as_deref(), Some(file_name), "case {n}");
    }

    // Still refused: a data URL that says it is something else.
    let png = serde_json::json!({"sessionId":"tienda_lima","to":"51987654321",
        "pdfBase64":format!("data:image/png;base64,{standard}")});
    let (status, answer) = app.request("POST", "/api/send-pdf", Some(TOKEN), Some(png.to_string())).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("NOT_A_PDF")), "{answer}");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdf_with_bytes_before_its_header_is_sent_unchanged() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    link(&app, &fake, "tienda_lima", "51900000010").await;
    let mut events = fake.subscribe();

    // What PDF readers open: the header anywhere in the first 1,024 bytes.
    let late = |prefix: &[u8]| [prefix, pdf("generado en Windows").as_slice()].concat();
    for prefix in [&b"\xef\xbb\xbf"[..], b"\r\n \t\n", &[b' '; 1019]] {
        let bytes = late(prefix);
        let (status, answer) = app.send_pdf("tienda_lima", "51987654321", &bytes, Some("F003.pdf")).await;
        assert_eq!(status, 202, "{} bytes before the header: {answer}", prefix.len());
        let got = wait_message(&mut events, "51987654321").await;
        assert_eq!(got.id, answer["messageId"].as_str().expect("id"));
        let document = got.document.expect("a document");
        assert_eq!(document.sha256, sha256_hex(&bytes), "{} bytes first: sent byte for byte", prefix.len());
        assert_eq!(document.mimetype.as_deref(), Some("application/pdf"));
    }

    // Past the first 1,024 bytes it is not a PDF to a reader, nor to us; nothing is queued.
    let (status, answer) = app.send_pdf("tienda_lima", "51987654321", &late(&[b' '; 1024]), None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("NOT_A_PDF")), "{answer}");
    let (_, sent) = app.request("GET", "/api/sessions/tienda_lima/messages?direction=out", Some(TOKEN), None).await;
    assert_eq!(sent["items"].as_array().map(Vec::len), Some(3), "{sent}");
    app.stop().await;
    fake.shutdown().await;
}
