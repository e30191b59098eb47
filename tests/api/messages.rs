//! `POST /api/sessions/{id}/messages`: a text, an image, a document, a voice note, an audio and a
//! video reach a virtual phone intact, as JSON and as multipart; bad input is refused and stores
//! nothing.

use base64::Engine as _;
use fake_whatsapp::MessageKind;
use serde_json::json;

use crate::support::*;

/// A 1×1 PNG.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\xff\xff?\0\x05\xfe\x02\xfe\xa7\x35\x81\x84\0\0\0\0IEND\xaeB`\x82";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An OGG page with one packet.
fn ogg_page(header_type: u8, granule: u64, sequence: u32, body: &[u8]) -> Vec<u8> {
    let mut page = b"OggS\0".to_vec();
    page.push(header_type);
    page.extend(granule.to_le_bytes());
    page.extend(0x0bad_cafeu32.to_le_bytes());
    page.extend(sequence.to_le_bytes());
    page.extend(0u32.to_le_bytes());
    page.push(1);
    page.push(body.len() as u8);
    page.extend(body);
    page
}

/// A tiny OGG/Opus file of `seconds`: OpusHead (pre-skip 312), OpusTags, one audio page.
fn ogg_opus(seconds: u64) -> Vec<u8> {
    let mut head = b"OpusHead\x01\x01".to_vec();
    head.extend(312u16.to_le_bytes());
    head.extend(48_000u32.to_le_bytes());
    head.extend([0, 0, 0]);
    let mut tags = b"OpusTags".to_vec();
    tags.extend(4u32.to_le_bytes());
    tags.extend(b"test");
    tags.extend(0u32.to_le_bytes());
    let mut file = ogg_page(0x02, 0, 0, &head);
    file.extend(ogg_page(0, 0, 1, &tags));
    file.extend(ogg_page(0x04, seconds * 48_000 + 312, 2, &[0xf8, 0xff, 0xfe]));
    file
}

