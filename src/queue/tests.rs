//! The queue's worker against a fake session: a real [`Queue`] on a SQLite journal in a temp
//! directory, a connected session whose [`SessionOps`] record what is sent and answer as each
//! test scripts, and server acks that come back through [`Queue::track_deliveries`] as the real
//! event path delivers them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::{Queue, QueueSettings, RetryPolicy};
use crate::config::QueueLimits;
use crate::domain::{MessageId, OutgoingContent, PhoneNumber, SessionId};
use crate::journal::{
    Accepted, DeliveryStatus, JournalError, JournalStore, MessageRecord, NewMessage, Pruned, SqliteJournal,
    StatusEvent, StatusEventsGuard,
};
use crate::session::contacts::ContactCheck;
use crate::session::upstream::{MediaRef, UpstreamError};
use crate::session::{Connections, DeliveryEvent, SessionClient, SessionOps, SessionState, Status};
use crate::shutdown::Shutdown;

/// How the fake answers one send.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// Sent, and the server's ack follows.
    Ack,
    /// Sent; no ack comes unless the test delivers one.
    Silent,
    /// A failure worth retrying (a dropped connection, a timeout).
    Transient,
    /// A failure retrying cannot fix.
    Permanent,
}

/// A connected session's client that sends nothing anywhere.
struct FakeClient {
    registered: bool,
    /// Answers for the next sends, in order; [`Reply::Ack`] once they run out.
    replies: Mutex<VecDeque<Reply>>,
    /// The id of every send, in order, whatever its answer.
    sends: mpsc::Sender<MessageId>,
    checks: AtomicUsize,
    /// Where WhatsApp's acks arrive, as `upstream`'s event handler forwards them.
    delivery: mpsc::Sender<DeliveryEvent>,
}

#[async_trait]
impl SessionOps for FakeClient {
    async fn is_on_whatsapp(&self, _to: &PhoneNumber) -> Result<bool, UpstreamError> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        Ok(self.registered)
    }

    async fn check_numbers(&self, _phones: &[PhoneNumber]) -> Result<Vec<ContactCheck>, UpstreamError> {
        Err(UpstreamError::Send("not used by the queue".into()))
    }

    async fn send_content(
        &self,
        _to: &PhoneNumber,
        _content: &OutgoingContent,
        message_id: &MessageId,
    ) -> Result<(), UpstreamError> {
        let reply = self.replies.lock().unwrap().pop_front().unwrap_or(Reply::Ack);
        self.sends.send(message_id.clone()).await.unwrap();
        match reply {
            Reply::Ack => {
                let ack = DeliveryEvent::Ack { message_id: message_id.as_str().to_owned(), error: None };
                self.delivery.send(ack).await.unwrap();
                Ok(())
            }
            Reply::Silent => Ok(()),
            Reply::Transient => Err(UpstreamError::Send("connection reset".into())),
            Reply::Permanent => Err(UpstreamError::NotOnWhatsApp),
        }
    }

    async fn mark_read(&self, _chat: &str, _message_ids: &[&str]) -> Result<(), UpstreamError> {
        Err(UpstreamError::Send("not used by the queue".into()))
    }

    async fn download(&self, _media: &MediaRef) -> Result<Vec<u8>, UpstreamError> {
        Err(UpstreamError::Send("not used by the queue".into()))
    }

    async fn phone_for_lid(&self, _lid: &str) -> Option<String> {
        None
    }
}

/// One session, connected for the whole test, with the fake as its client.
struct FakeSessions {
    id: SessionId,
    state: watch::Sender<SessionState>,
    client: SessionClient,
}

impl Connections for FakeSessions {
    fn state(&self, id: &SessionId) -> Option<watch::Receiver<SessionState>> {
        (*id == self.id).then(|| self.state.subscribe())
    }

    fn connected_client(&self, id: &SessionId) -> Option<SessionClient> {
        (*id == self.id && self.state.borrow().status == Status::Connected).then(|| self.client.clone())
    }
}

/// The SQLite journal, telling the test of every status it records.
#[derive(Debug)]
struct Watched {
    inner: SqliteJournal,
    moves: mpsc::Sender<(MessageId, DeliveryStatus)>,
}

#[async_trait]
impl JournalStore for Watched {
    async fn accept(&self, message: NewMessage) -> Result<Accepted, JournalError> {
        self.inner.accept(message).await
    }

