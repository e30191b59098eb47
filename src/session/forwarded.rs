//! In a fleet, the commands for a session another gateway runs go to that gateway: restart,
//! logout, delete, a pairing code, and the QR long-poll's linking window. This gateway asks
//! ([`SessionManager::forward`]), the one that runs the session answers
//! ([`SessionManager::serve_forwarded`]), both through the database.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::manager::SessionManager;
use super::{PairingError, SessionError};
use crate::domain::{GatewayId, PhoneNumber, SessionId};
use crate::fleet::{ForwardError, Incoming};

/// How long a forwarded command waits for its answer (a logout or a delete answers within the
/// manager's own command timeout; a pairing code within the route's).
pub(super) const FORWARD_WAIT: Duration = Duration::from_secs(26);

/// A command forwarded to the gateway that runs the session.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub(super) enum Forwarded {
    Restart,
    Logout,
    Delete,
    PairingCode {
        phone: String,
        window_ms: u64,
    },
    /// Someone polls for the QR: keep linking for this long.
    Link {
        window_ms: u64,
    },
}

/// What the gateway that runs the session answered.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(super) enum Answer {
    Done,
    Code { code: String },
    NoCode { error: PairingError },
    NotFound,
    ShuttingDown,
    Failed { reason: String },
}

impl Answer {
    fn of(result: Result<(), SessionError>) -> Answer {
        match result {
            Ok(()) => Answer::Done,
            Err(e) => Answer::failed(e),
        }
    }

    fn failed(error: SessionError) -> Answer {
        match error {
            SessionError::NotFound => Answer::NotFound,
            SessionError::ShuttingDown => Answer::ShuttingDown,
            other => Answer::Failed { reason: other.to_string() },
        }
    }

    /// The answer as this gateway's callers see it.
    pub(super) fn into_result(self) -> Result<(), SessionError> {
        match self {
            Answer::Done | Answer::Code { .. } | Answer::NoCode { .. } => Ok(()),
            Answer::NotFound => Err(SessionError::NotFound),
            Answer::ShuttingDown => Err(SessionError::ShuttingDown),
            Answer::Failed { reason } => {
                tracing::warn!(%reason, "the gateway that runs the session could not do it");
                Err(SessionError::Unresponsive)
            }
        }
    }
}

impl From<ForwardError> for SessionError {
    fn from(error: ForwardError) -> SessionError {
        match error {
            ForwardError::Unsent(e) => SessionError::Store(e),
            ForwardError::NoAnswer | ForwardError::Encoding(_) => SessionError::Unresponsive,
        }
    }
}

impl SessionManager {
    /// Sends `command` to `gateway`, which runs `session`, and returns its answer.
    pub(super) async fn forward(
        &self,
        gateway: &GatewayId,
        session: &SessionId,
        command: Forwarded,
    ) -> Result<Answer, SessionError> {
        let fleet = self.fleet().ok_or(SessionError::Unresponsive)?;
        tracing::debug!(session = %session, %gateway, ?command, "forwarding to the gateway that runs the session");
        Ok(fleet.forward(gateway, session, &command, FORWARD_WAIT).await?)
    }

    /// Runs the commands other gateways forward here until shutdown, each in a task of its own
    /// (a logout or a pairing code takes seconds).
    pub(crate) fn serve_forwarded(&self, incoming: Incoming) {
        let manager = self.clone();
        self.track(async move {
            let (session, command, reply) = incoming.into_parts();
            let answer = match serde_json::from_value::<Forwarded>(command) {
                Ok(command) => manager.run_forwarded(&session, command).await,
                Err(e) => Answer::Failed { reason: format!("unknown command: {e}") },
            };
            reply.send(&answer).await;
        });
    }

    async fn run_forwarded(&self, session: &SessionId, command: Forwarded) -> Answer {
        match command {
            Forwarded::Restart => Answer::of(self.restart_here(session).await),
            Forwarded::Logout => Answer::of(self.logout_here(session).await),
            Forwarded::Delete => Answer::of(self.delete_here(session).await),
            Forwarded::Link { window_ms } => {
                Answer::of(self.link_for_here(session, Duration::from_millis(window_ms)).map(|_| ()))
            }
            Forwarded::PairingCode { phone, window_ms } => {
                let phone = match PhoneNumber::parse(&phone) {
                    Ok(phone) => phone,
                    Err(e) => return Answer::Failed { reason: e.to_string() },
                };
                match self.pairing_code_here(session, phone, Duration::from_millis(window_ms)).await {
                    Ok(Ok(code)) => Answer::Code { code },
                    Ok(Err(error)) => Answer::NoCode { error },
                    Err(e) => Answer::failed(e),
                }
            }
        }
    }
}
