//! The callback API: how workers claim tasks, report progress and finish them.
//! Every answer, 200 or 409, carries the task's current state.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::Value;
use task_model::{
    BatchedAnswer, BatchedReport, CallbackAnswer, ProgressReport, Report, ReportAnswers,
    ReportBatch, StatusReport, MAX_BATCHED_REPORTS,
};
use tracing::Instrument;

use crate::{
    auth::Worker,
    error::{ApiError, ErrorBody},
    routes::tasks::{header_str, parse_id},
    service::{self, Reply},
    state::AppState,
    telemetry::continue_trace,
};

/// The error answers every callback may get.
#[derive(Debug, utoipa::IntoResponses)]
pub enum CallbackErrors {
    /// A status a worker may not send, or bad stages.
    #[response(status = 400)]
    BadReport(ErrorBody),
    /// Callback token missing or wrong.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Unknown task.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Redis unreachable.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

fn respond(reply: Reply) -> HttpResponse {
    if reply.accepted {
        HttpResponse::Ok().json(reply.answer)
    } else {
        HttpResponse::Conflict().json(reply.answer)
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
        (status = 200, description = "Recorded; to a claim, `stage` is where the worker resumes, `attempt` which attempt this is and `run` what it runs (the stored task); to a `FAILED` with `retryable: true`, status `SCHEDULED` when another attempt follows (the delivery is done), else `FAILED`", body = CallbackAnswer),
        (status = 409, description = "Illegal transition: `lease_held`, `already_finished`, `not_holder`, `stages_incomplete` (COMPLETED before every stage's progress), `not_due` (a claim of a SCHEDULED task: ack the stale message), or `worker_lost` (the takeover would pass MAX_TAKEOVERS: the task is now FAILED)", body = CallbackAnswer),
        CallbackErrors))]
#[tracing::instrument(name = "report_status", skip_all, fields(task_id = %path, worker = tracing::field::Empty, status = tracing::field::Empty))]
pub async fn report_status(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
    _: Worker,
) -> Result<HttpResponse, ApiError> {
    // The worker's callback span is the parent: the task's one trace.
    continue_trace(&tracing::Span::current(), |name| header_str(&req, name));
    let id = parse_id(&path)?;
    let report: StatusReport = parse_body(&body)?;
    let span = tracing::Span::current();
    span.record("worker", report.worker.as_str());
    span.record("status", report.status.as_str());
    Ok(respond(service::report::status(&state, id, &report).await?))
}

/// `POST /internal/tasks/{id}/progress`: a stage done, or a lease heartbeat.
#[utoipa::path(post, path = "/internal/tasks/{id}/progress", tag = "callbacks", security(("callback_token" = [])),
    params(("id" = String, Path, description = "Task id (UUID)")), request_body = ProgressReport,
    responses(
        (status = 200, description = "Recorded (or ignored: a lower stage); the lease is renewed", body = CallbackAnswer),
        (status = 409, description = "Not the holder, or already finished", body = CallbackAnswer),
        CallbackErrors))]
#[tracing::instrument(name = "report_progress", skip_all, fields(task_id = %path, worker = tracing::field::Empty))]
pub async fn report_progress(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
    _: Worker,
) -> Result<HttpResponse, ApiError> {
    // The worker's callback span is the parent: the task's one trace.
    continue_trace(&tracing::Span::current(), |name| header_str(&req, name));
    let id = parse_id(&path)?;
    let report: ProgressReport = parse_body(&body)?;
    tracing::Span::current().record("worker", report.worker.as_str());
    Ok(respond(
        service::report::progress(&state, id, &report).await?,
    ))
}

/// `POST /internal/reports`: a worker's callbacks of many tasks in one
/// request, each handled exactly as its single callback and answered in order.
#[utoipa::path(post, path = "/internal/reports", tag = "callbacks", security(("callback_token" = [])),
    request_body = ReportBatch,
    responses(
        (status = 200, description = "Each report handled as its single callback (`…/status` or `…/progress`); `answers[i]` carries the HTTP status and body that callback would have got", body = ReportAnswers),
        CallbackErrors))]
#[tracing::instrument(name = "report_batch", skip_all, fields(reports = tracing::field::Empty))]
pub async fn report_batch(
    body: web::Bytes,
    state: web::Data<AppState>,
    _: Worker,
) -> Result<HttpResponse, ApiError> {
    let batch: ReportBatch = parse_body(&body)?;
    let n = batch.reports.len();
    if n == 0 || n > MAX_BATCHED_REPORTS {
        return Err(ApiError::validation(format!(
            "reports must hold 1 to {MAX_BATCHED_REPORTS} callbacks, not {n}"
        )));
    }
    for (i, r) in batch.reports.iter().enumerate() {
        check_schema(&r.report).map_err(|e| e.at_index(i))?;
    }
    tracing::Span::current().record("reports", n);
    let answers =
        futures_util::future::join_all(batch.reports.iter().map(|r| answer_one(&state, r))).await;
    Ok(HttpResponse::Ok().json(ReportAnswers { answers }))
}

/// What the schema says of a report (a worker name of 1 to 200 characters,
/// progress up to 100): a report that breaks it makes the batch malformed,
/// refused as a whole (400, `index` naming it). What only the stored task
/// decides is answered per report.
fn check_schema(report: &Report) -> Result<(), ApiError> {
    // Stage counts are `int32` in the document, as every u32 utoipa describes.
    let int32 = |field: &str, v: u32| {
        if i32::try_from(v).is_err() {
            return Err(ApiError::validation(format!(
                "{field} must be at most {}",
                i32::MAX
            )));
        }
        Ok(())
    };
    match report {
        Report::Status(s) => {
            int32("stage", s.stage.unwrap_or(0))?;
            service::check_worker(&s.worker)
        }
        Report::Progress(p) => {
            if p.progress > 100 {
                return Err(ApiError::validation("progress must be from 0 to 100"));
            }
            int32("stage", p.stage)?;
            int32("stages", p.stages)?;
            service::check_worker(&p.worker)
        }
    }
}

/// One report of a batch, in a span of its own as if it came alone.
async fn answer_one(state: &AppState, r: &BatchedReport) -> BatchedAnswer {
    let (name, worker) = match &r.report {
        Report::Status(s) => ("status", s.worker.as_str()),
        Report::Progress(p) => ("progress", p.worker.as_str()),
    };
    let span = tracing::info_span!("report", task_id = %r.task_id, worker, kind = name);
    continue_trace(&span, |header| {
        (header == "traceparent")
            .then_some(r.traceparent.as_deref())
            .flatten()
    });
    let result = async {
        match &r.report {
            Report::Status(report) => service::report::status(state, r.task_id, report).await,
            Report::Progress(report) => service::report::progress(state, r.task_id, report).await,
        }
    }
    .instrument(span.clone())
    .await;
    let (code, body) = match result {
        Ok(reply) => {
            let code = if reply.accepted { 200 } else { 409 };
            (code, serde_json::to_value(reply.answer))
        }
        Err(e) => {
            if e.status_code().is_server_error() {
                span.in_scope(|| tracing::error!(error = ?e, "batched callback failed: {e}"));
            }
            (e.status_code().as_u16(), serde_json::to_value(e.body()))
        }
    };
    BatchedAnswer {
        task_id: r.task_id,
        code,
        body: body.unwrap_or(Value::Null),
    }
}
