//! `POST /tasks/batch`: bulk create. The handler reads the body (up to
//! 4 MiB, this route only) and calls [`crate::service::batch`].

use actix_web::{web, HttpRequest, HttpResponse};
use task_model::{BatchAnswer, BatchRequest};

use super::tasks::{header_str, idempotency_key, is_json_content_type};
use crate::{
    auth::Caller,
    error::{ApiError, ErrorBody},
    service::{self, create::Idempotency},
    state::AppState,
    telemetry::continue_trace,
};

/// The batch in a body: JSON, `{"tasks": [...]}`; errors name the task's
/// index and field.
fn batch_request(req: &HttpRequest, body: &[u8]) -> Result<BatchRequest, ApiError> {
    if !is_json_content_type(req) {
        return Err(ApiError::UnsupportedMediaType(
            "send the batch as application/json".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"))
    })?;
    BatchRequest::from_json(&value).map_err(|e| {
        let error = if e.error.field.is_empty() {
            ApiError::validation(e.error.message)
        } else {
            ApiError::invalid(e.error.field, e.error.message)
        };
        match e.index {
            Some(i) => error.at_index(i),
            None => error,
        }
    })
}

/// `POST /tasks/batch`.
#[utoipa::path(post, path = "/tasks/batch", tag = "tasks", security(("api_key" = [])),
    request_body(content = BatchRequest, description = "1 to 1,000 `POST /tasks` bodies; up to 4 MiB"),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,200}$", description = "1 to 200 visible ASCII characters; covers the whole batch")),
    responses(
        (status = 202, description = "Every task stored and published (QUEUED), or stored to run later (SCHEDULED), in request order", body = BatchAnswer),
        (status = 200, description = "Idempotent replay: the first batch's tasks, with their current statuses", body = BatchAnswer),
        (status = 400, description = "Invalid body or header; nothing created. An invalid task is named by `index` (0-based) and `field`", body = ErrorBody),
        (status = 401, description = "API key missing or wrong", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body", body = ErrorBody),
        (status = 413, description = "Body over 4 MiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "Redis or RabbitMQ unreachable, or RabbitMQ blocking publishes; nothing created; Retry-After: 5", body = ErrorBody),
    ))]
#[tracing::instrument(name = "create_batch", skip_all, fields(task_id = tracing::field::Empty))]
pub async fn create_batch(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    continue_trace(&tracing::Span::current(), |name| header_str(&req, name));
    let batch = batch_request(&req, &body)?;
    let idempotency = idempotency_key(&req)?.map(|key| Idempotency {
        scope: &caller.scope,
        key,
    });
    let created = service::batch::create_batch(&state, batch, idempotency).await?;
    let answer = BatchAnswer {
        tasks: created.tasks,
    };
    if created.replayed {
        return Ok(HttpResponse::Ok().json(answer));
    }
    Ok(HttpResponse::Accepted().json(answer))
}
