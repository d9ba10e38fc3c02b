//! The public task endpoints: create, read, list, cancel, history.

use std::time::Duration;

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use task_model::{
    CreateTaskRequest, EventView, NewTask, TaskId, TaskMessage, TaskStatus, TaskView,
};
use tracing::Instrument;

use crate::{
    auth::Caller,
    error::ApiError,
    startup::AppState,
    store::{Code, IdemReservation, IdempotencyKey},
};

/// Parses an id in a path, or 400.
pub fn parse_id(raw: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(raw).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))
}

/// Reads a task, or 404.
pub(crate) async fn load_task(state: &AppState, id: TaskId) -> Result<TaskView, ApiError> {
    match state.store.load(&id).await? {
        Some(task) => Ok(task.view),
        None => Err(ApiError::NotFound(id.to_string())),
    }
}

fn is_json_content_type(req: &HttpRequest) -> bool {
    match req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(ct) => {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        }
    }
}

/// `POST /tasks`.
#[utoipa::path(post, path = "/tasks", tag = "tasks", security(("api_key" = [])),
    request_body(content = Option<CreateTaskRequest>, description = "Every field optional; empty body = {}"),
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 200 visible ASCII characters")),
    responses(
        (status = 202, description = "Stored and published", body = crate::openapi::TaskRef, headers(("Location" = String))),
        (status = 200, description = "Idempotent replay: the first task", body = crate::openapi::TaskRef),
        (status = 400, description = "Invalid body or header", body = crate::openapi::ErrorBody),
        (status = 401, description = "API key missing or wrong", body = crate::openapi::ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body over 65,536 bytes", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 503, description = "Redis or RabbitMQ unreachable; Retry-After: 5", body = crate::openapi::ErrorBody),
    ))]
#[tracing::instrument(name = "create_task", skip_all, fields(task_id = tracing::field::Empty))]
pub async fn create_task(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let blank = body.iter().all(u8::is_ascii_whitespace);
    if !blank && !is_json_content_type(&req) {
        return Err(ApiError::UnsupportedMediaType(
            "send the task as application/json".into(),
        ));
    }
    let value: Value = if blank {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"))
        })?
    };
    if !value.is_object() {
        return Err(ApiError::validation("the body must be a JSON object"));
    }
    let request: CreateTaskRequest =
        serde_json::from_value(value).map_err(|e| ApiError::validation(e.to_string()))?;
    // The normalized request (nulls and absent fields alike) identifies a replay.
    let fingerprint = serde_json::to_value(&request).map_err(|e| ApiError::Unexpected(e.into()))?;
    let task =
        NewTask::parse(request, state.defaults).map_err(|e| ApiError::validation(e.to_string()))?;
    if let Some(url) = &task.webhook_url {
        crate::webhooks::check_url(url, &state.webhook_hosts)?;
    }

    let id = TaskId::new();
    tracing::Span::current().record("task_id", tracing::field::display(&id));

    let idem = match req.headers().get("idempotency-key") {
        None => None,
        Some(raw) => {
            let key = raw
                .to_str()
                .ok()
                .filter(|k| IdempotencyKey::is_valid(k))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1 to 200 visible ASCII characters",
                    )
                })?;
            let key = IdempotencyKey::new(&state.store, &caller.scope, key, &fingerprint);
            if let Some(answer) = replay(&state, &key, &id).await? {
                return Ok(answer);
            }
            Some(key)
        }
    };

    let created = async {
        let outcome = state.store.create(&id, &task).await?;
        if outcome.code != Code::Ok {
            return Err(ApiError::Unexpected(anyhow::anyhow!(
                "a fresh task id already existed: {:?}",
                outcome.code
            )));
        }
        if let Some(key) = &idem {
            // Stored: the key now answers for this task for RESULT_TTL_SECS.
            let kept = state
                .store
                .keep_idempotency_key(key, &id, state.result_ttl.as_secs())
                .await;
            if let Err(e) = kept {
                if let Err(d) = state.store.discard(&id, outcome.snapshot.now_ms).await {
                    tracing::error!(task_id = %id, error = %d, "could not discard a task whose key could not be kept");
                }
                return Err(e.into());
            }
        }
        if let Err(e) = state.publisher.publish_task(&TaskMessage::new(id, &task)).await {
            tracing::error!(task_id = %id, error = %e, "publish failed; discarding the task");
            if let Err(d) = state.store.discard(&id, outcome.snapshot.now_ms).await {
                tracing::error!(task_id = %id, error = %d, "could not discard an unpublished task");
            }
            return Err(ApiError::Unavailable(e.into()));
        }
        if let Err(e) = state.store.mark_published(&id, outcome.snapshot.now_ms).await {
            // The task is whole; the outbox sweep publishes a harmless duplicate later.
            tracing::warn!(task_id = %id, error = %e, "could not take a published task out of the outbox");
        }
        Ok(())
    }
    .await;
    if let Err(e) = created {
        if let Some(key) = &idem {
            if let Err(r) = state.store.release_idempotency_key(key, &id).await {
                tracing::error!(task_id = %id, error = %r, "could not release the idempotency key");
            }
        }
        return Err(e);
    }
    state.metrics.tasks_created.inc();
    tracing::info!(task_id = %id, stages = task.stages, stage_ms = task.stage_ms, "task queued");
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/tasks/{id}")))
        .json(json!({ "task_id": id, "status": TaskStatus::Queued })))
}

