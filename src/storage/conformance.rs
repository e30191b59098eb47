//! One suite, every backend: what each store promises, checked against SQLite (in a temporary
//! folder) and against Postgres (in a schema of its own, see `postgres::testing`).

use std::sync::Arc;

use bytes::Bytes;

use super::{InboxStore, now_ms};
use crate::domain::{IncomingKind, IncomingMedia, IncomingMessage, SessionId};

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
