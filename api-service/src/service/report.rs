//! A worker's reports on the task it holds: progress (which renews its
//! lease) and the terminal state.

use task_model::{ProgressReport, StatusReport, TaskId, TaskStatus};

use super::{check_worker, claim::claim, reply, Reply};
use crate::{
    error::ApiError,
    state::AppState,
    store::{Code, DueEntry, Outcome},
};

/// Longest `error` text kept.
const MAX_ERROR_BYTES: usize = 4096;

/// The status callback: the claim (`PROCESSING`) or a terminal state.
///
/// # Errors
/// A status a worker may not send or a bad worker name (400), an unknown
/// task (404), Redis unavailable (503).
pub async fn status(
    state: &AppState,
    id: TaskId,
    report: &StatusReport,
) -> Result<Reply, ApiError> {
    check_worker(&report.worker)?;
    match report.status {
        TaskStatus::Processing => claim(state, id, &report.worker).await,
        s if s.is_terminal() => finish(state, id, report).await,
        other => Err(ApiError::validation(format!(
            "a worker may not report {other}"
        ))),
    }
}

/// The holder reports `report.status`, a terminal state.
///
/// # Errors
/// As [`status`].
pub async fn finish(
    state: &AppState,
    id: TaskId,
    report: &StatusReport,
) -> Result<Reply, ApiError> {
    check_worker(&report.worker)?;
    let status = report.status;
    if !status.is_terminal() {
        return Err(ApiError::validation(format!(
            "{status} is not a terminal state"
        )));
    }
    let result = report
        .result
        .as_ref()
        .filter(|_| status == TaskStatus::Completed);
    let error = report
        .error
        .as_deref()
        .map(|e| &e[..e.floor_char_boundary(MAX_ERROR_BYTES)]);
    let timer = state.metrics.callback_timer("status");
    if status == TaskStatus::Failed && report.retryable {
        let error = error.unwrap_or("a retryable error");
        let outcome = retry(state, id, &report.worker, error).await?;
        timer.observe_duration();
        return reply(state, &id, &outcome);
    }
    let outcome = state
        .store
        .finish(
            &id,
            (&report.worker, report.stage),
            status,
            result,
            error,
            state.result_ttl,
        )
        .await?;
    timer.observe_duration();
    if outcome.code == Code::Ok {
        tracing::info!(task_id = %id, worker = %report.worker, status = %status, "finished");
        state.on_finished(id, status);
    } else {
        tracing::info!(task_id = %id, worker = %report.worker, code = ?outcome.code, current = ?outcome.snapshot.status, "status report refused");
    }
    reply(state, &id, &outcome)
}

/// A retryable failure: with attempts left, `SCHEDULED` for the next one
/// after the contract's jittered backoff (its due entry first, so a stored
/// schedule always has one); else `FAILED`.
async fn retry(
    state: &AppState,
    id: TaskId,
    worker: &str,
    error: &str,
) -> Result<Outcome, ApiError> {
    let Some(task) = state.store.load(&id).await? else {
        return Err(ApiError::NotFound(id.to_string()));
    };
    let attempt = task.view.attempt;
    let (backoff, max) = task.retry_backoff;
    let wait_ms = task_model::retry_wait_ms(backoff, max, attempt, fastrand::f64());
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(wait_ms as i64);
    let due_ms = due.timestamp_millis();
    let retries = attempt < task.view.max_attempts && task.view.status == TaskStatus::Processing;
    if retries {
        state.store.add_due(&id, due_ms).await?;
    }
    let detail = format!(
        "attempt {attempt} failed: {error}; attempt {} due at {} (after {wait_ms} ms)",
        attempt + 1,
        due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let outcome = state
        .store
        .retry(
            &id,
            worker,
            (attempt, due_ms),
            error,
            &detail,
            state.result_ttl,
        )
        .await?;
    let scheduled =
        outcome.code == Code::Ok && outcome.snapshot.status == Some(TaskStatus::Scheduled);
    if retries && !scheduled {
        let entry = DueEntry { id, due_ms };
        if let Err(e) = state.store.remove_due(&entry).await {
            tracing::warn!(task_id = %id, error = %e, "an unused due entry stays until the due sweep drops it");
        }
    }
    if scheduled {
        state.metrics.retries.inc();
        tracing::info!(task_id = %id, worker, attempt, wait_ms, error, "attempt failed; retry scheduled");
    } else if outcome.code == Code::Ok {
        tracing::info!(task_id = %id, worker, attempt, error, "last attempt failed");
        state.on_finished(id, TaskStatus::Failed);
    } else {
        tracing::info!(task_id = %id, worker, code = ?outcome.code, current = ?outcome.snapshot.status, "retryable failure refused");
    }
    Ok(outcome)
}

/// The reported progress when it says more than whole stages: clamped to
/// what stage `stage` of `stages` may show, `floor(100 × (stage + f) /
/// stages)` with f < 1 (so never the next stage's value); `None` when it
/// says no more than `floor(100 × stage / stages)`.
fn within_stage(report: &ProgressReport) -> Option<u8> {
    let (stage, stages) = (u64::from(report.stage), u64::from(report.stages.max(1)));
    let low = stage * 100 / stages;
    let high = if stage >= stages {
        100
    } else {
        (stage * 1000 + 999) * 100 / (stages * 1000)
    };
    let given = u64::from(report.progress);
    (given > low).then(|| given.min(high) as u8)
}

/// A stage done, or a lease heartbeat.
///
/// # Errors
/// Progress over 100 or stages that do not match the task (400), an unknown
/// task (404), Redis unavailable (503).
pub async fn progress(
    state: &AppState,
    id: TaskId,
    report: &ProgressReport,
) -> Result<Reply, ApiError> {
    if report.progress > 100 {
        return Err(ApiError::validation("progress must be from 0 to 100"));
    }
    let timer = state.metrics.callback_timer("progress");
    let outcome = state
        .store
        .progress(
            &id,
            &report.worker,
            report.stage,
            report.stages,
            within_stage(report),
            state.lease,
        )
        .await?;
    timer.observe_duration();
    if outcome.code == Code::Ok {
        tracing::debug!(task_id = %id, worker = %report.worker, stage = report.stage, "progress");
    }
    reply(state, &id, &outcome)
}
