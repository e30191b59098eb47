//! The built-in admin page, driven in headless Chromium: log in, create a session, scan the QR
//! it shows with a virtual phone, see it connected, send a PDF and see it delivered, log out.
//! Screenshots land in `target/admin-page/` for a person to look at.
//!
//! Every wait reads what it waits for in the same look (see `support::browser`), and waits on
//! states the page cannot leave again, so that a loaded machine, where the next render may come
//! between two WebDriver calls, sees the same thing as an idle one.

use std::path::PathBuf;

use crate::support::browser::Browser;
use crate::support::*;

fn shots_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("admin-page")
}

/// A CSS attribute selector's value, quoted (also a JavaScript string literal).
fn quoted(value: &str) -> String {
    serde_json::to_string(value).expect("string")
}

/// Closes the notice, if one shows, as a person would before looking at the page. One script:
/// a notice that goes by itself between a look and a click cannot make the click miss.
async fn dismiss_toast(browser: &Browser) {
    browser.script("document.querySelector('#toast-close').click()").await;
    browser.wait_until("the notice to close", "document.querySelector('#toast').hidden").await;
}

/// From now on, records every moment the page shows a QR while a badge of the session says
/// anything but `qr_ready`: the page must show one truth.
async fn watch_qr_and_badges(browser: &Browser) {
    browser
        .script(
            "window.__qrMismatch = [];
            new MutationObserver(() => {
                const box = document.querySelector('#qr-box');
                if (!box || box.hidden) return;
                for (const badge of document.querySelectorAll('#detail-status, button.session[aria-current=true] .badge')) {
                    if (!badge.classList.contains('status-qr_ready')) window.__qrMismatch.push(badge.textContent);
                }
            }).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });",
        )
        .await;
}

async fn qr_badge_mismatches(browser: &Browser) -> serde_json::Value {
    browser.script("return window.__qrMismatch").await
}

/// The text of the first element `css` matches, once `ready` (a JavaScript condition on it,
/// `e`) holds; read in the same look.
async fn text_when(browser: &Browser, what: &str, css: &str, ready: &str) -> String {
    let predicate = format!("(e => e && ({ready}) && e.textContent)(document.querySelector({}))", quoted(css));
    browser.wait_until(what, &predicate).await.as_str().expect("text").to_owned()
}

async fn log_in(browser: &Browser, app: &TestApp) {
    browser.goto(&app.url("/")).await;
    let token = browser.wait_for("#token").await;
    assert!(
        browser.current_url().await.ends_with("/admin"),
        "/ redirects to the page: {}",
        browser.current_url().await
    );

    // A wrong token is refused with the API's own message and code.
    browser.type_into(&token, "not-the-token").await;
    browser.click(&browser.find("#login-submit").await).await;
    browser
        .wait_until("the refusal", "document.querySelector('#login-error').textContent.includes('INVALID_TOKEN')")
        .await;

    // From the keyboard: the token, then Enter.
    browser.clear(&token).await;
    browser.type_into(&token, &format!("{TOKEN}\u{E007}")).await;
    browser.wait_for("#app:not([hidden])").await;
    browser.wait_until("the live events socket", "document.querySelector('#live.is-on') !== null").await;
    let stored = browser.script("return sessionStorage.getItem('whatsapp-gateway.token')").await;
    assert_eq!(stored.as_str(), Some(TOKEN), "the token is kept in sessionStorage");
}

