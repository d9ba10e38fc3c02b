//! The service layer: what the api does, without HTTP. Each request is one
//! function of `&AppState` that a test can call directly; handlers in
//! [`crate::routes`] only extract its arguments and map its answer.
//!
//! - [`create`]: `POST /tasks` — validate, reserve the idempotency key,
//!   store, publish, list.
//! - [`batch`]: `POST /tasks/batch` — the same steps for up to 1,000 tasks,
//!   all or nothing.
//! - [`blobs`]: `POST /blobs`, `GET /blobs/{id}`, and a create's input blobs.
//! - [`cancel`]: a user's cancel, and the broadcast to the workers.
//! - [`claim`]: a worker takes a task (`PROCESSING`).
//! - [`report`]: a worker's progress and its terminal state.
//! - [`query`]: a task, a page of tasks, a task's history and live events.
//! - [`queues`]: the named queues: `GET /queues`, pause and resume, and
//!   the pause state workers ask for.
//! - [`webhooks`]: signed notifications of finished tasks, in the background.
//! - [`republish`]: the outbox sweep for creates cut short.
//! - [`due`]: the due sweep: SCHEDULED tasks (delays, retries) made QUEUED
//!   and published when due.
//! - [`backlog`]: the age of the oldest QUEUED task, sampled for `/metrics`
//!   and `/readyz`.
//! - [`schedules`]: `/schedules`, and the ticker that fires due schedules
//!   once each, whichever api process takes them (background).
//! - [`reoffer`]: the lease sweep: re-offers tasks whose holder's lease lapsed.

pub mod backlog;
pub mod batch;
pub mod blobs;
pub mod cancel;
pub mod claim;
pub mod create;
pub mod due;
pub mod query;
pub mod queues;
pub mod reoffer;
pub mod report;
pub mod republish;
pub mod schedules;
pub mod webhooks;

use task_model::{CallbackAnswer, TaskId, TaskStatus};

use crate::{
    error::ApiError,
    state::AppState,
    store::{Code, Outcome},
};

/// The answer to a worker's callback: the task as the api recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Whether the report was applied (or ignored as stale); `false`: refused.
    pub accepted: bool,
    pub answer: CallbackAnswer,
}

fn refusal(outcome: &Outcome) -> (Option<String>, Option<String>) {
    let holder = outcome.snapshot.worker.as_deref();
    let (code, message) = match outcome.code {
        Code::LeaseHeld => (
            "lease_held",
            format!(
                "held by {} under a live lease",
                holder.unwrap_or("another worker")
            ),
        ),
        Code::AlreadyFinished => ("already_finished", "the task has already finished".into()),
        Code::NotHolder => ("not_holder", "this worker does not hold the task".into()),
        Code::NotDue => (
            "not_due",
            "the task is SCHEDULED: it is published again when due".into(),
        ),
        Code::WorkerLost => (
            "worker_lost",
            "the task lost its worker more than MAX_TAKEOVERS times and has FAILED".into(),
        ),
        Code::StagesIncomplete => (
            "stages_incomplete",
            format!(
                "COMPLETED after {} of {} stages: report each stage's progress first",
                outcome.snapshot.stage, outcome.snapshot.stages
            ),
        ),
        _ => return (None, None),
    };
    (Some(code.to_owned()), Some(message))
}

fn answer(state: &AppState, outcome: &Outcome) -> CallbackAnswer {
    let s = &outcome.snapshot;
    let (error, message) = refusal(outcome);
    CallbackAnswer {
        status: s.status.unwrap_or(TaskStatus::Queued),
        stage: s.stage,
        cancel_requested: s.cancel_requested,
        worker: s.worker.clone(),
        started_at: s
            .started_ms
            .and_then(chrono::DateTime::from_timestamp_millis),
        // Each attempt's deadline counts from its claim.
        deadline_in_ms: s
            .attempt_started_ms
            .map(|started| started + s.timeout_secs as i64 * 1000 - s.now_ms),
        attempt: s.attempt.max(1),
        lease_remaining_ms: (s.lease_until_ms - s.now_ms).max(0) as u64,
        lease_ms: state.lease.as_millis() as u64,
        run: None,
        error,
        message,
    }
}

/// A worker callback's transition outcome as a [`Reply`], or the error it is.
fn reply(state: &AppState, id: &TaskId, outcome: &Outcome) -> Result<Reply, ApiError> {
    let accepted = match outcome.code {
        Code::Ok | Code::Ignored => true,
        Code::LeaseHeld
        | Code::AlreadyFinished
        | Code::NotHolder
        | Code::StagesIncomplete
        | Code::NotDue
        | Code::WorkerLost => false,
        Code::NotFound => return Err(ApiError::NotFound(id.to_string())),
        Code::BadStages => return Err(ApiError::validation("stage/stages do not match the task")),
        Code::Exists => {
            return Err(ApiError::Unexpected(anyhow::anyhow!(
                "unexpected transition code {:?}",
                outcome.code
            )))
        }
    };
    Ok(Reply {
        accepted,
        answer: answer(state, outcome),
    })
}

/// Worker names are 1 to 200 characters.
pub(crate) fn check_worker(worker: &str) -> Result<(), ApiError> {
    if worker.is_empty() || worker.len() > 200 {
        return Err(ApiError::validation("worker must be 1 to 200 characters"));
    }
    Ok(())
}
