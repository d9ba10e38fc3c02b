//! The callback API: how workers claim tasks, report progress and finish them.
//! Every answer, 200 or 409, carries the task's current state.

use actix_web::{web, HttpResponse};
use serde_json::Value;
use task_model::{CallbackAnswer, ProgressReport, StatusReport, TaskStatus};

use crate::{
    auth::Worker,
    error::ApiError,
    routes::tasks::parse_id,
    startup::AppState,
    store::{Code, Outcome},
};

fn answer(state: &AppState, outcome: &Outcome) -> CallbackAnswer {
    let s = &outcome.snapshot;
    let (error, message) = match outcome.code {
        Code::LeaseHeld => (
            Some("lease_held".to_owned()),
            Some(format!(
                "held by {} under a live lease",
                s.worker.as_deref().unwrap_or("another worker")
            )),
        ),
        Code::AlreadyFinished => (
            Some("already_finished".to_owned()),
            Some("the task has already finished".to_owned()),
        ),
        Code::NotHolder => (
            Some("not_holder".to_owned()),
            Some("this worker does not hold the task".to_owned()),
        ),
        _ => (None, None),
    };
    CallbackAnswer {
        status: s.status.unwrap_or(TaskStatus::Queued),
        stage: s.stage,
        cancel_requested: s.cancel_requested,
        worker: s.worker.clone(),
        started_at: s
            .started_ms
            .and_then(chrono::DateTime::from_timestamp_millis),
        deadline_in_ms: s
            .started_ms
            .map(|started| started + s.timeout_secs as i64 * 1000 - s.now_ms),
        lease_remaining_ms: (s.lease_until_ms - s.now_ms).max(0) as u64,
        lease_ms: state.lease.as_millis() as u64,
        error,
        message,
    }
}

fn respond(state: &AppState, id: &str, outcome: Outcome) -> Result<HttpResponse, ApiError> {
    match outcome.code {
        Code::Ok | Code::Ignored => Ok(HttpResponse::Ok().json(answer(state, &outcome))),
        Code::LeaseHeld | Code::AlreadyFinished | Code::NotHolder => {
            Ok(HttpResponse::Conflict().json(answer(state, &outcome)))
        }
        Code::NotFound => Err(ApiError::NotFound(id.to_owned())),
        Code::BadStages => Err(ApiError::validation("stage/stages do not match the task")),
        Code::Exists => Err(ApiError::Unexpected(anyhow::anyhow!(
            "unexpected transition code {:?}",
            outcome.code
        ))),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"))
    })?;
    serde_json::from_value(value).map_err(|e| ApiError::validation(e.to_string()))
}

/// `POST /internal/tasks/{id}/status`: the claim (`PROCESSING`) or a terminal state.
#[utoipa::path(post, path = "/internal/tasks/{id}/status", tag = "callbacks", security(("callback_token" = [])),
    params(("id" = String, Path, description = "Task id (UUID)")), request_body = StatusReport,
    responses(
        (status = 200, description = "Recorded; `stage` is where a claiming worker resumes", body = CallbackAnswer),
        (status = 409, description = "Illegal transition: `lease_held`, `already_finished` or `not_holder`", body = CallbackAnswer),
        crate::openapi::CallbackErrors))]
#[tracing::instrument(name = "report_status", skip_all, fields(task_id = %path, worker = tracing::field::Empty, status = tracing::field::Empty))]
pub async fn report_status(
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
    _: Worker,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let report: StatusReport = parse_body(&body)?;
    let span = tracing::Span::current();
    span.record("worker", report.worker.as_str());
    span.record("status", report.status.as_str());
    if report.worker.is_empty() || report.worker.len() > 200 {
        return Err(ApiError::validation("worker must be 1 to 200 characters"));
    }
    let timer = state.metrics.callback_timer("status");
    let outcome = match report.status {
        TaskStatus::Processing => state.store.claim(&id, &report.worker, state.lease).await?,
        s if s.is_terminal() => {
            let result = report
                .result
                .as_ref()
                .filter(|_| s == TaskStatus::Completed);
            let error = report.error.as_deref().map(|e| &e[..e.len().min(4096)]);
            state
                .store
                .finish(&id, &report.worker, s, result, error, state.result_ttl)
                .await?
        }
        other => {
            return Err(ApiError::validation(format!(
                "a worker may not report {other}"
            )))
        }
    };
    timer.observe_duration();
    match (outcome.code, report.status) {
        (Code::Ok, TaskStatus::Processing) => {
            tracing::info!(task_id = %id, stage = outcome.snapshot.stage, "claimed")
        }
        (Code::Ok, s) => {
            tracing::info!(task_id = %id, status = %s, "finished");
            state.on_finished(id, s);
        }
        (code, _) => {
            tracing::info!(task_id = %id, ?code, current = ?outcome.snapshot.status, "status report refused")
        }
    }
    respond(&state, &path, outcome)
}

/// `POST /internal/tasks/{id}/progress`: a stage done, or a lease heartbeat.
#[utoipa::path(post, path = "/internal/tasks/{id}/progress", tag = "callbacks", security(("callback_token" = [])),
    params(("id" = String, Path, description = "Task id (UUID)")), request_body = ProgressReport,
    responses(
        (status = 200, description = "Recorded (or ignored: a lower stage); the lease is renewed", body = CallbackAnswer),
        (status = 409, description = "Not the holder, or already finished", body = CallbackAnswer),
        crate::openapi::CallbackErrors))]
#[tracing::instrument(name = "report_progress", skip_all, fields(task_id = %path))]
pub async fn report_progress(
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
    _: Worker,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let report: ProgressReport = parse_body(&body)?;
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
            state.lease,
        )
        .await?;
    timer.observe_duration();
    if outcome.code == Code::Ok {
        tracing::debug!(task_id = %id, stage = report.stage, "progress");
    }
    respond(&state, &path, outcome)
}
