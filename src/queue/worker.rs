//! One worker per session: take the oldest job, wait for the session to be connected, pace,
//! read its PDF from the journal's outbox, send, wait for WhatsApp's server ack, and on failure
//! back off and try the same job again with the same message id (order is kept). The PDF's bytes
//! are in memory only during an attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt as _;
use tokio_util::sync::CancellationToken;

use crate::domain::{OutgoingContent, SessionId};
use crate::journal::{self, DeliveryStatus, PDF_MISSING};
use crate::queue::{ACK_TIMEOUT, FLEET_POLL, Job, Lane, Queue};
use crate::session::upstream::UpstreamError;
use crate::session::{SessionClient, Status};

/// What one attempt came to.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// WhatsApp's server acknowledged it.
    Sent,
    /// Will never succeed: fail the job.
    Failed(String),
    /// Try again later.
    Retry(String),
    /// The PDF is no longer in the outbox.
    PdfMissing,
}

pub(crate) struct Worker {
    pub(crate) session: SessionId,
    pub(crate) lane: Arc<Lane>,
    pub(crate) queue: Queue,
    pub(crate) last_send: Option<Instant>,
}

/// The `lastError` of messages whose session was deleted before they were sent.
pub(crate) const SESSION_DELETED: &str = "SESSION_DELETED: the session was deleted";

