//! Commands for a session another gateway of the fleet runs (restart, logout, delete, a pairing
//! code): sent to that gateway through the database, and answered the same way. Nothing is
//! kept: a command the other gateway misses (its listener was reconnecting) goes unanswered,
//! and its sender says so after its wait.

use std::time::Duration;

use rand::RngExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::Fleet;
use crate::domain::{GatewayId, SessionId};
use crate::storage::{MessageKind, StorageError};

/// Commands received and not yet taken by the session manager; more wait in the listener.
pub(super) const INCOMING: usize = 256;

/// A command or an answer, addressed to one gateway.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// Pairs an answer with its command.
    id: String,
    from: String,
    to: String,
    session: String,
    body: serde_json::Value,
}

/// A command another gateway forwarded to this one.
#[derive(Debug)]
pub struct Incoming {
    pub session: SessionId,
    pub command: serde_json::Value,
    reply: ReplyTo,
}

/// Where the answer to an [`Incoming`] command goes.
#[derive(Debug)]
pub struct ReplyTo {
    fleet: Fleet,
    id: String,
    to: String,
    session: String,
}

/// Why a forwarded command got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot reach the database to forward the command: {0}")]
    Unsent(#[from] StorageError),
    #[error("the gateway that runs the session did not answer in time")]
    NoAnswer,
    #[error("the command or its answer cannot be encoded: {0}")]
    Encoding(#[from] serde_json::Error),
}

impl Incoming {
    /// Splits the command from where its answer goes.
    pub fn into_parts(self) -> (SessionId, serde_json::Value, ReplyTo) {
        (self.session, self.command, self.reply)
    }
}

impl ReplyTo {
    /// Answers the command (once).
    pub async fn send(self, answer: &impl Serialize) {
        let envelope = match serde_json::to_value(answer) {
            Ok(body) => Envelope {
                id: self.id,
                from: self.fleet.gateway().to_string(),
                to: self.to,
                session: self.session,
                body,
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the answer to a forwarded command");
                return;
            }
        };
        if let Err(e) = self.fleet.send(MessageKind::Reply, &envelope).await {
            tracing::warn!(session = %envelope.session, error = %e, "cannot answer a forwarded command");
        }
    }
}

impl Fleet {
    /// Sends `command` about `session` to gateway `to` and waits up to `wait` for its answer.
    pub async fn forward<A: serde::de::DeserializeOwned>(
        &self,
        to: &GatewayId,
        session: &SessionId,
        command: &impl Serialize,
        wait: Duration,
    ) -> Result<A, ForwardError> {
        let id = format!("{:032x}", rand::rng().random::<u128>());
        let envelope = Envelope {
            id: id.clone(),
            from: self.gateway().to_string(),
            to: to.to_string(),
            session: session.to_string(),
            body: serde_json::to_value(command)?,
        };
        // The answer comes back through this gateway's listener: it must listen first.
        let mut listening = self.inner.listening.subscribe();
        if tokio::time::timeout(wait, listening.wait_for(|listening| *listening)).await.is_err() {
            return Err(ForwardError::NoAnswer);
        }
        let (tx, answer) = oneshot::channel();
        self.inner.awaiting.insert(id.clone(), tx);
        let sent = self.send(MessageKind::Command, &envelope).await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(wait, answer).await,
            Err(e) => {
                self.inner.awaiting.remove(&id);
                return Err(e);
            }
        };
        self.inner.awaiting.remove(&id);
        match answer {
            Ok(Ok(body)) => Ok(serde_json::from_value(body)?),
            Ok(Err(_)) | Err(_) => Err(ForwardError::NoAnswer),
        }
    }

    /// The commands other gateways forward to this one, from now on; taken once, by the
    /// session manager.
    pub fn take_incoming(&self) -> Option<mpsc::Receiver<Incoming>> {
        self.inner.incoming_rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    async fn send(&self, kind: MessageKind, envelope: &Envelope) -> Result<(), ForwardError> {
        let message = serde_json::to_string(envelope)?;
        self.inner.leases.send(kind, &message).await?;
        Ok(())
    }

    /// Tells the gateway that runs `session` that a message for it was accepted here. Best
    /// effort: that gateway polls the journal anyway.
    pub async fn announce_queued(&self, session: &SessionId) {
        if let Err(e) = self.inner.leases.send(MessageKind::Queued, session.as_str()).await {
            tracing::debug!(session = %session, error = %e, "cannot announce a queued message");
        }
    }

    /// The sessions another gateway accepted a message for, from now on.
    pub fn queued(&self) -> tokio::sync::broadcast::Receiver<SessionId> {
        self.inner.queued.subscribe()
    }

    /// A command or an answer from the database: kept if it is addressed to this gateway.
    pub(super) async fn on_message(&self, kind: MessageKind, message: String) {
        if matches!(kind, MessageKind::Events | MessageKind::StatusesWanted) {
            self.on_fan_out(kind, message);
            return;
        }
        if kind == MessageKind::Queued {
            if let Ok(session) = SessionId::parse(&message) {
                let _ = self.inner.queued.send(session);
            }
            return;
        }
        let Ok(envelope) = serde_json::from_str::<Envelope>(&message) else {
            tracing::debug!("ignoring an unreadable fleet message");
            return;
        };
        if envelope.to != self.gateway().as_str() {
            return;
        }
        match kind {
            MessageKind::Reply => {
                if let Some((_, waiting)) = self.inner.awaiting.remove(&envelope.id) {
                    let _ = waiting.send(envelope.body);
                }
            }
            MessageKind::Queued | MessageKind::Events | MessageKind::StatusesWanted => {}
            MessageKind::Command => {
                let Ok(session) = SessionId::parse(&envelope.session) else { return };
                let reply =
                    ReplyTo { fleet: self.clone(), id: envelope.id, to: envelope.from, session: envelope.session };
                let incoming = Incoming { session, command: envelope.body, reply };
                if self.inner.incoming.send(incoming).await.is_err() {
                    tracing::debug!("a forwarded command arrived while shutting down");
                }
            }
        }
    }
}
