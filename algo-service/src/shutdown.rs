//! The stop signal, and the drain that follows it.
//!
//! `main` owns the one SIGTERM/SIGINT listener ([`on_signal`]) and turns it
//! into a [`CancellationToken`]; every component takes the token instead of
//! listening itself, so tests stop a worker by cancelling a token.
//!
//! After the token fires ([`drain`]): the `tasks.algo` consumer is already
//! cancelled by the consume loop, so no new deliveries arrive; held deliveries
//! go back to the queue at once; running tasks get until the grace period
//! (counted from the signal) to finish and report; then every remaining flag is
//! raised with [`StopReason::Shutdown`] and those tasks are requeued without a
//! status callback (they stay `PROCESSING` until another worker takes them
//! over when the lease expires).

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::registry::{Registry, StopReason};

/// How long interrupted tasks get to settle after the grace period; they only
/// need to notice their flag (C polls it every 5 ms) and nack.
pub const SETTLE_AFTER_GRACE: Duration = Duration::from_secs(10);

/// Cancels `token` on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn on_signal(token: CancellationToken) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
    token.cancel();
}

/// Waits for the tasks in `tracker` until `grace_end`, then interrupts the
/// rest (flag [`StopReason::Shutdown`], `abandon` fired so callback retries
/// stop) and waits up to [`SETTLE_AFTER_GRACE`] for them to requeue themselves.
/// Returns whether every task settled.
pub async fn drain(
    tracker: &TaskTracker,
    registry: &Registry,
    abandon: &CancellationToken,
    grace_end: Instant,
) -> bool {
    tracker.close();
    if !tracker.is_empty() {
        tracing::info!(
            in_flight = tracker.len(),
            grace_left_ms = grace_end
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
            "waiting for in-flight tasks to finish"
        );
    }
    if tokio::time::timeout_at(grace_end, tracker.wait())
        .await
        .is_ok()
    {
        return true;
    }
    abandon.cancel();
    let interrupted = registry.signal_all(StopReason::Shutdown);
    tracing::warn!(
        interrupted,
        in_flight = tracker.len(),
        "grace period over; interrupting the remaining tasks and requeueing them"
    );
    if tokio::time::timeout(SETTLE_AFTER_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::error!(
            in_flight = tracker.len(),
            "tasks did not settle after being interrupted; exiting anyway (the broker requeues their deliveries)"
        );
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use task_model::TaskId;

    #[tokio::test(start_paused = true)]
    async fn tasks_that_finish_within_grace_are_not_interrupted() {
        let tracker = TaskTracker::new();
        let registry = Registry::new();
        let abandon = CancellationToken::new();
        tracker.spawn(tokio::time::sleep(Duration::from_secs(2)));
        let settled = drain(
            &tracker,
            &registry,
            &abandon,
            Instant::now() + Duration::from_secs(5),
        )
        .await;
        assert!(settled);
        assert!(!abandon.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_grace_period_running_tasks_are_told_to_stop() {
        let tracker = TaskTracker::new();
        let registry = Registry::new();
        let abandon = CancellationToken::new();
        let never = CancellationToken::new();
        let guard = registry.acquire(TaskId::new(), &never).await.unwrap();
        let flag = guard.flag().clone();
        let stopper = abandon.clone();
        tracker.spawn(async move {
            // A task that only stops when abandoned, like a callback being retried.
            stopper.cancelled().await;
            drop(guard);
        });
        let start = Instant::now();
        let settled = drain(
            &tracker,
            &registry,
            &abandon,
            start + Duration::from_secs(3),
        )
        .await;
        assert!(settled);
        assert_eq!(flag.reason(), Some(StopReason::Shutdown));
        assert!(start.elapsed() >= Duration::from_secs(3));
        assert!(start.elapsed() < Duration::from_secs(4));
    }
}
