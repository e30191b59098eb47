//! Seeds 003 and 004 (`COMPAT_API`): their frontends' code replayed with the real
//! `socket.io-client` and Node's `fetch` (`tests/socketio-client/driver.js`, installed by
//! `npm ci --prefix tests/socketio-client`, which `.ci/run` runs), against the gateway and the
//! fake WhatsApp server: link a number by QR, be told it is connected, receive a message, send
//! one that the virtual phone gets, and read both back over REST. A token of one user never
//! sees another's events; without `COMPAT_API`, none of it exists.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::support::*;

const ANA: &str = "ana-token-0123456789";
const BETO: &str = "beto-token-0123456789";

/// A token per user, each bound to its own session, as a JWT will be.
fn tokens(dir: &std::path::Path) -> String {
    let path = dir.join("tokens.json");
    let scopes = r#"["sessions:read","sessions:write","messages:send","messages:read"]"#;
    std::fs::write(
        &path,
        format!(
            r#"[{{"name":"ana","token":"{ANA}","scopes":{scopes},"sessions":["ana"]}},
                {{"name":"beto","token":"{BETO}","scopes":{scopes},"sessions":["beto"]}},
                {{"name":"ops","token":"ops-token-0123456789","scopes":{scopes},"sessions":"*"}}]"#
        ),
    )
    .unwrap();
    path.display().to_string()
}

async fn spawn(fake: &fake_whatsapp::FakeWhatsApp, dir: &std::path::Path, extra: &[(&str, &str)]) -> TestApp {
    let tokens = tokens(dir);
    let mut vars = vec![("API_TOKENS_FILE", tokens.as_str())];
    vars.extend_from_slice(extra);
    TestApp::spawn_with(config(fake, dir, &vars)).await
}

/// The Socket.IO client's folder.
fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("socketio-client")
}

/// One Node process: one `socket.io-client` socket and any number of `fetch` calls.
struct Sio {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Reports read while waiting for something else.
    backlog: VecDeque<Value>,
    fetches: u64,
    /// The transport the connection upgraded to, once it did.
    upgraded: Option<String>,
}

impl Sio {
    async fn start() -> Sio {
        let dir = client_dir();
        assert!(
            dir.join("node_modules").join("socket.io-client").is_dir(),
            "the Socket.IO client is not installed: run `npm ci --prefix tests/socketio-client` (bash .ci/run does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("driver.js"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (Node.js 18 or later is needed for the Socket.IO tests)");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Sio { _child: child, stdin, lines, backlog: VecDeque::new(), fetches: 0, upgraded: None }
    }

    /// Starts a driver and connects its socket to `app` with these `io()` options.
    async fn connect(app: &TestApp, options: Value) -> Sio {
        let mut sio = Sio::start().await;
        sio.send(json!({"op": "connect", "url": app.url(""), "options": options})).await;
        sio
    }

    async fn send(&mut self, command: Value) {
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("the driver reads");
        self.stdin.flush().await.expect("the driver reads");
    }

    async fn emit(&mut self, event: &str, args: Value) {
        self.send(json!({"op": "emit", "event": event, "args": args})).await;
    }