impl Worker {
    pub(crate) async fn run(mut self) {
        let cancel = self.queue.shutdown().token();
        let mut attempts: u32 = 0;
        let mut resynced: Option<Instant> = None;
        loop {
            if self.lane.is_closed() {
                self.fail_all(SESSION_DELETED).await;
                return;
            }
            let shared = self.queue.settings().shared;
            let Some(job) = self.lane.front() else {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.lane.added.notified() => continue,
                    // In a fleet, messages for this session may be accepted by other gateways.
                    _ = tokio::time::sleep(FLEET_POLL), if shared => {
                        if self.queue.sessions().connected_client(&self.session).is_some() {
                            self.queue.resync(&self.session, &self.lane).await;
                        }
                        continue;
                    }
                }
            };
            // In a fleet, not while another gateway runs the session: it may be sending them.
            let expired = self.expired(&job);
            if let Some(reason) = &expired
                && (!shared || !self.queue.sessions().runs_elsewhere(&self.session))
            {
                self.fail(&job, reason.clone()).await;
                attempts = 0;
                continue;
            }
            // Expired but run elsewhere: look again now and then, not in a tight loop.
            let deadline = if expired.is_some() { Instant::now() + FLEET_POLL } else { self.deadline(&job) };
            let client = tokio::select! {
                client = self.wait_connected(&cancel) => match client {
                    Some(client) => client,
                    None if cancel.is_cancelled() => return,
                    // The session is gone: wait for the lane to be closed (it is being deleted).
                    None => {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = self.lane.added.notified() => continue,
                        }
                    }
                },
                // Waiting for the session must not outlive the message's maximum age.
                _ = tokio::time::sleep_until(deadline.into()) => continue,
            };
            // In a fleet, what other gateways accepted joins the lane once this gateway runs the
            // session.
            if shared && resynced.is_none_or(|at| at.elapsed() >= FLEET_POLL) {
                self.queue.resync(&self.session, &self.lane).await;
                resynced = Some(Instant::now());
            }
            if !self.pace(&cancel).await {
                return;
            }
            // The claim of the message: in a fleet, under this gateway's lease of the session.
            // Refused, this gateway no longer runs the session: its new holder sends the message.
            if !self.queue.record_status(&self.session, &job.id, DeliveryStatus::Sending, None).await {
                self.wait_for_change(&cancel).await;
                continue;
            }
            // After the move to `sending` (which a final status refuses, under a row lock), so
            // that a message failed or sent elsewhere in the meantime is not sent here.
            if shared && self.finished_elsewhere(&job).await {
                self.queue.finish_front(&self.lane);
                attempts = 0;
                continue;
            }
            let outcome = tokio::select! {
                _ = cancel.cancelled() => {
                    self.queue.forget_ack(&job.id);
                    return;
                }
                outcome = attempt(&self.queue, &self.session, &client, &job) => outcome,
            };
            self.last_send = Some(Instant::now());
            match outcome {
                Outcome::Sent => {
                    // A fact, written even if the lease went meanwhile (a graceful handoff releases
                    // it while an ack is on its way): statuses only move up, so it can neither
                    // undo a later status nor fail the message, and unrecorded it would leave the
                    // message `sending`, its `sent` event never posted.
                    self.queue.set_status(&job.id, DeliveryStatus::Sent, None).await;
                    metrics::counter!(crate::metrics::SENDS, "outcome" => "sent", "session" => self.session.as_str().to_owned()).increment(1);
                    let waited = crate::domain::now_ms().saturating_sub(job.accepted_at_ms);
                    metrics::histogram!(crate::metrics::ACCEPTED_TO_SENT).record(waited as f64 / 1000.0);
                    tracing::info!(session = %self.session, message_id = %job.id, kind = %job.kind, "message accepted by WhatsApp");
                    self.queue.finish_front(&self.lane);
                    attempts = 0;
                }
                Outcome::Failed(reason) => {
                    self.give_up(&job, reason).await;
                    attempts = 0;
                }
                Outcome::PdfMissing => {
                    self.pdf_missing(&job).await;
                    attempts = 0;
                }
                Outcome::Retry(reason) => {
                    metrics::counter!(crate::metrics::SENDS, "outcome" => "retry", "session" => self.session.as_str().to_owned()).increment(1);
                    attempts = match self.queue.journal().record_attempt(&job.id, Some(reason.clone())).await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::error!(message_id = %job.id, error = %e, "cannot record an attempt");
                            attempts + 1
                        }
                    };
                    let policy = self.queue.settings().retry;
                    if policy.exhausted(attempts) {
                        self.give_up(&job, format!("gave up after {attempts} attempts: {reason}")).await;
                        attempts = 0;
                        continue;
                    }
                    let delay = policy.delay(attempts);
                    tracing::warn!(session = %self.session, message_id = %job.id, attempts, ?delay, %reason, "send failed; will retry");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Whether the shared journal says `job` is final already (sent by another gateway before
    /// this one ran the session, or failed there).
    async fn finished_elsewhere(&self, job: &Job) -> bool {
        match self.queue.journal().get(&job.id).await {
            Ok(Some(record)) if record.status.is_final() => {
                tracing::info!(session = %self.session, message_id = %job.id, status = %record.status.as_str(), "finished by another gateway; not sent again");
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(message_id = %job.id, error = %e, "cannot read a message's status");
                false
            }
        }
    }

    /// Fails every job left in a closed lane.
    async fn fail_all(&self, reason: &str) {
        let mut failed = 0usize;
        while let Some(job) = self.lane.front() {
            self.fail(&job, reason.to_owned()).await;
            failed += 1;
        }
        if failed > 0 {
            tracing::warn!(session = %self.session, failed, "session deleted: its queued messages failed");
        }
    }

    /// When the job's maximum age runs out, as an `Instant`.
    fn deadline(&self, job: &Job) -> Instant {
        let max_age = self.queue.settings().max_age;
        let age = Duration::from_millis(crate::domain::now_ms().saturating_sub(job.accepted_at_ms));
        Instant::now() + max_age.saturating_sub(age) + Duration::from_millis(1)
    }

    fn expired(&self, job: &Job) -> Option<String> {
        let max_age = self.queue.settings().max_age;
        let age = Duration::from_millis(crate::domain::now_ms().saturating_sub(job.accepted_at_ms));
        (age > max_age).then(|| format!("expired: not delivered within {} s", max_age.as_secs()))
    }

    /// Fails a job that no gateway is sending: expired while nobody ran its session, its session
    /// deleted, its PDF lost.
    async fn fail(&self, job: &Job, reason: String) {
        self.count_failure(job, &reason);
        self.queue.set_status(&job.id, DeliveryStatus::Failed, Some(reason)).await;
        self.queue.finish_front(&self.lane);
    }

    /// Fails a job this gateway tried to send: in a fleet, under its lease of the session (a
    /// gateway that lost the number leaves the message to its new holder).
    async fn give_up(&self, job: &Job, reason: String) {
        self.count_failure(job, &reason);
        self.queue.record_status(&self.session, &job.id, DeliveryStatus::Failed, Some(reason)).await;
        self.queue.finish_front(&self.lane);
    }

    fn count_failure(&self, job: &Job, reason: &str) {
        metrics::counter!(crate::metrics::SENDS, "outcome" => "failed", "session" => self.session.as_str().to_owned())
            .increment(1);
        tracing::error!(session = %self.session, message_id = %job.id, %reason, "PDF failed");
    }

    /// After a claim was refused: until the session's state changes (its client is being
    /// stopped) or a fleet poll's time has passed.
    async fn wait_for_change(&self, cancel: &CancellationToken) {
        let Some(mut state) = self.queue.sessions().state(&self.session) else { return };
        state.borrow_and_update();
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = state.changed() => {}
            _ = tokio::time::sleep(FLEET_POLL) => {}
        }
    }

    /// The job's PDF is gone. A server ack that came late (after its wait timed out) finishes
    /// the message and deletes its PDF while the job waits for its retry: then it is done.
    /// Otherwise the file was lost, and the message fails with [`PDF_MISSING`].
    async fn pdf_missing(&self, job: &Job) {
        let finished = match self.queue.journal().get(&job.id).await {
            Ok(record) => record.is_some_and(|r| r.status.is_final()),
            Err(e) => {
                tracing::error!(message_id = %job.id, error = %e, "cannot read a message's status");
                false
            }
        };
        if finished {
            tracing::info!(session = %self.session, message_id = %job.id, "already finished; not sent again");
            self.queue.finish_front(&self.lane);
        } else {
            self.fail(job, PDF_MISSING.to_owned()).await;
        }
    }

