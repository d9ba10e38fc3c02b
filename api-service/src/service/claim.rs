//! A worker's claim: `QUEUED → PROCESSING`, or a takeover of a task whose
//! holder's lease ran out. The answer says where to resume (`stage`) and,
//! from the stored task, what to run (`run`): the message that brought the
//! worker here only names the task.

use task_model::{TaskId, TaskSpec};

use super::{check_worker, reply, Reply};
use crate::{error::ApiError, state::AppState, store::Code};

/// `worker` claims task `id` for one lease.
///
/// # Errors
/// A bad worker name (400), an unknown task (404), Redis unavailable (503).
pub async fn claim(state: &AppState, id: TaskId, worker: &str) -> Result<Reply, ApiError> {
    check_worker(worker)?;
    let timer = state.metrics.callback_timer("status");
    let claim = state
        .store
        .claim(
            &id,
            worker,
            state.lease,
            state.max_takeovers,
            state.result_ttl,
        )
        .await?;
    let outcome = claim.outcome;
    if outcome.code == Code::WorkerLost {
        tracing::warn!(task_id = %id, worker, max_takeovers = state.max_takeovers, "the task lost its worker too often; FAILED worker_lost");
        state.on_finished(id, task_model::TaskStatus::Failed);
    }
    let mut run = None;
    if outcome.code == Code::Ok {
        // What it runs, read with the claim: those fields never change.
        let Some(task) = claim.task else {
            tracing::warn!(task_id = %id, worker, "the task vanished right after its claim");
            return Err(ApiError::NotFound(id.to_string()));
        };
        run = Some(TaskSpec::from(&task.view));
    }
    timer.observe_duration();
    if outcome.code == Code::Ok {
        tracing::info!(task_id = %id, worker, stage = outcome.snapshot.stage, "claimed");
    } else {
        tracing::info!(task_id = %id, worker, code = ?outcome.code, current = ?outcome.snapshot.status, "claim refused");
    }
    let mut reply = reply(state, &id, &outcome)?;
    reply.answer.run = run;
    Ok(reply)
}