    async fn set_status(
        &self,
        message_id: &MessageId,
        status: DeliveryStatus,
        last_error: Option<String>,
    ) -> Result<bool, JournalError> {
        let moved = self.inner.set_status(message_id, status, last_error).await?;
        if moved {
            self.moves.send((message_id.clone(), status)).await.unwrap();
        }
        Ok(moved)
    }

    async fn record_attempt(&self, message_id: &MessageId, error: Option<String>) -> Result<u32, JournalError> {
        self.inner.record_attempt(message_id, error).await
    }

    async fn get(&self, message_id: &MessageId) -> Result<Option<MessageRecord>, JournalError> {
        self.inner.get(message_id).await
    }

    async fn by_session(
        &self,
        session: &str,
        recipient: Option<String>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, MessageRecord)>, JournalError> {
        self.inner.by_session(session, recipient, before, limit).await
    }

    async fn pending(&self) -> Result<Vec<MessageRecord>, JournalError> {
        self.inner.pending().await
    }

    async fn read_payload(&self, message_id: &MessageId) -> Result<Option<Bytes>, JournalError> {
        self.inner.read_payload(message_id).await
    }

    async fn prune(&self, keys_older_than: Duration, finished_older_than: Duration) -> Result<Pruned, JournalError> {
        self.inner.prune(keys_older_than, finished_older_than).await
    }

    async fn status_events(&self, after_seq: i64, limit: usize) -> Result<Vec<StatusEvent>, JournalError> {
        self.inner.status_events(after_seq, limit).await
    }

    async fn delete_status_events(&self, seqs: &[i64]) -> Result<u64, JournalError> {
        self.inner.delete_status_events(seqs).await
    }

    fn want_status_events(&self) -> StatusEventsGuard {
        self.inner.want_status_events()
    }

    async fn committed(&self) {
        self.inner.committed().await;
    }

