//! `COMPAT_API`: the sibling services' own requests, replayed from their documents (seeds 000 and
//! 002) against the gateway, with only the base URL and the token changed: link a number through
//! their QR route (scanned by a virtual phone), send a text through their send route (the phone
//! gets it), receive a phone's message through their callback, and every callback they documented,
//! checked field by field and path by path on a loopback receiver that `BACKEND_URL` /
//! `BACKEND_BASE_URL` point at. Without `COMPAT_API` their routes are 404 and undocumented.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::support::*;

/// One callback the backend got.
#[derive(Clone, Debug)]
struct Callback {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

/// A seed's backend on loopback: records every request, answers 200 `{"success":true}` as the
/// seeds' backend examples do.
struct Backend {
    addr: SocketAddr,
    got: broadcast::Sender<Callback>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start() -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (got, _) = broadcast::channel(4096);
        let sender = got.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let got = sender.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let got = got.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().to_string();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body =
                                req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let _ = got.send(Callback { method, path, content_type, body });
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{\"success\":true}")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, got, task }
    }

    /// The base URL, as the seeds' `.env` gives it (no path).
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the backend got, in order; a wait takes the first match and leaves the others.
struct Callbacks {
    rx: broadcast::Receiver<Callback>,
    seen: Vec<Callback>,
}

impl Callbacks {
    fn new(backend: &Backend) -> Callbacks {
        Callbacks { rx: backend.got.subscribe(), seen: Vec::new() }
    }

