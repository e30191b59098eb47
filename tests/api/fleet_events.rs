//! `/ws/events` on any gateway of a fleet: the message events of a number another gateway runs
//! reach it through Postgres, each once, and nothing comes back to its gateway twice.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::fleet::spawn_member_with_ttl;
use crate::support::postgres::Schema;
use crate::support::*;

/// Leases far longer than a test: every number stays on the gateway that linked it.
const TTL_SECS: &str = "60";

/// After the last awaited event, how long a socket must stay quiet for a copy not to be coming.
const QUIET: Duration = Duration::from_millis(1500);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `/ws/events` socket on `app` for the message events of `session`, with every event it has
/// delivered.
struct Events {
    socket: Socket,
    seen: Vec<Value>,
}

impl Events {
    async fn open(app: &TestApp, session: &str) -> Events {
        let url = format!(
            "ws://{}/ws/events?token={TOKEN}&types=message.received,message.status&sessions={session}",
            app.addr
        );
        let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("events socket");
        Events { socket, seen: Vec::new() }
    }

    /// The next event, or `None` when none comes within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(wait, self.socket.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let event: Value = serde_json::from_str(&text).expect("a JSON frame");
                    assert_ne!(event["event"], "lagged", "{event}");
                    self.seen.push(event.clone());
                    return Some(event);
                }
                Ok(Some(Ok(_))) => continue,
                Ok(other) => panic!("the events socket ended: {other:?}"),
            }
        }
    }

    /// The first event delivered so far or from now on that `pick` says yes to (bounded by
    /// [`WAIT`]).
    async fn until(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        if let Some(event) = self.seen.iter().find(|e| pick(e)) {
            return event.clone();
        }
        let found = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(event) = self.next_within(WAIT).await
                    && pick(&event)
                {
                    return event;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("never saw {what}; saw {:?}", self.seen))
    }

    /// Reads until nothing more comes for [`QUIET`].
    async fn drain(&mut self) {
        while self.next_within(QUIET).await.is_some() {}
    }

    /// How many times each (event, message id, status) was delivered.
    fn counts(&self) -> HashMap<(String, String, String), usize> {
        let mut counts = HashMap::new();
        for event in &self.seen {
            let key = (
                event["event"].as_str().unwrap_or_default().to_owned(),
                event["data"]["messageId"].as_str().unwrap_or_default().to_owned(),
                event["data"]["status"].as_str().unwrap_or_default().to_owned(),
            );
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    /// Every event it delivered came once (by id, and by what it says).
    fn each_once(&self, gateway: &str) {
        let mut ids = HashMap::new();
        for event in &self.seen {
            *ids.entry(event["id"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
        }
        assert!(ids.values().all(|n| *n == 1), "an event id came twice on {gateway}: {:?}", self.seen);
        let twice: Vec<_> = self.counts().into_iter().filter(|(_, n)| *n > 1).collect();
        assert!(twice.is_empty(), "on {gateway}, twice: {twice:?}; saw {:?}", self.seen);
    }
}

fn is_received(event: &Value, message_id: &str) -> bool {
    event["event"] == "message.received" && event["data"]["messageId"] == message_id
}

fn is_status(event: &Value, message_id: &str, status: &str) -> bool {
    event["event"] == "message.status" && event["data"]["messageId"] == message_id && event["data"]["status"] == status
}

/// Gateway A runs `session` (linked as `phone`), gateway B shows it.
async fn two_gateways(fake: &fake_whatsapp::FakeWhatsApp, url: &str, session: &str, phone: &str) -> (TestApp, TestApp) {
    let a = spawn_member_with_ttl(fake, url, "gw-a", TTL_SECS).await;
    link(&a, fake, session, phone).await;
    let b = spawn_member_with_ttl(fake, url, "gw-b", TTL_SECS).await;
    wait_session(&b, session, "shown as A runs it", |s| s["status"] == "connected" && s["gateway"] == "gw-a").await;
    (a, b)
}

/// Sends a text through `app`; its message id.
async fn send_text(app: &TestApp, session: &str, to: &str, text: &str) -> String {
    let body = json!({"to": to, "type": "text", "text": text}).to_string();
    let (status, answer) =
        app.request("POST", &format!("/api/sessions/{session}/messages"), Some(TOKEN), Some(body)).await;
    assert_eq!(status, 202, "{answer}");
    answer["messageId"].as_str().expect("messageId").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_on_another_gateway_sees_each_message_event_of_a_number_once() {
    let fake = fake().await;
    let schema = Schema::fresh().await;
    let (number, customer) = ("51900000110", "51987000110");
    let (a, b) = two_gateways(&fake, &schema.url(), "avisos", number).await;

    // Only B has a socket: A records its message.status events because B asked the fleet for
    // them. Texts through A until one's status reaches B: from then on A records them.
    let mut on_b = Events::open(&b, "avisos").await;
    tokio::time::timeout(WAIT, async {
        loop {
            let probe = send_text(&a, "avisos", customer, "¿llega el aviso?").await;
            let status = async {
                loop {
                    if let Some(event) = on_b.next_within(WAIT).await
                        && event["event"] == "message.status"
                        && event["data"]["messageId"] == probe.as_str()
                    {
                        return;
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(2), status).await.is_ok() {
                return;
            }
        }
    })
    .await
    .expect("A's message.status events reach B once B's socket wants them");

    // What A's number receives reaches B.
    let inbound = fake.admin().send_text(customer, number, "Hola, ¿siguen abiertos?").await.expect("text");
    let pushed = on_b.until("the received text", |e| is_received(e, &inbound)).await;
    assert_eq!(
        (pushed["sessionId"].as_str(), pushed["data"]["text"].as_str()),
        (Some("avisos"), Some("Hola, ¿siguen abiertos?"))
    );

    // A PDF sent through A: its statuses reach B.
    let mut phone = fake.subscribe();
    let (status, body) = a.send_pdf("avisos", customer, &pdf("factura por A"), None).await;
    assert_eq!(status, 202, "{body}");
    let pdf_id = body["messageId"].as_str().expect("messageId").to_owned();
    wait_message(&mut phone, customer).await;
    // `sent` may be skipped: the phone's receipt can be recorded before the server's ack is.
    on_b.until("the PDF delivered", |e| is_status(e, &pdf_id, "delivered")).await;

    // Then a last text in: once it is there and the socket is quiet, nothing is on its way.
    let last = fake.admin().send_text(customer, number, "gracias").await.expect("text");
    on_b.until("the last text", |e| is_received(e, &last)).await;
    on_b.drain().await;
    let counts = on_b.counts();
    for (what, key) in [
        ("the received text", ("message.received", inbound.as_str(), "")),
        ("queued", ("message.status", pdf_id.as_str(), "queued")),
        ("delivered", ("message.status", pdf_id.as_str(), "delivered")),
    ] {
        let key = (key.0.to_owned(), key.1.to_owned(), key.2.to_owned());
        assert_eq!(counts.get(&key), Some(&1), "{what}: {:?}", on_b.seen);
    }
    // Every other status of the PDF (sending, sent) at most once, like everything else.
    on_b.each_once("B");

    b.stop().await;
    a.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_not_echoed_back_and_either_gateways_handing_over_is_shown_once_on_each() {
    let fake = fake().await;
    let schema = Schema::fresh().await;
    let (number, customer) = ("51900000111", "51987000111");
    let (a, b) = two_gateways(&fake, &schema.url(), "ecos", number).await;
    let mut on_a = Events::open(&a, "ecos").await;
    let mut on_b = Events::open(&b, "ecos").await;

    // PDFs accepted through B and through A, sent by A: either gateway may hand a status over
    // (both drain the shared journal's events), and each shows what the other sent on.
    let mut phone = fake.subscribe();
    let mut sent = Vec::new();
    for (n, through) in [&b, &a].into_iter().cycle().take(8).enumerate() {
        let (status, body) = through.send_pdf("ecos", customer, &pdf(&format!("eco {n}")), None).await;
        assert_eq!(status, 202, "{body}");
        sent.push(body["messageId"].as_str().expect("messageId").to_owned());
    }
    for _ in &sent {
        wait_message(&mut phone, customer).await;
    }
    let inbound = fake.admin().send_text(customer, number, "¿me escuchan dos veces?").await.expect("text");
    for (events, gateway) in [(&mut on_a, "A"), (&mut on_b, "B")] {
        for id in &sent {
            events.until(&format!("{id} delivered on {gateway}"), |e| is_status(e, id, "delivered")).await;
        }
        events.until(&format!("the received text on {gateway}"), |e| is_received(e, &inbound)).await;
    }

    let last = fake.admin().send_text(customer, number, "fin").await.expect("text");
    for (events, gateway) in [(&mut on_a, "A"), (&mut on_b, "B")] {
        events.until(&format!("the last text on {gateway}"), |e| is_received(e, &last)).await;
        events.drain().await;
        events.each_once(gateway);
        let counts = events.counts();
        for id in &sent {
            for status in ["queued", "delivered"] {
                let key = ("message.status".to_owned(), id.clone(), status.to_owned());
                assert_eq!(counts.get(&key), Some(&1), "{id} {status} on {gateway}: {:?}", events.seen);
            }
        }
        let key = ("message.received".to_owned(), inbound.clone(), String::new());
        assert_eq!(counts.get(&key), Some(&1), "the received text on {gateway}");
    }

    b.stop().await;
    a.stop().await;
    fake.shutdown().await;
}