    async fn is_writable(&self) -> bool {
        self.inner.is_writable().await
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("wa-queue-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A queue with one connected session on the fake, and what the test watches it through.
struct Harness {
    queue: Queue,
    session: SessionId,
    fake: Arc<FakeClient>,
    /// Every send's message id, in order.
    sends: mpsc::Receiver<MessageId>,
    /// Every status the journal recorded.
    moves: mpsc::Receiver<(MessageId, DeliveryStatus)>,
    /// Acks and nacks from "WhatsApp", for tests that answer sends themselves.
    delivery: mpsc::Sender<DeliveryEvent>,
    shutdown: Shutdown,
    _dir: TempDir,
}

impl Harness {
    fn new(name: &str, registered: bool, replies: &[Reply]) -> Harness {
        let dir = TempDir::new(name);
        let (moves_tx, moves) = mpsc::channel(64);
        let journal = Watched { inner: SqliteJournal::open(dir.path()).unwrap(), moves: moves_tx };
        let (delivery, deliveries) = mpsc::channel(64);
        let (sends_tx, sends) = mpsc::channel(64);
        let fake = Arc::new(FakeClient {
            registered,
            replies: Mutex::new(replies.iter().copied().collect()),
            sends: sends_tx,
            checks: AtomicUsize::new(0),
            delivery: delivery.clone(),
        });
        let session = SessionId::parse("s1").unwrap();
        let sessions = FakeSessions {
            id: session.clone(),
            state: watch::channel(SessionState::new(Status::Connected)).0,
            client: SessionClient::new(fake.clone()),
        };
        let settings = QueueSettings {
            retry: RetryPolicy { base: Duration::from_millis(1), max_delay: Duration::from_millis(5), max_attempts: 5 },
            max_age: Duration::from_secs(3600),
            min_interval: Duration::ZERO,
            limits: QueueLimits { per_session: 100, per_session_bytes: 1 << 20, total: 100, total_bytes: 1 << 20 },
            shared: false,
        };
        let shutdown = Shutdown::new();
        let queue = Queue::with_connections(Arc::new(sessions), Arc::new(journal), settings, shutdown.clone());
        shutdown.spawn(queue.clone().track_deliveries(deliveries));
        Harness { queue, session, fake, sends, moves, delivery, shutdown, _dir: dir }
    }

    async fn enqueue(&self, text: &str) -> MessageId {
        let to = PhoneNumber::parse("51987654321").unwrap();
        let content = OutgoingContent::text(text).unwrap();
        within(self.queue.enqueue(&self.session, to, content, None)).await.unwrap().id().clone()
    }

    /// The next send's message id.
    async fn next_send(&mut self) -> MessageId {
        within(self.sends.recv()).await.unwrap()
    }

    /// Waits for `id` to reach a final status, then reads its record.
    async fn finished(&mut self, id: &MessageId) -> MessageRecord {
        loop {
            let (moved, status) = within(self.moves.recv()).await.unwrap();
            if moved == *id && status.is_final() {
                return within(self.queue.status(id)).await.unwrap().unwrap();
            }
        }
    }

    /// The sends made so far (after the test waited for what it expects).
    fn sends_so_far(&mut self) -> Vec<MessageId> {
        std::iter::from_fn(|| self.sends.try_recv().ok()).collect()
    }

    async fn stop(self) {
        self.shutdown.close_and_wait(Duration::from_secs(10)).await.unwrap();
    }
}

/// Fails the test instead of hanging when something never comes.
async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future).await.expect("timed out")
}

#[tokio::test]
async fn a_transient_send_error_is_retried_and_then_delivered_once() {
    let mut h = Harness::new("transient", true, &[Reply::Transient, Reply::Ack]);
    let id = h.enqueue("hello").await;

    let record = h.finished(&id).await;

    assert_eq!(record.status, DeliveryStatus::Sent);
    assert_eq!(record.attempts, 1);
    assert_eq!(record.last_error.as_deref(), Some("connection reset"));
    // Tried twice under the same id (the recipient sees it once), and nothing since.
    assert_eq!(h.sends_so_far(), vec![id.clone(), id]);
    assert_eq!(h.queue.depth(&h.session), (0, 0));
    h.stop().await;
}

#[tokio::test]
async fn a_permanent_send_error_fails_the_message_without_retrying() {
    let mut h = Harness::new("permanent", true, &[Reply::Permanent]);
    let failed = h.enqueue("one").await;
    let next = h.enqueue("two").await;

    let record = h.finished(&failed).await;
    assert_eq!(record.status, DeliveryStatus::Failed);
    assert_eq!(record.attempts, 0);
    assert_eq!(record.last_error.as_deref(), Some("number is not on WhatsApp"));
    // The lane moved on: the next message is sent, and the failed one never again (a retry
    // would come first, as order is kept).
    assert_eq!(h.finished(&next).await.status, DeliveryStatus::Sent);
    assert_eq!(h.sends_so_far(), vec![failed, next]);
    h.stop().await;
}

#[tokio::test]
async fn a_number_not_on_whatsapp_fails_with_that_reason_and_is_asked_once() {
    let mut h = Harness::new("unregistered", false, &[]);
    let first = h.enqueue("one").await;
    let second = h.enqueue("two").await;

    for id in [&first, &second] {
        let record = h.finished(id).await;
        assert_eq!(record.status, DeliveryStatus::Failed);
        assert_eq!(record.last_error, Some(UpstreamError::NotOnWhatsApp.to_string()));
        assert_eq!(record.attempts, 0);
    }
    assert!(h.sends_so_far().is_empty());
    // The answer is remembered per number.
    assert_eq!(h.fake.checks.load(Ordering::SeqCst), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_send_waits_for_the_server_ack_and_a_nack_sends_it_again() {
    let mut h = Harness::new("ack", true, &[Reply::Silent, Reply::Silent]);
    let id = h.enqueue("hello").await;

    // Handed over, but not sent until WhatsApp's server says so.
    assert_eq!(h.next_send().await, id);
    assert_eq!(within(h.queue.status(&id)).await.unwrap().unwrap().status, DeliveryStatus::Sending);
    // The server refuses it: the same message goes again.
    let nack = DeliveryEvent::Ack { message_id: id.as_str().to_owned(), error: Some("479".into()) };
    h.delivery.send(nack).await.unwrap();
    assert_eq!(h.next_send().await, id);
    // This time it is acknowledged.
    let ack = DeliveryEvent::Ack { message_id: id.as_str().to_owned(), error: None };
    h.delivery.send(ack).await.unwrap();

    let record = h.finished(&id).await;
    assert_eq!(record.status, DeliveryStatus::Sent);
    assert_eq!(record.attempts, 1);
    assert_eq!(record.last_error.as_deref(), Some("WhatsApp refused the message (nack 479)"));
    assert!(h.sends_so_far().is_empty());
    h.stop().await;
}
