//! Tests of the journal against real files in a temp directory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::SqliteJournal as Journal;
use super::*;
use crate::domain::{MessageId, SessionId};

fn mid(id: &str) -> MessageId {
    MessageId::from_stored(id)
}
use crate::domain::{ContentKind, FileName, OutgoingContent, PdfDocument, PhoneNumber};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("wa-journal-{name}-{}-{n}-{}", std::process::id(), now_ms()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn outbox(&self) -> PathBuf {
        self.0.join("outbox")
    }

    /// The sorted file names in the outbox.
    fn outbox_files(&self) -> Vec<String> {
        sorted_names(&self.outbox())
    }

    fn segments(&self) -> PathBuf {
        self.0.join("segments")
    }

    /// The sorted file names in the segment directory.
    fn segment_files(&self) -> Vec<String> {
        sorted_names(&self.segments())
    }

    /// The one segment file there is.
    fn only_segment(&self) -> PathBuf {
        let files = self.segment_files();
        assert_eq!(files.len(), 1, "{files:?}");
        self.segments().join(&files[0])
    }
}

fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Messages whose PDFs the segments still hold.
fn live(journal: &Journal) -> u64 {
    journal.inner.segments.live()
}

/// Bytes the segment files take on disk.
fn segment_bytes(journal: &Journal) -> u64 {
    journal.inner.segments.usage().1
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A PDF-looking body of `len` bytes that differs by `seed`.
fn pdf(len: usize, seed: u8) -> Bytes {
    let mut bytes = b"%PDF-1.4\n".to_vec();
    bytes.extend((0..len.saturating_sub(bytes.len())).map(|i| (i as u8).wrapping_mul(31) ^ seed));
    Bytes::from(bytes)
}

fn message(id: &str, pdf: Bytes) -> NewMessage {
    let file_name = FileName::parse("factura.pdf").expect("file name");
    with_content(id, OutgoingContent::pdf(PdfDocument::from_bytes(pdf).expect("a pdf"), file_name))
}

fn with_content(id: &str, content: OutgoingContent) -> NewMessage {
    NewMessage {
        message_id: id.to_owned(),
        session_id: SessionId::parse("tienda_lima").expect("session id"),
        to: PhoneNumber::parse("+51 987 654 321").expect("phone"),
        content,
        idempotency: None,
    }
}

fn keyed(id: &str, key: &str, fingerprint: u8) -> NewMessage {
    NewMessage {
        idempotency: Some(IdempotencyKey { key: key.to_owned(), fingerprint: [fingerprint; 32] }),
        ..message(id, pdf(1000, fingerprint))
    }
}

/// Fails the test instead of hanging when something never answers.
async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future).await.expect("timed out")
}

async fn accept(journal: &Journal, message: NewMessage) -> Result<Accepted, JournalError> {
    within(journal.accept(message)).await
}

async fn status_of(journal: &Journal, id: &str) -> DeliveryStatus {
    within(journal.get(&mid(id))).await.expect("get").expect("record exists").status
}

#[tokio::test]
async fn accept_then_get_round_trip() {
    let dir = TempDir::new("roundtrip");
    let journal = Journal::open(dir.path()).expect("open");
    let body = pdf(5000, 7);

    let accepted = accept(&journal, message("m-1", body.clone())).await.expect("accept");
    assert_eq!(accepted, Accepted::New);

    let record = within(journal.get(&mid("m-1"))).await.expect("get").expect("present");
    assert_eq!(record.message_id, "m-1");
    assert_eq!(record.session_id, "tienda_lima");
    assert_eq!(record.to, "51987654321");
    assert_eq!(record.file_name.as_deref(), Some("factura.pdf"));
    assert_eq!((record.kind, record.mimetype.as_deref()), (ContentKind::Document, Some("application/pdf")));
    assert_eq!(record.status, DeliveryStatus::Queued);
    assert_eq!(record.attempts, 0);
    assert_eq!(record.last_error, None);
    assert_eq!(record.size, 5000);
    assert!(record.created_at > 0);
    assert_eq!(record.created_at, record.updated_at);
    let stored = within(journal.read_payload(&mid("m-1"))).await.expect("read").expect("pdf on disk");
    assert_eq!(stored, body);
    assert_eq!(std::fs::read(dir.only_segment()).expect("segment"), body, "the bytes, nothing else");
    assert!(dir.outbox_files().is_empty(), "nothing new goes to the outbox");

    assert_eq!(within(journal.get(&mid("nope"))).await.expect("get"), None);

    let json = serde_json::to_value(&record).expect("serialize");
    assert_eq!(json["messageId"], "m-1");
    assert_eq!(json["status"], "queued");
    assert_eq!(json["lastError"], serde_json::Value::Null);
}