    /// The next line of the driver; an `upgrade` (polling → WebSocket, whenever it happens) is
    /// noted and skipped.
    async fn read(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .expect("a report from the Socket.IO client in time")
                .expect("the driver's output")
                .expect("the driver is still running");
            let report: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("the driver wrote {line}"));
            if report["type"] == "upgrade" {
                self.upgraded = report["transport"].as_str().map(str::to_owned);
                continue;
            }
            return report;
        }
    }

    /// The next report: `connect`, `event`, `disconnect`…
    async fn next(&mut self) -> Value {
        match self.backlog.pop_front() {
            Some(report) => report,
            None => self.read().await,
        }
    }

    /// The arguments of the next `event`, skipping those `skip` allows; any other report fails.
    async fn event_skipping(&mut self, event: &str, skip: &[&str]) -> Vec<Value> {
        loop {
            let report = self.next().await;
            assert_eq!(report["type"], "event", "expected the event {event}, got {report}");
            if report["event"] == event {
                return report["args"].as_array().cloned().unwrap_or_default();
            }
            let name = report["event"].as_str().unwrap_or_default();
            assert!(skip.contains(&name), "expected the event {event}, got {report}");
        }
    }

    async fn event(&mut self, event: &str) -> Vec<Value> {
        self.event_skipping(event, &[]).await
    }

    /// `fetch(url, {method, headers: {Authorization: Bearer …}, body})`, as the seeds' frontends.
    async fn fetch(
        &mut self,
        app: &TestApp,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.fetches += 1;
        let id = self.fetches;
        let mut init = json!({"method": method, "headers": {"Authorization": format!("Bearer {token}")}});
        if let Some(body) = body {
            init["headers"]["Content-Type"] = json!("application/json");
            init["body"] = json!(body.to_string());
        }
        self.send(json!({"op": "fetch", "id": id, "url": app.url(path), "init": init})).await;
        loop {
            let report = self.read().await;
            if report["type"] == "fetch" && report["id"] == id {
                let status = u16::try_from(report["status"].as_u64().unwrap_or_default()).unwrap();
                assert_ne!(status, 0, "fetch failed: {report}");
                return (status, report["json"].clone());
            }
            self.backlog.push_back(report);
        }
    }
}

/// Checks `value` against the schema of `path`'s `method` answer `status` in the gateway's own
/// OpenAPI document: every object has exactly the documented fields, each of its type.
fn assert_documented(doc: &Value, method: &str, path: &str, status: u16, value: &Value) {
    let schema = &doc["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path} {status} is not documented");
    if let Err(why) = conforms(doc, schema, value) {
        panic!("{method} {path} {status} answered what its document does not say: {why}\n{value}");
    }
}

fn conforms(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], value);
    }
    if let Some(variants) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        return variants
            .iter()
            .find_map(|variant| conforms(doc, variant, value).ok())
            .ok_or_else(|| format!("{value} is none of {schema}"));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{value} is not one of {allowed:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    let fits = |kind: &str| match (kind, value) {
        ("null", Value::Null) | ("boolean", Value::Bool(_)) | ("string", Value::String(_)) => true,
        ("integer", Value::Number(n)) => n.is_u64() || n.is_i64(),
        ("number", Value::Number(_)) | ("array", Value::Array(_)) | ("object", Value::Object(_)) => true,
        _ => false,
    };
    if !types.iter().any(|kind| fits(kind)) {
        return Err(format!("{value} is not of type {types:?}"));
    }
    match value {
        Value::Object(fields) => {
            let documented = schema["properties"].as_object().cloned().unwrap_or_default();
            let mut names: Vec<&String> = fields.keys().collect();
            let mut expected: Vec<&String> = documented.keys().collect();
            names.sort();
            expected.sort();
            if names != expected {
                return Err(format!("fields {names:?}, documented {expected:?}"));
            }
            fields.iter().try_for_each(|(name, field)| conforms(doc, &documented[name], field))
        }
        Value::Array(items) => items.iter().try_for_each(|item| conforms(doc, &schema["items"], item)),
        _ => Ok(()),
    }
}

