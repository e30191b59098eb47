//! One suite, every backend: what each store promises, checked against SQLite (in a temporary
//! folder) and against Postgres (in a schema of its own, see `postgres::testing`).

use std::sync::Arc;

use bytes::Bytes;

use std::time::Duration;

use super::journal::{Accepted, DeliveryStatus, IdempotencyKey, JournalError, JournalStore, NewMessage};
use super::{InboxStore, SessionRegistry, now_ms};
use crate::domain::{
    FileName, IncomingKind, IncomingMedia, IncomingMessage, MessageId, OutgoingContent, PdfDocument, PhoneNumber,
    SessionEntry, SessionId,
};

fn message(session: &str, id: &str, chat: &str, timestamp: u64) -> IncomingMessage {
    IncomingMessage {
        message_id: id.into(),
        session_id: session.into(),
        direction: "in".into(),
        chat: chat.into(),
        from: Some("51987654321".into()),
        from_lid: None,
        push_name: Some(format!("sender of {id}")),
        timestamp,
        kind: IncomingKind::Text,
        text: Some(format!("text of {id}")),
        caption: None,
        media: None,
        quoted_id: None,
        location: None,
        reaction: None,
        contact: None,
        summary: None,
    }
}

fn ids(messages: &[IncomingMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.message_id.as_str()).collect()
}

/// Waits until the millisecond clock has moved past `t`, so that what is stored next is newer.
async fn past(t: u64) {
    while now_ms() <= t {
        tokio::task::yield_now().await;
    }
}

