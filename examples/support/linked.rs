//! A gateway with one session linked to an in-process fake WhatsApp server: what the receiving
//! benchmarks share.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fake_whatsapp::{FakeConfig, FakeWhatsApp};
use futures_util::StreamExt as _;
use tokio_tungstenite::tungstenite::Message;
use whatsapp_gateway::{App, Config};

use super::TOKEN;

/// The gateway, its fake server, and the way to stop them.
pub struct Linked {
    pub fake: FakeWhatsApp,
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), whatsapp_gateway::app::StartError>>,
}

/// Starts a fake server and a gateway (state in `dir`, settings `extra` on top), and links the
/// session `bench` as the number `phone`.
pub async fn start(dir: &Path, phone: &str, extra: &[(&str, String)]) -> anyhow::Result<Linked> {
    let fake = FakeWhatsApp::start(FakeConfig::default()).await?;
    let mut env: Vec<(String, String)> = [
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", "0".into()),
        ("API_STATIC_TOKEN", TOKEN.into()),
        ("SESSIONS_DIR", dir.join("sessions").display().to_string()),
        ("SESSIONS_CONFIG", dir.join("sessions.config.json").display().to_string()),
        ("DATA_DIR", dir.join("data").display().to_string()),
        ("WHATSAPP_URL", fake.ws_url()),
        ("WHATSAPP_VERSION", "2.3000.1".into()),
        ("WHATSAPP_CA_FILE", fake.ca_file().display().to_string()),
        ("LOG_LEVEL", "warn".into()),
        ("RATE_LIMIT_PER_SECOND", "0".into()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let app = App::build(Config::from_sources(env, None)?).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/session/bench?token={TOKEN}")).await?;
    let mut scanned = false;
    loop {
        let Some(Ok(Message::Text(text))) = tokio::time::timeout(Duration::from_secs(60), ws.next()).await? else {
            continue;
        };
        let frame: serde_json::Value = serde_json::from_str(&text)?;
        match (frame["event"].as_str(), frame["data"].as_str()) {
            (Some("qr"), Some(qr)) if !scanned => {
                fake.admin().scan(qr, phone).await?;
                scanned = true;
            }
            (Some("status"), Some("connected")) => break,
            _ => {}
        }
    }
    Ok(Linked { fake, addr, stop, server })
}

impl Linked {
    /// Stops the gateway, then the fake server.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.server.await??;
        self.fake.shutdown().await;
        Ok(())
    }
}