    /// The first callback to `path` whose body `pick` wants (waiting for it); every callback
    /// must be a JSON POST.
    async fn take(&mut self, path: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let matches = |got: &Callback| got.path == path && pick(&got.body);
        if let Some(at) = self.seen.iter().position(matches) {
            return self.seen.remove(at).body;
        }
        let (rx, seen) = (&mut self.rx, &mut self.seen);
        tokio::time::timeout(WAIT, async {
            loop {
                let got = rx.recv().await.expect("backend open");
                assert_eq!(got.method, "POST", "{got:?}");
                assert!(got.content_type.starts_with("application/json"), "{got:?}");
                if matches(&got) {
                    return got.body;
                }
                seen.push(got);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no callback to {path} in time; got {:?}", self.seen))
    }
}

/// The field names of a JSON object.
fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// `2024-01-15T10:30:00Z` (seed 000) or, with `millis`, `2024-01-15T10:30:00.000Z` (seed 002).
fn is_iso(value: &Value, millis: bool) -> bool {
    let Some(text) = value.as_str() else { return false };
    let len = if millis { 24 } else { 20 };
    text.len() == len && text.ends_with('Z') && text.as_bytes()[10] == b'T' && text.starts_with("20")
}

/// The text of a QR code drawn in a PNG data URL, read as a phone's camera would.
fn read_qr(data_url: &str) -> String {
    use base64::Engine as _;
    let png = data_url.strip_prefix("data:image/png;base64,").expect("a PNG data URL");
    let png = base64::engine::general_purpose::STANDARD.decode(png).expect("base64");
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().expect("png");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut pixels).expect("frame");
    let (w, h) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().expect("a readable QR code").1
}

/// The seeds' error shape, with our code beside it.
fn assert_compat_error(body: &Value, code: &str) {
    assert_eq!(keys(body), set(&["success", "error", "message", "code", "requestId"]), "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], code, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()) && body["error"] == body["message"], "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed000_links_sends_receives_and_calls_back_as_its_document_shows() {
    let fake = fake().await;
    let dir = temp_dir();
    let backend = Backend::start().await;
    let mut callbacks = Callbacks::new(&backend);
    let app =
        TestApp::spawn_with(config(&fake, &dir, &[("COMPAT_API", "seed000"), ("BACKEND_URL", &backend.url())])).await;
    let session = "unique-session-id";

    // POST /init
    let init = json!({"sessionId": session, "chatbotId": "chatbot-uuid"}).to_string();
    let (status, body) = app.request("POST", "/init", Some(TOKEN), Some(init)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(keys(&body), set(&["success", "sessionId", "status"]));
    assert_eq!((&body["success"], body["sessionId"].as_str()), (&json!(true), Some(session)));
    assert!(body["status"] == "connecting" || body["status"] == "qr_ready", "{body}");

    // The QR is posted to {BACKEND_URL}/whatsapp-qr/webhook…
    let qr = callbacks.take("/whatsapp-qr/webhook", |b| b["type"] == "qr").await;
    assert_eq!(keys(&qr), set(&["type", "sessionId", "data"]));
    assert_eq!(qr["sessionId"], session);
    assert_eq!(keys(&qr["data"]), set(&["qrCode"]));
    assert!(qr["data"]["qrCode"].as_str().is_some_and(|q| q.starts_with("data:image/png;base64,")));

    // …and a page fetches it with the token in the query (no headers), and the phone scans it.
    let (status, body) = app.request("GET", &format!("/qr-code/{session}?token={TOKEN}"), None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(keys(&body), set(&["qrCode", "status"]));
    assert_eq!(body["status"], "qr_ready");
    let gateway_phone = "56900000001";
    fake.admin().scan(&read_qr(body["qrCode"].as_str().unwrap()), gateway_phone).await.expect("scan");

    let connected = callbacks.take("/whatsapp-qr/webhook", |b| b["type"] == "connected").await;
    assert_eq!(keys(&connected), set(&["type", "sessionId", "data"]));
    assert_eq!(keys(&connected["data"]), set(&["connectedAt"]));
    assert!(is_iso(&connected["data"]["connectedAt"], false), "{connected}");

    // GET /status/:sessionId
    let (status, body) = app.request("GET", &format!("/status/{session}"), Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(keys(&body), set(&["sessionId", "status", "lastConnectedAt"]));
    assert_eq!((body["sessionId"].as_str(), body["status"].as_str()), (Some(session), Some("connected")));
    assert!(is_iso(&body["lastConnectedAt"], false), "{body}");
    let (_, body) = app.request("GET", &format!("/qr-code/{session}"), Some(TOKEN), None).await;
    assert_eq!(body, json!({"qrCode": null, "status": "connected"}), "a linked session has no QR");

    // POST /send: the customer's phone gets the text.
    let customer = "56912345678";
    let mut phone_events = fake.subscribe();
    let send = json!({"sessionId": session, "to": customer, "message": "Hola, ¿cómo estás?"}).to_string();
    let (status, body) = app.request("POST", "/send", Some(TOKEN), Some(send)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(keys(&body), set(&["success", "messageId"]));
    assert_eq!(body["success"], true);
    let got = wait_message(&mut phone_events, customer).await;
    assert_eq!(got.text.as_deref(), Some("Hola, ¿cómo estás?"));
    assert_eq!(Some(got.id.as_str()), body["messageId"].as_str(), "the messageId is WhatsApp's");

    // The customer answers: {BACKEND_URL}/whatsapp-qr/incoming.
    let id = fake.admin().send_text(customer, gateway_phone, "Hola").await.expect("a text to the gateway");
    let incoming = callbacks.take("/whatsapp-qr/incoming", |b| b["messageId"] == id.as_str()).await;
    assert_eq!(keys(&incoming), set(&["sessionId", "from", "message", "timestamp", "messageId"]));
    assert_eq!(
        (incoming["sessionId"].as_str(), incoming["from"].as_str(), incoming["message"].as_str()),
        (Some(session), Some(customer), Some("Hola"))
    );
    assert!(is_iso(&incoming["timestamp"], false), "{incoming}");

    // Errors in the seeds' shape; ours elsewhere.
    let (status, body) = app.request("GET", "/status/nobody-here", Some(TOKEN), None).await;
    assert_eq!(status, 404);
    assert_compat_error(&body, "SESSION_NOT_FOUND");
    let (status, body) = app.request("GET", &format!("/status/{session}"), None, None).await;
    assert_eq!(status, 401);
    assert_compat_error(&body, "MISSING_TOKEN");
    let (status, body) =
        app.request("GET", &format!("/qr-code/{session}?token=wrong-token-0123456789"), None, None).await;
    assert_eq!(status, 403);
    assert_compat_error(&body, "INVALID_TOKEN");
    let (status, body) = app
        .request("POST", &format!("/send?token={TOKEN}"), None, Some(json!({"sessionId": session}).to_string()))
        .await;
    assert_eq!(status, 401, "a POST takes no token in its query");
    assert_compat_error(&body, "MISSING_TOKEN");
    let (status, body) = app
        .request("POST", "/send", Some(TOKEN), Some(json!({"sessionId": session, "to": customer}).to_string()))
        .await;
    assert_eq!(status, 400);
    assert_compat_error(&body, "MISSING_FIELD");
    let (status, _, body) =
        app.request_with("GET", "/status/nobody-here", Some(TOKEN), None, &[("Accept-Language", "es")]).await;
    assert_eq!(status, 404);
    assert_compat_error(&body, "SESSION_NOT_FOUND");
    assert_eq!(body["message"], "no existe esa sesión", "in Spanish when asked");
    let (status, body) = app.request("GET", "/api/sessions/nobody-here", Some(TOKEN), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("SESSION_NOT_FOUND")), "our routes keep ours");

    // POST /disconnect: logged out, and the backend hears `disconnected` for `logout`.
    let (status, body) =
        app.request("POST", "/disconnect", Some(TOKEN), Some(json!({"sessionId": session}).to_string())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"success": true, "message": "Session disconnected"}));
    let gone = callbacks.take("/whatsapp-qr/webhook", |b| b["type"] == "disconnected").await;
    assert_eq!(gone, json!({"type": "disconnected", "sessionId": session, "data": {"reason": "logout"}}));
    let (_, body) = app.request("GET", &format!("/status/{session}?token={TOKEN}"), None, None).await;
    assert_eq!(body["status"], "disconnected");

    // The session kept the seed's chatbotId.
    let (_, body) = app.request("GET", &format!("/api/sessions/{session}"), Some(TOKEN), None).await;
    assert_eq!(body["metadata"], json!({"chatbotId": "chatbot-uuid"}));
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed002_generates_a_qr_links_sends_receives_and_calls_back_as_its_document_shows() {
    let fake = fake().await;
    let dir = temp_dir();
    let backend = Backend::start().await;
    let mut callbacks = Callbacks::new(&backend);
    let app =
        TestApp::spawn_with(config(&fake, &dir, &[("COMPAT_API", "seed002"), ("BACKEND_BASE_URL", &backend.url())]))
            .await;

    // The frontend's `fetch('http://localhost:3000/generate-qr')`, with the token in the query.
    let (status, qr) = app.request("GET", &format!("/generate-qr?token={TOKEN}"), None, None).await;
    assert_eq!(status, 200, "{qr}");
    assert_eq!(keys(&qr), set(&["success", "sessionId", "qr", "qrText", "message"]));
    assert_eq!(qr["success"], true);
    assert_eq!(qr["message"], "QR generado. Escanea con WhatsApp para conectar.");
    assert!(qr["qr"].as_str().is_some_and(|q| q.starts_with("data:image/png;base64,")));
    let session = qr["sessionId"].as_str().expect("sessionId").to_owned();
    assert!(session.starts_with("session_") && session.len() > 20, "{session}");
    assert_eq!(read_qr(qr["qr"].as_str().unwrap()), qr["qrText"].as_str().unwrap(), "the image is the text");

    let update = callbacks.take("/api/whatsapp/sessions/qr-update", |_| true).await;
    assert_eq!(keys(&update), set(&["session_id", "qr_data", "generated_at"]));
    assert_eq!(update["session_id"], session.as_str());
    assert!(update["qr_data"].as_str().is_some_and(|q| q.starts_with("2@")), "{update}");
    assert!(is_iso(&update["generated_at"], true), "{update}");

    // The user scans: the backend gets every field of its `whatsapp_sessions` row.
    let gateway_phone = "5491234567890";
    fake.admin().scan(qr["qrText"].as_str().unwrap(), gateway_phone).await.expect("scan");
    let new = callbacks.take("/api/whatsapp/sessions/new-session-connected", |_| true).await;
    assert_eq!(
        keys(&new),
        set(&[
            "session_id",
            "phone_number",
            "status",
            "last_seen",
            "auth_folder_path",
            "server_port",
            "whatsapp_user_id",
            "created_at",
            "updated_at"
        ])
    );
    assert_eq!(
        (new["session_id"].as_str(), new["phone_number"].as_str()),
        (Some(session.as_str()), Some(gateway_phone))
    );
    assert_eq!((&new["status"], &new["server_port"]), (&json!("connected"), &Value::Null));
    assert!(
        new["whatsapp_user_id"]
            .as_str()
            .is_some_and(|j| j.starts_with(gateway_phone) && j.ends_with("@s.whatsapp.net"))
    );
    assert!(new["auth_folder_path"].as_str().is_some_and(|p| p.ends_with(&session)), "{new}");
    for field in ["last_seen", "created_at", "updated_at"] {
        assert!(is_iso(&new[field], true), "{field}: {new}");
    }
    let update = callbacks.take("/api/whatsapp/sessions/status-update", |b| b["status"] == "connected").await;
    assert_eq!(keys(&update), set(&["session_id", "status", "error_message", "timestamp", "last_seen"]));
    assert_eq!((update["session_id"].as_str(), &update["error_message"]), (Some(session.as_str()), &Value::Null));
    assert!(is_iso(&update["timestamp"], true) && is_iso(&update["last_seen"], true), "{update}");

    // GET /sessions and /sessions/:sessionId (the helper class's getAllSessions / getSessionStatus).
    let (status, list) = app.request("GET", &format!("/sessions?token={TOKEN}"), None, None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(keys(&list), set(&["success", "data"]));
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    let (status, one) = app.request("GET", &format!("/sessions/{session}"), Some(TOKEN), None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["success"], true);
    assert_eq!(one["data"], list["data"][0]);
    assert_eq!(
        (one["data"]["status"].as_str(), one["data"]["phone_number"].as_str()),
        (Some("connected"), Some(gateway_phone))
    );

    // sendMessage(sessionId, targetNumber, message)
    let customer = "5490987654321";
    let mut phone_events = fake.subscribe();
    let send = json!({"number": customer, "message": "Hola desde WhatsApp!"}).to_string();
    let (status, sent) =
        app.request("POST", &format!("/sessions/{session}/send-message"), Some(TOKEN), Some(send)).await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["success"], true);
    let got = wait_message(&mut phone_events, customer).await;
    assert_eq!(got.text.as_deref(), Some("Hola desde WhatsApp!"));
    assert_eq!(Some(got.id.as_str()), sent["messageId"].as_str());

    // The customer writes: POST {BACKEND_BASE_URL}/api/whatsapp/messages/received.
    let id = fake.admin().send_text(customer, gateway_phone, "Hola, ¿cómo estás?").await.expect("a text");
    let received = callbacks.take("/api/whatsapp/messages/received", |_| true).await;
    assert_eq!(
        keys(&received),
        set(&[
            "session_id",
            "sender_name",
            "sender_number",
            "message_content",
            "message_type",
            "media_info",
            "received_at",
            "phone_number_session"
        ])
    );
    assert_eq!(
        (received["session_id"].as_str(), received["sender_number"].as_str(), received["message_content"].as_str()),
        (Some(session.as_str()), Some(customer), Some("Hola, ¿cómo estás?"))
    );
    assert_eq!((&received["message_type"], &received["media_info"]), (&json!("text"), &json!({})));
    assert_eq!(received["phone_number_session"], gateway_phone);
    assert!(is_iso(&received["received_at"], true), "{received}");
    let (_, page) = app.request("GET", &format!("/api/sessions/{session}/messages"), Some(TOKEN), None).await;
    assert_eq!(page["items"][0]["messageId"], id.as_str(), "stored in the inbox as any message");

    // POST /config/download-media
    let (status, body) =
        app.request("POST", "/config/download-media", Some(TOKEN), Some(json!({"enabled": true}).to_string())).await;
    assert_eq!((status, &body["success"], &body["enabled"]), (200, &json!(true), &json!(true)), "{body}");
    let (status, body) =
        app.request("POST", "/config/download-media", Some(TOKEN), Some(json!({"enabled": false}).to_string())).await;
    assert_eq!(status, 409);
    assert_compat_error(&body, "SETTING_FIXED");

    // Restart, then delete: `removeSession`.
    let (status, body) = app.request("POST", &format!("/sessions/{session}/restart"), Some(TOKEN), None).await;
    assert_eq!(
        (status, &body["success"], body["data"]["session_id"].as_str()),
        (200, &json!(true), Some(session.as_str()))
    );
    let (status, body) = app.request("DELETE", &format!("/sessions/{session}"), Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"success": true, "message": "Sesión eliminada"}));
    let (status, body) = app.request("GET", &format!("/sessions/{session}?token={TOKEN}"), None, None).await;
    assert_eq!(status, 404);
    assert_compat_error(&body, "SESSION_NOT_FOUND");
    // A disconnection is a status-update too.
    callbacks.take("/api/whatsapp/sessions/status-update", |b| b["status"] == "disconnected").await;
    app.stop().await;
    fake.shutdown().await;
}

/// Every route of seeds 000 and 002, as their documents list them.
const SEED_ROUTES: [(&str, &str); 12] = [
    ("post", "/init"),
    ("get", "/qr-code/{sessionId}"),
    ("get", "/status/{sessionId}"),
    ("post", "/send"),
    ("post", "/disconnect"),
    ("get", "/generate-qr"),
    ("get", "/sessions"),
    ("get", "/sessions/{sessionId}"),
    ("delete", "/sessions/{sessionId}"),
    ("post", "/sessions/{sessionId}/send-message"),
    ("post", "/sessions/{sessionId}/restart"),
    ("post", "/config/download-media"),
];

#[tokio::test]
async fn without_compat_api_the_dialects_are_404_and_not_documented() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn(&fake, &dir).await;
    for (method, path) in SEED_ROUTES {
        let concrete = path.replace("{sessionId}", "probe");
        let body = (method != "get").then(|| "{}".to_owned());
        let (status, body) = app.request(&method.to_uppercase(), &concrete, Some(TOKEN), body).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("NOT_FOUND")), "{method} {path}: {body}");
    }
    let (status, doc) = app.request("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    for (_, path) in SEED_ROUTES {
        assert!(doc["paths"].get(path).is_none(), "{path} is documented but off");
    }
    assert!(!doc["tags"].as_array().unwrap().iter().any(|t| t["name"] == "compat"));
    // `/health` is ours either way; both seeds' is the same URL.
    assert_eq!(app.request("GET", "/health", None, None).await.0, 200);
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn the_dialects_on_are_documented_under_compat_and_served() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = TestApp::spawn_with(config(&fake, &dir, &[("COMPAT_API", "seed000,seed002")])).await;
    let (status, doc) = app.request("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let tag = doc["tags"].as_array().unwrap().iter().find(|t| t["name"] == "compat").expect("the compat tag");
    let description = tag["description"].as_str().unwrap_or_default();
    assert!(description.contains("COMPAT_API") && description.contains("seed000, seed002"), "{description}");
    assert!(doc["components"]["schemas"]["CompatErrorBody"].is_object());
    let paths = doc["paths"].as_object().unwrap();
    let mut compat = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let tags: Vec<&str> = operation["tags"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            if tags != ["compat"] {
                continue;
            }
            compat += 1;
            assert!(SEED_ROUTES.contains(&(method.as_str(), path.as_str())), "{method} {path} is not a seed's route");
            let text = operation["description"].as_str().unwrap_or_default();
            assert!(text.contains("Compatibility dialect") && text.contains("COMPAT_API=seed00"), "{method} {path}");
            // Served: no route-level 404 or 405; errors in the seeds' shape.
            let concrete = path.replace("{sessionId}", "probe");
            let body = (method != "get").then(|| "{}".to_owned());
            let (status, body) = app.request(&method.to_uppercase(), &concrete, None, body).await;
            assert_eq!(status, 401, "{method} {path}: {body}");
            assert_compat_error(&body, "MISSING_TOKEN");
            let documented = &operation["responses"]["401"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(documented, "#/components/schemas/CompatErrorBody", "{method} {path}");
        }
    }
    assert_eq!(compat, SEED_ROUTES.len(), "every seed route is documented");
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test]
async fn backend_url_is_one_endpoint_across_restarts_and_formats_are_registered_through_the_api() {
    let fake = fake().await;
    let dir = temp_dir();
    let backend = "http://127.0.0.1:9/";
    let settings =
        [("COMPAT_API", "seed000,seed002"), ("BACKEND_URL", backend), ("BACKEND_BASE_URL", "http://127.0.0.1:8/")];
    let endpoints = |list: &Value| -> Vec<(String, String, String)> {
        let mut items: Vec<_> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["id"].as_str().unwrap().to_owned(),
                    e["url"].as_str().unwrap().to_owned(),
                    e["format"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        items.sort();
        items
    };
    let expected = vec![
        ("env_backend_base_url".to_owned(), "http://127.0.0.1:8/".to_owned(), "seed002".to_owned()),
        ("env_backend_url".to_owned(), backend.to_owned(), "seed000".to_owned()),
    ];
    let app = TestApp::spawn_with(config(&fake, &dir, &settings)).await;
    let (_, first) = app.request("GET", "/api/webhooks", Some(TOKEN), None).await;
    assert_eq!(endpoints(&first), expected);
    app.stop().await;
    let app = TestApp::spawn_with(config(&fake, &dir, &settings)).await;
    let (_, again) = app.request("GET", "/api/webhooks", Some(TOKEN), None).await;
    assert_eq!(again, first, "the same endpoints after a restart");
    app.stop().await;

    // Without the variables they are gone; the API registers any format.
    let app = TestApp::spawn(&fake, &dir).await;
    let (_, none) = app.request("GET", "/api/webhooks", Some(TOKEN), None).await;
    assert_eq!(none["items"], json!([]));
    let (status, created) = app
        .request("POST", "/api/webhooks", Some(TOKEN), Some(json!({"url": backend, "format": "seed002"}).to_string()))
        .await;
    assert_eq!((status, created["format"].as_str()), (201, Some("seed002")), "{created}");
    let (status, created) =
        app.request("POST", "/api/webhooks", Some(TOKEN), Some(json!({"url": backend}).to_string())).await;
    assert_eq!((status, created["format"].as_str()), (201, Some("standard")), "{created}");
    let (status, refused) = app
        .request("POST", "/api/webhooks", Some(TOKEN), Some(json!({"url": backend, "format": "seed001"}).to_string()))
        .await;
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("INVALID_FIELD_TYPE")), "{refused}");
    app.stop().await;
    fake.shutdown().await;
}
