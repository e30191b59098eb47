//! Real whatsapp-rust clients driven against an in-process fake server.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use fake_whatsapp::{FakeConfig, FakeWhatsApp};
use tokio::sync::mpsc;
use whatsapp_rust::Client;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::http::UreqHttpClient;
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;

pub const WAIT: Duration = Duration::from_secs(20);

pub async fn fake() -> FakeWhatsApp {
    init_logs();
    FakeWhatsApp::start(FakeConfig::default()).await.expect("fake server starts")
}

pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    }
}

/// A ureq agent that trusts only the fake media server's CA.
pub fn http_client(fake: &FakeWhatsApp) -> UreqHttpClient {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let pem = std::fs::read(fake.ca_file()).expect("CA file readable");
    let ca = Certificate::from_pem(&pem).expect("CA PEM").to_owned();
    let tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![ca]))).build();
    let agent = ureq::Agent::new_with_config(
        ureq::config::Config::builder().tls_config(tls).http_status_as_error(false).build(),
    );
    UreqHttpClient::with_agent(agent)
}

pub struct TestClient {
    pub handle: BotHandle,
    pub client: Arc<Client>,
    pub events: mpsc::UnboundedReceiver<Arc<Event>>,
}

pub fn memory_backend() -> Arc<dyn Backend> {
    Arc::new(whatsapp_rust::wacore::store::InMemoryBackend::new())
}

/// Builds and spawns a real client pointed at the fake server.
pub async fn start_client(fake: &FakeWhatsApp, backend: Arc<dyn Backend>) -> TestClient {
    let (tx, events) = mpsc::unbounded_channel();
    let bot = Bot::builder()
        .with_backend_arc(backend)
        .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(fake.ws_url()))
        .with_http_client(http_client(fake))
        .with_version((2, 3000, 1))
        .skip_history_sync()
        .on_event(move |event, _client| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
            }
        })
        .build()
        .await
        .expect("bot builds");
    let handle = bot.spawn();
    let client = handle.client();
    TestClient { handle, client, events }
}

impl TestClient {
    /// Waits (bounded) for the first event `pick` accepts.
    pub async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap_or_else(|| panic!("event stream ended while waiting for {what}"));
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    }

    pub async fn next_qr(&mut self) -> String {
        self.wait_for("a QR code", |e| match e {
            Event::PairingQrCode(qr) => Some(qr.code.clone()),
            _ => None,
        })
        .await
    }

    /// The next QR with no deadline of its own (for paused-clock tests that bound it).
    pub async fn next_qr_unbounded(&mut self) -> String {
        loop {
            let event = self.events.recv().await.expect("event stream open");
            if let Event::PairingQrCode(qr) = &*event {
                return qr.code.clone();
            }
        }
    }

    pub async fn connected_unbounded(&mut self) {
        loop {
            let event = self.events.recv().await.expect("event stream open");
            if matches!(&*event, Event::Connected(_)) {
                return;
            }
        }
    }

    pub async fn connected(&mut self) {
        self.wait_for("Connected", |e| matches!(e, Event::Connected(_)).then_some(())).await
    }
}

/// Links a fresh client to `phone` by QR and waits for `Connected`.
pub async fn linked_client(fake: &FakeWhatsApp, phone: &str) -> (TestClient, fake_whatsapp::Linked) {
    linked_client_with(fake, phone, memory_backend()).await
}

pub async fn linked_client_with(
    fake: &FakeWhatsApp,
    phone: &str,
    backend: Arc<dyn Backend>,
) -> (TestClient, fake_whatsapp::Linked) {
    let mut client = start_client(fake, backend).await;
    let qr = client.next_qr().await;
    let linked = fake.admin().scan(&qr, phone).await.expect("scan links the device");
    client.connected().await;
    (client, linked)
}
