//! Request bodies, read whole with a size limit and a time limit.
//!
//! An extractor rather than a layer: axum runs it after the [`Caller`](super::auth::Caller)
//! extractor, so nobody can make us buffer a large body without a valid token.

use std::marker::PhantomData;

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_LENGTH;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::api::deadline::RequestClock;
use crate::api::error::ApiError;
use crate::api::state::AppState;

/// How large a route's body may be.
pub(crate) trait BodyLimit {
    fn limit(state: &AppState) -> usize;
}

/// `MAX_BODY_BYTES`: `POST /api/send-pdf` carries a base64 PDF.
pub(crate) struct PdfLimit;

impl BodyLimit for PdfLimit {
    fn limit(state: &AppState) -> usize {
        state.max_body_bytes
    }
}

/// `HTTP_MAX_JSON_BYTES`: every other route with a body.
pub(crate) struct SmallLimit;

impl BodyLimit for SmallLimit {
    fn limit(state: &AppState) -> usize {
        state.limits.max_json_bytes
    }
}

/// The whole body: 413 `PAYLOAD_TOO_LARGE` past `L`'s limit (from `Content-Length` before
/// reading, or while reading), 408 `BODY_TIMEOUT` past `HTTP_BODY_TIMEOUT_SECS`.
pub(crate) struct RequestBody<L> {
    pub(crate) bytes: Bytes,
    limit: PhantomData<L>,
}

impl<L: BodyLimit> FromRequest<AppState> for RequestBody<L> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = L::limit(state);
        let declared =
            req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        // The request's own clock waits while the body comes, under its own limit.
        let clock = req.extensions().get::<RequestClock>().cloned();
        if let Some(clock) = &clock {
            clock.pause();
        }
        let read = Limited::new(req.into_body(), limit).collect();
        let collected =
            tokio::time::timeout(state.limits.body_timeout, read).await.map_err(|_| ApiError::BodyTimeout)?;
        if let Some(clock) = &clock {
            clock.restart();
        }
        let bytes = collected
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    // The client went away or sent a malformed chunked body.
                    ApiError::BadJson
                }
            })?
            .to_bytes();
        Ok(RequestBody { bytes, limit: PhantomData })
    }
}