async fn inbox_suite(inbox: Arc<dyn InboxStore>) {
    let shop = SessionId::parse("tienda").expect("id");
    let other = SessionId::parse("otra").expect("id");

    // Stored once per (session, message id); the same id in another session is another message.
    assert!(inbox.insert(&message("tienda", "a", "c1", 1)).await.expect("insert"));
    assert!(!inbox.insert(&message("tienda", "a", "c1", 1)).await.expect("again"), "a redelivery is stored once");
    assert!(inbox.insert(&message("otra", "a", "c9", 2)).await.expect("other session"));
    for (id, chat, ts) in [("b", "c1", 3), ("c", "c2", 4), ("d", "c1", 5), ("e", "c1", 6)] {
        assert!(inbox.insert(&message("tienda", id, chat, ts)).await.expect("insert"));
    }

    // Newest first, in pages that chain, per chat when asked.
    let first = inbox.list(&shop, None, 2, None).await.expect("list");
    assert_eq!(ids(&first.items), ["e", "d"]);
    let second = inbox.list(&shop, None, 2, first.next).await.expect("page 2");
    assert_eq!(ids(&second.items), ["c", "b"]);
    let last = inbox.list(&shop, None, 2, second.next).await.expect("page 3");
    assert_eq!(ids(&last.items), ["a"]);
    assert_eq!(last.next, None, "the last page says so");
    let c1 = inbox.list(&shop, Some("c1"), 10, None).await.expect("chat");
    assert_eq!(ids(&c1.items), ["e", "d", "b", "a"]);
    assert_eq!(c1.items[0].text.as_deref(), Some("text of e"), "the record comes back whole");
    assert!(inbox.list(&shop, Some("nobody"), 10, None).await.expect("empty").items.is_empty());
    assert_eq!(ids(&inbox.list(&other, None, 0, None).await.expect("clamped").items), ["a"], "limit 0 is 1");

    // Chats: most recent first, unread counted, read marks move forward only.
    let chats = inbox.chats(&shop).await.expect("chats");
    let seen: Vec<(&str, u64, u64)> =
        chats.iter().map(|c| (c.chat.as_str(), c.unread_count, c.last_message_at)).collect();
    assert_eq!(seen, [("c1", 4, 6), ("c2", 1, 4)]);
    assert_eq!(chats[0].push_name.as_deref(), Some("sender of e"), "the latest sender");
    let unread = inbox.mark_read(&shop, "c1").await.expect("read").expect("chat exists");
    assert_eq!(ids(&unread), ["a", "b", "d", "e"], "unread, oldest first");
    assert_eq!(inbox.mark_read(&shop, "c1").await.expect("read again").map(|m| m.len()), Some(0));
    assert_eq!(inbox.mark_read(&shop, "nobody").await.expect("no chat"), None);
    assert!(inbox.insert(&message("tienda", "f", "c1", 7)).await.expect("insert"));
    let chats = inbox.chats(&shop).await.expect("chats");
    assert_eq!((chats[0].chat.as_str(), chats[0].unread_count), ("c1", 1), "only what came after the read");
    assert!(inbox.chats(&SessionId::parse("nadie").expect("id")).await.expect("none").is_empty());
    let starts = inbox.chat_starts(&shop).await.expect("starts");
    assert_eq!(
        (starts.len(), starts.get("c1"), starts.get("c2")),
        (2, Some(&1), Some(&4)),
        "the oldest message's time"
    );

    // A file and its record, kept together.
    assert_eq!(inbox.file("f").await.expect("no file yet"), None);
    let mut with_file = message("tienda", "f", "c1", 7);
    with_file.kind = IncomingKind::Image;
    with_file.media = Some(IncomingMedia { size: Some(3), stored: true, ..IncomingMedia::default() });
    inbox.update(&with_file, Some(Bytes::from_static(b"\x00\x01\x02"))).await.expect("update");
    assert_eq!(inbox.file("f").await.expect("file").as_deref(), Some(&b"\x00\x01\x02"[..]));
    let stored = inbox.get("f").await.expect("get").expect("found");
    assert!(stored.media.is_some_and(|m| m.stored), "the record changed with the file");
    // A later update without bytes keeps the file.
    inbox.update(&with_file, None).await.expect("update again");
    assert!(inbox.file("f").await.expect("file").is_some());
    assert_eq!(inbox.get("nope").await.expect("get"), None);
    assert_eq!(inbox.file("nope").await.expect("file"), None);

    // Two sessions sharing an id: the newest wins.
    assert_eq!(inbox.get("a").await.expect("get").map(|m| m.session_id), Some("otra".into()));

    // Expiry: what was stored before the cutoff goes, with its file; the rest stays.
    let cutoff = now_ms();
    past(cutoff).await;
    assert!(inbox.insert(&message("tienda", "g", "c3", 8)).await.expect("insert"));
    assert_eq!(inbox.prune(cutoff + 1).await.expect("prune"), 7);
    assert_eq!(inbox.get("f").await.expect("get"), None);
    assert_eq!(inbox.file("f").await.expect("file"), None);
    assert!(inbox.get("g").await.expect("get").is_some(), "newer than the cutoff");
    assert_eq!(inbox.prune(cutoff + 1).await.expect("again"), 0);
}

#[tokio::test]
async fn inbox_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("wg-storage-inbox-{}-{}", std::process::id(), now_ms()));
    let inbox = super::sqlite::SqliteInbox::open(&dir).expect("open");
    inbox_suite(Arc::new(inbox)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn inbox_on_postgres() {
    let test = super::postgres::testing::fresh(4).await;
    inbox_suite(Arc::new(test.db.inbox())).await;
}

fn pdf(len: usize, seed: u8) -> Bytes {
    let mut bytes = b"%PDF-1.4\n".to_vec();
    bytes.extend((0..len.saturating_sub(bytes.len())).map(|i| (i as u8).wrapping_mul(31) ^ seed));
    Bytes::from(bytes)
}

fn new_message(id: &str, session: &str, to: &str, content: OutgoingContent) -> NewMessage {
    NewMessage {
        message_id: id.to_owned(),
        session_id: SessionId::parse(session).expect("session id"),
        to: PhoneNumber::parse(to).expect("phone"),
        content,
        idempotency: None,
    }
}

fn document(id: &str, seed: u8) -> NewMessage {
    let file_name = FileName::parse("factura.pdf").expect("file name");
    let content = OutgoingContent::pdf(PdfDocument::from_bytes(pdf(100 * 1024, seed)).expect("a pdf"), file_name);
    new_message(id, "tienda", "+51 987 654 321", content)
}

fn keyed(id: &str, key: &str, fingerprint: u8) -> NewMessage {
    NewMessage {
        idempotency: Some(IdempotencyKey { key: key.to_owned(), fingerprint: [fingerprint; 32] }),
        ..document(id, fingerprint)
    }
}

fn id(raw: &str) -> MessageId {
    MessageId::from_stored(raw)
}

/// Fails the test instead of hanging when something never answers.
async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future).await.expect("timed out")
}

