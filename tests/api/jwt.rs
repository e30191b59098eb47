//! Your users' own JWTs (seeds 003 and 004): a user's token creates its session on first use,
//! links it, sends through it and sees nothing else; every way a token is refused has its own
//! 401 code; RS256/ES256 keys come from a PEM file or a JWK set served here on loopback, whose
//! rotation is picked up.
//!
//! The keys under `tests/fixtures/jwt/` are test-only keys, made for these tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::support::*;

const SECRET: &str = "a-supabase-legacy-jwt-secret-for-tests-0123456789";
const ISSUER: &str = "https://proyecto.supabase.co/auth/v1";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt").join(name)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture key")
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// A Supabase-like access token's claims for `sub`, valid for ten minutes.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "aud": "authenticated", "iss": ISSUER, "role": "authenticated", "iat": now(), "exp": now() + 600})
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signed")
}

fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, None, claims, &secret_key(SECRET.as_bytes()))
}

fn secret_key(secret: &[u8]) -> EncodingKey {
    EncodingKey::from_secret(secret).expect("HMAC key")
}

fn rsa(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&pem(name)).expect("RSA key")
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(&pem("test-only-ec-p256.key.pem")).expect("EC key")
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

async fn spawn(fake: &fake_whatsapp::FakeWhatsApp, extra: &[(&str, &str)]) -> TestApp {
    TestApp::spawn_with(config(fake, &temp_dir(), extra)).await
}

/// Links `session` through `/ws/session/{id}` with the user's JWT as the `bearer.` subprotocol,
/// scanning its QR as `phone`.
async fn link_as_user(app: &TestApp, fake: &fake_whatsapp::FakeWhatsApp, session: &str, jwt: &str, phone: &str) {
    let mut request = format!("ws://{}/ws/session/{session}", app.addr).into_client_request().expect("request");
    request.headers_mut().insert("Sec-WebSocket-Protocol", format!("bearer.{jwt}").parse().expect("header"));
    let (socket, response) = tokio_tungstenite::connect_async(request).await.expect("the user's socket opens");
    assert_eq!(response.headers()["sec-websocket-protocol"], format!("bearer.{jwt}"));
    let mut ws = Ws { socket };
    ws.expect("status", "initializing").await;
    let qr = ws.next_qr().await;
    fake.admin().scan(&qr, phone).await.expect("scan");
    loop {
        match ws.next().await {
            Got::Frame(e, d) if e == "status" && d == "connected" => break,
            Got::Frame(..) => continue,
            other => panic!("expected connected, got {other:?}"),
        }
    }
    assert_eq!(ws.next().await, Got::Closed(Some(1000)));
}