#[tokio::test]
async fn texts_and_images_are_kept_with_their_kind_type_and_caption() {
    let dir = TempDir::new("kinds");
    let png = Bytes::from_static(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89");
    {
        let journal = Journal::open(dir.path()).expect("open");
        let text = OutgoingContent::text("¿Llegó la factura?").expect("text");
        accept(&journal, with_content("t", text)).await.expect("accept");
        let image = OutgoingContent::image(png.clone(), Some("image/png"), Some("la foto")).expect("image");
        accept(&journal, with_content("i", image)).await.expect("accept");
    }
    let journal = Journal::open(dir.path()).expect("reopen");
    let pending = within(journal.pending()).await.expect("pending");
    let t = &pending[0];
    assert_eq!(
        (t.kind, t.file_name.as_deref(), t.mimetype.as_deref(), t.caption.as_deref()),
        (ContentKind::Text, None, None, None)
    );
    assert_eq!(t.size, "¿Llegó la factura?".len() as u64);
    let body = within(journal.read_payload(&mid("t"))).await.expect("read").expect("there");
    assert_eq!(body.as_ref(), "¿Llegó la factura?".as_bytes());
    let i = &pending[1];
    assert_eq!(
        (i.kind, i.mimetype.as_deref(), i.caption.as_deref()),
        (ContentKind::Image, Some("image/png"), Some("la foto"))
    );
    assert_eq!(within(journal.read_payload(&mid("i"))).await.expect("read"), Some(png));
    assert_eq!((t.preview.as_deref(), i.preview.as_deref()), (Some("¿Llegó la factura?"), None));
}

#[tokio::test]
async fn the_start_of_a_text_outlives_its_bytes() {
    let dir = TempDir::new("preview");
    let journal = Journal::open(dir.path()).expect("open");
    let text = OutgoingContent::text("Su factura\nF001-123 está lista").expect("text");
    accept(&journal, with_content("t", text)).await.expect("accept");
    assert!(within(journal.set_status(&mid("t"), DeliveryStatus::Sent, None)).await.expect("sent"));
    assert_eq!(within(journal.read_payload(&mid("t"))).await.expect("read"), None, "the bytes are gone");
    let record = within(journal.get(&mid("t"))).await.expect("get").expect("kept");
    assert_eq!(record.preview.as_deref(), Some("Su factura F001-123 está lista"), "on one line");
}

#[tokio::test]
async fn pending_survives_reopen_in_acceptance_order() {
    let dir = TempDir::new("reopen");
    let ids = ["m-3", "m-1", "m-2", "m-0"];
    {
        let journal = Journal::open(dir.path()).expect("open");
        for (i, id) in ids.iter().enumerate() {
            accept(&journal, message(id, pdf(2000 + i, i as u8))).await.expect("accept");
        }
        assert!(within(journal.set_status(&mid("m-1"), DeliveryStatus::Sending, None)).await.expect("status"));
        assert!(within(journal.set_status(&mid("m-0"), DeliveryStatus::Sent, None)).await.expect("status"));
        assert_eq!(within(journal.record_attempt(&mid("m-1"), Some("timeout".into()))).await.expect("attempt"), 1);
    }

    let journal = Journal::open(dir.path()).expect("reopen");
    let pending = within(journal.pending()).await.expect("pending");
    let got: Vec<&str> = pending.iter().map(|p| p.message_id.as_str()).collect();
    assert_eq!(got, ["m-3", "m-1", "m-2"]);
    for (i, p) in pending.iter().enumerate() {
        let stored = within(journal.read_payload(&mid(&p.message_id))).await.expect("read").expect("pdf on disk");
        assert_eq!(stored, pdf(2000 + i, i as u8), "{}", p.message_id);
        assert_eq!(p.size, stored.len() as u64);
    }
    assert_eq!(pending[1].status, DeliveryStatus::Sending);
    assert_eq!(pending[1].attempts, 1);
    assert_eq!(pending[1].last_error.as_deref(), Some("timeout"));
    assert_eq!(status_of(&journal, "m-0").await, DeliveryStatus::Sent);
}

#[tokio::test]
async fn read_pdf_finds_pending_pdfs_only() {
    let dir = TempDir::new("read-pdf");
    let journal = Journal::open(dir.path()).expect("open");
    accept(&journal, message("a", pdf(3000, 4))).await.expect("accept");
    assert_eq!(within(journal.read_payload(&mid("a"))).await.expect("read"), Some(pdf(3000, 4)));
    assert_eq!(within(journal.read_payload(&mid("unknown"))).await.expect("read"), None);
    assert_eq!(within(journal.read_payload(&mid("../journal.db"))).await.expect("read"), None, "never a path");
    assert!(within(journal.set_status(&mid("a"), DeliveryStatus::Sent, None)).await.expect("sent"));
    assert_eq!(within(journal.read_payload(&mid("a"))).await.expect("read"), None, "final: its pdf is deleted");
}

#[test]
fn status_rank_only_moves_forward() {
    use DeliveryStatus::*;
    let all = [Queued, Sending, Sent, Delivered, Read, Failed];
    let allowed = |from, to| {
        matches!(
            (from, to),
            (Queued, Sending | Sent | Delivered | Read | Failed)
                | (Sending, Sent | Delivered | Read | Failed)
                | (Sent, Delivered | Read)
                | (Delivered, Read)
        )
    };
    for from in all {
        for to in all {
            assert_eq!(from.can_move_to(to), allowed(from, to), "{from:?} -> {to:?}");
        }
    }
    assert!(!Queued.is_final() && !Sending.is_final());
    assert!(Sent.is_final() && Delivered.is_final() && Read.is_final() && Failed.is_final());
}

#[tokio::test]
async fn status_never_moves_backwards_and_final_state_deletes_pdf() {
    let dir = TempDir::new("status");
    let journal = Journal::open(dir.path()).expect("open");
    accept(&journal, message("a", pdf(100, 1))).await.expect("accept");
    accept(&journal, message("b", pdf(100, 2))).await.expect("accept");
    let set = |id: &'static str, status, error: Option<&str>| {
        let journal = journal.clone();
        let error = error.map(str::to_owned);
        async move { within(journal.set_status(&mid(id), status, error)).await.expect("set_status") }
    };

    assert!(set("a", DeliveryStatus::Sending, None).await);
    assert!(!set("a", DeliveryStatus::Queued, None).await);
    assert!(!set("a", DeliveryStatus::Sending, None).await);
    assert_eq!((live(&journal), segment_bytes(&journal)), (2, 200));
    assert!(set("a", DeliveryStatus::Sent, None).await);
    assert_eq!(live(&journal), 1, "final state frees the pdf");
    assert!(!set("a", DeliveryStatus::Failed, Some("late failure")).await);
    assert!(set("a", DeliveryStatus::Read, None).await);
    assert_eq!(live(&journal), 1, "moves between final statuses free nothing more");
    assert_eq!(within(journal.read_payload(&mid("b"))).await.expect("read"), Some(pdf(100, 2)));
    assert!(!set("a", DeliveryStatus::Delivered, None).await);
    let a = within(journal.get(&mid("a"))).await.expect("get").expect("a");
    assert_eq!(a.status, DeliveryStatus::Read);
    assert_eq!(a.last_error, None);

    assert!(set("b", DeliveryStatus::Failed, Some("recipient not on whatsapp")).await);
    assert!(!set("b", DeliveryStatus::Sent, None).await);
    let b = within(journal.get(&mid("b"))).await.expect("get").expect("b");
    assert_eq!(b.status, DeliveryStatus::Failed);
    assert_eq!(b.last_error.as_deref(), Some("recipient not on whatsapp"));
    assert_eq!((live(&journal), segment_bytes(&journal)), (0, 0), "no pdf left on disk");

    let unknown = within(journal.set_status(&mid("zzz"), DeliveryStatus::Sent, None)).await;
    assert!(matches!(unknown, Ok(false)), "unknown ids are ignored: {unknown:?}");
}