async fn journal_suite(journal: Arc<dyn JournalStore>) {
    // A committed write wakes whoever waits for one.
    let woken = {
        let journal = Arc::clone(&journal);
        tokio::spawn(async move { within(journal.committed()).await })
    };
    tokio::task::yield_now().await;

    // Accepting: new, replayed, reused with another body, a taken id, an id that cannot be a
    // file name. Only the first stores anything.
    assert_eq!(journal.accept(keyed("m1", "k1", 1)).await.expect("accept"), Accepted::New);
    within(woken).await.expect("woken by the commit");
    assert_eq!(
        journal.accept(keyed("m1-again", "k1", 1)).await.expect("replay"),
        Accepted::Replay { message_id: "m1".into() }
    );
    assert_eq!(journal.accept(keyed("m1-other", "k1", 2)).await.expect("reuse"), Accepted::KeyReusedWithOtherBody);
    assert!(matches!(journal.accept(document("m1", 3)).await, Err(JournalError::DuplicateMessageId)));
    assert!(matches!(journal.accept(document("../x", 3)).await, Err(JournalError::InvalidMessageId)));
    for nothing in ["m1-again", "m1-other", "../x"] {
        assert_eq!(journal.get(&id(nothing)).await.expect("get"), None, "{nothing} stored nothing");
    }

    // What was accepted comes back: the row, and the bytes until the message is final.
    let record = journal.get(&id("m1")).await.expect("get").expect("stored");
    assert_eq!(
        (record.session_id.as_str(), record.to.as_str(), record.status, record.attempts, record.size),
        ("tienda", "51987654321", DeliveryStatus::Queued, 0, 100 * 1024)
    );
    assert_eq!(record.file_name.as_deref(), Some("factura.pdf"));
    assert_eq!(record.mimetype.as_deref(), Some("application/pdf"));
    assert_eq!(journal.read_payload(&id("m1")).await.expect("read"), Some(pdf(100 * 1024, 1)));
    assert_eq!(journal.read_payload(&id("nobody")).await.expect("read"), None);

    // Texts too, with their preview.
    let text = OutgoingContent::text("hola, su pedido está listo").expect("text");
    let accepted = journal.accept(new_message("t1", "tienda", "+51 911 111 111", text)).await.expect("text");
    assert_eq!(accepted, Accepted::New);
    let record = journal.get(&id("t1")).await.expect("get").expect("stored");
    assert_eq!(record.preview.as_deref(), Some("hola, su pedido está listo"));
    assert_eq!(
        journal.read_payload(&id("t1")).await.expect("read").as_deref(),
        Some("hola, su pedido está listo".as_bytes())
    );

    // Attempts count up and keep the latest error.
    assert_eq!(journal.record_attempt(&id("m1"), Some("timeout".into())).await.expect("attempt"), 1);
    assert_eq!(journal.record_attempt(&id("m1"), None).await.expect("attempt"), 2);
    assert_eq!(journal.get(&id("m1")).await.expect("get").expect("row").last_error.as_deref(), Some("timeout"));
    assert!(matches!(journal.record_attempt(&id("nobody"), None).await, Err(JournalError::NotFound)));

    // Statuses move forward only; events are written only while someone listens.
    assert!(journal.set_status(&id("m1"), DeliveryStatus::Sending, None).await.expect("sending"));
    assert!(!journal.set_status(&id("m1"), DeliveryStatus::Queued, None).await.expect("back"), "never backwards");
    assert!(!journal.set_status(&id("nobody"), DeliveryStatus::Sent, None).await.expect("unknown"));
    assert!(journal.status_events(0, 100).await.expect("events").is_empty(), "nobody listened");
    let guard = journal.want_status_events();
    assert!(journal.set_status(&id("m1"), DeliveryStatus::Sent, None).await.expect("sent"));
    assert_eq!(journal.read_payload(&id("m1")).await.expect("read"), None, "a final message keeps no bytes");
    assert_eq!(journal.accept(document("m2", 4)).await.expect("m2"), Accepted::New);
    drop(guard);
    assert!(journal.set_status(&id("m2"), DeliveryStatus::Sending, None).await.expect("unheard"));
    let events = journal.status_events(0, 100).await.expect("events");
    let seen: Vec<(&str, &str)> = events.iter().map(|e| (e.message_id.as_str(), e.status.as_str())).collect();
    assert_eq!(seen, [("m1", "sent"), ("m2", "queued")]);
    assert!(events.iter().all(|e| e.event_id.starts_with("evt_") && e.session_id == "tienda"));
    assert_eq!(journal.status_events(events[0].seq, 100).await.expect("after").len(), 1);
    assert_eq!(journal.delete_status_events(&[events[0].seq]).await.expect("delete"), 1);
    assert_eq!(journal.status_events(0, 100).await.expect("rest").len(), 1);

    // Pending: every open message in acceptance order, without the final ones.
    let pending = journal.pending().await.expect("pending");
    let open: Vec<&str> = pending.iter().map(|r| r.message_id.as_str()).collect();
    assert_eq!(open, ["t1", "m2"]);

    // Per session, newest first, by recipient, in pages.
    assert_eq!(
        journal
            .accept(new_message("o1", "otra", "+51 922 222 222", OutgoingContent::text("x").expect("text")))
            .await
            .expect("o1"),
        Accepted::New
    );
    let listed = journal.by_session("tienda", None, None, 2).await.expect("list");
    let names: Vec<&str> = listed.iter().map(|(_, r)| r.message_id.as_str()).collect();
    assert_eq!(names, ["m2", "t1"]);
    let rest = journal.by_session("tienda", None, Some(listed[1].0), 10).await.expect("page 2");
    assert_eq!(rest.iter().map(|(_, r)| r.message_id.as_str()).collect::<Vec<_>>(), ["m1"]);
    let to_one = journal.by_session("tienda", Some("51911111111".into()), None, 10).await.expect("by recipient");
    assert_eq!(to_one.iter().map(|(_, r)| r.message_id.as_str()).collect::<Vec<_>>(), ["t1"]);

    // Pruning: finished messages past their age go; keys stay for at least a day, whatever asked.
    let t = now_ms();
    past(t).await;
    let pruned = journal.prune(Duration::ZERO, Duration::ZERO).await.expect("prune");
    assert_eq!((pruned.messages, pruned.idempotency_keys), (1, 0));
    assert_eq!(journal.get(&id("m1")).await.expect("get"), None);
    assert!(journal.get(&id("m2")).await.expect("get").is_some(), "open messages are never pruned");
    assert_eq!(
        journal.accept(keyed("m1-late", "k1", 1)).await.expect("replay"),
        Accepted::Replay { message_id: "m1".into() },
        "the key outlives its message"
    );
}

