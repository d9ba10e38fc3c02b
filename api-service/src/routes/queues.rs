//! The named queues: `GET /queues`, `POST /queues/{name}/pause|resume` (API
//! key rules as `/tasks`), and `GET /internal/queues` for workers.

use actix_web::{web, HttpResponse};
use task_model::QueuePause;

use crate::{
    auth::{Caller, Worker},
    error::{ApiError, ErrorBody},
    service::{self, queues::QueueInfo},
    state::AppState,
};

/// The answers of a pause or a resume.
#[derive(Debug, utoipa::IntoResponses)]
pub enum PauseAnswers {
    /// Recorded and broadcast: within 1 s no worker takes new deliveries
    /// from the queue (pause), or they take them again (resume).
    #[response(status = 204)]
    Done,
    /// Not a queue name (`invalid_queue`).
    #[response(status = 400)]
    BadName(ErrorBody),
    /// API key missing or wrong.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Not one of `QUEUES`.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Redis or RabbitMQ unreachable; Retry-After: 5.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// `GET /queues`.
#[utoipa::path(get, path = "/queues", tag = "queues", security(("api_key" = [])),
    responses(
        (status = 200, description = "Every queue of `QUEUES`, in order", body = [QueueInfo]),
        (status = 401, description = "API key missing or wrong", body = ErrorBody),
        (status = 503, description = "Redis or RabbitMQ unreachable", body = ErrorBody),
    ))]
pub async fn list_queues(state: web::Data<AppState>, _: Caller) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service::queues::list(&state).await?))
}

/// `POST /queues/{name}/pause`.
#[utoipa::path(post, path = "/queues/{name}/pause", tag = "queues", security(("api_key" = [])),
    params(("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "A queue of `QUEUES`")),
    responses(PauseAnswers))]
pub async fn pause_queue(
    path: web::Path<String>,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    service::queues::set_paused(&state, &path, true).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /queues/{name}/resume`.
#[utoipa::path(post, path = "/queues/{name}/resume", tag = "queues", security(("api_key" = [])),
    params(("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,62}$", description = "A queue of `QUEUES`")),
    responses(PauseAnswers))]
pub async fn resume_queue(
    path: web::Path<String>,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    service::queues::set_paused(&state, &path, false).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /internal/queues`: the pause state a worker needs before it consumes.
#[utoipa::path(get, path = "/internal/queues", tag = "callbacks", security(("callback_token" = [])),
    responses(
        (status = 200, description = "Every queue of `QUEUES` with its pause state and the state's version", body = [QueuePause]),
        (status = 401, description = "Callback token missing or wrong", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
    ))]
pub async fn internal_queues(
    state: web::Data<AppState>,
    _: Worker,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service::queues::pause_states(&state).await?))
}
