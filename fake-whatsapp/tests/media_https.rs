//! End-to-end tests of the fake media CDN over real TLS: a ureq agent that trusts only the
//! generated CA, and whatsapp-rust's own `UreqHttpClient` plus its media encryption.

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fake_whatsapp::media::{MediaServer, MediaStore};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

const AUTH: &str = "test-media-auth";

/// An agent trusting only the CA in `ca_pem` and returning non-2xx as responses.
fn agent_trusting(ca_pem: &[u8]) -> ureq::Agent {
    let ca = Certificate::from_pem(ca_pem).expect("CA PEM").to_owned();
    let tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![ca]))).build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

async fn post(agent: &ureq::Agent, url: String, body: Vec<u8>) -> Result<Reply, ureq::Error> {
    let agent = agent.clone();
    tokio::task::spawn_blocking(move || {
        let mut resp = agent
            .post(&url)
            .header("Content-Type", "application/octet-stream")
            .header("Origin", "https://web.whatsapp.com")
            .send(&body[..])?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(1 << 30).read_to_vec()?;
        Ok(Reply { status, body })
    })
    .await
    .expect("blocking task")
}

async fn get(agent: &ureq::Agent, url: String) -> Result<Reply, ureq::Error> {
    let agent = agent.clone();
    tokio::task::spawn_blocking(move || {
        let mut resp = agent.get(&url).call()?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(1 << 30).read_to_vec()?;
        Ok(Reply { status, body })
    })
    .await
    .expect("blocking task")
}