#[tokio::test]
async fn record_attempt_counts_and_keeps_last_error() {
    let dir = TempDir::new("attempts");
    let journal = Journal::open(dir.path()).expect("open");
    accept(&journal, message("a", pdf(100, 1))).await.expect("accept");
    assert_eq!(within(journal.record_attempt(&mid("a"), Some("offline".into()))).await.expect("1"), 1);
    assert_eq!(within(journal.record_attempt(&mid("a"), None)).await.expect("2"), 2);
    let a = within(journal.get(&mid("a"))).await.expect("get").expect("a");
    assert_eq!((a.attempts, a.last_error.as_deref()), (2, Some("offline")));
    assert!(a.updated_at >= a.created_at);
    let unknown = within(journal.record_attempt(&mid("zzz"), None)).await;
    assert!(matches!(unknown, Err(JournalError::NotFound)), "{unknown:?}");
}

#[tokio::test]
async fn idempotency_key_replays_same_body_and_rejects_other_body() {
    let dir = TempDir::new("idempotency");
    let journal = Journal::open(dir.path()).expect("open");

    assert_eq!(accept(&journal, keyed("first", "key-1", 0xAA)).await.expect("1st"), Accepted::New);
    assert_eq!(
        accept(&journal, keyed("second", "key-1", 0xAA)).await.expect("2nd"),
        Accepted::Replay { message_id: "first".to_owned() }
    );
    assert_eq!(accept(&journal, keyed("third", "key-1", 0xBB)).await.expect("3rd"), Accepted::KeyReusedWithOtherBody);
    assert_eq!(accept(&journal, keyed("fourth", "key-2", 0xBB)).await.expect("4th"), Accepted::New);

    assert_eq!(within(journal.get(&mid("second"))).await.expect("get"), None);
    assert_eq!(within(journal.get(&mid("third"))).await.expect("get"), None);
    assert_eq!(live(&journal), 2, "replays keep no pdf");

    // The key outlives the message's pdf: a retry after delivery still replays.
    assert!(within(journal.set_status(&mid("first"), DeliveryStatus::Sent, None)).await.expect("sent"));
    assert_eq!(
        accept(&journal, keyed("fifth", "key-1", 0xAA)).await.expect("5th"),
        Accepted::Replay { message_id: "first".to_owned() }
    );
}