/// A tiny MP4 of `seconds`: `ftyp` isom, `moov/mvhd` (timescale 1000), `mdat`.
fn mp4(seconds: u32) -> Vec<u8> {
    let boxed = |kind: &[u8; 4], body: &[u8]| {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend(kind);
        b.extend(body);
        b
    };
    let mut mvhd = vec![0u8; 12];
    mvhd.extend(1000u32.to_be_bytes());
    mvhd.extend((seconds * 1000).to_be_bytes());
    mvhd.extend([0u8; 80]);
    let mut file = boxed(b"ftyp", b"isom\0\0\x02\0isomiso2avc1mp41");
    file.extend(boxed(b"moov", &boxed(b"mvhd", &mvhd)));
    file.extend(boxed(b"mdat", b"\0\0\0\x01not really h264"));
    file
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
async fn a_voice_note_an_audio_and_a_video_reach_the_phone_intact() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    link(&app, &fake, "multimedia", "51900000063").await;
    let mut events = fake.subscribe();
    let path = "/api/sessions/multimedia/messages";
    let to = "51987000063";

    // A voice note, as JSON.
    let voice = ogg_opus(5);
    let body =
        json!({"to":to,"type":"audio","ptt":true,"media":{"dataUrl":format!("data:audio/ogg;base64,{}", b64(&voice))}});
    let (s, answer) = app.request("POST", path, Some(TOKEN), Some(body.to_string())).await;
    assert_eq!(s, 202, "{answer}");
    let voice_id = answer["messageId"].as_str().expect("id").to_owned();
    let got = wait_message(&mut events, to).await;
    assert_eq!((got.id.as_str(), got.kind), (voice_id.as_str(), MessageKind::Audio));
    let media = got.media.expect("media");
    assert_eq!((media.sha256, media.size), (sha256_hex(&voice), voice.len() as u64), "the phone decrypts our bytes");
    assert_eq!((media.ptt, media.seconds), (Some(true), Some(5)), "a voice note of 5 s");
    assert_eq!(media.mimetype.as_deref(), Some("audio/ogg; codecs=opus"));

    // A plain audio, as multipart.
    let song = ogg_opus(2);
    let boundary = "----gateway-test-audio";
    let body =
        multipart(boundary, &[("to", to), ("type", "audio"), ("ptt", "false")], ("cancion.ogg", "audio/ogg", &song));
    let (s, _, answer) =
        app.request_raw("POST", path, Some(TOKEN), body, &format!("multipart/form-data; boundary={boundary}")).await;
    assert_eq!(s, 202, "{answer}");
    let got = wait_message(&mut events, to).await;
    assert_eq!((got.id.as_str(), got.kind), (answer["messageId"].as_str().expect("id"), MessageKind::Audio));
    let media = got.media.expect("media");
    assert_eq!((media.sha256, media.ptt, media.seconds), (sha256_hex(&song), Some(false), Some(2)));

    // A video with its caption.
    let clip = mp4(3);
    let body = json!({"to":to,"type":"video","caption":"la tienda por dentro","media":{"base64":b64(&clip),"mimetype":"video/mp4"}});
    let (s, answer) = app.request("POST", path, Some(TOKEN), Some(body.to_string())).await;
    assert_eq!(s, 202, "{answer}");
    let got = wait_message(&mut events, to).await;
    assert_eq!((got.id.as_str(), got.kind), (answer["messageId"].as_str().expect("id"), MessageKind::Video));
    assert_eq!(got.text.as_deref(), Some("la tienda por dentro"));
    let media = got.media.expect("media");
    assert_eq!((media.sha256, media.size), (sha256_hex(&clip), clip.len() as u64));
    assert_eq!((media.mimetype.as_deref(), media.seconds, media.ptt), (Some("video/mp4"), Some(3), None));

    // Followed like any message, with its kind.
    let record = app.wait_status(&voice_id, "delivered").await;
    assert_eq!((record["type"].as_str(), record["ptt"].as_bool()), (Some("audio"), Some(true)), "{record}");
    assert_eq!(record["mimetype"].as_str(), Some("audio/ogg"));
    let video_id = answer["messageId"].as_str().expect("id");
    let record = app.wait_status(video_id, "delivered").await;
    assert_eq!((record["type"].as_str(), record["caption"].as_str()), (Some("video"), Some("la tienda por dentro")));
    assert!(record.get("ptt").is_none(), "ptt is for audio only: {record}");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_refused_and_store_nothing() {
    let fake = fake().await;
    let dir = temp_dir();
    given_sessions(&dir, r#"[{"sessionId":"rechazos"}]"#).await;
    let app = TestApp::spawn(&fake, &dir).await;
    let path = "/api/sessions/rechazos/messages";
    let cases = [
        (json!({"to":"51987000061","type":"text","text":" "}), 400, "EMPTY_TEXT"),
        (json!({"to":"51987000061","type":"text","text":"x".repeat(65_537)}), 400, "TEXT_TOO_LONG"),
        (json!({"to":"51987000061","type":"sticker"}), 400, "INVALID_MESSAGE_TYPE"),
        (json!({"to":"51987000061","type":"video"}), 400, "MISSING_FIELD"),
        (
            json!({"to":"51987000061","type":"audio","ptt":true,"media":{"base64":b64(b"ID3\x04\0\0\0\0\0\0 an mp3")}}),
            400,
            "NOT_OGG_OPUS",
        ),
        (json!({"to":"51987000061","type":"audio","media":{"base64":b64(&mp4(1))}}), 400, "NOT_OGG_OPUS"),
        (
            json!({"to":"51987000061","type":"audio","media":{"base64":b64(&ogg_opus(1)),"mimetype":"audio/mpeg"}}),
            400,
            "MEDIA_TYPE_MISMATCH",
        ),
        (
            json!({"to":"51987000061","type":"audio","ptt":"yes","media":{"base64":b64(&ogg_opus(1))}}),
            400,
            "INVALID_FIELD_TYPE",
        ),
        (json!({"to":"51987000061","type":"video","media":{"base64":b64(PNG)}}), 400, "NOT_A_VIDEO"),
        (json!({"to":"51987000061","type":"video","media":{"base64":b64(&ogg_opus(1))}}), 400, "NOT_A_VIDEO"),
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