#[tokio::test]
async fn the_admin_page_links_a_number_sends_a_pdf_and_logs_out() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    let shots = shots_dir();
    let browser = Browser::start("es-ES", &shots).await;
    log_in(&browser, &app).await;
    assert_eq!(browser.text(&browser.find("#sessions-title").await).await, "Sesiones", "Spanish, from the browser");

    // The page has an icon, served beside it (no 404 on every load).
    let icon = browser
        .script(
            "return fetch(document.querySelector('link[rel=icon]').href)
                .then(r => r.status + ' ' + r.headers.get('content-type'))",
        )
        .await;
    assert_eq!(icon.as_str(), Some("200 image/svg+xml"));

    // A bad id gets the API's error, word for word in the page's language, and creates nothing.
    browser.type_into(&browser.find("#create-id").await, "no valido!").await;
    browser.click(&browser.find("#create-submit").await).await;
    let refusal =
        text_when(&browser, "the invalid id error", "#create-error", "e.textContent.includes('INVALID_SESSION_ID')")
            .await;
    assert!(refusal.starts_with("id de sesión no válido"), "{refusal:?}");
    let (_, list) = app.request("GET", "/api/sessions", Some(TOKEN), None).await;
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(0), "{list}");

    // Create: the page starts linking at once and shows a QR, under the badge that says so.
    watch_qr_and_badges(&browser).await;
    let id_field = browser.find("#create-id").await;
    browser.clear(&id_field).await;
    browser.type_into(&id_field, "caja_lima").await;
    browser.type_into(&browser.find("#create-description").await, "Caja principal").await;
    browser.click(&browser.find("#create-submit").await).await;
    let shown = browser
        .wait_until(
            "a QR",
            "(q => q && q.dataset.qr.startsWith('2@') && {
                qr: q.dataset.qr, src: q.getAttribute('src'),
                expiry: document.querySelector('#qr-expiry').textContent,
                badge: document.querySelector('#detail-status').textContent,
            })(document.querySelector('#qr-box:not([hidden]) #qr'))",
        )
        .await;
    let qr_text = shown["qr"].as_str().expect("data-qr").to_owned();
    let src = shown["src"].as_str().unwrap_or_default();
    assert!(src.starts_with("data:image/png;base64,"), "the QR is an image: {}", &src[..src.len().min(40)]);
    assert!(shown["expiry"].as_str().is_some_and(|e| e.starts_with("Caduca en ")), "the expiry is shown: {shown}");
    assert_eq!(shown["badge"], "Esperando escaneo", "the badge says what the QR says");
    let (_, session) = app.request("GET", "/api/sessions/caja_lima", Some(TOKEN), None).await;
    assert_eq!(session["description"], "Caja principal");
    // The notice of the creation goes by itself; the QR and the forms stay.
    let notice = browser
        .wait_until(
            "the notice to go by itself",
            "document.querySelector('#toast').hidden && document.querySelector('#toast-text').textContent",
        )
        .await;
    assert_eq!(notice.as_str(), Some("Sesión caja_lima creada."));
    browser.wait_for("#qr-box:not([hidden])").await;
    browser.screenshot(&shots.join("qr.png")).await;

    // The phone scans what the page shows: the page says so at once.
    let linked = fake.admin().scan(&qr_text, "51900000001").await.expect("the page's QR scans");
    let state = text_when(&browser, "connected", "#link-state", "e.dataset.phase === 'connected'").await;
    assert!(state.contains("Conectado"), "{state:?}");
    browser
        .wait_until("the phone number", "document.querySelector('#link-state').textContent.includes('+51900000001')")
        .await;
    let account = browser
        .wait_until(
            "the account",
            "document.querySelector('#fact-phone').textContent === '+51900000001' && {
                jid: document.querySelector('#fact-jid').textContent,
                listed: document.querySelector('button.session[data-session=caja_lima] .badge').textContent,
            }",
        )
        .await;
    assert_eq!(account["jid"].as_str(), Some(linked.jid.as_str()));
    assert_eq!(account["listed"], "Conectado", "the list shows the live status");
    assert_eq!(qr_badge_mismatches(&browser).await, serde_json::json!([]), "no QR under another status");
    dismiss_toast(&browser).await;
    browser.screenshot(&shots.join("connected.png")).await;

    // Send a test PDF: it is listed, then shown delivered.
    let mut events = fake.subscribe();
    let pdf_path = dir.join("factura-001.pdf");
    let pdf_bytes = pdf("admin page");
    std::fs::write(&pdf_path, &pdf_bytes).expect("pdf");
    browser.type_into(&browser.find("#send-to").await, "+51 987 654 321").await;
    browser.type_into(&browser.find("#send-text").await, "Su factura").await;
    browser.type_into(&browser.find("#send-file").await, &pdf_path.display().to_string()).await;
    browser.click(&browser.find("#send-submit").await).await;
    let message_id =
        browser.wait_until("the accepted message", "document.querySelector('#send-result').dataset.messageId").await;
    let message_id = message_id.as_str().expect("message id").to_owned();
    let received = wait_message(&mut events, "51987654321").await;
    let document = received.document.as_ref().expect("a document");
    assert_eq!(document.file_name.as_deref(), Some("factura-001.pdf"));
    assert_eq!(document.sha256, sha256_hex(&pdf_bytes));
    let pdf_row = format!("#out-table tr[data-message-id={}]", quoted(&message_id));
    let row = text_when(&browser, "the delivered status", &pdf_row, "e.dataset.status === 'delivered'").await;
    assert!(row.contains("Entregado") && row.contains("[documento] factura-001.pdf"), "{row:?}");

    // A text: the Content column shows it, cut to fit.
    let long = format!("Buenos días, le escribimos por la factura F001-123. {}", "Detalle del pedido. ".repeat(10));
    browser.clear(&browser.find("#send-text").await).await;
    browser.type_into(&browser.find("#send-text").await, &long).await;
    browser.click(&browser.find("#send-submit").await).await;
    let text_id = browser
        .wait_until(
            "the accepted text",
            &format!(
                "(id => id !== {} && id)(document.querySelector('#send-result').dataset.messageId)",
                quoted(&message_id)
            ),
        )
        .await;
    let text_row = format!("#out-table tr[data-message-id={}] td:nth-child(3)", quoted(text_id.as_str().expect("id")));
    let cell = text_when(&browser, "the text in its row", &text_row, "e.textContent.length > 0").await;
    assert!(cell.starts_with("Buenos días, le escribimos por la factura F001-123."), "{cell:?}");
    assert!(cell.ends_with('…') && cell.chars().count() <= 100, "shortened: {cell:?}");
    dismiss_toast(&browser).await;
    browser.screenshot(&shots.join("delivered.png")).await;

    // The customer answers: the page lists it, live.
    let reply = fake.admin().send_text("51987654321", "51900000001", "Gracias, recibida").await.expect("reply");
    let reply_row = format!("#in-table tr[data-message-id={}]", quoted(&reply));
    let row = text_when(&browser, "the received message", &reply_row, "true").await;
    assert!(row.contains("+51987654321") && row.contains("Gracias, recibida"), "{row:?}");

    // A webhook, registered from the page: its secret is shown once.
    browser.type_into(&browser.find("#hook-url").await, "http://127.0.0.1:9/hooks/erp").await;
    browser.click(&browser.find("#hook-events input[value='message.received']").await).await;
    browser.click(&browser.find("#hook-sessions input[value=caja_lima]").await).await;
    browser.click(&browser.find("#hook-submit").await).await;
    let secret = text_when(&browser, "the new secret", "#hook-secret:not([hidden]) #hook-secret-value", "true").await;
    assert!(secret.starts_with("whsec_"), "{secret:?}");
    browser.script("document.querySelector('#webhooks').scrollIntoView()").await;
    browser.screenshot(&shots.join("webhook.png")).await;
    let (_, hooks) = app.request("GET", "/api/webhooks", Some(TOKEN), None).await;
    let hook = &hooks["items"][0];
    assert_eq!(hook["url"], "http://127.0.0.1:9/hooks/erp", "{hooks}");
    assert_eq!(hook["events"], serde_json::json!(["message.received"]));
    assert_eq!(hook["sessions"], serde_json::json!(["caja_lima"]));
    assert!(!hooks.to_string().contains(&secret), "the list never shows it again");
    let hook_id = hook["id"].as_str().expect("id").to_owned();
    let listed =
        text_when(&browser, "the new webhook", &format!("#webhook-list li[data-webhook={}]", quoted(&hook_id)), "true")
            .await;
    assert!(listed.contains("http://127.0.0.1:9/hooks/erp") && listed.contains("Sesiones: caja_lima"), "{listed:?}");
    text_when(&browser, "its notice", "#toast-text", "e.textContent.startsWith('Webhook ')").await;

    // The language switch: everything on screen follows it, the notice, the live state, the
    // send result and the API's own messages included.
    browser
        .script("const s = document.querySelector('#lang'); s.value = 'en'; s.dispatchEvent(new Event('change'));")
        .await;
    browser.wait_until("English", "document.querySelector('#sessions-title').textContent === 'Sessions'").await;
    let english = browser
        .script(
            "const text = (css) => document.querySelector(css).textContent;
            return { status: text('#detail-status'), live: text('#live'), toast: text('#toast-text'),
                     result: text('#send-result'), secret: text('#hook-secret p'), content: text('#out-table tbody').includes('[document] factura-001.pdf'),
                     lang: document.documentElement.lang };",
        )
        .await;
    assert_eq!(english["status"], "Connected", "{english}");
    assert_eq!(english["live"], "Live", "{english}");
    assert_eq!(english["toast"], "Webhook http://127.0.0.1:9/hooks/erp registered.", "{english}");
    assert_eq!(english["result"], format!("Accepted: {}", text_id.as_str().unwrap_or_default()), "{english}");
    assert!(english["secret"].as_str().is_some_and(|s| s.starts_with("Keep this webhook")), "{english}");
    assert_eq!((english["content"].as_bool(), english["lang"].as_str()), (Some(true), Some("en")), "{english}");
    // The browser asks for Spanish, the page for its own language: the API answers in English.
    browser.type_into(&browser.find("#create-id").await, "otra mala!").await;
    browser.click(&browser.find("#create-submit").await).await;
    let refusal =
        text_when(&browser, "the error in English", "#create-error", "e.textContent.includes('INVALID_SESSION_ID')")
            .await;
    assert!(refusal.starts_with("invalid session id"), "{refusal:?}");
    browser.clear(&browser.find("#create-id").await).await;

    // Delete the webhook, behind a confirmation: cancelling keeps it.
    browser.click(&browser.find("#hook-secret-done").await).await;
    browser.wait_for("#hook-secret[hidden]").await;
    let delete = format!("#webhook-list li[data-webhook={}] button[data-action=delete]", quoted(&hook_id));
    browser.click(&browser.find(&delete).await).await;
    browser.wait_for("#confirm[open]").await;
    browser.click(&browser.find("#confirm-cancel").await).await;
    browser.wait_until("the dialog to close", "!document.querySelector('#confirm').open").await;
    let (_, hooks) = app.request("GET", "/api/webhooks", Some(TOKEN), None).await;
    assert_eq!(hooks["items"].as_array().map(Vec::len), Some(1), "cancelled: {hooks}");
    browser.click(&browser.find(&delete).await).await;
    let question = text_when(&browser, "the question", "#confirm[open] #confirm-text", "true").await;
    assert!(question.contains("http://127.0.0.1:9/hooks/erp"), "{question:?}");
    browser.click(&browser.find("#confirm-ok").await).await;
    browser
        .wait_until(
            "the webhook to go",
            &format!("document.querySelector('#webhook-list li[data-webhook={}]') === null", quoted(&hook_id)),
        )
        .await;
    let (_, hooks) = app.request("GET", "/api/webhooks", Some(TOKEN), None).await;
    assert_eq!(hooks["items"].as_array().map(Vec::len), Some(0), "{hooks}");

    // Log out, behind a confirmation: cancelling (Escape, from the keyboard) changes nothing.
    browser.click(&browser.find("#act-logout").await).await;
    browser.wait_for("#confirm[open]").await;
    let focused = browser.script("return document.activeElement.id").await;
    assert_eq!(focused.as_str(), Some("confirm-cancel"), "the safe answer has the focus");
    browser.type_into(&browser.find("#confirm-cancel").await, "\u{E00C}").await;
    browser.wait_until("the dialog to close", "!document.querySelector('#confirm').open").await;
    let (_, session) = app.request("GET", "/api/sessions/caja_lima", Some(TOKEN), None).await;
    assert_eq!(session["status"], "connected", "{session}");
    browser.click(&browser.find("#act-logout").await).await;
    browser.wait_for("#confirm[open]").await;
    browser.click(&browser.find("#confirm-ok").await).await;
    let badge = text_when(&browser, "logged out", "#detail[data-status=logged_out] #detail-status", "true").await;
    assert_eq!(badge, "Logged out");
    assert!(fake.admin().devices().iter().any(|d| d.jid == linked.jid && d.removed), "unlinked on the phone");
    let (_, session) = app.request("GET", "/api/sessions/caja_lima", Some(TOKEN), None).await;
    assert_eq!(session["status"], "logged_out", "{session}");

    // On a phone-sized screen.
    browser.resize(390, 844).await;
    browser.screenshot(&shots.join("phone.png")).await;
    let overflow = browser.script("return document.documentElement.scrollWidth > window.innerWidth").await;
    assert_eq!(overflow, serde_json::Value::Bool(false), "nothing is wider than a phone's screen");

    browser.quit().await;
    app.stop().await;
    fake.shutdown().await;
}