#[tokio::test]
async fn duplicate_and_invalid_message_ids_are_rejected_without_side_effects() {
    let dir = TempDir::new("ids");
    let journal = Journal::open(dir.path()).expect("open");
    accept(&journal, message("m", pdf(300, 1))).await.expect("accept");

    let again = accept(&journal, message("m", pdf(400, 2))).await;
    assert!(matches!(again, Err(JournalError::DuplicateMessageId)), "{again:?}");
    assert_eq!(within(journal.read_payload(&mid("m"))).await.expect("read"), Some(pdf(300, 1)), "not clobbered");
    assert_eq!(live(&journal), 1, "the rejected pdf was given back");

    assert!(within(journal.set_status(&mid("m"), DeliveryStatus::Sent, None)).await.expect("sent"));
    let after_final = accept(&journal, message("m", pdf(400, 2))).await;
    assert!(matches!(after_final, Err(JournalError::DuplicateMessageId)), "{after_final:?}");
    assert_eq!((live(&journal), segment_bytes(&journal)), (0, 0), "the rejected pdf was given back");

    for bad in ["", ".hidden", "..", "../escape", "a/b", "sp ace", &"x".repeat(129)] {
        let result = accept(&journal, message(bad, pdf(10, 0))).await;
        assert!(matches!(result, Err(JournalError::InvalidMessageId)), "{bad:?}: {result:?}");
    }
    assert_eq!((live(&journal), segment_bytes(&journal)), (0, 0), "invalid ids write nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_accepts_are_group_committed_and_survive_reopen() {
    let dir = TempDir::new("concurrent");
    let journal = Journal::open(dir.path()).expect("open");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200_u32 {
        let journal = journal.clone();
        tasks.spawn(async move {
            let id = format!("c-{i:03}");
            journal.accept(message(&id, pdf(4096, i as u8))).await
        });
    }
    let results = within(tasks.join_all()).await;
    assert!(results.iter().all(|r| matches!(r, Ok(Accepted::New))), "{results:?}");
    let stats = journal.stats();
    assert_eq!(stats.commands, 200);
    assert!(stats.batches < 200, "no group commit: {stats:?}");
    assert!(stats.largest_batch > 1, "{stats:?}");
    drop(journal);

    let journal = Journal::open(dir.path()).expect("reopen");
    let pending = within(journal.pending()).await.expect("pending");
    assert_eq!(pending.len(), 200);
    let mut ids: Vec<String> = pending.iter().map(|p| p.message_id.clone()).collect();
    ids.sort();
    let expected: Vec<String> = (0..200).map(|i| format!("c-{i:03}")).collect();
    assert_eq!(ids, expected);
    for p in &pending {
        let i: u32 = p.message_id[2..].parse().expect("index");
        let stored = within(journal.read_payload(&mid(&p.message_id))).await.expect("read").expect("pdf on disk");
        assert_eq!(stored, pdf(4096, i as u8));
    }
}

#[tokio::test]
async fn failing_commands_do_not_poison_their_batch() {
    let dir = TempDir::new("batch");
    let journal = Journal::open(dir.path()).expect("open");
    accept(&journal, message("old", pdf(100, 1))).await.expect("accept");

    // Hold the writer inside a batch so that the next commands all queue up behind it.
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let gate = tokio::spawn({
        let journal = journal.clone();
        async move {
            journal
                .exec(move |_| {
                    let _ = started_tx.send(());
                    let _ = go_rx.recv();
                    Ok(())
                })
                .await
        }
    });
    within(tokio::task::spawn_blocking(move || started_rx.recv()))
        .await
        .expect("join")
        .expect("writer started the gate");

    let good = tokio::spawn({
        let journal = journal.clone();
        async move { journal.accept(message("new", pdf(100, 2))).await }
    });
    let duplicate = tokio::spawn({
        let journal = journal.clone();
        async move { journal.accept(message("old", pdf(100, 3))).await }
    });
    let unknown = tokio::spawn({
        let journal = journal.clone();
        async move { journal.record_attempt(&mid("zzz"), None).await }
    });
    let moved = tokio::spawn({
        let journal = journal.clone();
        async move { journal.set_status(&mid("old"), DeliveryStatus::Sending, None).await }
    });
    let queued = || {
        let sender = journal.inner.commands.as_ref().expect("open");
        writer::QUEUE_CAPACITY - sender.capacity()
    };
    within(async {
        while queued() < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let batches_before = journal.stats().batches;
    go_tx.send(()).expect("release the gate");

    within(gate).await.expect("join").expect("gate");
    assert!(matches!(within(good).await.expect("join"), Ok(Accepted::New)));
    assert!(matches!(within(duplicate).await.expect("join"), Err(JournalError::DuplicateMessageId)));
    assert!(matches!(within(unknown).await.expect("join"), Err(JournalError::NotFound)));
    assert!(matches!(within(moved).await.expect("join"), Ok(true)));
    // The gate's batch (still open when counted before) plus one batch for all four.
    assert_eq!(journal.stats().batches, batches_before + 2);
    assert!(journal.stats().largest_batch >= 4);
    assert_eq!(status_of(&journal, "new").await, DeliveryStatus::Queued);
    assert_eq!(status_of(&journal, "old").await, DeliveryStatus::Sending);
    assert_eq!(live(&journal), 2, "the duplicate's pdf was given back");
    assert_eq!(within(journal.read_payload(&mid("old"))).await.expect("read"), Some(pdf(100, 1)));
}

#[tokio::test]
async fn open_removes_orphan_files_and_fails_rows_without_pdf() {
    let dir = TempDir::new("recover");
    {
        let journal = Journal::open(dir.path()).expect("open");
        for id in ["keep", "lost", "done"] {
            accept(&journal, message(id, pdf(100, 1))).await.expect("accept");
        }
        assert!(within(journal.set_status(&mid("done"), DeliveryStatus::Sent, None)).await.expect("sent"));
    }
    // The segment cut short after "keep" (accepted first, so written first): "lost" is gone.
    let segment = dir.only_segment();
    std::fs::File::options().write(true).open(&segment).expect("segment").set_len(100).expect("cut");
    let orphan_segment = dir.segments().join("00000000000000aa.seg");
    std::fs::write(&orphan_segment, b"%PDF-no row points here").expect("orphan segment");
    let outbox = dir.outbox();
    std::fs::write(outbox.join("orphan.pdf"), b"%PDF-orphan").expect("orphan");
    std::fs::write(outbox.join(".keep.123-4.tmp"), b"%PDF-half").expect("temp");
    std::fs::write(outbox.join("notes.txt"), b"not ours").expect("other");

    let journal = Journal::open(dir.path()).expect("reopen");
    assert_eq!(dir.outbox_files(), ["notes.txt"]);
    assert!(!orphan_segment.exists(), "a segment no row needs is deleted");
    assert!(segment.exists(), "the segment of a pending message stays");
    let lost = within(journal.get(&mid("lost"))).await.expect("get").expect("lost");
    assert_eq!(lost.status, DeliveryStatus::Failed);
    assert_eq!(lost.last_error.as_deref(), Some(PDF_MISSING));
    let pending = within(journal.pending()).await.expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].message_id, "keep");
    assert_eq!(live(&journal), 1, "only keep holds its segment");
    assert_eq!(within(journal.read_payload(&mid("keep"))).await.expect("read"), Some(pdf(100, 1)));

    // New PDFs start a new segment: never appended after a tail a crash may have torn.
    accept(&journal, message("after", pdf(100, 2))).await.expect("accept");
    assert_eq!(dir.segment_files().len(), 2);
    assert!(within(journal.set_status(&mid("keep"), DeliveryStatus::Sent, None)).await.expect("sent"));
    assert!(!segment.exists(), "its last message gone, the old segment is deleted");
}

#[tokio::test]
async fn pending_fails_a_message_whose_pdf_vanished_while_running() {
    let dir = TempDir::new("vanished");
    let journal = Journal::open(dir.path()).expect("open");
    accept(&journal, message("a", pdf(100, 1))).await.expect("accept");
    accept(&journal, message("b", pdf(100, 2))).await.expect("accept");
    std::fs::File::options().write(true).open(dir.only_segment()).expect("segment").set_len(150).expect("cut");
    assert_eq!(within(journal.read_payload(&mid("b"))).await.expect("read"), None);
    let pending = within(journal.pending()).await.expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].message_id, "a");
    let b = within(journal.get(&mid("b"))).await.expect("get").expect("b");
    assert_eq!((b.status, b.last_error.as_deref()), (DeliveryStatus::Failed, Some(PDF_MISSING)));
    assert_eq!(live(&journal), 1);
}

