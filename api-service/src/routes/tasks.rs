//! The public task endpoints: create, read, list, cancel, history. Each
//! handler extracts its arguments, calls [`crate::service`], maps the answer.

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use task_model::{CreateTaskRequest, EventView, TaskId, TaskPage, TaskRef, TaskStatus, TaskView};

use crate::{
    auth::Caller,
    error::{ApiError, ErrorBody},
    service::{
        self,
        create::{is_valid_key, Idempotency},
        query::{Feed, ListRequest},
    },
    state::AppState,
    telemetry::continue_trace,
};

/// Parses an id in a path, or 400.
pub fn parse_id(raw: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(raw).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))
}

pub(crate) fn is_json_content_type(req: &HttpRequest) -> bool {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else {
        return true;
    };
    let essence = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A header's value, if it is text.
pub fn header_str<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The create request in a body: JSON, an object; blank means `{}`.
fn create_request(req: &HttpRequest, body: &[u8]) -> Result<CreateTaskRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CreateTaskRequest::default());
    }
    if !is_json_content_type(req) {
        return Err(ApiError::UnsupportedMediaType(
            "send the task as application/json".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"))
    })?;
    if !value.is_object() {
        return Err(ApiError::validation("the body must be a JSON object"));
    }
    CreateTaskRequest::from_json(&value)
        .map_err(|e| ApiError::invalid(e.field.clone(), e.to_string()))
}

/// The `Idempotency-Key` header, if sent; 400 when malformed.
pub(crate) fn idempotency_key(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(raw) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .filter(|k| is_valid_key(k))
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 200 visible ASCII characters",
            )
        })
}

/// `POST /tasks`.
#[utoipa::path(post, path = "/tasks", tag = "tasks", security(("api_key" = [])),
    request_body(content = CreateTaskRequest, description = "A JSON object, every field optional; an empty body means {} (`null` is refused)"),
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 200 visible ASCII characters")),
    responses(
        (status = 202, description = "Stored and published (`QUEUED`), or stored to run later (`SCHEDULED`: a future `run_at` / `delay_ms`)", body = TaskRef, headers(("Location" = String))),
        (status = 200, description = "Idempotent replay: the first task", body = TaskRef),
        (status = 400, description = "Invalid body or header", body = ErrorBody),
        (status = 401, description = "API key missing or wrong", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body", body = ErrorBody),
        (status = 413, description = "Body over 65,536 bytes", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "Redis or RabbitMQ unreachable (`unavailable`), or RabbitMQ blocking publishes under a resource alarm (`broker_blocked`); Retry-After: 5", body = ErrorBody),
    ))]
#[tracing::instrument(name = "create_task", skip_all, fields(task_id = tracing::field::Empty))]
pub async fn create_task(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    continue_trace(&tracing::Span::current(), |name| header_str(&req, name));
    let request = create_request(&req, &body)?;
    let idempotency = idempotency_key(&req)?.map(|key| Idempotency {
        scope: &caller.scope,
        key,
    });
    let created = service::create::create(&state, request, idempotency).await?;
    if created.replayed {
        return Ok(HttpResponse::Ok().json(created.task));
    }
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/tasks/{}", created.task.task_id)))
        .json(created.task))
}

/// `GET /tasks/{id}`.
#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks", security(("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "Task id (UUID)")),
    responses((status = 200, body = TaskView), (status = 404, description = "Unknown or expired", body = ErrorBody), (status = 400, description = "Malformed id", body = ErrorBody), (status = 401, description = "API key missing or wrong", body = ErrorBody), (status = 503, description = "Redis unreachable", body = ErrorBody)))]
#[tracing::instrument(name = "get_task", skip_all, fields(task_id = %path))]
pub async fn get_task(
    path: web::Path<String>,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    Ok(HttpResponse::Ok().json(service::query::task(&state, id).await?))
}

/// The answers of a cancel, by either route.
#[derive(Debug, utoipa::IntoResponses)]
pub enum CancelAnswers {
    /// Was queued or scheduled: now CANCELLED.
    #[response(status = 200)]
    Cancelled(TaskRef),
    /// Was running: CANCELLING until the worker stops.
    #[response(status = 202)]
    Cancelling(TaskRef),
    /// Malformed id.
    #[response(status = 400)]
    BadId(ErrorBody),
    /// API key missing or wrong.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Unknown or expired.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Already finished (`status` says how).
    #[response(status = 409)]
    AlreadyFinished(ErrorBody),
    /// Redis unreachable.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// `DELETE /tasks/{id}` (and, through [`cancel_task_post`], `POST /tasks/{id}/cancel`).
#[utoipa::path(delete, path = "/tasks/{id}", tag = "tasks", security(("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "Task id (UUID)")),
    responses(CancelAnswers))]