fn token_of(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

async fn start(ca_out: Option<std::path::PathBuf>) -> (MediaServer, MediaStore) {
    let store = MediaStore::new();
    let server = MediaServer::start(
        "127.0.0.1:0".parse().unwrap(),
        ca_out,
        AUTH.to_owned(),
        store.clone(),
        CancellationToken::new(),
    )
    .await
    .expect("media server starts");
    (server, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_download_and_errors_over_https() {
    let (server, store) = start(None).await;
    let host = server.host();
    assert!(host.starts_with("127.0.0.1:"), "{host}");
    assert_eq!(server.auth(), AUTH);
    let pem = std::fs::read(server.ca_file()).expect("CA file written");
    assert!(String::from_utf8_lossy(&pem).contains("BEGIN CERTIFICATE"));
    let agent = agent_trusting(&pem);

    // Upload.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let token = token_of(&data);
    let upload_url = format!("https://{host}/mms/document/{token}?auth={AUTH}&token={token}");
    let reply = post(&agent, upload_url.clone(), data.clone()).await.expect("upload");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let json = reply.json().expect("JSON upload answer");
    let direct_path = json["direct_path"].as_str().expect("direct_path").to_owned();
    assert!(direct_path.starts_with("/v/") && !direct_path.contains('?'), "{direct_path}");
    assert_eq!(json["url"].as_str(), Some(format!("https://{host}{direct_path}").as_str()));
    let blob = store.get(&direct_path).expect("blob stored");
    assert_eq!(blob.media_type, "document");
    assert_eq!(blob.token(), token);

    // Download, exactly as the client builds the URL.
    let download_url = format!("https://{host}{direct_path}?auth={AUTH}&token={token}");
    let reply = get(&agent, download_url).await.expect("download");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, data);
    // Without auth (WA Web style) the token alone is enough.
    let reply = get(&agent, format!("https://{host}{direct_path}?token={token}")).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, data);

    // Wrong token: sha256(body) does not match.
    let other = token_of(b"something else");
    let reply = post(&agent, format!("https://{host}/mms/document/{other}?auth={AUTH}&token={other}"), data.clone())
        .await
        .unwrap();
    assert_eq!(reply.status, 400);
    assert!(reply.json().is_some_and(|j| j["error"].is_string()));

    // Wrong auth: 401 on upload and download.
    let reply = post(&agent, format!("https://{host}/mms/document/{token}?auth=nope&token={token}"), data.clone())
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    let reply = get(&agent, format!("https://{host}{direct_path}?auth=nope&token={token}")).await.unwrap();
    assert_eq!(reply.status, 401);

    // Unknown direct path and a wrong download token.
    let reply = get(&agent, format!("https://{host}/v/fake/404.enc?auth={AUTH}&token={token}")).await.unwrap();
    assert_eq!(reply.status, 404);
    let reply = get(&agent, format!("https://{host}{direct_path}?auth={AUTH}&token={other}")).await.unwrap();
    assert_eq!(reply.status, 404);

    // Resume probe (the client reads 4xx or non-JSON as "not found, upload fully").
    let reply = post(&agent, format!("{upload_url}&resume=1"), Vec::new()).await.unwrap();
    let says_resume = reply.status < 400 && reply.json().is_some_and(|j| j.get("resume").is_some());
    assert!(!says_resume, "status {} body {:?}", reply.status, reply.json());
    assert!(reply.status >= 400);

    // Other methods.
    let agent2 = agent.clone();
    let url = format!("https://{host}{direct_path}");
    let status = tokio::task::spawn_blocking(move || agent2.delete(&url).call().map(|r| r.status().as_u16()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 405);

    // A later auth rotation makes the old auth fail (the client then refreshes media_conn).
    server.set_auth("rotated");
    let reply = post(&agent, upload_url.clone(), data.clone()).await.unwrap();
    assert_eq!(reply.status, 401);
    let rotated = format!("https://{host}/mms/image/{token}?auth=rotated&token={token}");
    let reply = post(&agent, rotated, data.clone()).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(store.len(), 2);

    let ca_file = server.ca_file().to_owned();
    tokio::time::timeout(Duration::from_secs(10), server.shutdown()).await.expect("shutdown finishes");
    assert!(!ca_file.exists(), "temp CA file removed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_untrusted_clients_do_not_kill_the_server() {
    let dir = std::env::temp_dir().join(format!("fake-wa-media-test-{}", std::process::id()));
    let ca_path = dir.join("nested").join("ca.pem");
    let (server, _store) = start(Some(ca_path.clone())).await;
    assert_eq!(server.ca_file(), ca_path.as_path());
    let host = server.host();
    let agent = agent_trusting(server.ca_pem().as_bytes());

    // Plain-TCP garbage: the server just closes that connection.
    let addr = server.addr();
    tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff garbage \x16\x03\x01");
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf);
    })
    .await
    .unwrap();
    // A connection that sends nothing and just closes.
    drop(std::net::TcpStream::connect(addr).unwrap());

    // A client trusting a different CA fails its handshake, and the server survives it.
    let (other_server, _) = start(None).await;
    let wrong_agent = agent_trusting(other_server.ca_pem().as_bytes());
    let data = b"hello media".to_vec();
    let token = token_of(&data);
    let url = format!("https://{host}/mms/image/{token}?auth={AUTH}&token={token}");
    assert!(post(&wrong_agent, url.clone(), data.clone()).await.is_err(), "untrusted CA must fail");
    other_server.shutdown().await;

    // A later request still works.
    let reply = post(&agent, url, data.clone()).await.expect("server still alive");
    assert_eq!(reply.status, 200);
    let direct_path = reply.json().unwrap()["direct_path"].as_str().unwrap().to_owned();
    let reply = get(&agent, format!("https://{host}{direct_path}?auth={AUTH}&token={token}")).await.unwrap();
    assert_eq!(reply.body, data);

    // Also over "localhost" (DNS SAN).
    let port = server.addr().port();
    let reply = get(&agent, format!("https://localhost:{port}{direct_path}?auth={AUTH}&token={token}")).await.unwrap();
    assert_eq!(reply.status, 200);

    server.shutdown().await;
    assert!(ca_path.exists(), "a caller-chosen CA file is kept");
    let _ = std::fs::remove_dir_all(&dir);
    // After shutdown nothing listens any more.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// The real client stack: wacore's media encryption, whatsapp-rust's `UreqHttpClient` built
/// with `with_agent`, its URL formats, and its decryption of the downloaded bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_rust_http_client_roundtrip() {
    use whatsapp_rust::http::{HttpClient as _, HttpRequest, UreqHttpClient};
    use whatsapp_rust::wacore::download::{DownloadUtils, MediaType};
    use whatsapp_rust::wacore::upload::encrypt_media;

    let (server, _store) = start(None).await;
    let host = server.host();
    let ca = Certificate::from_pem(server.ca_pem().as_bytes()).unwrap().to_owned();
    let tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![ca]))).build();
    let http = UreqHttpClient::with_agent(ureq::Agent::config_builder().tls_config(tls).build().into());

    let plaintext = b"%PDF-1.4 fake pdf for the media test".repeat(1000);
    let enc = encrypt_media(&plaintext, MediaType::Document).unwrap();
    let token = URL_SAFE_NO_PAD.encode(enc.file_enc_sha256);
    let upload_path = MediaType::Document.upload_path();
    let auth = server.auth();

    // The resume probe (sent for big files) must come back as Ok(non-2xx).
    let probe = http
        .execute(HttpRequest::post(format!("https://{host}{upload_path}/{token}?auth={auth}&token={token}&resume=1")))
        .await
        .unwrap();
    assert!(probe.status_code >= 400);

    // Wrong auth is an Ok(401) (what triggers the client's media_conn refresh).
    let resp = http
        .execute(
            HttpRequest::post(format!("https://{host}{upload_path}/{token}?auth=stale&token={token}"))
                .with_header("Content-Type", "application/octet-stream")
                .with_body(enc.data_to_upload.clone()),
        )
        .await
        .unwrap();
    assert_eq!(resp.status_code, 401);

    let resp = http
        .execute(
            HttpRequest::post(format!("https://{host}{upload_path}/{token}?auth={auth}&token={token}"))
                .with_header("Content-Type", "application/octet-stream")
                .with_header("Origin", "https://web.whatsapp.com")
                .with_body(enc.data_to_upload.clone()),
        )
        .await
        .unwrap();
    assert_eq!(resp.status_code, 200);
    let json: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    let direct_path = json["direct_path"].as_str().unwrap();

    let resp =
        http.execute(HttpRequest::get(format!("https://{host}{direct_path}?auth={auth}&token={token}"))).await.unwrap();
    assert_eq!(resp.status_code, 200);
    let decrypted = DownloadUtils::verify_and_decrypt(&resp.body, &enc.media_key, MediaType::Document).unwrap();
    assert_eq!(decrypted, plaintext);

    server.shutdown().await;
}
