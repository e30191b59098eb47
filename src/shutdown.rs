//! Graceful shutdown: the OS signal, and the token + tracker that every long-lived task uses.
//!
//! Hyper's `GracefulShutdown` drains HTTP connections, but an upgraded WebSocket and the queue
//! worker leave hyper's tracking, so they are spawned through [`Shutdown::spawn`] and watch
//! [`Shutdown::cancelled`]; [`Shutdown::close_and_wait`] then waits for them with a deadline.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM (what systemd and PM2 send).
pub async fn signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutdown requested"),
    }
}

/// A cancellation token plus a task tracker. Cheap to clone; all clones share both.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

/// [`Shutdown::close_and_wait`] gave up: tasks were still running at the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{remaining} task(s) still running after the shutdown deadline")]
pub struct ShutdownTimedOut {
    /// Tasks that had not finished.
    pub remaining: usize,
}

impl Shutdown {
    /// A fresh, un-cancelled shutdown with no tasks.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Spawns `task` on the tracker so [`Shutdown::close_and_wait`] waits for it. The task should
    /// itself select on [`Shutdown::cancelled`] (or a clone of [`Shutdown::token`]).
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// A clone of the token, for code that takes a `CancellationToken`.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Resolves once shutdown has begun.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// True once shutdown has begun.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Begins shutdown without waiting (tasks see [`Shutdown::cancelled`] resolve).
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// Number of tracked tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Cancels the token, stops accepting new tasks into the wait set, and waits up to `deadline`
    /// for every tracked task to finish.
    pub async fn close_and_wait(self, deadline: Duration) -> Result<(), ShutdownTimedOut> {
        self.token.cancel();
        self.tracker.close();
        match tokio::time::timeout(deadline, self.tracker.wait()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(ShutdownTimedOut { remaining: self.tracker.len() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_tasks_that_watch_the_token() {
        let shutdown = Shutdown::new();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let task_shutdown = shutdown.clone();
        shutdown.spawn(async move {
            task_shutdown.cancelled().await;
            let _ = done_tx.send(());
        });
        assert_eq!(shutdown.running(), 1);
        shutdown.clone().close_and_wait(Duration::from_secs(5)).await.unwrap();
        assert!(shutdown.is_cancelled());
        done_rx.await.unwrap();
        assert_eq!(shutdown.running(), 0);
    }

    // Real time (tokio's `test-util` feature is not enabled), so a short deadline.
    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let shutdown = Shutdown::new();
        shutdown.spawn(std::future::pending::<()>());
        let err = shutdown.clone().close_and_wait(Duration::from_millis(20)).await.unwrap_err();
        assert_eq!(err, ShutdownTimedOut { remaining: 1 });
    }

    #[tokio::test]
    async fn token_clones_share_state() {
        let shutdown = Shutdown::new();
        let token = shutdown.token();
        shutdown.cancel();
        assert!(token.is_cancelled());
    }
}
