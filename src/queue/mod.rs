//! The outgoing queue: accepted PDFs wait here, per session and in order, until their session
//! is connected, and failed sends are retried with backoff.
//!
//! Each session has its own lane and worker task, so one session's backlog never delays
//! another's. The queue lives in memory (as in the Node.js service).

mod retry;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dashmap::DashMap;
use rand::RngExt as _;
use tokio::sync::Notify;

pub use retry::RetryPolicy;

use crate::domain::{FileName, PdfDocument, PhoneNumber};
use crate::session::{SessionId, SessionManager};
use crate::shutdown::Shutdown;

/// The id returned to the caller; it is also the WhatsApp message id of every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId(String);

impl MessageId {
    fn generate() -> Self {
        let raw: [u8; 10] = rand::rng().random();
        let hex: String = raw.iter().map(|b| format!("{b:02X}")).collect();
        Self(format!("3EB0{hex}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A PDF waiting to be delivered.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) id: MessageId,
    pub(crate) to: PhoneNumber,
    pub(crate) pdf: PdfDocument,
    pub(crate) file_name: FileName,
    pub(crate) attempts: u32,
    pub(crate) accepted_at: Instant,
}

/// One session's FIFO of jobs and the signal that wakes its worker.
#[derive(Default)]
pub(crate) struct Lane {
    jobs: Mutex<VecDeque<Job>>,
    added: Notify,
}

impl Lane {
    pub(crate) fn front(&self) -> Option<Job> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).front().cloned()
    }

    pub(crate) fn pop_front(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
    }

    pub(crate) fn count_attempt(&self) -> u32 {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.front_mut().map_or(0, |j| {
            j.attempts += 1;
            j.attempts
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Cheap-to-clone handle on the queue.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    lanes: DashMap<SessionId, Arc<Lane>>,
    sessions: SessionManager,
    policy: RetryPolicy,
    shutdown: Shutdown,
    /// Whether a number is on WhatsApp, asked once per number.
    on_whatsapp: Mutex<HashMap<String, bool>>,
}

impl Queue {
    pub fn new(sessions: SessionManager, policy: RetryPolicy, shutdown: Shutdown) -> Self {
        Self {
            inner: Arc::new(Inner {
                lanes: DashMap::new(),
                sessions,
                policy,
                shutdown,
                on_whatsapp: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Accepts a PDF for delivery through `session`; returns its message id.
    pub fn enqueue(&self, session: &SessionId, to: PhoneNumber, pdf: PdfDocument, file_name: FileName) -> MessageId {
        let id = MessageId::generate();
        let job = Job { id: id.clone(), to, pdf, file_name, attempts: 0, accepted_at: Instant::now() };
        let lane = self.lane(session);
        lane.jobs.lock().unwrap_or_else(|p| p.into_inner()).push_back(job);
        lane.added.notify_one();
        tracing::info!(session = %session, message_id = %id, "PDF queued");
        id
    }

    /// Jobs still waiting in a session's lane.
    pub fn pending(&self, session: &SessionId) -> usize {
        self.inner.lanes.get(session).map_or(0, |l| l.len())
    }

    fn lane(&self, session: &SessionId) -> Arc<Lane> {
        if let Some(lane) = self.inner.lanes.get(session) {
            return lane.clone();
        }
        let entry = self.inner.lanes.entry(session.clone()).or_insert_with(|| {
            let lane = Arc::new(Lane::default());
            let worker = worker::Worker {
                session: session.clone(),
                lane: lane.clone(),
                queue: self.clone(),
            };
            self.inner.shutdown.spawn(worker.run());
            lane
        });
        entry.clone()
    }

    pub(crate) fn sessions(&self) -> &SessionManager {
        &self.inner.sessions
    }

    pub(crate) fn policy(&self) -> RetryPolicy {
        self.inner.policy
    }

    pub(crate) fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    pub(crate) fn known_on_whatsapp(&self, to: &PhoneNumber) -> Option<bool> {
        self.inner.on_whatsapp.lock().unwrap_or_else(|p| p.into_inner()).get(to.digits()).copied()
    }

    pub(crate) fn remember_on_whatsapp(&self, to: &PhoneNumber, registered: bool) {
        self.inner.on_whatsapp.lock().unwrap_or_else(|p| p.into_inner()).insert(to.digits().to_owned(), registered);
    }
}