/// Reserves an idempotency key for `id`, or answers for the task that holds it.
async fn replay(
    state: &AppState,
    key: &IdempotencyKey,
    id: &TaskId,
) -> Result<Option<HttpResponse>, ApiError> {
    // The first request may still be storing and publishing its task; wait
    // for it (bounded), or take the key over if it gave up.
    for _ in 0..100 {
        match state
            .store
            .reserve_idempotency_key(key, id, crate::store::reservation_secs(state.result_ttl))
            .await?
        {
            IdemReservation::Reserved => return Ok(None),
            IdemReservation::Existing {
                same_body: false, ..
            } => {
                return Err(ApiError::Conflict {
                    code: "idempotency_conflict",
                    message: "this Idempotency-Key was used with a different body".into(),
                    extra: Default::default(),
                })
            }
            IdemReservation::Existing {
                task_id,
                same_body: true,
            } => {
                if let Some(task) = state.store.load(&task_id).await? {
                    return Ok(Some(
                        HttpResponse::Ok()
                            .json(json!({ "task_id": task_id, "status": task.view.status })),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Err(ApiError::Unavailable(anyhow::anyhow!(
        "the first request with this Idempotency-Key is still in flight"
    )))
}

/// `GET /tasks/{id}`.
#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks", security(("api_key" = [])),
    params(("id" = String, Path, description = "Task id (UUID)")),
    responses((status = 200, body = TaskView), (status = 404, description = "Unknown or expired", body = crate::openapi::ErrorBody), (status = 400, description = "Malformed id", body = crate::openapi::ErrorBody), (status = 401, description = "API key missing or wrong", body = crate::openapi::ErrorBody), (status = 503, description = "Redis unreachable", body = crate::openapi::ErrorBody)))]
#[tracing::instrument(name = "get_task", skip_all, fields(task_id = %path))]
pub async fn get_task(
    path: web::Path<String>,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    Ok(HttpResponse::Ok().json(load_task(&state, id).await?))
}

/// `DELETE /tasks/{id}` (and, through [`cancel_task_post`], `POST /tasks/{id}/cancel`).
#[utoipa::path(delete, path = "/tasks/{id}", tag = "tasks", security(("api_key" = [])),
    params(("id" = String, Path, description = "Task id (UUID)")),
    responses(crate::openapi::CancelAnswers))]
#[tracing::instrument(name = "cancel_task", skip_all, fields(task_id = %path))]
pub async fn cancel_task(
    path: web::Path<String>,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
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
    let body = json!({ "task_id": id, "status": status });
    if status == Some(TaskStatus::Cancelled) {
        tracing::info!(task_id = %id, "cancelled while queued");
        state.on_finished(id, TaskStatus::Cancelled);
        return Ok(HttpResponse::Ok().json(body));
    }
    // Running: tell whichever worker holds it. The flag in Redis is the
    // fallback — the holder also sees it in its next callback answer.
    let broadcast = task_model::ControlMessage::Cancel { task_id: id };
    if let Err(e) = state.publisher.publish_control(&broadcast).await {
        tracing::error!(task_id = %id, error = %e, "cancel broadcast failed; the worker will see the flag on its next callback");
    }
    tracing::info!(task_id = %id, "cancel requested while running");
    Ok(HttpResponse::Accepted().json(body))
}

/// `POST /tasks/{id}/cancel`: the same as `DELETE /tasks/{id}`.
#[utoipa::path(post, path = "/tasks/{id}/cancel", tag = "tasks", security(("api_key" = [])),
    params(("id" = String, Path, description = "Task id (UUID)")),
    responses(crate::openapi::CancelAnswers))]
