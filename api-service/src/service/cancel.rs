//! A user's cancel: `QUEUED → CANCELLED` at once; `PROCESSING → CANCELLING`,
//! broadcast to the workers so the holder stops.

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
    }
    Ok(TaskRef {
        task_id: id,
        status,
    })
}

/// Tells whichever worker holds the task. The flag in Redis is the fallback:
/// the holder also sees it in its next callback answer.
async fn broadcast(state: &AppState, id: TaskId) {
    let message = ControlMessage::Cancel { task_id: id };
    if let Err(e) = state.publisher.publish_control(&message).await {
        tracing::error!(task_id = %id, error = %e, "cancel broadcast failed; the worker will see the flag on its next callback");
    }
    tracing::info!(task_id = %id, "cancel requested while running");
}