#[tracing::instrument(name = "cancel_task", skip_all, fields(task_id = %path))]
pub async fn cancel_task(
    path: web::Path<String>,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let task = service::cancel::cancel(&state, id).await?;
    if task.status == TaskStatus::Cancelled {
        Ok(HttpResponse::Ok().json(task))
    } else {
        Ok(HttpResponse::Accepted().json(task))
    }
}

/// `POST /tasks/{id}/cancel`: the same as `DELETE /tasks/{id}`.
#[utoipa::path(post, path = "/tasks/{id}/cancel", tag = "tasks", security(("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "Task id (UUID)")),
    responses(CancelAnswers))]
pub async fn cancel_task_post(
    path: web::Path<String>,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    cancel_task(path, state, caller).await
}

/// The query of `GET /tasks`: `status`, `limit` and `cursor`, each at most
/// once; other parameters (cache-busters such as `_=123`) are ignored.
fn list_request(pairs: &[(String, String)]) -> Result<ListRequest<'_>, ApiError> {
    let mut request = ListRequest::default();
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "status" => &mut request.status,
            "limit" => &mut request.limit,
            "cursor" => &mut request.cursor,
            _ => continue,
        };
        if slot.replace(value.as_str()).is_some() {
            return Err(ApiError::invalid(
                name.clone(),
                format!("{name} is given more than once"),
            ));
        }
    }
    Ok(request)
}

/// `GET /tasks`.
#[utoipa::path(get, path = "/tasks", tag = "tasks", security(("api_key" = [])),
    params(
        ("status" = Option<TaskStatus>, Query, description = "Only tasks in this state"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1..=1000, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = TaskPage), (status = 400, description = "Bad status, limit or cursor; `field` names it", body = ErrorBody),
        (status = 401, description = "API key missing or wrong", body = ErrorBody), (status = 503, description = "Redis unreachable", body = ErrorBody)))]
#[tracing::instrument(name = "list_tasks", skip_all)]
pub async fn list_tasks(
    query: Result<web::Query<Vec<(String, String)>>, actix_web::Error>,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    // A query string that is not `name=value&…` at all.
    let query = query.map_err(|_| ApiError::validation("the query string is malformed"))?;
    let request = list_request(&query)?;
    Ok(HttpResponse::Ok().json(service::query::list(&state, request).await?))
}

/// Whether an `Accept` header asks for the SSE stream: `text/event-stream`,
/// named explicitly (any case), with a q-value above 0 and at least as high
/// as JSON's (`application/json`, `application/*` or `*/*`). On a tie the
/// stream wins: naming it is the opt-in. A missing or unparsable header
/// means JSON.
pub fn wants_event_stream(req: &HttpRequest) -> bool {
    use actix_web::http::header::{Accept, Header, Quality};
    let Ok(accept) = Accept::parse(req) else {
        return false;
    };
    let mut sse = Quality::ZERO;
    let mut json = Quality::ZERO;
    for item in accept.iter() {
        let q = item.quality;
        let (ty, sub) = (item.item.type_(), item.item.subtype());
        if ty == "text" && sub == "event-stream" {
            sse = sse.max(q);
        }
        if (ty == "application" && (sub == "json" || sub == "*")) || (ty == "*" && sub == "*") {
            json = json.max(q);
        }
    }
    sse > Quality::ZERO && sse >= json
}

/// `GET /tasks/{id}/events`: JSON history, or a live SSE stream.
#[utoipa::path(get, path = "/tasks/{id}/events", tag = "tasks", security(("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "Task id (UUID)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "SSE: resume after this seq")),
    responses(
        (status = 200, description = "Oldest first; with `Accept: text/event-stream`, Server-Sent Events (`id: <seq>`, `event: <type>`, `data: <event JSON>`) closing after the terminal event",
            content((Vec<EventView> = "application/json"), (String = "text/event-stream"))),
        (status = 404, description = "Unknown or expired", body = ErrorBody),
        (status = 400, description = "Malformed id", body = ErrorBody), (status = 401, description = "API key missing or wrong", body = ErrorBody), (status = 503, description = "Redis unreachable", body = ErrorBody)))]
#[tracing::instrument(name = "task_events", skip_all, fields(task_id = %path))]
pub async fn task_events(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    if !wants_event_stream(&req) {
        return Ok(HttpResponse::Ok().json(service::query::history(&state, id).await?));
    }
    if req.method() == actix_web::http::Method::HEAD {
        // The stream's headers, without opening a feed nobody reads.
        service::query::task(&state, id).await?;
        return Ok(super::stream::event_stream_head());
    }
    let last_seen = header(header::HeaderName::from_static("last-event-id"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let span = tracing::Span::current();
    let feed = Feed::open(state.into_inner(), id, last_seen).await?;
    Ok(super::stream::event_stream(feed, span))
}
