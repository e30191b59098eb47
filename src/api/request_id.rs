//! Request ids: taken from `X-Request-Id` when the client sends a sane one, generated otherwise;
//! echoed in the response, carried by the request's log span, and put in every error body.
//!
//! tower-http's `SetRequestId` keeps whatever the client sent; we accept only short ids of
//! visible, log-safe characters, so a hostile header can neither forge log lines nor bloat them.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use rand::RngExt as _;

/// `x-request-id`.
pub(crate) static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id taken from a client.
const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being served on this task, if any.
pub(crate) fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The request's id, as an extension for the log span.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

/// Outermost middleware: settles the id, then serves the request inside its scope.
pub(crate) async fn middleware(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_acceptable(id))
        .map(str::to_owned)
        .unwrap_or_else(generate);
    // Acceptable and generated ids are visible ASCII: always a valid header value.
    let value = HeaderValue::from_str(&id).ok();
    if let Some(value) = &value {
        req.headers_mut().insert(HEADER.clone(), value.clone());
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = CURRENT.scope(id, next.run(req)).await;
    if let Some(value) = value {
        response.headers_mut().insert(HEADER.clone(), value);
    }
    response
}

fn is_acceptable(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'='))
}

/// 16 random bytes as 32 hex digits.
fn generate() -> String {
    let raw: [u8; 16] = rand::rng().random();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptable_ids() {
        assert!(is_acceptable("req-123"));
        assert!(is_acceptable("0f8c2b7e-1c1a-4b9e-9d3b-2f6f7e7c9a11"));
        assert!(!is_acceptable(""));
        assert!(!is_acceptable("has space"));
        assert!(!is_acceptable("line\nbreak"));
        assert!(!is_acceptable(&"x".repeat(129)));
    }

    #[test]
    fn generated_ids_are_acceptable_and_distinct() {
        let (a, b) = (generate(), generate());
        assert!(is_acceptable(&a));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn current_is_scoped() {
        assert_eq!(current(), None);
        let seen = CURRENT.scope("abc".to_owned(), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("abc"));
    }
}
