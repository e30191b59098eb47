//! The sibling Node.js services' HTTP dialects, so that a backend or a page written for one of
//! them works against the gateway with only its base URL and its token changed. `COMPAT_API`
//! names the dialects to serve (none by default: their routes are then 404 and absent from
//! `/openapi.json`). One file per dialect, each a thin adapter onto the same calls our own
//! routes make; their callbacks are webhook formats (`crate::webhooks`, `BACKEND_URL`).
//!
//! What they share, here:
//! * **Errors in the dialect's shape.** A dialect's routes answer errors as its service did
//!   ([`ErrorShape`]), with our stable `code` and the request id beside them: the handlers and
//!   extractors return [`ApiError`] as everywhere, and [`reshape_errors`] rewrites the body on
//!   the way out, Spanish twin included, whatever produced it (a handler, an extractor, the
//!   request's deadline).
//! * **A token in the query for pages.** The seeds' pages `fetch` some routes without headers:
//!   [`PageCaller`] takes the token from `Authorization: Bearer` or `?token=` (as the WebSockets
//!   do), never from a log line (the request span holds the path without its query).
//! * **Scopes as our own routes.** Linking needs `sessions:write`, reading `sessions:read`,
//!   sending `messages:send`.

mod seed000;
mod seed002;

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::api::auth::{Caller, Scope};
use crate::api::error::{ApiError, Spanish};
use crate::api::send_pdf::{enqueue_error, scoped_idempotency};
use crate::api::state::AppState;
use crate::config::{CompatDialect, CompatDialects};
use crate::domain::{OutgoingContent, PhoneNumber, SessionId};

/// The routes of every dialect in `dialects`, each answering errors in its own shape.
pub(crate) fn router(dialects: CompatDialects) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new();
    for dialect in dialects.iter() {
        let (routes, shape) = match dialect {
            CompatDialect::Seed000 => (seed000::router(), ErrorShape::SuccessFalse),
            CompatDialect::Seed002 => (seed002::router(), ErrorShape::SuccessFalse),
            // Hook: `mod seed003;` above and `CompatDialect::Seed003 => (seed003::router(), shape)`
            // here (a new `ErrorShape` if its service answered errors otherwise; undocumented
            // routes such as Socket.IO's go through `OpenApiRouter::route`). Until then, nothing.
            CompatDialect::Seed003 | CompatDialect::Seed004 => continue,
        };
        router = router.merge(routes.route_layer(middleware::from_fn_with_state(shape, mark_shape)));
    }
    router
}

/// How a dialect's service answered errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    /// Seeds 000 and 002 (Express): `{"success":false,"error":"…","message":"…"}`; their
    /// clients read `error` or `message` as text. [`CompatErrorBody`].
    SuccessFalse,
}

/// Every error of seeds 000 and 002's routes: the service's `success`, `error` and `message`
/// (one sentence, in English or, with `Accept-Language: es`, Spanish), plus our stable `code`
/// and the request id.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompatErrorBody {
    /// Always `false`.
    pub success: bool,
    /// What went wrong, for people.
    pub error: String,
    /// The same sentence (the seeds' clients read either).
    pub message: String,
    /// A stable code to branch on, as in every error of the gateway (e.g. `SESSION_NOT_FOUND`).
    pub code: String,
    pub request_id: String,
}

/// Where a matched compatibility route leaves its [`ErrorShape`] for [`reshape_errors`].
#[derive(Clone, Default)]
struct ShapeSlot(Arc<OnceLock<ErrorShape>>);

/// The route layer of a dialect's routes: claims the request's errors for `shape`.
async fn mark_shape(State(shape): State<ErrorShape>, req: Request, next: Next) -> Response {
    if let Some(slot) = req.extensions().get::<ShapeSlot>() {
        let _ = slot.0.set(shape);
    }
    next.run(req).await
}