#[tokio::test]
async fn damaged_bytes_are_caught_by_their_checksum() {
    let dir = TempDir::new("damaged");
    let journal = Journal::open(dir.path()).expect("open");
    accept(&journal, message("a", pdf(100, 1))).await.expect("accept");
    accept(&journal, message("b", pdf(100, 2))).await.expect("accept");
    let segment = dir.only_segment();
    let mut bytes = std::fs::read(&segment).expect("segment");
    bytes[150] ^= 0x01;
    std::fs::write(&segment, &bytes).expect("flip one bit of b");
    assert_eq!(within(journal.read_payload(&mid("a"))).await.expect("a is intact"), Some(pdf(100, 1)));
    let b = within(journal.read_payload(&mid("b"))).await;
    assert!(matches!(b, Err(JournalError::Damaged)), "{b:?}");
}

#[tokio::test]
async fn a_full_segment_rotates_and_each_segment_goes_with_its_last_message() {
    let dir = TempDir::new("rotate");
    let journal = Journal::open(dir.path()).expect("open");
    let big = usize::try_from(segments::SEGMENT_BYTES / 2 + 1).expect("size");
    accept(&journal, message("first", pdf(big, 1))).await.expect("accept");
    accept(&journal, message("second", pdf(big, 2))).await.expect("accept");
    accept(&journal, message("small", pdf(100, 3))).await.expect("accept");
    let files = dir.segment_files();
    assert_eq!(files.len(), 2, "the second did not fit in the first segment: {files:?}");
    assert_eq!(within(journal.read_payload(&mid("second"))).await.expect("read"), Some(pdf(big, 2)));

    assert!(within(journal.set_status(&mid("first"), DeliveryStatus::Sent, None)).await.expect("sent"));
    assert_eq!(dir.segment_files(), files[1..], "the first segment went with its only message");
    assert!(within(journal.set_status(&mid("second"), DeliveryStatus::Failed, None)).await.expect("failed"));
    assert_eq!(segment_bytes(&journal), (big + 100) as u64, "small still holds the current one");
    assert!(within(journal.set_status(&mid("small"), DeliveryStatus::Sent, None)).await.expect("sent"));
    assert_eq!(segment_bytes(&journal), 0, "the current segment is emptied for reuse");
    accept(&journal, message("reuse", pdf(100, 4))).await.expect("accept");
    assert_eq!(dir.segment_files(), files[1..], "and reused");
    assert_eq!(within(journal.read_payload(&mid("reuse"))).await.expect("read"), Some(pdf(100, 4)));
}

