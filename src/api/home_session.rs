//! A user's own session, created on first use.
//!
//! A user's JWT (seeds 003 and 004) names one session, and may see and drive only that one. It
//! need not exist beforehand: the first request of the user that touches it — reading it,
//! listing sessions, its QR (HTTP or `/ws/session/{id}`), a pairing code, sending, reading its
//! messages, chats and contacts — creates it as `POST /api/sessions` does (an entry in
//! `sessions.config.json`, unlinked until someone scans its QR). Creating is idempotent and safe
//! under races: the session manager creates each id once, under its lock, and a second creator
//! finds it made.
//!
//! Other callers are left as they were: a session that does not exist is 404
//! `SESSION_NOT_FOUND` for them.

use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::domain::SessionId;
use crate::session::SessionError;

/// The caller's one session ([`Caller::home_session`]), created now if it is a user's JWT and
/// the session does not exist yet. 403 `FORBIDDEN` for a caller bound to no single session.
///
/// The sibling services' routes, which name no session, start here.
pub(crate) async fn ensure_home_session(state: &AppState, caller: &Caller) -> Result<SessionId, ApiError> {
    let Some(id) = caller.home_session() else {
        tracing::debug!(caller = caller.name(), "no home session for this token");
        return Err(ApiError::Forbidden("act without naming a session (this token is not bound to one)"));
    };
    existing_session(state, caller, &id).await?;
    Ok(id)
}

/// `Ok` if session `id` exists, or was just created because it is the home session of a user's
/// JWT; else 404 `SESSION_NOT_FOUND`. Call it after the caller's access to `id` is checked.
pub(crate) async fn existing_session(state: &AppState, caller: &Caller, id: &SessionId) -> Result<(), ApiError> {
    if state.sessions.contains(id) {
        return Ok(());
    }
    if !caller.is_jwt_user() || caller.home_session().as_ref() != Some(id) {
        return Err(ApiError::SessionNotFound);
    }
    match state.sessions.add(id.clone(), None, None).await {
        Ok(_) => {
            tracing::info!(session = %id, caller = caller.name(), "a user's session created on first use");
            Ok(())
        }
        // Another request of the same user created it meanwhile.
        Err(SessionError::Exists) => Ok(()),
        Err(other) => Err(other.into()),
    }
}
