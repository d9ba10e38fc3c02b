//! A worker's reports on the task it holds: progress (which renews its
//! lease) and the terminal state.

use task_model::{ProgressReport, StatusReport, TaskId, TaskStatus};

use super::{check_worker, claim::claim, reply, Reply};
use crate::{error::ApiError, state::AppState, store::Code};

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
    let outcome = state
        .store
        .finish(&id, &report.worker, status, result, error, state.result_ttl)
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
