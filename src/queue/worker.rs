//! One worker per session: take the oldest job, wait for the session to be connected, send,
//! and on failure back off and try the same job again (order is kept).

use std::sync::Arc;

use crate::queue::{Job, Lane, Queue};
use crate::session::upstream::{self, UpstreamError};
use crate::session::{SessionId, Status};

/// What one attempt came to.
#[derive(Debug)]
pub(crate) enum Outcome {
    Sent,
    /// Will never succeed: drop the job.
    Failed(String),
    /// Try again later.
    Retry(String),
}

pub(crate) struct Worker {
    pub(crate) session: SessionId,
    pub(crate) lane: Arc<Lane>,
    pub(crate) queue: Queue,
}

impl Worker {
    pub(crate) async fn run(self) {
        let cancel = self.queue.shutdown().token();
        loop {
            let Some(job) = self.lane.front() else {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.lane.added.notified() => continue,
                }
            };
            let Some(client) = self.wait_connected(&cancel).await else { return };
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                outcome = attempt(&self.queue, &client, &job) => outcome,
            };
            match outcome {
                Outcome::Sent => {
                    tracing::info!(session = %self.session, message_id = %job.id, waited_ms = job.accepted_at.elapsed().as_millis() as u64, "PDF delivered to WhatsApp");
                    self.lane.pop_front();
                }
                Outcome::Failed(reason) => {
                    tracing::error!(session = %self.session, message_id = %job.id, %reason, "PDF dropped: it cannot be delivered");
                    self.lane.pop_front();
                }
                Outcome::Retry(reason) => {
                    let attempts = self.lane.count_attempt();
                    let policy = self.queue.policy();
                    if policy.exhausted(attempts) {
                        tracing::error!(session = %self.session, message_id = %job.id, attempts, %reason, "PDF dropped after the last retry");
                        self.lane.pop_front();
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

    /// Waits until the session is connected; `None` on shutdown.
    async fn wait_connected(&self, cancel: &tokio_util::sync::CancellationToken) -> Option<Arc<whatsapp_rust::Client>> {
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

async fn attempt(queue: &Queue, client: &whatsapp_rust::Client, job: &Job) -> Outcome {
    let registered = match queue.known_on_whatsapp(&job.to) {
        Some(known) => known,
        None => match upstream::is_on_whatsapp(client, &job.to).await {
            Ok(registered) => {
                queue.remember_on_whatsapp(&job.to, registered);
                registered
            }
            Err(e) => return Outcome::Retry(format!("on-WhatsApp check failed: {e}")),
        },
    };
    if !registered {
        return Outcome::Failed(UpstreamError::NotOnWhatsApp.to_string());
    }
    match upstream::send_pdf(client, &job.to, &job.pdf, &job.file_name, job.id.as_str()).await {
        Ok(()) => Outcome::Sent,
        Err(e) if e.is_permanent() => Outcome::Failed(e.to_string()),
        Err(e) => Outcome::Retry(e.to_string()),
    }
}
