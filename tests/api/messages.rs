//! `POST /api/sessions/{id}/messages`: a text, an image and a document reach a virtual phone
//! intact, as JSON and as multipart; bad input is refused and stores nothing.

use base64::Engine as _;
use fake_whatsapp::MessageKind;
use serde_json::json;

use crate::support::*;

/// A 1×1 PNG.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\xff\xff?\0\x05\xfe\x02\xfe\xa7\x35\x81\x84\0\0\0\0IEND\xaeB`\x82";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A multipart body with text fields and one `file` part.
fn multipart(boundary: &str, fields: &[(&str, &str)], file: (&str, &str, &[u8])) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes(),
        );
    }
    let (file_name, content_type, bytes) = file;
    body.extend(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .bytes(),
    );
    body.extend(bytes);
    body.extend(format!("\r\n--{boundary}--\r\n").bytes());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_image_and_document_reach_the_phone_intact() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    link(&app, &fake, "mensajes", "51900000060").await;
    let mut events = fake.subscribe();
    let path = "/api/sessions/mensajes/messages";
    let to = "51987000060";

    let (s, text) = app
        .request(
            "POST",
            path,
            Some(TOKEN),
            Some(json!({"to":"+51 987 000 060","type":"text","text":"¿Llegó la factura? 🧾"}).to_string()),
        )
        .await;
    assert_eq!((s, &text["success"], &text["status"]), (202, &json!(true), &json!("queued")), "{text}");
    let got = wait_message(&mut events, to).await;
    assert_eq!(got.id, text["messageId"].as_str().expect("id"));
    assert_eq!((got.kind, got.text.as_deref()), (MessageKind::Text, Some("¿Llegó la factura? 🧾")));

    let image = json!({"to":to,"type":"image","caption":"el local","media":{"dataUrl":format!("data:image/png;base64,{}", b64(PNG))}});
    let (s, answer) = app.request("POST", path, Some(TOKEN), Some(image.to_string())).await;
    assert_eq!(s, 202, "{answer}");
    let got = wait_message(&mut events, to).await;
    assert_eq!((got.id.as_str(), got.kind), (answer["messageId"].as_str().expect("id"), MessageKind::Image));
    let media = got.media.expect("media");
    assert_eq!((media.sha256, media.size), (sha256_hex(PNG), PNG.len() as u64));
    assert_eq!((media.mimetype.as_deref(), media.caption.as_deref()), (Some("image/png"), Some("el local")));

    // A spreadsheet as multipart: raw bytes, its part's own name and type.
    let sheet = b"fecha;total\n2026-11-30;120.50\n".to_vec();
    let boundary = "----gateway-test-7MA4YWxk";
    let body = multipart(
        boundary,
        &[("to", to), ("type", "document"), ("caption", "ventas")],
        ("ventas.csv", "text/csv", &sheet),
    );
    let (s, _, answer) =
        app.request_raw("POST", path, Some(TOKEN), body, &format!("multipart/form-data; boundary={boundary}")).await;
    assert_eq!(s, 202, "{answer}");
    let got = wait_message(&mut events, to).await;
    assert_eq!((got.id.as_str(), got.kind), (answer["messageId"].as_str().expect("id"), MessageKind::Document));
    let media = got.media.expect("media");
    assert_eq!(media.sha256, sha256_hex(&sheet));
    assert_eq!((media.file_name.as_deref(), media.mimetype.as_deref()), (Some("ventas.csv"), Some("text/csv")));
    assert_eq!(media.caption.as_deref(), Some("ventas"));

    // Every kind is followed like a PDF.
    let id = answer["messageId"].as_str().expect("id");
    let record = app.wait_status(id, "delivered").await;
    assert_eq!((record["type"].as_str(), record["fileName"].as_str()), (Some("document"), Some("ventas.csv")));
    let text_id = text["messageId"].as_str().expect("id");
    let (s, record) = app.request("GET", &format!("/api/messages/{text_id}"), Some(TOKEN), None).await;
    assert_eq!((s, record["type"].as_str(), &record["fileName"]), (200, Some("text"), &serde_json::Value::Null));

    // The sent history, newest first, by chat too.
    let (s, page) = app.request("GET", &format!("{path}?direction=out&limit=2"), Some(TOKEN), None).await;
    assert_eq!(s, 200, "{page}");
    let kinds: Vec<&str> = page["items"].as_array().expect("items").iter().filter_map(|m| m["type"].as_str()).collect();
    assert_eq!(kinds, ["document", "image"]);
    assert_eq!(page["items"][0]["direction"].as_str(), Some("out"));
    let next = page["next"].as_u64().expect("a next page");
    let (_, page) = app
        .request("GET", &format!("{path}?direction=out&before={next}&chat={to}@s.whatsapp.net"), Some(TOKEN), None)
        .await;
    assert_eq!((page["items"][0]["messageId"].as_str(), &page["next"]), (Some(text_id), &serde_json::Value::Null));
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_refused_and_store_nothing() {
    let fake = fake().await;
    let dir = temp_dir();
    std::fs::write(dir.join("sessions.config.json"), r#"[{"sessionId":"rechazos"}]"#).expect("config");
    let app = TestApp::spawn(&fake, &dir).await;
    let path = "/api/sessions/rechazos/messages";
    let cases = [
        (json!({"to":"51987000061","type":"text","text":" "}), 400, "EMPTY_TEXT"),
        (json!({"to":"51987000061","type":"text","text":"x".repeat(65_537)}), 400, "TEXT_TOO_LONG"),
        (json!({"to":"51987000061","type":"video"}), 400, "INVALID_MESSAGE_TYPE"),
        (
            json!({"to":"51987000061","type":"image","media":{"base64":b64(b"%PDF-1.4 not an image")}}),
            400,
            "NOT_AN_IMAGE",
        ),
        (
            json!({"to":"51987000061","type":"image","media":{"base64":b64(PNG),"mimetype":"image/jpeg"}}),
            400,
            "MEDIA_TYPE_MISMATCH",
        ),
        (
            json!({"to":"51987000061","type":"document","media":{"dataUrl":format!("data:application/pdf;base64,{}", b64(PNG))}}),
            400,
            "MEDIA_TYPE_MISMATCH",
        ),
        (json!({"to":"51987000061","type":"document"}), 400, "MISSING_FIELD"),
        (json!({"to":"123","type":"text","text":"hola"}), 400, "INVALID_PHONE"),
    ];
    for (body, status, code) in cases {
        let (s, answer) = app.request("POST", path, Some(TOKEN), Some(body.to_string())).await;
        assert_eq!((s, answer["error"]["code"].as_str()), (status, Some(code)), "{body}");
    }
    let (s, answer) = app
        .request(
            "POST",
            "/api/sessions/nadie/messages",
            Some(TOKEN),
            Some(json!({"to":"51987000061","type":"text","text":"x"}).to_string()),
        )
        .await;
    assert_eq!((s, answer["error"]["code"].as_str()), (404, Some("SESSION_NOT_FOUND")));
    let (s, _, answer) =
        app.request_raw("POST", path, Some(TOKEN), b"to=1".to_vec(), "application/x-www-form-urlencoded").await;
    assert_eq!((s, answer["error"]["code"].as_str()), (415, Some("UNSUPPORTED_MEDIA_TYPE")));
    let (_, session) = app.request("GET", "/api/sessions/rechazos", Some(TOKEN), None).await;
    assert_eq!(session["queue"]["pending"], 0, "nothing was queued: {session}");
    app.stop().await;
    fake.shutdown().await;
}