/// Rewrites our error bodies (`{"success":false,"error":{"code","message"},"requestId"}`, in
/// both languages) into the shape of the compatibility route that was matched, if one was. Sits
/// outside the request deadline so that its 503 is reshaped too.
pub(crate) async fn reshape_errors(mut req: Request, next: Next) -> Response {
    let slot = ShapeSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut response = next.run(req).await;
    let Some(shape) = slot.0.get().copied() else { return response };
    // Only our error bodies carry their Spanish twin.
    let Some(Spanish(spanish)) = response.extensions_mut().remove::<Spanish>() else { return response };
    let (mut parts, body) = response.into_parts();
    let english = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    if let Some(spanish) = shape.rewrite(&spanish) {
        parts.extensions.insert(Spanish(spanish));
    }
    let english = shape.rewrite(&english).unwrap_or(english);
    Response::from_parts(parts, Body::from(english))
}

impl ErrorShape {
    /// One of our error bodies in this shape; `None` if it is not one.
    fn rewrite(self, ours: &[u8]) -> Option<Bytes> {
        let Ok(Value::Object(mut ours)) = serde_json::from_slice::<Value>(ours) else { return None };
        let Some(Value::Object(mut error)) = ours.remove("error") else { return None };
        let text = |value: Option<Value>| match value {
            Some(Value::String(text)) => text,
            _ => String::new(),
        };
        let (code, message) = (text(error.remove("code")), text(error.remove("message")));
        let request_id = text(ours.remove("requestId"));
        let body = match self {
            ErrorShape::SuccessFalse => {
                CompatErrorBody { success: false, error: message.clone(), message, code, request_id }
            }
        };
        serde_json::to_vec(&body).ok().map(Bytes::from)
    }
}

/// The caller of a route that a seed's page `fetch`es: the token from `Authorization: Bearer`,
/// or from `?token=` as for the WebSockets (a page cannot always set headers). Scopes, rate
/// limits and failed-token counting are the same as for [`Caller`].
pub(crate) struct PageCaller(pub(crate) Caller);

impl FromRequestParts<AppState> for PageCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<PageCaller, ApiError> {
        let client = crate::api::serve::ClientAddr::of(&parts.extensions);
        let (caller, _) = state.auth.check_ws(&parts.headers, parts.uri.query(), client)?;
        tracing::Span::current().record("caller", caller.name());
        Ok(PageCaller(caller))
    }
}

/// Queues a text from `session` to `to` as `POST /api/sessions/{id}/messages` does (needs
/// `messages:send` on the session): its message id. `body` is what an `Idempotency-Key` is
/// checked against.
async fn send_text(
    state: &AppState,
    caller: &Caller,
    session: &SessionId,
    to: PhoneNumber,
    text: &str,
    idempotency: Option<String>,
    body: &[u8],
) -> Result<String, ApiError> {
    caller.require_session(Scope::MessagesSend, session)?;
    if !state.sessions.contains(session) {
        return Err(ApiError::SessionNotFound);
    }
    let content = OutgoingContent::text(text)?;
    let idempotency = scoped_idempotency(caller, idempotency, body);
    let enqueued = state.queue.enqueue(session, to, content, idempotency).await.map_err(enqueue_error)?;
    Ok(enqueued.id().to_string())
}

/// The body as a JSON object (a UTF-8 byte order mark before it is fine), or 400 `BAD_JSON`.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(ApiError::BadJson),
    }
}

/// A required text field: 400 `MISSING_FIELD` when absent, `null` or empty, `INVALID_FIELD_TYPE`
/// when not a string.
fn required_text(object: &mut Map<String, Value>, field: &'static str) -> Result<String, ApiError> {
    match object.remove(field) {
        None | Some(Value::Null) => Err(ApiError::MissingField(field)),
        Some(Value::String(text)) if text.is_empty() => Err(ApiError::MissingField(field)),
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(ApiError::WrongFieldType { field, expected: "a string" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_error_bodies_take_the_seeds_shape() {
        let ours =
            br#"{"success":false,"error":{"code":"SESSION_NOT_FOUND","message":"session not found"},"requestId":"r1"}"#;
        let theirs: Value = serde_json::from_slice(&ErrorShape::SuccessFalse.rewrite(ours).unwrap()).unwrap();
        assert_eq!(
            theirs,
            serde_json::json!({"success":false,"error":"session not found","message":"session not found",
                "code":"SESSION_NOT_FOUND","requestId":"r1"})
        );
        assert!(ErrorShape::SuccessFalse.rewrite(b"{\"status\":\"ok\"}").is_none());
        assert!(ErrorShape::SuccessFalse.rewrite(b"not json").is_none());
    }
}