/// The session's `connectedAt` as the API has it, once it is connected and differs from
/// `before`.
async fn connected_again(app: &TestApp, session: &str, before: &serde_json::Value) -> serde_json::Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let (_, now) = app.request("GET", &format!("/api/sessions/{session}"), Some(TOKEN), None).await;
            if now["status"] == "connected" && now["connectedAt"] != *before {
                return now["connectedAt"].clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the session connects again")
}

#[tokio::test]
async fn the_admin_page_links_by_pairing_code_replays_dead_letters_and_deletes() {
    let fake = fake().await;
    let dir = temp_dir();
    // Retries stop at once, so a refused delivery is a dead letter straight away.
    let app = TestApp::spawn_with(config(&fake, &dir, &[("WEBHOOK_MAX_RETRY_SECS", "0")])).await;
    let (status, hook) = app
        .request(
            "POST",
            "/api/webhooks",
            Some(TOKEN),
            Some(serde_json::json!({"url": "http://127.0.0.1:1/hooks", "events": ["session.status"]}).to_string()),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let hook_id = hook["id"].as_str().expect("webhook id").to_owned();
    let browser = Browser::start("en-US", &shots_dir()).await;
    log_in(&browser, &app).await;
    assert_eq!(browser.text(&browser.find("#sessions-title").await).await, "Sessions", "English, from the browser");

    // Linking with a pairing code instead of the QR.
    browser.type_into(&browser.find("#create-id").await, "mostrador").await;
    browser.click(&browser.find("#create-submit").await).await;
    let first = browser
        .wait_until("a QR", "document.querySelector('#qr-box:not([hidden]) #qr[data-qr^=\"2@\"]')?.dataset.qr")
        .await;
    let first = first.as_str().expect("data-qr").to_owned();
    // Stopping and linking again shows a new code in place of the old one (not "no code yet").
    browser.click(&browser.find("#link-stop").await).await;
    browser.wait_for("#linking[hidden]").await;
    browser.click(&browser.find("#act-link").await).await;
    let again = format!(
        "(qr => qr && qr !== {} && qr)(document.querySelector('#qr-box:not([hidden]) #qr[data-qr^=\"2@\"]')?.dataset.qr)",
        quoted(&first)
    );
    let current = browser.wait_until("a new QR", &again).await;
    // A passkey-protected account scans it: WhatsApp asks for the passkey, and the page says
    // what to do on the phone.
    fake.admin().passkey_request(current.as_str().expect("data-qr")).expect("passkey request");
    browser
        .wait_until(
            "the passkey words",
            "document.querySelector('#link-state').textContent.includes('confirm with the passkey (screen lock) on the phone')",
        )
        .await;
    browser.screenshot(&shots_dir().join("passkey.png")).await;
    browser.type_into(&browser.find("#pair-phone").await, "+51 900 000 002").await;
    browser.click(&browser.find("#pair-submit").await).await;
    let code =
        browser.wait_until("the pairing code", "document.querySelector('#pair-code:not([hidden])')?.textContent").await;
    let code = code.as_str().expect("code").to_owned();
    fake.admin().pair_code("51900000002", &code).await.expect("the page's code is accepted");
    browser.wait_until("connected", "document.querySelector('#link-state[data-phase=connected]') !== null").await;

    // Restart, behind a confirmation: it reconnects on the same credentials, no scan, and the
    // page shows that new connection (not the one before the restart, which its answer shows).
    let before = connected_again(&app, "mostrador", &serde_json::Value::Null).await;
    let mut fake_events = fake.subscribe();
    browser.click(&browser.find("#act-restart").await).await;
    browser.wait_for("#confirm[open]").await;
    browser.click(&browser.find("#confirm-ok").await).await;
    wait_event(&mut fake_events, |e| matches!(e, fake_whatsapp::FakeEvent::DeviceLoggedIn { .. }).then_some(())).await;
    browser
        .wait_until(
            "the notice",
            "document.querySelector('#toast-text').textContent === 'Session mostrador restarted.'",
        )
        .await;
    let after = connected_again(&app, "mostrador", &before).await;
    browser
        .wait_until(
            "the new connection",
            &format!(
                "document.querySelector('#detail[data-status=connected][data-connected-at=\"{}\"]') !== null",
                after.as_u64().expect("connectedAt")
            ),
        )
        .await;

    // The endpoint refuses connections: its session.status events are dead letters.
    tokio::time::timeout(WAIT, async {
        loop {
            let (_, page) = app
                .request("GET", &format!("/api/webhooks/{hook_id}/deliveries?status=failed"), Some(TOKEN), None)
                .await;
            if page["items"].as_array().is_some_and(|items| !items.is_empty()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a dead letter");
    browser.click(&browser.find("#webhooks-refresh").await).await;
    browser.wait_for("#webhooks-refresh:not([disabled])").await;
    let show_dead = browser
        .wait_for(&format!("#webhook-list li[data-webhook={}] button[data-action=dead]", quoted(&hook_id)))
        .await;
    browser.click(&show_dead).await;
    let listed =
        text_when(&browser, "a dead letter", "#dead-list li[data-delivery]", "e.querySelector('button')").await;
    assert!(listed.contains("session.status") && listed.contains("mostrador"), "{listed:?}");
    browser.click(&browser.find("#dead-list li[data-delivery] button").await).await;
    browser.wait_for("#confirm[open]").await;
    browser.click(&browser.find("#confirm-ok").await).await;
    browser
        .wait_until("the replay", "document.querySelector('#toast-text').textContent.includes('queued again')")
        .await;

    // Delete, behind a confirmation: gone from the page and from the gateway.
    browser.click(&browser.find("#act-delete").await).await;
    browser.wait_for("#confirm[open]").await;
    browser.click(&browser.find("#confirm-ok").await).await;
    browser
        .wait_until(
            "the session to go",
            "document.querySelector('button.session[data-session=mostrador]') === null && document.querySelector('#detail').hidden",
        )
        .await;
    let (status, _) = app.request("GET", "/api/sessions/mostrador", Some(TOKEN), None).await;
    assert_eq!(status, 404);

    browser.quit().await;
    app.stop().await;
    fake.shutdown().await;
}

/// A reverse proxy that serves the gateway under `/gw/`, as nginx's
/// `location /gw/ { proxy_pass http://gateway/; }` would: it strips the prefix from each
/// request's path and passes everything else through, WebSocket upgrades included. Plain
/// requests get `Connection: close`, so each connection carries one request and only its first
/// line needs rewriting.
async fn path_prefix_proxy(backend: std::net::SocketAddr) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match client.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let (line, rest) = head.split_once("\r\n").expect("request line");
                let mut parts = line.splitn(3, ' ');
                let (method, path, version) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
                let Some(stripped) = path.strip_prefix("/gw") else {
                    let _ = client.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
                    return;
                };
                let stripped = if stripped.is_empty() { "/" } else { stripped };
                let upgrade = rest.to_ascii_lowercase().contains("upgrade: websocket");
                let headers: String = rest
                    .split("\r\n")
                    .filter(|h| !h.is_empty() && (upgrade || !h.to_ascii_lowercase().starts_with("connection:")))
                    .map(|h| format!("{h}\r\n"))
                    .collect();
                let close = if upgrade { "" } else { "Connection: close\r\n" };
                let request = format!("{method} {stripped} {version}\r\n{headers}{close}\r\n");
                let Ok(mut server) = tokio::net::TcpStream::connect(backend).await else { return };
                if server.write_all(request.as_bytes()).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn the_admin_page_works_under_a_path_prefix_and_says_when_whatsapp_cannot_be_reached() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("WHATSAPP_URL", "ws://127.0.0.1:1/ws/chat")])).await;
    let (proxy, proxy_task) = path_prefix_proxy(app.addr).await;
    let browser = Browser::start("es-PE", &shots_dir()).await;
    // Everything goes through the proxy: the redirect, the assets, the API and both sockets.
    browser.goto(&format!("http://{proxy}/gw/")).await;
    let token = browser.wait_for("#token").await;
    assert_eq!(browser.current_url().await, format!("http://{proxy}/gw/admin"));
    browser.type_into(&token, &format!("{TOKEN}\u{E007}")).await;
    browser.wait_for("#app:not([hidden])").await;
    browser.wait_until("the live events socket", "document.querySelector('#live.is-on') !== null").await;

    browser.click(&browser.find("#create-submit").await).await;
    // A generated id, selected at once; the page says in words what is wrong and that it retries.
    browser
        .wait_until(
            "the unreachable hint",
            "document.querySelector('#link-state').textContent.includes('No se puede llegar a WhatsApp')",
        )
        .await;
    let generated = browser.attribute(&browser.find("#detail").await, "data-session").await.expect("an id");
    let (status, session) = app.request("GET", &format!("/api/sessions/{generated}"), Some(TOKEN), None).await;
    assert_eq!(status, 200, "{session}");
    let no_qr = browser.script("return document.querySelector('#qr-box').hidden").await;
    assert_eq!(no_qr.as_bool(), Some(true), "no QR without WhatsApp");

    browser.quit().await;
    proxy_task.abort();
    app.stop().await;
    fake.shutdown().await;
}