pub async fn cancel_task_post(
    path: web::Path<String>,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    cancel_task(path, state, caller).await
}

/// Query of `GET /tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /tasks`.
#[utoipa::path(get, path = "/tasks", tag = "tasks", security(("api_key" = [])),
    params(
        ("status" = Option<TaskStatus>, Query, description = "Only tasks in this state"),
        ("limit" = Option<u32>, Query, description = "1..=1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = crate::openapi::TaskPage), (status = 400, description = "Bad status, limit or cursor", body = crate::openapi::ErrorBody),
        (status = 401, description = "API key missing or wrong", body = crate::openapi::ErrorBody), (status = 503, description = "Redis unreachable", body = crate::openapi::ErrorBody)))]
#[tracing::instrument(name = "list_tasks", skip_all)]
pub async fn list_tasks(
    query: Result<web::Query<ListQuery>, actix_web::Error>,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    let query = query
        .map_err(|e| ApiError::validation(format!("bad query: {e}")))?
        .into_inner();
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<TaskStatus>()
                .map_err(|e| ApiError::validation(e.to_string()))?,
        ),
    };
    let limit = match query.limit.as_deref() {
        None | Some("") => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::validation("limit must be an integer from 1 to 1000"))?,
    };
    let after = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(state.cursor.decode(c).ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "this cursor was not issued by the api")
        })?),
    };
    let page = state.store.list(status, limit, after).await?;
    let next_cursor = page.next.map(|m| state.cursor.encode(&m));
    Ok(HttpResponse::Ok().json(json!({ "tasks": page.tasks, "next_cursor": next_cursor })))
}

/// `GET /tasks/{id}/events`: JSON history, or a live SSE stream.
#[utoipa::path(get, path = "/tasks/{id}/events", tag = "tasks", security(("api_key" = [])),
    params(("id" = String, Path, description = "Task id (UUID)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "SSE: resume after this seq")),
    responses(
        (status = 200, description = "Oldest first; with `Accept: text/event-stream`, Server-Sent Events (`id: <seq>`, `event: <type>`, `data: <event JSON>`) closing after the terminal event",
            content((Vec<EventView> = "application/json"), (String = "text/event-stream"))),
        (status = 404, description = "Unknown or expired", body = crate::openapi::ErrorBody),
        (status = 400, description = "Malformed id", body = crate::openapi::ErrorBody), (status = 401, description = "API key missing or wrong", body = crate::openapi::ErrorBody), (status = 503, description = "Redis unreachable", body = crate::openapi::ErrorBody)))]
#[tracing::instrument(name = "task_events", skip_all, fields(task_id = %path))]
pub async fn task_events(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let wants_stream = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    // Existence first, so an unknown task is a 404 in both forms.
    let task = load_task(&state, id).await?;
    if wants_stream {
        let last_seen = req
            .headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let span = tracing::Span::current();
        return crate::routes::stream::event_stream(state.into_inner(), id, task.status, last_seen)
            .instrument(span)
            .await;
    }
    let events = state.store.events(&id, 0, 100_000).await?;
    Ok(HttpResponse::Ok().json(events))
}