#[tokio::test]
async fn a_journal_written_by_schema_version_1_delivers_its_pending_pdfs() {
    // Made by the release before segments (see the fixture's manifest.json).
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v1");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("manifest.json")).expect("manifest")).expect("json");
    let dir = TempDir::new("v1");
    std::fs::create_dir_all(dir.outbox()).expect("outbox");
    std::fs::copy(fixture.join("journal.db"), dir.path().join("journal.db")).expect("copy db");
    for entry in std::fs::read_dir(fixture.join("outbox")).expect("fixture outbox") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.outbox().join(entry.file_name())).expect("copy pdf");
    }

    let journal = Journal::open(dir.path()).expect("a version 1 journal opens");
    let pending = within(journal.pending()).await.expect("pending");
    let expected = manifest["messages"].as_array().expect("messages");
    assert_eq!(pending.len(), expected.len());
    for (record, want) in pending.iter().zip(expected) {
        assert_eq!(record.message_id, want["messageId"].as_str().expect("id"));
        assert_eq!(record.file_name.as_deref(), want["fileName"].as_str());
        assert_eq!((record.kind, record.mimetype.as_deref()), (ContentKind::Document, Some("application/pdf")));
        assert_eq!(record.session_id, manifest["session"].as_str().expect("session"));
        let bytes = within(journal.read_payload(&mid(&record.message_id))).await.expect("read").expect("in the outbox");
        assert_eq!(bytes.len() as u64, want["size"].as_u64().expect("size"));
        use sha2::Digest as _;
        let sha: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sha, want["sha256"].as_str().expect("sha"));
    }
    // Its idempotency keys still replay.
    let first = &expected[0];
    let replay = NewMessage {
        idempotency: Some(IdempotencyKey { key: "clave-uno".into(), fingerprint: [0; 32] }),
        ..message("other", pdf(10, 0))
    };
    let answer = accept(&journal, replay).await.expect("accept");
    assert_eq!(answer, Accepted::KeyReusedWithOtherBody, "the key is known (its fingerprint differs)");

    // New PDFs go to segments beside the old outbox; ending an old message deletes its file.
    accept(&journal, message("new-one", pdf(100, 1))).await.expect("accept");
    assert_eq!(dir.outbox_files().len(), expected.len());
    let old = first["messageId"].as_str().expect("id");
    assert!(within(journal.set_status(&mid(old), DeliveryStatus::Sent, None)).await.expect("sent"));
    assert_eq!(dir.outbox_files().len(), expected.len() - 1);
    drop(journal);
    let version: i64 = rusqlite::Connection::open(dir.path().join("journal.db"))
        .expect("db")
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, 6, "migrated");
}

#[tokio::test]
async fn a_version_5_journal_is_rebuilt_for_audio_and_video_and_keeps_its_rows() {
    let dir = TempDir::new("v5");
    std::fs::create_dir_all(dir.path()).expect("dir");
    {
        // The messages table as version 5 declared it: three kinds in its CHECK, no ptt.
        let conn = rusqlite::Connection::open(dir.path().join("journal.db")).expect("db");
        conn.execute_batch(
            "CREATE TABLE messages (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE,
                session_id TEXT NOT NULL, recipient TEXT NOT NULL, file_name TEXT NOT NULL,
                size INTEGER NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'read', 'failed')),
                attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL, segment INTEGER, seg_offset INTEGER, crc32 INTEGER,
                kind TEXT NOT NULL DEFAULT 'document' CHECK (kind IN ('text', 'image', 'document')),
                mimetype TEXT, caption TEXT, preview TEXT) STRICT;
             INSERT INTO messages (seq, message_id, session_id, recipient, file_name, size, status, created_at,
                                   updated_at, kind, preview)
                 VALUES (41, 'viejo', 'tienda', '51987000001', '', 4, 'delivered', 1, 2, 'text', 'hola');
             PRAGMA user_version = 5;",
        )
        .expect("a version 5 journal");
        let refused = conn.execute("UPDATE messages SET kind = 'audio'", []);
        assert!(refused.is_err(), "version 5 refuses the audio kind");
    }
    let voice = Bytes::from(crate::domain::audio_video::samples::ogg_opus(4));
    let journal = Journal::open(dir.path()).expect("a version 5 journal opens");
    let content = OutgoingContent::audio(voice.clone(), None, true).expect("a voice note");
    accept(&journal, with_content("nota", content)).await.expect("an audio is accepted");
    let old = within(journal.get(&mid("viejo"))).await.expect("get").expect("the old row is kept");
    assert_eq!((old.kind, old.preview.as_deref(), old.ptt), (ContentKind::Text, Some("hola"), None));
    let note = within(journal.get(&mid("nota"))).await.expect("get").expect("kept");
    assert_eq!((note.kind, note.ptt, note.mimetype.as_deref()), (ContentKind::Audio, Some(true), Some("audio/ogg")));
    assert_eq!(within(journal.read_payload(&mid("nota"))).await.expect("read"), Some(voice));
    drop(journal);
    let conn = rusqlite::Connection::open(dir.path().join("journal.db")).expect("db");
    let seq: i64 = conn.query_row("SELECT seq FROM messages WHERE message_id = 'nota'", [], |r| r.get(0)).expect("seq");
    assert!(seq > 41, "the sequence goes on: {seq}");
    let indexes: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'", [], |r| {
            r.get(0)
        })
        .expect("indexes");
    assert!(indexes >= 3, "the indexes are back: {indexes}");
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).expect("version");
    assert_eq!(version, 6);
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = TempDir::new("lock");
    let journal = Journal::open(dir.path()).expect("open");
    assert!(matches!(Journal::open(dir.path()), Err(JournalError::Locked)));
    drop(journal);
    Journal::open(dir.path()).expect("open after close");
}

