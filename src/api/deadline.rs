//! `HTTP_REQUEST_TIMEOUT_SECS` as a clock that does not run while a body is being received.
//!
//! A body has its own limit (`HTTP_BODY_TIMEOUT_SECS`, answered 408 `BODY_TIMEOUT`). If one clock
//! covered both, a body trickled in for as long as both allow would be answered 503 `TIMEOUT`
//! instead, telling the client to retry what it never finished sending. So the request's clock
//! pauses while [`RequestBody`](super::body::RequestBody) reads, and starts again, whole, once
//! the body is in.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::error::ApiError;

/// The request's deadline (`None` while paused), shared with the body reader.
#[derive(Clone)]
pub(crate) struct RequestClock {
    deadline: std::sync::Arc<watch::Sender<Option<Instant>>>,
    limit: Duration,
}

impl RequestClock {
    /// Stops the clock: the body is being read, under its own limit.
    pub(crate) fn pause(&self) {
        self.deadline.send_replace(None);
    }

    /// The body is in: the route gets its whole time from now.
    pub(crate) fn restart(&self) {
        self.deadline.send_replace(Some(Instant::now() + self.limit));
    }
}

/// Answers 503 `TIMEOUT` when the request's clock runs out before its handler answers.
pub(crate) async fn middleware(State(limit): State<Duration>, mut req: Request, next: Next) -> Response {
    let (sender, mut deadline) = watch::channel(Some(Instant::now() + limit));
    req.extensions_mut().insert(RequestClock { deadline: std::sync::Arc::new(sender), limit });
    let answer = next.run(req);
    tokio::pin!(answer);
    // Once the handler has dropped the request (and the clock with it), the deadline is final.
    let mut adjustable = true;
    loop {
        let at = *deadline.borrow_and_update();
        tokio::select! {
            response = &mut answer => return response,
            changed = deadline.changed(), if adjustable => adjustable = changed.is_ok(),
            () = sleep_until(at) => return ApiError::Timeout.into_response(),
        }
    }
}

/// Sleeps until `at`, or for ever while the clock is paused.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    async fn status_of(router: Router) -> u16 {
        let request = Request::builder().uri("/").body(Body::empty()).unwrap();
        router.oneshot(request).await.unwrap().status().as_u16()
    }

    fn with_clock(router: Router<()>) -> Router {
        router.layer(axum::middleware::from_fn_with_state(Duration::from_secs(10), middleware))
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_handler_times_out_and_a_paused_clock_does_not() {
        let slow =
            with_clock(Router::new().route("/", get(|| async { tokio::time::sleep(Duration::from_secs(11)).await })));
        assert_eq!(status_of(slow).await, 503);

        // Paused for 30 s (a body being read), then `work` of handling, on a route of 10 s.
        let reading_then = |work: Duration| {
            with_clock(Router::new().route(
                "/",
                get(move |req: Request| async move {
                    let clock = req.extensions().get::<RequestClock>().cloned().unwrap();
                    clock.pause();
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    clock.restart();
                    drop((req, clock));
                    tokio::time::sleep(work).await;
                }),
            ))
        };
        assert_eq!(status_of(reading_then(Duration::from_secs(9))).await, 200, "the body's time is not counted");
        assert_eq!(status_of(reading_then(Duration::from_secs(11))).await, 503, "the handler's time is");
    }
}