#[tokio::test]
async fn journal_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("wg-storage-journal-{}-{}", std::process::id(), now_ms()));
    let journal = super::sqlite::journal::SqliteJournal::open(&dir).expect("open");
    journal_suite(Arc::new(journal)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn journal_on_postgres() {
    let test = super::postgres::testing::fresh(4).await;
    journal_suite(Arc::new(test.db.journal())).await;
}

/// In a fleet, a message's claim (`sending`) and statuses are written under its session's lease:
/// a gateway whose lease was taken over changes nothing, and the holder moves it on.
#[tokio::test]
async fn a_journal_status_under_a_stale_lease_is_refused_and_changes_nothing() {
    use super::LeaseStore;
    use crate::domain::GatewayId;
    let test = super::postgres::testing::fresh(4).await;
    let (journal, leases) = (test.db.journal(), test.db.leases());
    let shop = SessionId::parse("tienda").expect("session id");
    let (a, b) = (GatewayId::parse("gw-a").expect("id"), GatewayId::parse("gw-b").expect("id"));
    let ttl = Duration::from_secs(60);
    assert_eq!(journal.accept(document("m1", 1)).await.expect("accept"), Accepted::New);

    let old = leases.claim(&shop, &a, ttl).await.expect("claim").expect("free");
    assert!(journal.set_status_under(&id("m1"), DeliveryStatus::Sending, None, &old).await.expect("A claims it"));
    assert!(leases.release(&old).await.expect("release"));
    let current = leases.claim(&shop, &b, ttl).await.expect("claim").expect("released");

    let stale = journal.set_status_under(&id("m1"), DeliveryStatus::Sent, None, &old).await;
    assert!(matches!(stale, Err(JournalError::Fenced)), "a stale epoch is refused: {stale:?}");
    let failed = journal.set_status_under(&id("m1"), DeliveryStatus::Failed, Some("x".into()), &old).await;
    assert!(matches!(failed, Err(JournalError::Fenced)), "so is its failure: {failed:?}");
    let record = journal.get(&id("m1")).await.expect("get").expect("kept");
    assert_eq!((record.status, record.last_error), (DeliveryStatus::Sending, None), "nothing changed");

    assert!(journal.set_status_under(&id("m1"), DeliveryStatus::Sent, None, &current).await.expect("B sends it"));
    assert_eq!(journal.get(&id("m1")).await.expect("get").expect("kept").status, DeliveryStatus::Sent);
}

fn entry(id: &str, description: Option<&str>) -> SessionEntry {
    SessionEntry {
        session_id: SessionId::parse(id).expect("id"),
        description: description.map(str::to_owned),
        metadata: None,
        extra: serde_json::Map::new(),
    }
}

async fn registry_suite(registry: Arc<dyn SessionRegistry>) {
    assert!(registry.load().await.expect("empty").is_empty());
    let mut lima = entry("tienda_lima", Some("Lima"));
    lima.metadata = serde_json::json!({"sucursal": 3, "zona": "norte"}).as_object().cloned();
    lima.extra.insert("owner".into(), "ventas".into());
    assert!(registry.add(lima.clone()).await.expect("add"));
    assert!(registry.add(entry("soporte", None)).await.expect("add"));
    assert!(registry.add(entry("cusco", Some("Cusco"))).await.expect("add"));
    assert!(!registry.add(entry("soporte", Some("other"))).await.expect("again"), "an id is added once");

    let loaded = registry.load().await.expect("load");
    let ids: Vec<&str> = loaded.iter().map(|e| e.session_id.as_str()).collect();
    assert_eq!(ids, ["tienda_lima", "soporte", "cusco"], "in creation order");
    assert_eq!(loaded[0], lima, "description, metadata and unknown fields kept");
    assert_eq!(loaded[1].description, None, "the first add won");

    assert!(registry.remove(&SessionId::parse("soporte").expect("id")).await.expect("remove"));
    assert!(!registry.remove(&SessionId::parse("soporte").expect("id")).await.expect("gone"));
    let ids: Vec<String> =
        registry.load().await.expect("load").into_iter().map(|e| e.session_id.as_str().to_owned()).collect();
    assert_eq!(ids, ["tienda_lima", "cusco"]);
    assert!(!registry.describe().is_empty());
}

#[tokio::test]
async fn registry_on_files() {
    let dir = std::env::temp_dir().join(format!("wg-storage-registry-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&dir).expect("dir");
    registry_suite(Arc::new(super::sqlite::SessionsFile::new(dir.join("sessions.config.json")))).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn registry_on_postgres() {
    let test = super::postgres::testing::fresh(2).await;
    registry_suite(Arc::new(test.db.registry())).await;
}