/// The text a PNG QR (a `data:image/png;base64,…` URL) encodes.
fn decode_qr(data_url: &str) -> String {
    use base64::Engine as _;
    let b64 = data_url.strip_prefix("data:image/png;base64,").expect("a PNG data URL");
    let png = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
    let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut pixels).expect("a frame");
    let (w, h) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().expect("a readable QR").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_003_frontend_links_receives_and_sends_over_socket_io() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = spawn(&fake, &dir, &[("COMPAT_API", "seed003,seed004")]).await;
    let (gateway_phone, customer) = ("51900000301", "51987000301");

    // `io(url, { transports: ['websocket'] })`, then `join` and `get-qr` with the token.
    let mut ana = Sio::connect(&app, json!({"transports": ["websocket"]})).await;
    let connected = ana.next().await;
    assert_eq!((connected["type"].as_str(), connected["transport"].as_str()), (Some("connect"), Some("websocket")));
    // Beto, another user, connected all along: he must never hear of Ana's number.
    let mut beto = Sio::connect(&app, json!({"transports": ["websocket"]})).await;
    assert_eq!(beto.next().await["type"], "connect");
    beto.emit("join", json!([{"token": BETO}])).await;

    // A wrong token is an `error` with a message.
    ana.emit("join", json!([{"token": "not-a-token-0123456789"}])).await;
    let error = ana.event("error").await;
    assert!(error[0].as_str().is_some_and(|m| m.contains("token")), "{error:?}");

    ana.emit("join", json!([{"token": ANA}])).await;
    ana.emit("get-qr", json!([{"token": ANA}])).await;
    let qr = ana.event("qr-code").await;
    let png = qr[0].as_str().expect("qr-code carries a string");
    assert!(png.starts_with("data:image/png;base64,"), "{png}");
    let linked = fake.admin().scan(&decode_qr(png), gateway_phone).await.expect("the phone scans the QR");
    // Rotations may bring more codes before the link is through.
    let ready = ana.event_skipping("session-ready", &["qr-code"]).await;
    assert_eq!(ready, [json!({"success": true})]);

    // The customer writes: the chat list changed (the event has no argument).
    let text_id = fake.admin().send_text(customer, gateway_phone, "Hola, ¿tienen stock?").await.expect("text");
    assert_eq!(ana.event("chats-updated").await, Vec::<Value>::new());

    // The frontend reads its conversations and the messages of one, with fetch.
    let (_, doc) = app.request("GET", "/openapi.json", None, None).await;
    let (status, body) = ana.fetch(&app, "GET", "/api/whatsapp/get_conversations", ANA, None).await;
    assert_eq!(status, 200, "{body}");
    assert_documented(&doc, "get", "/api/whatsapp/get_conversations", 200, &body);
    assert_eq!(body["success"], true);
    let conversation = &body["conversations"][0];
    assert_eq!(body["conversations"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(conversation["external_id"], format!("{customer}@s.whatsapp.net"));
    assert_eq!((conversation["unread_count"].as_u64(), conversation["contact_photo_url"].is_null()), (Some(1), true));
    let started = conversation["started_at"].as_str().expect("started_at");
    assert!(started.len() == 20 && started.ends_with('Z') && started.as_bytes()[10] == b'T', "{started}");
    let fields: Vec<&str> = conversation.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields.len(), 6, "exactly the seed's fields: {fields:?}");
    let conversation_id = conversation["id"].as_str().expect("id").to_owned();

    let path = format!("/api/whatsapp/get_messages?conversationId={customer}@s.whatsapp.net");
    let (status, body) = ana.fetch(&app, "GET", &path, ANA, None).await;
    assert_eq!(status, 200, "{body}");
    assert_documented(&doc, "get", "/api/whatsapp/get_messages", 200, &body);
    let message = &body["messages"][0];
    assert_eq!(
        (message["id"].as_str(), message["sender_type"].as_str(), message["message_type"].as_str()),
        (Some(text_id.as_str()), Some("user"), Some("text"))
    );
    assert_eq!(message["text_content"], "Hola, ¿tienen stock?");

    // `send-message` to the conversation: `message-sent`, and the customer's phone gets it.
    let mut phone_events = fake.subscribe();
    ana.emit(
        "send-message",
        json!([{"token": ANA, "conversationId": conversation_id, "textContent": "Sí, tenemos", "attachments": []}]),
    )
    .await;
    let sent = ana.event("message-sent").await;
    assert_eq!(sent, [json!({"success": true, "conversationId": conversation_id})]);
    let got = wait_message(&mut phone_events, customer).await;
    assert_eq!(got.text.as_deref(), Some("Sí, tenemos"));
    let (_, body) = ana
        .fetch(&app, "GET", &format!("/api/whatsapp/get_messages?conversationId={conversation_id}"), ANA, None)
        .await;
    let last = body["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
    assert_eq!(
        (last["sender_type"].as_str(), last["text_content"].as_str()),
        (Some("ai"), Some("Sí, tenemos")),
        "{body}"
    );
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(2), "oldest first, both ways: {body}");

    // Sending to nobody known, or with attachments, is an `error`.
    ana.emit("send-message", json!([{"token": ANA, "conversationId": "nadie", "textContent": "x", "attachments": []}]))
        .await;
    assert!(ana.event("error").await[0].is_string());

    // The QR route knows the number is linked.
    let (status, body) = ana.fetch(&app, "GET", "/api/whatsapp/qr", ANA, None).await;
    assert_eq!(
        (status, &body),
        (
            200,
            &json!({"success": true, "message": "WhatsApp ya está conectado", "connected": true, "data": {"qr": null}})
        )
    );
    assert_documented(&doc, "get", "/api/whatsapp/qr", 200, &body);

    // The phone unlinks the device: `session-closed`.
    fake.admin().logout(&linked.jid).expect("logout");
    assert_eq!(ana.event("session-closed").await, [json!({"reason": "logged_out"})]);

    // Beto heard nothing of all that: the first thing he hears is his own QR.
    beto.emit("get-qr", json!([{"token": BETO}])).await;
    let report = beto.next().await;
    assert_eq!((report["type"].as_str(), report["event"].as_str()), (Some("event"), Some("qr-code")), "{report}");
    let beto_qr = decode_qr(report["args"][0].as_str().unwrap());
    assert_ne!(beto_qr, decode_qr(png));

    // A token of several sessions has no single number to show.
    let (status, body) = ana.fetch(&app, "GET", "/api/whatsapp/get_conversations", "ops-token-0123456789", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("FORBIDDEN")));

    // Shutdown closes the sockets (QRs may still be coming until then: Ana's socket asked for
    // one, so her logged-out number links again while it is open).
    app.stop().await;
    for sio in [&mut ana, &mut beto] {
        loop {
            let report = sio.next().await;
            if report["type"] == "disconnect" {
                break;
            }
            assert_eq!(report["event"], "qr-code", "{report}");
        }
    }
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_004_frontend_connects_subscribes_receives_and_sends() {
    let fake = fake().await;
    let dir = temp_dir();
    // Pinged every second and idle-closed after two: the sockets must outlive both for the
    // whole test (a drop would be a `disconnect` where an event is expected; no reconnection).
    let settings = [
        ("COMPAT_API", "seed004"),
        ("WS_MAX_PER_TOKEN", "1"),
        ("WS_PING_SECS", "1"),
        ("HTTP_HEADER_TIMEOUT_SECS", "2"),
    ];
    let app = spawn(&fake, &dir, &settings).await;
    let (gateway_phone, customer) = ("51900000401", "51987000401");
    let mut rest = Sio::start().await;

    // Before connecting: disconnected, no account.
    let (_, doc) = app.request("GET", "/openapi.json", None, None).await;
    let (status, body) = rest.fetch(&app, "GET", "/api/v1/whatsapp/status", ANA, None).await;
    assert_eq!((status, &body), (200, &json!({"connected": false, "status": "disconnected", "qrCode": null})));
    assert_documented(&doc, "get", "/api/v1/whatsapp/status", 200, &body);
    let (status, body) = rest.fetch(&app, "GET", "/api/v1/whatsapp/info", ANA, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("SESSION_NOT_CONNECTED")));
    let (status, body) = rest.fetch(&app, "POST", "/api/v1/whatsapp/restore", ANA, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("SESSION_NOT_FOUND")), "nothing to restore");

    // `POST /connect`: `{ qrCode, status }`.
    let (status, body) = rest.fetch(&app, "POST", "/api/v1/whatsapp/connect", ANA, None).await;
    assert_eq!(status, 200, "{body}");
    assert_documented(&doc, "post", "/api/v1/whatsapp/connect", 200, &body);
    assert_eq!(body["status"], "qr_ready");
    assert!(body["qrCode"].as_str().is_some_and(|qr| qr.contains(',')), "the QR's text: {body}");

    // `io(url, { auth: { token } })` starts with long polling and upgrades to a WebSocket.
    // (It may be upgraded already when `connect` fires; the `upgrade` is checked below.)
    let mut ana = Sio::connect(&app, json!({"auth": {"token": ANA}})).await;
    assert_eq!(ana.next().await["type"], "connect");
    ana.emit("subscribe_whatsapp", json!([])).await;
    // Subscribed: where it stands, then the QR to show.
    let now = ana.event("whatsapp_status_change").await;
    assert_eq!(now, [json!({"status": "qr_ready", "connected": false, "reason": null})]);
    let qr = ana.event("whatsapp_qr_generated").await;
    let code = qr[0]["qrCode"].as_str().expect("qrCode").to_owned();

    // Beto subscribes too, over long polling only: he must never hear of Ana's number.
    let mut beto = Sio::connect(&app, json!({"auth": {"token": BETO}, "transports": ["polling"]})).await;
    let connected = beto.next().await;
    assert_eq!((connected["type"].as_str(), connected["transport"].as_str()), (Some("connect"), Some("polling")));
    beto.emit("subscribe_whatsapp", json!([])).await;
    let now = beto.event_skipping("whatsapp_status_change", &[]).await;
    assert_eq!(now[0]["status"], "disconnected");

    // A wrong token, no token, and a second socket of one token are refused at the handshake.
    for (auth, code) in [
        (json!({"token": "not-a-token-0123456789"}), "INVALID_TOKEN"),
        (json!({}), "MISSING_TOKEN"),
        (json!({"token": ANA}), "TOO_MANY_WEBSOCKETS"),
    ] {
        let mut refused = Sio::connect(&app, json!({"auth": auth})).await;
        let report = refused.next().await;
        assert_eq!(report["type"], "connect_error", "{report}");
        assert!(report["message"].as_str().is_some_and(|m| m.starts_with(code)), "{report}");
    }

    fake.admin().scan(&code, gateway_phone).await.expect("the phone scans the QR");
    loop {
        let args = ana.event_skipping("whatsapp_status_change", &["whatsapp_qr_generated"]).await;
        if args[0]["status"] == "connected" {
            assert_eq!(args[0]["connected"], true);
            break;
        }
    }
    assert_eq!(ana.upgraded.as_deref(), Some("websocket"), "the polling connection upgraded");
    assert_eq!(beto.upgraded, None, "polling only");
    let (_, body) = rest.fetch(&app, "GET", "/api/v1/whatsapp/status", ANA, None).await;
    assert_eq!(body, json!({"connected": true, "status": "connected", "qrCode": null}));
    let (status, body) = rest.fetch(&app, "GET", "/api/v1/whatsapp/info", ANA, None).await;
    assert_eq!(
        (status, body["userId"].as_str(), body["phoneNumber"].as_str()),
        (200, Some("ana"), Some("+51900000401"))
    );
    assert_documented(&doc, "get", "/api/v1/whatsapp/info", 200, &body);

    // A customer writes: `whatsapp_message_received` with a Mensaje.
    let text_id = fake.admin().send_text(customer, gateway_phone, "¿Llegó mi pedido?").await.expect("text");
    let received = ana.event_skipping("whatsapp_message_received", &["whatsapp_status_change"]).await;
    let message = &received[0]["message"];
    assert_eq!(
        (message["id"].as_str(), message["userId"].as_str(), message["clientId"].as_str()),
        (Some(text_id.as_str()), Some("ana"), Some("+51987000401"))
    );
    assert_eq!(
        (message["channel"].as_str(), message["direction"].as_str(), message["provider"].as_str()),
        (Some("whatsapp"), Some("inbound"), Some("whatsapp_web"))
    );
    assert_eq!((message["text"].as_str(), message["status"].as_str()), (Some("¿Llegó mi pedido?"), Some("received")));
    assert!(message["createdAt"].as_str().is_some_and(|at| at.len() == 24 && at.ends_with('Z')), "{message}");

    // `POST /send`: the phone gets it, the answer is the sent Mensaje.
    let mut phone_events = fake.subscribe();
    let (status, body) = rest
        .fetch(&app, "POST", "/api/v1/whatsapp/send", ANA, Some(json!({"to": "+51 987 000 401", "message": "Sí, hoy"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_documented(&doc, "post", "/api/v1/whatsapp/send", 200, &body);
    assert_eq!((body["success"].as_bool(), body["message"]["status"].as_str()), (Some(true), Some("sent")));
    assert_eq!(
        (body["message"]["direction"].as_str(), body["message"]["text"].as_str()),
        (Some("outbound"), Some("Sí, hoy"))
    );
    assert_eq!(wait_message(&mut phone_events, customer).await.text.as_deref(), Some("Sí, hoy"));
    let (status, body) = rest.fetch(&app, "POST", "/api/v1/whatsapp/send", ANA, Some(json!({"to": customer}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("MISSING_FIELD")));

    // History, newest first, both ways; and one contact's.
    let (status, body) = rest.fetch(&app, "GET", "/api/v1/whatsapp/messages?clientId=%2B51987000401", ANA, None).await;
    assert_eq!(status, 200, "{body}");
    assert_documented(&doc, "get", "/api/v1/whatsapp/messages", 200, &body);
    let directions: Vec<&str> =
        body["messages"].as_array().unwrap().iter().filter_map(|m| m["direction"].as_str()).collect();
    assert_eq!(directions, ["outbound", "inbound"], "{body}");

    // Beto heard nothing of Ana: asking for his own QR, the next thing he hears is his.
    let (_, body) = rest.fetch(&app, "POST", "/api/v1/whatsapp/connect", BETO, None).await;
    let beto_code = body["qrCode"].as_str().expect("Beto's QR").to_owned();
    loop {
        let report = beto.next().await;
        let args = &report["args"][0];
        match report["event"].as_str() {
            Some("whatsapp_qr_generated") if args["qrCode"] == beto_code.as_str() => break,
            Some("whatsapp_status_change") if args["status"] == "connecting" || args["status"] == "qr_ready" => {}
            _ => panic!("Beto heard something not his: {report}"),
        }
    }

    // `POST /disconnect` logs the number out, and says so on the socket.
    let (status, body) = rest.fetch(&app, "POST", "/api/v1/whatsapp/disconnect", ANA, None).await;
    assert_eq!((status, &body), (200, &json!({"success": true, "status": "logged_out"})));
    assert_documented(&doc, "post", "/api/v1/whatsapp/disconnect", 200, &body);
    loop {
        let args = ana.event("whatsapp_status_change").await;
        if args[0]["status"] == "logged_out" {
            break;
        }
    }

    // Shutdown closes the sockets (after what the session does meanwhile).
    app.stop().await;
    for sio in [&mut ana, &mut beto] {
        loop {
            let report = sio.next().await;
            if report["type"] == "disconnect" {
                break;
            }
            assert!(report["event"].as_str().is_some_and(|e| e.starts_with("whatsapp_")), "{report}");
        }
    }
    fake.shutdown().await;
}

#[tokio::test]
async fn without_compat_api_there_is_no_socket_io_and_no_seed_routes() {
    let fake = fake().await;
    let dir = temp_dir();
    let app = spawn(&fake, &dir, &[]).await;
    for (method, path) in [
        ("GET", "/socket.io/?EIO=4&transport=polling"),
        ("GET", "/api/whatsapp/qr"),
        ("GET", "/api/whatsapp/get_conversations"),
        ("POST", "/api/v1/whatsapp/connect"),
        ("GET", "/api/v1/whatsapp/status"),
    ] {
        let (status, body) = app.request(method, path, Some(ANA), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("NOT_FOUND")), "{method} {path}");
    }
    let mut sio = Sio::connect(&app, json!({"auth": {"token": ANA}})).await;
    assert_eq!(sio.next().await["type"], "connect_error");
    app.stop().await;

    // One dialect does not bring the other's routes; its own are documented under `compat`.
    let origin = "http://localhost:5173";
    let app = spawn(&fake, &dir, &[("COMPAT_API", "seed004"), ("CORS_ALLOWED_ORIGINS", origin)]).await;
    let (status, _) = app.request("GET", "/api/whatsapp/qr", Some(ANA), None).await;
    assert_eq!(status, 404);
    // A browser on an allowed origin may poll (seed 004's `io()` starts with long polling).
    let (status, headers, _) =
        app.request_with("GET", "/socket.io/?EIO=4&transport=polling", None, None, &[("Origin", origin)]).await;
    let allowed = headers.iter().find(|(k, _)| k == "access-control-allow-origin").map(|(_, v)| v.as_str());
    assert_eq!((status, allowed), (200, Some(origin)));
    let (_, doc) = app.request("GET", "/openapi.json", None, None).await;
    let status = &doc["paths"]["/api/v1/whatsapp/status"]["get"];
    assert_eq!(status["tags"], json!(["compat"]), "{status}");
    let params: Vec<&str> = doc["paths"]["/api/v1/whatsapp/messages"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(params, ["limit", "clientId"], "as the route reads them");
    assert!(doc["paths"]["/api/whatsapp/qr"].is_null());
    app.stop().await;
    fake.shutdown().await;
}
