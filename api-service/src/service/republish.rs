//! The outbox sweep: publishes tasks whose create was cut short.
//!
//! `POST /tasks` stores the task, publishes its message, waits for the
//! broker's confirm, then answers 202. An api process that dies between the
//! store and the confirm leaves a QUEUED task without a message, which no
//! worker would ever run. [`Store::create`](crate::store::Store::create) puts
//! every new id into an outbox set first and the create takes it out once
//! the message is confirmed; this sweep, in every api process, publishes the
//! tasks that stayed there longer than `REPUBLISH_AFTER_SECS` and are still
//! QUEUED, and drops the others.
//!
//! A republished task may already have its message (the process died after
//! the confirm, before taking the id out): workers run a task once whatever
//! the number of copies (the claim and the lease), so a duplicate is harmless.

use std::{sync::Arc, time::Duration};

use task_model::{TaskMessage, TaskStatus};
use tokio_util::sync::CancellationToken;

use crate::{state::AppState, store::StoreError};

/// Ids looked at per sweep.
const BATCH: usize = 100;

/// Sweeps every `after / 2` (0.5 to 5 s) until `stop`.
pub async fn run(state: Arc<AppState>, after: Duration, stop: CancellationToken) {
    let period = (after / 2).clamp(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        match sweep_once(&state, after).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(published = n, "published tasks whose create was cut short"),
            Err(e) => tracing::debug!(error = %e, "outbox sweep failed; retrying next round"),
        }
    }
}

/// One sweep: publishes each task that entered the outbox more than `after`
/// ago and is still QUEUED. Returns how many it published.
///
/// # Errors
/// Redis is unavailable. A broker that is down ends the sweep early without
/// an error; the tasks stay in the outbox for the next one.
pub async fn sweep_once(state: &AppState, after: Duration) -> Result<usize, StoreError> {
    let cutoff = chrono::Utc::now().timestamp_millis() - after.as_millis() as i64;
    let ids = state.store.unpublished_before(cutoff, BATCH).await?;
    let mut published = 0;
    for id in ids {
        let task = match state.store.load(&id).await {
            Ok(Some(task)) => task.view,
            Ok(None) => {
                // Discarded or expired.
                state.store.drop_from_outbox(&id).await?;
                continue;
            }
            Err(e @ StoreError::Unavailable(_)) => return Err(e),
            Err(e) => {
                tracing::error!(task_id = %id, error = %e, "unreadable task in the outbox; dropping it");
                state.store.drop_from_outbox(&id).await?;
                continue;
            }
        };
        if task.status != TaskStatus::Queued {
            // Claimed (so its message went out) or cancelled.
            state
                .store
                .mark_published(&id, task.created_at.timestamp_millis())
                .await?;
            continue;
        }
        let created_ms = task.created_at.timestamp_millis();
        match state
            .publisher
            .publish_task(&TaskMessage::from(&task), &task.queue)
            .await
        {
            Ok(()) => {
                state.store.mark_published(&id, created_ms).await?;
                tracing::warn!(task_id = %id, "published a task stored by a create that did not finish");
                published += 1;
            }
            Err(e) => {
                tracing::debug!(task_id = %id, error = %e, "cannot publish now; next sweep");
                break;
            }
        }
    }
    Ok(published)
}
