//! `/schedules`: periodic tasks. Each handler extracts its arguments, calls
//! [`crate::service::schedules`], maps the answer. API-key rules as `/tasks`.

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use task_model::{CreateScheduleRequest, ScheduleCreated, ScheduleList, ScheduleView, TaskId};
use uuid::Uuid;

use super::tasks::is_json_content_type;
use crate::{
    auth::Caller,
    error::{ApiError, ErrorBody},
    service,
    state::AppState,
};

/// A schedule id in a path (a UUID, canonical form, any case), or 400.
fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    TaskId::parse(raw).map(|id| *id.as_uuid()).map_err(|_| {
        ApiError::bad_request(
            "invalid_id",
            "schedule ids are UUIDs in canonical hyphenated form (8-4-4-4-12 hex digits)",
        )
    })
}

fn schedule_request(req: &HttpRequest, body: &[u8]) -> Result<CreateScheduleRequest, ApiError> {
    if !is_json_content_type(req) {
        return Err(ApiError::UnsupportedMediaType(
            "send the schedule as application/json".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("body is not valid JSON: {e}"))
    })?;
    CreateScheduleRequest::from_json(&value).map_err(|e| {
        if e.field.is_empty() {
            ApiError::validation(e.message)
        } else {
            ApiError::invalid(e.field, e.message)
        }
    })
}

/// `POST /schedules`.
#[utoipa::path(post, path = "/schedules", tag = "schedules", security(("api_key" = [])),
    request_body(content = CreateScheduleRequest),
    responses(
        (status = 201, description = "Stored; its first due time", body = ScheduleCreated, headers(("Location" = String))),
        (status = 400, description = "A bad cron expression (`field: cron`) or task (`field: task.…`)", body = ErrorBody),
        (status = 401, description = "API key missing or wrong", body = ErrorBody),
        (status = 413, description = "Body over 65,536 bytes", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
    ))]
#[tracing::instrument(name = "create_schedule", skip_all)]
pub async fn create_schedule(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let request = schedule_request(&req, &body)?;
    let created = service::schedules::create(&state, request, &caller.scope).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/schedules/{}", created.schedule_id),
        ))
        .json(created))
}

/// `GET /schedules`.
#[utoipa::path(get, path = "/schedules", tag = "schedules", security(("api_key" = [])),
    responses((status = 200, body = ScheduleList), (status = 401, description = "API key missing or wrong", body = ErrorBody), (status = 503, description = "Redis unreachable", body = ErrorBody)))]
#[tracing::instrument(name = "list_schedules", skip_all)]
pub async fn list_schedules(
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service::schedules::list(&state).await?))
}

/// `GET /schedules/{id}`.
#[utoipa::path(get, path = "/schedules/{id}", tag = "schedules", security(("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "Schedule id (UUID)")),
    responses((status = 200, body = ScheduleView), (status = 404, description = "Unknown", body = ErrorBody), (status = 400, description = "Malformed id", body = ErrorBody), (status = 401, description = "API key missing or wrong", body = ErrorBody), (status = 503, description = "Redis unreachable", body = ErrorBody)))]
#[tracing::instrument(name = "get_schedule", skip_all, fields(schedule_id = %path))]
pub async fn get_schedule(
    path: web::Path<String>,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    Ok(HttpResponse::Ok().json(service::schedules::get(&state, id).await?))
}

/// `DELETE /schedules/{id}`.
#[utoipa::path(delete, path = "/schedules/{id}", tag = "schedules", security(("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "Schedule id (UUID)")),
    responses((status = 204, description = "Deleted: no due time fires after this"), (status = 404, description = "Unknown", body = ErrorBody), (status = 400, description = "Malformed id", body = ErrorBody), (status = 401, description = "API key missing or wrong", body = ErrorBody), (status = 503, description = "Redis unreachable", body = ErrorBody)))]
#[tracing::instrument(name = "delete_schedule", skip_all, fields(schedule_id = %path))]
pub async fn delete_schedule(
    path: web::Path<String>,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    service::schedules::delete(&state, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