#[tokio::test]
async fn prune_removes_old_keys_and_old_finished_messages_only() {
    let dir = TempDir::new("prune");
    let journal = Journal::open(dir.path()).expect("open");
    accept(&journal, keyed("old-sent", "k-old", 1)).await.expect("accept");
    accept(&journal, keyed("old-queued", "k-new", 2)).await.expect("accept");
    accept(&journal, message("new-sent", pdf(100, 3))).await.expect("accept");
    for id in ["old-sent", "new-sent"] {
        assert!(within(journal.set_status(&mid(id), DeliveryStatus::Sent, None)).await.expect("sent"));
    }
    // Age two rows and one key by two days, through a second connection (WAL allows it).
    let two_days_ago = store::int(now_ms() - 2 * 24 * 3600 * 1000);
    let side = rusqlite::Connection::open(dir.path().join("journal.db")).expect("side connection");
    side.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    side.execute("UPDATE messages SET updated_at = ?1 WHERE message_id IN ('old-sent', 'old-queued')", [two_days_ago])
        .expect("age messages");
    side.execute("UPDATE idempotency_keys SET created_at = ?1 WHERE key = 'k-old'", [two_days_ago]).expect("age key");
    drop(side);

    // Zero is clamped to 24 h for keys: k-new (just created) must survive.
    let pruned = within(journal.prune(Duration::ZERO, Duration::from_secs(3600))).await.expect("prune");
    assert_eq!(pruned, Pruned { idempotency_keys: 1, messages: 1 });
    assert_eq!(within(journal.get(&mid("old-sent"))).await.expect("get"), None);
    assert!(within(journal.get(&mid("old-queued"))).await.expect("get").is_some(), "not finished");
    assert!(within(journal.get(&mid("new-sent"))).await.expect("get").is_some(), "too recent");
    assert_eq!(accept(&journal, keyed("again", "k-old", 9)).await.expect("k-old is free"), Accepted::New);
    assert_eq!(
        accept(&journal, keyed("again-2", "k-new", 2)).await.expect("k-new kept"),
        Accepted::Replay { message_id: "old-queued".to_owned() }
    );
}

#[test]
fn disk_full_is_recognised_in_io_and_sqlite_errors() {
    let enospc = io::Error::from_raw_os_error(28);
    assert!(matches!(JournalError::from(enospc), JournalError::DiskFull));
    let by_kind = io::Error::new(io::ErrorKind::StorageFull, "full");
    assert!(JournalError::from(by_kind).is_disk_full());
    let quota = io::Error::new(io::ErrorKind::QuotaExceeded, "quota");
    assert!(JournalError::from(quota).is_disk_full());
    let other = io::Error::from_raw_os_error(5); // EIO
    assert!(matches!(JournalError::from(other), JournalError::Io(_)));

    let full = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
    assert!(JournalError::from(full).is_disk_full());
    let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
    assert!(matches!(JournalError::from(busy), JournalError::Sqlite(_)));
}