    /// Waits out the per-session minimum gap between sends, plus up to 50 % jitter.
    async fn pace(&self, cancel: &CancellationToken) -> bool {
        let interval = self.queue.settings().min_interval;
        let Some(last) = self.last_send else { return true };
        if interval.is_zero() {
            return true;
        }
        let jitter = rand::rng().random_range(0..=interval.as_millis() as u64 / 2);
        let due = last + interval + Duration::from_millis(jitter);
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep_until(due.into()) => true,
        }
    }

    /// Waits until the session is connected; `None` on shutdown.
    async fn wait_connected(&self, cancel: &CancellationToken) -> Option<SessionClient> {
        let mut state = self.queue.sessions().state(&self.session)?;
        loop {
            if state.borrow_and_update().status == Status::Connected
                && let Some(client) = self.queue.sessions().connected_client(&self.session)
            {
                return Some(client);
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                changed = state.changed() => if changed.is_err() { return None },
            }
        }
    }
}

/// One try at sending `job`: the on-WhatsApp check, then the PDF (read for this attempt only,
/// and dropped once handed over), then the wait for the server's ack.
async fn attempt(queue: &Queue, session: &SessionId, client: &SessionClient, job: &Job) -> Outcome {
    tokio::select! {
        outcome = send_and_wait(queue, client, job) => outcome,
        // Every step runs on the client the session had when the attempt began: once its
        // connection is gone (a restart, a drop), a pending IQ, upload or ack may never come.
        // Try again on the next connection (same id: the recipient sees the message once).
        () = connection_lost(queue, session) => {
            queue.forget_ack(&job.id);
            Outcome::Retry("the connection closed during the attempt".into())
        }
    }
}

/// The check, the upload and send, and the wait for the server's ack.
async fn send_and_wait(queue: &Queue, client: &SessionClient, job: &Job) -> Outcome {
    match registered(queue, client, job).await {
        Ok(true) => {}
        Ok(false) => return Outcome::Failed(UpstreamError::NotOnWhatsApp.to_string()),
        Err(outcome) => return outcome,
    }
    let content = match load_content(queue, job).await {
        Ok(content) => content,
        Err(outcome) => return outcome,
    };
    let ack = queue.expect_ack(&job.id);
    let sent = client.send_content(&job.to, &content, &job.id).await;
    drop(content);
    if let Err(e) = sent {
        queue.forget_ack(&job.id);
        return if e.is_permanent() { Outcome::Failed(e.to_string()) } else { Outcome::Retry(e.to_string()) };
    }
    match tokio::time::timeout(ACK_TIMEOUT, ack).await {
        Ok(Ok(None)) => Outcome::Sent,
        Ok(Ok(Some(code))) => Outcome::Retry(format!("WhatsApp refused the message (nack {code})")),
        Ok(Err(_)) | Err(_) => {
            queue.forget_ack(&job.id);
            Outcome::Retry("no server ack in time".into())
        }
    }
}

/// Resolves once the session is no longer connected (or is gone).
async fn connection_lost(queue: &Queue, session: &SessionId) {
    let Some(mut state) = queue.sessions().state(session) else { return };
    loop {
        if state.borrow_and_update().status != Status::Connected {
            return;
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// Whether the recipient is on WhatsApp, asked once per number.
async fn registered(queue: &Queue, client: &SessionClient, job: &Job) -> Result<bool, Outcome> {
    if let Some(known) = queue.known_on_whatsapp(&job.to) {
        return Ok(known);
    }
    match client.is_on_whatsapp(&job.to).await {
        Ok(registered) => {
            queue.remember_on_whatsapp(&job.to, registered);
            Ok(registered)
        }
        Err(e) => Err(Outcome::Retry(format!("on-WhatsApp check failed: {e}"))),
    }
}

/// The job's content, its bytes read from the journal's segments off the async workers.
async fn load_content(queue: &Queue, job: &Job) -> Result<OutgoingContent, Outcome> {
    match queue.journal().read_payload(&job.id).await {
        Ok(Some(bytes)) => OutgoingContent::from_stored(
            job.kind,
            bytes,
            job.mimetype.clone(),
            job.file_name.clone(),
            job.caption.clone(),
            job.ptt,
        )
        .map_err(|e| Outcome::Failed(format!("the stored content is unusable: {e}"))),
        Ok(None) => Err(Outcome::PdfMissing),
        Err(e @ journal::JournalError::Damaged) => Err(Outcome::Failed(e.to_string())),
        Err(e) => Err(Outcome::Retry(format!("cannot read the stored content: {e}"))),
    }
}
