//! The lease sweep: re-offers running tasks whose lease lapsed.
//!
//! A worker that dies loses its connection, and the broker hands its
//! unacked messages to another worker. A worker that *freezes* (SIGSTOP, a
//! hung host, a paused VM) keeps its connection open until the broker's
//! heartbeat check gives up, minutes later, and its tasks stall meanwhile
//! although their leases ran out long ago. So every api process sweeps the
//! lease index ([`crate::store`]'s `leases`) every quarter of a lease
//! (0.25 to 5 s): a PROCESSING or CANCELLING task whose lease lapsed has its
//! message published again, once per lease (marked atomically in the task's
//! hash, so several api processes re-offer it once). Another worker receives
//! it and claims it as a takeover: it resumes at the recorded stage, with
//! the original deadline. The frozen worker, when it wakes, learns from its
//! next callback answer that it lost the task and stops without reporting.
//!
//! If the holder wakes before anyone takes the copy, it renews its lease and
//! carries on; the copy then meets a live lease and waits, like any
//! duplicate, until the task ends. A copy is harmless either way: workers run
//! a task once whatever the number of copies (the claim and the lease).

use std::{sync::Arc, time::Duration};

use task_model::TaskMessage;
use tokio_util::sync::CancellationToken;

use crate::{
    state::AppState,
    store::{DueLease, LeaseCheck, StoreError},
};

/// Entries looked at per sweep, per shard of the lease index.
const BATCH: usize = 100;
/// A re-offer that nobody took up (its message lost, say, because the api
/// died between marking and publishing) is made again after this long.
pub const REOFFER_AGAIN: Duration = Duration::from_secs(60);

/// How often to sweep for a lease of `lease`: a quarter of it, 0.25 to 5 s.
pub fn period(lease: Duration) -> Duration {
    (lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// Sweeps every [`period`] until `stop`.
pub async fn run(state: Arc<AppState>, stop: CancellationToken) {
    let period = period(state.lease);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        match sweep_once(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(reoffered = n, "re-offered tasks whose lease lapsed"),
            Err(e) => tracing::debug!(error = %e, "lease sweep failed; retrying next round"),
        }
    }
}

/// One sweep: looks at each indexed task whose lease may have run out and
/// re-offers those whose lease did. Returns how many it re-offered.
///
/// # Errors
/// Redis is unavailable. A broker that is down or blocking ends the sweep
/// early without an error; the next one tries again.
pub async fn sweep_once(state: &AppState) -> Result<usize, StoreError> {
    let due = state.store.due_leases(BATCH).await?;
    let mut reoffered = 0;
    for DueLease { id, seen_ms: now } in due {
        let (marked_ms, holder) = match state.store.check_lease(&id, REOFFER_AGAIN).await {
            Ok(LeaseCheck::Untracked) => {
                state.store.retrack_lease(&id, None, now).await?;
                continue;
            }
            Ok(LeaseCheck::Later { next_ms }) => {
                state.store.retrack_lease(&id, Some(next_ms), now).await?;
                continue;
            }
            Ok(LeaseCheck::Reoffer { marked_ms, holder }) => (marked_ms, holder),
            Err(e @ StoreError::Unavailable(_)) => return Err(e),
            Err(e) => {
                tracing::error!(task_id = %id, error = %e, "unreadable lease; dropping it from the index");
                state.store.retrack_lease(&id, None, now).await?;
                continue;
            }
        };
        let task = match state.store.load(&id).await {
            Ok(Some(task)) => task.view,
            Ok(None) => {
                state.store.retrack_lease(&id, None, now).await?;
                continue;
            }
            Err(e @ StoreError::Unavailable(_)) => return Err(e),
            Err(e) => {
                tracing::error!(task_id = %id, error = %e, "unreadable task with a lapsed lease; dropping it from the index");
                state.store.retrack_lease(&id, None, now).await?;
                continue;
            }
        };
        match state
            .publisher
            .publish_task(&TaskMessage::from(&task), &task.queue)
            .await
        {
            Ok(()) => {
                // A takeover's claim re-scores the entry; failing that, look
                // again after a lease (the holder may have woken and renewed).
                let next = marked_ms + state.lease.as_millis() as i64;
                state.store.retrack_lease(&id, Some(next), now).await?;
                tracing::warn!(
                    task_id = %id,
                    holder = holder.as_deref().unwrap_or(""),
                    stage = task.stage,
                    status = %task.status,
                    "the holder's lease lapsed; re-offered the task for another worker to take over"
                );
                reoffered += 1;
            }
            Err(e) => {
                tracing::warn!(task_id = %id, error = %e, "cannot re-offer a task whose lease lapsed now; next sweep");
                state.store.unmark_reoffer(&id, marked_ms).await?;
                break;
            }
        }
    }
    Ok(reoffered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_runs_every_quarter_lease_within_bounds() {
        assert_eq!(
            period(Duration::from_secs(10)),
            Duration::from_millis(2_500)
        );
        assert_eq!(period(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(
            period(Duration::from_millis(400)),
            Duration::from_millis(250)
        );
        assert_eq!(period(Duration::from_secs(600)), Duration::from_secs(5));
    }
}