#[tokio::test]
async fn a_full_database_rejects_cleanly_and_recovers_when_space_returns() {
    let dir = TempDir::new("full");
    let journal = Journal::open(dir.path()).expect("open");
    accept(&journal, message("before", pdf(100, 1))).await.expect("accept");

    // SQLITE_FULL on demand: cap the database at the pages it has now.
    within(journal.exec(|c| {
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }))
    .await
    .expect("cap pages");

    let mut accepted = vec!["before".to_owned()];
    let mut full_at = None;
    for i in 0..500 {
        let id = format!("fill-{i:03}");
        match accept(&journal, message(&id, pdf(100, 2))).await {
            Ok(Accepted::New) => accepted.push(id),
            Err(JournalError::DiskFull) => {
                full_at = Some(id);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let full_at = full_at.expect("the capped database filled up");
    assert_eq!(within(journal.get(&mid(&full_at))).await.expect("get"), None, "rolled back");
    assert_eq!(live(&journal), accepted.len() as u64, "no pdf kept for the rejected message");

    within(journal.exec(|c| {
        c.query_row("PRAGMA max_page_count = 1073741823", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }))
    .await
    .expect("uncap");
    assert_eq!(accept(&journal, message(&full_at, pdf(100, 2))).await.expect("space is back"), Accepted::New);
    assert!(within(journal.set_status(&mid("before"), DeliveryStatus::Sent, None)).await.expect("writes work"));
}

/// `cargo test -p whatsapp-gateway --lib storage::sqlite::journal::tests::bench -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints the time for 1000 accepts of 100 KiB with 32 tasks"]
async fn bench_1000_accepts_of_100_kib_with_32_tasks() {
    const TOTAL: usize = 1000;
    const TASKS: usize = 32;
    let dir = TempDir::new("bench");
    let journal = Journal::open(dir.path()).expect("open");
    let body = pdf(100 * 1024, 5);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let (journal, body, next) = (journal.clone(), body.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= TOTAL {
                    return latencies;
                }
                let t = Instant::now();
                let accepted = journal.accept(message(&format!("b-{i:04}"), body.clone())).await;
                assert!(matches!(accepted, Ok(Accepted::New)), "{accepted:?}");
                latencies.push(t.elapsed());
            }
        });
    }
    let mut latencies: Vec<Duration> = within(tasks.join_all()).await.into_iter().flatten().collect();
    let elapsed = started.elapsed();
    latencies.sort();
    let stats = journal.stats();
    println!(
        "journal bench: {TOTAL} accepts x 100 KiB, {TASKS} tasks: {:.2} s total, {:.0} accepts/s, \
         latency p50 {:.1} ms p99 {:.1} ms; {} batches (largest {}), {:.1} accepts/commit",
        elapsed.as_secs_f64(),
        TOTAL as f64 / elapsed.as_secs_f64(),
        latencies[TOTAL / 2].as_secs_f64() * 1e3,
        latencies[TOTAL * 99 / 100].as_secs_f64() * 1e3,
        stats.batches,
        stats.largest_batch,
        stats.commands as f64 / stats.batches as f64,
    );
}

/// Real ENOSPC: `JOURNAL_SMALL_FS=/mnt/small cargo test -p whatsapp-gateway --lib
/// storage::sqlite::journal::tests::real_disk_full -- --ignored`, with e.g. a 1 MiB tmpfs mounted there.
/// `.ci/run` mounts one and runs it on every CI run.
#[tokio::test]
#[ignore = "needs JOURNAL_SMALL_FS: a directory on a small, otherwise empty file system"]
async fn real_disk_full_leaves_nothing_behind_and_recovers() {
    let root = std::env::var("JOURNAL_SMALL_FS").map(PathBuf::from).unwrap_or_else(|_| {
        panic!(
            "JOURNAL_SMALL_FS is not set: it names a directory on a small, otherwise empty file system \
             (.ci/run mounts a 1 MiB tmpfs for it, which needs root)"
        )
    });
    let small =
        std::process::Command::new("df").args(["--output=size", "-k"]).arg(&root).output().ok().and_then(|out| {
            String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse::<u64>().ok())
        });
    assert!(
        small.is_some_and(|kib| kib <= 16 * 1024),
        "JOURNAL_SMALL_FS={} is not on a small file system ({small:?} KiB): the test would fill a real disk",
        root.display()
    );
    let dir = TempDir(root.join(format!("journal-{}", std::process::id())));
    let journal = Journal::open(dir.path()).expect("open");
    let mut accepted = Vec::new();
    let mut full = false;
    for i in 0..1000 {
        let id = format!("big-{i:03}");
        match accept(&journal, message(&id, pdf(100 * 1024, i as u8))).await {
            Ok(Accepted::New) => accepted.push(id),
            Err(JournalError::DiskFull) => {
                full = true;
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(full, "the file system never filled up");
    assert_eq!(live(&journal), accepted.len() as u64, "no pdf kept for the rejected one");

    // Finishing messages frees their segments: space returns and accepts work again.
    for id in &accepted {
        assert!(within(journal.set_status(&mid(id), DeliveryStatus::Sent, None)).await.expect("sent"));
    }
    let again = accept(&journal, message("after-full", pdf(100 * 1024, 1))).await;
    assert_eq!(again.expect("space is back"), Accepted::New);
    drop(journal);
    let journal = Journal::open(dir.path()).expect("reopen");
    let pending = within(journal.pending()).await.expect("pending");
    assert_eq!(pending.len(), 1);
}

#[tokio::test]
async fn every_status_is_recorded_with_its_event_in_the_same_write() {
    let dir = TempDir::new("status-events");
    let journal = Journal::open(dir.path()).expect("open");
    accept(&journal, message("before", pdf(100, 2))).await.expect("accept");
    assert!(within(journal.status_events(0, 10)).await.expect("events").is_empty(), "nobody listened: none recorded");
    let _listening = journal.want_status_events();
    accept(&journal, message("m", pdf(100, 1))).await.expect("accept");
    assert!(within(journal.set_status(&mid("m"), DeliveryStatus::Sending, None)).await.expect("sending"));
    assert!(!within(journal.set_status(&mid("m"), DeliveryStatus::Queued, None)).await.expect("backwards"));
    assert!(within(journal.set_status(&mid("m"), DeliveryStatus::Failed, Some("no".into()))).await.expect("failed"));
    let events = within(journal.status_events(0, 10)).await.expect("events");
    let statuses: Vec<(&str, Option<&str>)> =
        events.iter().map(|e| (e.status.as_str(), e.last_error.as_deref())).collect();
    assert_eq!(
        statuses,
        [("queued", None), ("sending", None), ("failed", Some("no"))],
        "a move that did not happen has none"
    );
    assert!(events.iter().all(|e| e.message_id == "m" && e.session_id == "tienda_lima" && e.kind == "document"));
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "unique event ids");
    assert_eq!(within(journal.delete_status_events(&[events[0].seq, events[1].seq])).await.expect("delete"), 2);
    let left = within(journal.status_events(0, 10)).await.expect("events");
    assert_eq!(left.iter().map(|e| e.status.as_str()).collect::<Vec<_>>(), ["failed"]);
}
