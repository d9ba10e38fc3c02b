//! A user's cancel: `QUEUED → CANCELLED` at once; `PROCESSING → CANCELLING`,
//! broadcast to the workers so the holder stops.
//!
//! The answer never waits for the broadcast: the cancel is recorded in Redis
//! (`cancel_requested`), which is what the holder goes by — it sees the flag
//! in the answer to its next progress report or heartbeat, a third of the
//! lease at most. The broadcast only makes it sooner; it goes out in the
//! background, and not at all while the broker blocks publishing (a resource
//! alarm), when it could not be delivered anyway.

use task_model::{ControlMessage, TaskId, TaskRef, TaskStatus};

use crate::{error::ApiError, state::AppState, store::Code};

/// Cancels task `id`; the answer's status is `CANCELLED` (it was queued) or
/// `CANCELLING` (its worker is stopping).
///
/// # Errors
/// Unknown task (404), already finished (409), Redis unavailable (503).
pub async fn cancel(state: &AppState, id: TaskId) -> Result<TaskRef, ApiError> {
    let outcome = state.store.cancel(&id, state.result_ttl).await?;
    let status = outcome.snapshot.status;
    match outcome.code {
        Code::Ok => {}
        Code::NotFound => return Err(ApiError::NotFound(id.to_string())),
        Code::AlreadyFinished => return Err(ApiError::already_finished(status)),
        other => {
            return Err(ApiError::Unexpected(anyhow::anyhow!(
                "cancel answered {other:?}"
            )))
        }
    }
    state.metrics.cancels.inc();
    let status = status.unwrap_or(TaskStatus::Cancelling);
    if status == TaskStatus::Cancelled {
        tracing::info!(task_id = %id, "cancelled while queued");
        state.on_finished(id, TaskStatus::Cancelled);
    } else {
        broadcast(state, id).await;
        tracing::info!(task_id = %id, "cancel requested while running");
    }
    Ok(TaskRef {
        task_id: id,
        status,
    })
}

/// Tells whichever worker holds the task, in the background. The flag in
/// Redis is the fallback: the holder also sees it in its next callback answer.
async fn broadcast(state: &AppState, id: TaskId) {
    if state.publisher.is_blocked().await {
        tracing::warn!(task_id = %id, "rabbitmq blocks publishing (a resource alarm); no cancel broadcast: the worker sees the flag on its next callback");
        return;
    }
    let publisher = state.publisher.clone();
    tokio::spawn(async move {
        let message = ControlMessage::Cancel { task_id: id };
        if let Err(e) = publisher.publish_control(&message).await {
            tracing::error!(task_id = %id, error = %e, "cancel broadcast failed; the worker will see the flag on its next callback");
        }
    });
}
