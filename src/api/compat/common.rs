//! What the adapters of seeds 003 and 004 share: the caller's one session, a QR to show, a text
//! to send, and dates the way JavaScript writes them.
//!
//! Those services give each of their users one WhatsApp number, and their routes name no
//! session: the session is the caller's own ([`Caller::home_session`]), created on first use.

use std::time::Duration;

use crate::api::auth::{Caller, Scope};
use crate::api::error::ApiError;
use crate::api::send_pdf::enqueue_error;
use crate::api::state::AppState;
use crate::domain::{MessageId, OutgoingContent, PhoneNumber, SessionId};
use crate::session::{Qr, SessionError, Status};

/// How long a route waits for the first QR code.
const QR_WAIT: Duration = Duration::from_secs(10);

/// The caller's own session, if the token is bound to exactly one and has `scope` on it; else
/// 403 `FORBIDDEN` (a token of several sessions, or of every one, cannot use these routes).
pub(crate) fn home(caller: &Caller, scope: Scope) -> Result<SessionId, ApiError> {
    caller.require(scope)?;
    let Some(id) = caller.home_session() else {
        tracing::debug!(caller = caller.name(), "a sibling service's route with a token of no single session");
        return Err(ApiError::Forbidden("use this route (it needs a token bound to one session)"));
    };
    caller.require_session(scope, &id)?;
    Ok(id)
}

/// Creates the session if it does not exist yet (a user's first visit).
pub(crate) async fn ensure(state: &AppState, id: &SessionId) -> Result<(), ApiError> {
    if state.sessions.contains(id) {
        return Ok(());
    }
    match state.sessions.add(id.clone(), None, None).await {
        Ok(_) | Err(SessionError::Exists) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Where linking stands once a QR was asked for.
pub(crate) enum Linking {
    /// Linked and connected: nothing to scan.
    Connected,
    /// The code to show now.
    Qr(Qr),
    /// No code within the wait; the status the session is in.
    Pending(Status),
}

/// Starts linking the session (creating it if needed), keeps it going for
/// `QR_LINK_WINDOW_SECS`, and waits up to 10 s for a QR code, as `GET /api/sessions/{id}/qr`.
pub(crate) async fn link(state: &AppState, id: &SessionId) -> Result<Linking, ApiError> {
    ensure(state, id).await?;
    match state.sessions.get(id).map(|s| s.state.status) {
        Some(Status::Connected) => return Ok(Linking::Connected),
        Some(Status::PairingCode) => return Err(ApiError::PairingCodeOutstanding),
        _ => {}
    }
    let mut watch = state.sessions.link_for(id, state.qr_link_window)?;
    let deadline = tokio::time::Instant::now() + QR_WAIT;
    loop {
        let now = watch.borrow_and_update().clone();
        match now.status {
            Status::Connected => return Ok(Linking::Connected),
            Status::PairingCode => return Err(ApiError::PairingCodeOutstanding),
            _ => {}
        }
        if let Some(qr) = now.qr {
            return Ok(Linking::Qr(qr));
        }
        match tokio::time::timeout_at(deadline, watch.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return Err(ApiError::SessionNotFound),
            Err(_) => return Ok(Linking::Pending(now.status)),
        }
    }
}

/// The session's status; `disconnected` for one that does not exist yet.
pub(crate) fn status(state: &AppState, id: &SessionId) -> Status {
    state.sessions.get(id).map_or(Status::Disconnected, |s| s.state.status)
}

/// Queues a text to `to` through the session, as `POST /api/sessions/{id}/messages` does, once
/// the session is connected (both services refuse to send without a live session: 409
/// `SESSION_NOT_CONNECTED`). Durable when it returns.
pub(crate) async fn send_text(
    state: &AppState,
    id: &SessionId,
    to: PhoneNumber,
    text: &str,
) -> Result<MessageId, ApiError> {
    if status(state, id) != Status::Connected {
        return Err(ApiError::SessionNotConnected);
    }
    let content = OutgoingContent::text(text)?;
    let enqueued = state.queue.enqueue(id, to, content, None).await.map_err(enqueue_error)?;
    Ok(enqueued.id().clone())
}

/// `+51987654321`: a number as JavaScript services show it.
pub(crate) fn plus(digits: &str) -> String {
    format!("+{digits}")
}

/// `51987654321@s.whatsapp.net`: a number's user JID.
pub(crate) fn phone_jid(digits: &str) -> String {
    format!("{digits}@s.whatsapp.net")
}

/// Unix milliseconds as ISO 8601 in UTC: `2024-01-01T00:00:00.000Z` (JavaScript's
/// `toISOString`) with `millis`, `2024-01-01T00:00:00Z` without.
pub(crate) fn iso8601(ms: u64, millis: bool) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    if millis {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z", ms % 1000)
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_javascript_writes_them() {
        assert_eq!(iso8601(0, true), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_704_067_200_000, true), "2024-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_737_367_200_000, false), "2025-01-20T10:00:00Z");
        // A leap day, and the last millisecond of a century leap year.
        assert_eq!(iso8601(1_709_164_800_123, true), "2024-02-29T00:00:00.123Z");
        assert_eq!(iso8601(978_307_199_999, true), "2000-12-31T23:59:59.999Z");
        assert_eq!(iso8601(951_782_400_000, false), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn numbers_are_written_with_a_plus_or_as_jids() {
        assert_eq!(plus("51987654321"), "+51987654321");
        assert_eq!(phone_jid("51987654321"), "51987654321@s.whatsapp.net");
    }

    #[test]
    fn only_a_token_of_one_session_has_a_home() {
        assert!(matches!(home(&Caller::admin_for_tests(), Scope::MessagesRead), Err(ApiError::Forbidden(_))));
        let one = Caller::scoped_for_tests(&["tienda"]);
        assert_eq!(home(&one, Scope::MessagesRead).map(|id| id.as_str().to_owned()).ok().as_deref(), Some("tienda"));
        assert!(matches!(home(&one, Scope::MessagesSend), Err(ApiError::Forbidden(_))), "without the scope");
        let two = Caller::scoped_for_tests(&["tienda", "lima"]);
        assert!(matches!(home(&two, Scope::MessagesRead), Err(ApiError::Forbidden(_))));
    }
}