/// The status of a WebSocket handshake refused with `token` in the query.
async fn ws_refusal(app: &TestApp, session: &str, token: &str) -> u16 {
    let url = format!("ws://{}/ws/session/{session}?token={token}", app.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        other => panic!("expected a refused handshake, got {:?}", other.map(|(_, r)| r.status())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_jwt_creates_links_and_drives_only_its_own_session() {
    let fake = fake().await;
    let app = spawn(&fake, &[("JWT_SECRET", SECRET), ("JWT_ISSUER", ISSUER), ("JWT_AUDIENCE", "authenticated")]).await;
    let ana_id = "0b7c6a52-9d1e-4f5b-8a3e-2c4d6e8f0a1b";
    let ana = hs256(&claims(ana_id));
    let (s, _) = app.request("GET", &format!("/api/sessions/{ana_id}"), Some(TOKEN), None).await;
    assert_eq!(s, 404, "nothing exists before the user's first request");

    // First use: reading its session creates it, as POST /api/sessions would.
    let (s, session) = app.request("GET", &format!("/api/sessions/{ana_id}"), Some(&ana), None).await;
    assert_eq!((s, session["sessionId"].as_str()), (200, Some(ana_id)), "{session}");
    let (s, list) = app.request("GET", "/api/sessions", Some(&ana), None).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> =
        list["sessions"].as_array().expect("list").iter().filter_map(|s| s["sessionId"].as_str()).collect();
    assert_eq!(ids, [ana_id]);
    let config = stored_registry(app.dir.parent().expect("dir")).await;
    assert!(config.contains(ana_id), "kept in the registry: {config}");

    // Another user's first request lists its own session only.
    let beto_sub = "beto@example.com";
    let beto = hs256(&claims(beto_sub));
    let (s, list) = app.request("GET", "/api/sessions", Some(&beto), None).await;
    assert_eq!(s, 200);
    let beto_id = list["sessions"][0]["sessionId"].as_str().expect("beto's session").to_owned();
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(1));
    assert!(beto_id.starts_with("beto_example_com--"), "{beto_id}");

    // The user links its number with its own token, and sends.
    link_as_user(&app, &fake, ana_id, &ana, "51900000090").await;
    let mut events = fake.subscribe();
    let text = json!({"to": "51987000090", "type": "text", "text": "hola desde mi app"});
    let (s, sent) =
        app.request("POST", &format!("/api/sessions/{ana_id}/messages"), Some(&ana), Some(text.to_string())).await;
    assert_eq!(s, 202, "{sent}");
    let got = wait_message(&mut events, "51987000090").await;
    assert_eq!(
        (got.id.as_str(), got.text.as_deref()),
        (sent["messageId"].as_str().expect("id"), Some("hola desde mi app"))
    );
    let (s, record) = app.request("GET", &format!("/api/messages/{}", got.id), Some(&ana), None).await;
    assert_eq!((s, record["sessionId"].as_str()), (200, Some(ana_id)));

    // Nothing of another session: not beto's, not the admin's.
    let (s, _) =
        app.request("POST", "/api/sessions", Some(TOKEN), Some(json!({"sessionId": "oficina"}).to_string())).await;
    assert_eq!(s, 201);
    let (_, pdf) = app.send_pdf("oficina", "51987000091", &pdf("oficina"), None).await;
    let office_message = pdf["messageId"].as_str().expect("queued");
    for (method, path, body) in [
        ("GET", format!("/api/sessions/{beto_id}"), None),
        ("GET", "/api/sessions/oficina".to_owned(), None),
        ("GET", "/api/sessions/oficina/qr".to_owned(), None),
        ("POST", "/api/sessions/oficina/messages".to_owned(), Some(text.to_string())),
        ("POST", "/api/sessions/oficina/logout".to_owned(), None),
        ("DELETE", "/api/sessions/oficina".to_owned(), None),
        ("POST", "/api/sessions".to_owned(), Some(json!({"sessionId": "mia"}).to_string())),
        ("GET", "/api/webhooks".to_owned(), None),
    ] {
        let (s, answer) = app.request(method, &path, Some(&ana), body).await;
        assert_eq!((s, code(&answer)), (403, "FORBIDDEN"), "{method} {path}: {answer}");
    }
    let (s, answer) = app.request("GET", &format!("/api/messages/{office_message}"), Some(&ana), None).await;
    assert_eq!((s, code(&answer)), (404, "MESSAGE_NOT_FOUND"), "another session's message is as unknown");
    assert_eq!(ws_refusal(&app, "oficina", &ana).await, 403);
    let (s, list) = app.request("GET", "/api/sessions", Some(&ana), None).await;
    assert_eq!((s, list["sessions"].as_array().map(Vec::len)), (200, Some(1)));
    let (s, session) = app.request("GET", "/api/sessions/oficina", Some(TOKEN), None).await;
    assert_eq!(
        (s, session["queue"]["pending"].as_u64()),
        (200, Some(1)),
        "the admin's session is untouched: {session}"
    );

    // Creating its session again is a conflict; the id defaults to its own.
    let (s, answer) = app.request("POST", "/api/sessions", Some(&ana), None).await;
    assert_eq!((s, code(&answer)), (409, "SESSION_EXISTS"), "{answer}");
    app.stop().await;
    fake.shutdown().await;
}

/// `{"alg":"none"}` and the claims, unsigned.
fn unsigned(claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(claims))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_jwt_has_its_own_401_code_and_counts_as_a_failed_authentication() {
    let fake = fake().await;
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims("ana");
        change(&mut c);
        c
    };
    let cases: Vec<(&str, String)> = vec![
        ("TOKEN_EXPIRED", hs256(&with(&|c| c["exp"] = json!(now() - 3600)))),
        ("TOKEN_NOT_YET_VALID", hs256(&with(&|c| c["nbf"] = json!(now() + 3600)))),
        ("TOKEN_ALGORITHM", unsigned(&claims("ana"))),
        ("TOKEN_ALGORITHM", sign(Algorithm::RS256, None, &claims("ana"), &rsa("test-only-rsa-a.key.pem"))),
        (
            "TOKEN_SIGNATURE",
            sign(Algorithm::HS256, None, &claims("ana"), &secret_key(b"not-our-secret-but-just-as-long-0123456789")),
        ),
        ("TOKEN_ISSUER", hs256(&with(&|c| c["iss"] = json!("https://otro.supabase.co/auth/v1")))),
        ("TOKEN_AUDIENCE", hs256(&with(&|c| c["aud"] = json!("anon")))),
        (
            "TOKEN_CLAIM_MISSING",
            hs256(&with(&|c| {
                c.as_object_mut().expect("claims").remove("sub");
            })),
        ),
        ("TOKEN_CLAIM_MISSING", hs256(&with(&|c| c["sub"] = json!("")))),
        (
            "TOKEN_CLAIM_MISSING",
            hs256(&with(&|c| {
                c.as_object_mut().expect("claims").remove("exp");
            })),
        ),
        ("TOKEN_MALFORMED", "eyJub3QtanNvbg.eyJzdWIiOiJhbmEifQ.c2ln".to_owned()),
    ];
    let limit = (cases.len() + 1).to_string();
    let app = spawn(
        &fake,
        &[
            ("JWT_SECRET", SECRET),
            ("JWT_ISSUER", ISSUER),
            ("JWT_AUDIENCE", "authenticated"),
            ("AUTH_FAILURES_PER_MINUTE", &limit),
        ],
    )
    .await;
    for (expected, token) in &cases {
        let (s, headers, answer) = app.request_with("GET", "/api/sessions", Some(token), None, &[]).await;
        assert_eq!((s, code(&answer)), (401, *expected), "{answer}");
        let challenge = headers.iter().find(|(k, _)| k == "www-authenticate").map(|(_, v)| v.as_str());
        assert_eq!(challenge, Some("Bearer error=\"invalid_token\""));
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains(SECRET) && !message.contains("BEGIN"), "nothing of the keys: {message}");
    }
    // The same on a WebSocket handshake.
    assert_eq!(ws_refusal(&app, "ana", &cases[0].1).await, 401);
    // Past AUTH_FAILURES_PER_MINUTE, this address is told to wait, valid token or not being known.
    let (s, answer) = app.request("GET", "/api/sessions", Some(&cases[0].1), None).await;
    assert_eq!((s, code(&answer)), (429, "TOO_MANY_AUTH_FAILURES"), "{answer}");
    // A valid user's token still passes.
    let (s, _) = app.request("GET", "/api/sessions", Some(&hs256(&claims("ana"))), None).await;
    assert_eq!(s, 200);
    app.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_from_a_public_key_file_and_no_algorithm_confusion() {
    let fake = fake().await;
    let public = fixture("test-only-rsa-a.pub.pem");
    let app = spawn(&fake, &[("JWT_PUBLIC_KEY_FILE", public.to_str().expect("path"))]).await;
    let good = sign(Algorithm::RS256, Some("any"), &claims("carla"), &rsa("test-only-rsa-a.key.pem"));
    let (s, session) = app.request("GET", "/api/sessions/carla", Some(&good), None).await;
    assert_eq!((s, session["sessionId"].as_str()), (200, Some("carla")), "{session}");
    // PS256 with the same RSA key is the same family.
    let pss = sign(Algorithm::PS256, None, &claims("carla"), &rsa("test-only-rsa-a.key.pem"));
    assert_eq!(app.request("GET", "/api/sessions/carla", Some(&pss), None).await.0, 200);

    let refused = [
        ("TOKEN_SIGNATURE", sign(Algorithm::RS256, None, &claims("carla"), &rsa("test-only-rsa-b.key.pem"))),
        // The classic confusion: HS256 keyed with the public key's own bytes.
        (
            "TOKEN_ALGORITHM",
            sign(Algorithm::HS256, None, &claims("carla"), &secret_key(&pem("test-only-rsa-a.pub.pem"))),
        ),
        ("TOKEN_ALGORITHM", sign(Algorithm::ES256, None, &claims("carla"), &ec())),
        ("TOKEN_ALGORITHM", unsigned(&claims("carla"))),
    ];
    for (expected, token) in &refused {
        let (s, answer) = app.request("GET", "/api/sessions/carla", Some(token), None).await;
        assert_eq!((s, code(&answer)), (401, *expected), "{answer}");
    }
    app.stop().await;

    let public = fixture("test-only-ec-p256.pub.pem");
    let app = spawn(&fake, &[("JWT_PUBLIC_KEY_FILE", public.to_str().expect("path"))]).await;
    let good = sign(Algorithm::ES256, None, &claims("dario"), &ec());
    assert_eq!(app.request("GET", "/api/sessions/dario", Some(&good), None).await.0, 200);
    let rs = sign(Algorithm::RS256, None, &claims("dario"), &rsa("test-only-rsa-a.key.pem"));
    let (s, answer) = app.request("GET", "/api/sessions/dario", Some(&rs), None).await;
    assert_eq!((s, code(&answer)), (401, "TOKEN_ALGORITHM"));
    app.stop().await;

    // A private key given as the public one stops the start with a line that says so.
    let private = fixture("test-only-rsa-a.key.pem");
    let config = config(&fake, &temp_dir(), &[("JWT_PUBLIC_KEY_FILE", private.to_str().expect("path"))]);
    let error = whatsapp_gateway::App::build(config).await.err().expect("refused").to_string();
    assert!(error.contains("holds a private key") && !error.contains("BEGIN"), "{error}");
    fake.shutdown().await;
}

/// A JWK set served on loopback: what it serves can change, and it counts the fetches.
struct JwksServer {
    url: String,
    set: Arc<Mutex<JwkSet>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(set: JwkSet) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/auth/v1/.well-known/jwks.json", listener.local_addr().expect("addr"));
        let set = Arc::new(Mutex::new(set));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (set.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let body = serde_json::to_string(&*served.lock().unwrap()).expect("JSON");
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        JwksServer { url, set, fetches, task }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).expect("public JWK");
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_are_fetched_once_kept_and_a_rotated_kid_is_picked_up() {
    let fake = fake().await;
    let (key_a, key_b) = (rsa("test-only-rsa-a.key.pem"), rsa("test-only-rsa-b.key.pem"));
    let jwks = JwksServer::start(JwkSet { keys: vec![jwk(&key_a, Algorithm::RS256, "clave-a")] }).await;
    let app = spawn(&fake, &[("JWT_JWKS_URL", &jwks.url), ("JWT_JWKS_MIN_REFRESH_SECS", "0")]).await;
    assert_eq!(jwks.fetches(), 0, "fetched when first needed");

    let ana = sign(Algorithm::RS256, Some("clave-a"), &claims("ana"), &key_a);
    for _ in 0..3 {
        assert_eq!(app.request("GET", "/api/sessions/ana", Some(&ana), None).await.0, 200);
    }
    assert_eq!(jwks.fetches(), 1, "kept between requests");

    // The provider rotates: key b (and an EC key) appear; a token naming b is accepted at once.
    jwks.set.lock().unwrap().keys =
        vec![jwk(&key_b, Algorithm::RS256, "clave-b"), jwk(&ec(), Algorithm::ES256, "clave-ec")];
    let beto = sign(Algorithm::RS256, Some("clave-b"), &claims("beto"), &key_b);
    let (s, answer) = app.request("GET", "/api/sessions/beto", Some(&beto), None).await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!(jwks.fetches(), 2);
    let carla = sign(Algorithm::ES256, Some("clave-ec"), &claims("carla"), &ec());
    assert_eq!(app.request("GET", "/api/sessions/carla", Some(&carla), None).await.0, 200);
    assert_eq!(jwks.fetches(), 2, "the EC key came with the same fetch");

    // Key a is gone from the set: its tokens are refused once the set no longer has it.
    let (s, answer) = app.request("GET", "/api/sessions/ana", Some(&ana), None).await;
    assert_eq!((s, code(&answer)), (401, "TOKEN_SIGNATURE"), "{answer}");
    // A token signed by b but claiming a's kid does not verify either.
    let liar = sign(Algorithm::RS256, Some("clave-a"), &claims("ana"), &key_b);
    assert_eq!(code(&app.request("GET", "/api/sessions/ana", Some(&liar), None).await.1), "TOKEN_SIGNATURE");
    app.stop().await;

    // With the floor, unknown kids do not make the gateway fetch again and again.
    let app = spawn(&fake, &[("JWT_JWKS_URL", &jwks.url), ("JWT_JWKS_MIN_REFRESH_SECS", "3600")]).await;
    let before = jwks.fetches();
    assert_eq!(app.request("GET", "/api/sessions/beto", Some(&beto), None).await.0, 200);
    for kid in ["x1", "x2", "x3", "x4"] {
        let unknown = sign(Algorithm::RS256, Some(kid), &claims("ana"), &key_a);
        assert_eq!(code(&app.request("GET", "/api/sessions/ana", Some(&unknown), None).await.1), "TOKEN_SIGNATURE");
    }
    assert_eq!(jwks.fetches(), before + 1, "one fetch, then the floor");
    app.stop().await;

    // No set could ever be fetched: 503, not the client's fault, and it says to retry.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = format!("http://{}/jwks.json", closed.local_addr().expect("addr"));
    drop(closed);
    let app = spawn(&fake, &[("JWT_JWKS_URL", &dead)]).await;
    let (s, headers, answer) = app.request_with("GET", "/api/sessions/ana", Some(&ana), None, &[]).await;
    assert_eq!((s, code(&answer)), (503, "TOKEN_KEYS_UNAVAILABLE"), "{answer}");
    assert!(headers.iter().any(|(k, v)| k == "retry-after" && v == "5"));
    app.stop().await;
    fake.shutdown().await;
}
