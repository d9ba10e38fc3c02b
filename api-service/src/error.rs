//! `ApiError`: every error answer of the API, as `{"error", "message", …}`.
//!
//! Handlers return `Result<_, ApiError>`; the body never carries internal
//! error text (Redis or AMQP messages go to the log, with the task id, not
//! to the client).

use actix_web::{
    body::{BoxBody, MessageBody},
    dev::ServiceResponse,
    http::{header, StatusCode},
    middleware::ErrorHandlerResponse,
    HttpResponse, ResponseError,
};
use serde::Serialize;
use task_model::TaskStatus;

/// An error answer.
#[derive(thiserror::Error)]
pub enum ApiError {
    /// 400 with a code such as `validation`, `invalid_id`, `invalid_json`.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 400 about one field, named in the body's `field` (dotted for nested
    /// input); the code is `validation` unless given (`unknown_algorithm`,
    /// `invalid_input`).
    #[error("{message}")]
    Invalid {
        code: &'static str,
        field: String,
        message: String,
    },
    /// 401, with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 404.
    #[error("no task with id {0} (unknown or expired)")]
    NotFound(String),
    /// 404 about something other than a task (the message names it).
    #[error("{0}")]
    NoSuch(String),
    /// 404 `not_found` for a named queue not in `QUEUES`.
    #[error("no queue named {0:?} (QUEUES lists the queues)")]
    QueueNotFound(String),
    /// 409, with the task's current status where it explains the conflict.
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        status: Option<TaskStatus>,
    },
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503 with `Retry-After: 5`: Redis or RabbitMQ is unreachable.
    #[error("a backing service is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// 503 `broker_blocked` with `Retry-After: 5`: RabbitMQ has blocked
    /// publishing (a memory or disk alarm), so no task can be queued now.
    #[error("rabbitmq has blocked publishing")]
    BrokerBlocked,
    /// 500: a bug or corrupt data.
    #[error("internal error")]
    Unexpected(#[source] anyhow::Error),
    /// A 4xx about one task of a batch (`POST /tasks/batch`): the task's
    /// error, with its 0-based `index` in the body.
    #[error("tasks[{index}]: {error}")]
    AtIndex { index: usize, error: Box<ApiError> },
}

impl std::fmt::Debug for ApiError {
    // The whole cause chain, for the request log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{self}")?;
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            writeln!(f, "Caused by: {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl ApiError {
    pub fn validation(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: "validation",
            message: message.into(),
        }
    }

    /// 400 `validation` naming the offending `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            code: "validation",
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// 400 `code` about `field`.
    pub fn invalid_field(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError::Invalid {
            code,
            field: field.into(),
            message: message.into(),
        }
    }

    /// 409 `already_finished` with the task's current status.
    pub fn already_finished(status: Option<TaskStatus>) -> Self {
        ApiError::Conflict {
            code: "already_finished",
            message: "the task has already finished".into(),
            status,
        }
    }

    /// `self` about the task at `index` of a batch.
    pub fn at_index(self, index: usize) -> Self {
        ApiError::AtIndex {
            index,
            error: Box::new(self),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::AtIndex { error, .. } => error.code(),
            ApiError::BadRequest { code, .. }
            | ApiError::Invalid { code, .. }
            | ApiError::Conflict { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::NotFound(_) | ApiError::NoSuch(_) | ApiError::QueueNotFound(_) => "not_found",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::BrokerBlocked => "broker_blocked",
            ApiError::Unexpected(_) => "internal",
        }
    }

    fn public_message(&self) -> String {
        match self {
            ApiError::Unavailable(_) => "a backing service is unavailable; retry shortly".into(),
            ApiError::BrokerBlocked => {
                "the message broker is refusing new messages (a resource alarm); retry shortly"
                    .into()
            }
            ApiError::Unexpected(_) => "internal error".into(),
            ApiError::AtIndex { index, error } => {
                format!("tasks[{index}]: {}", error.public_message())
            }
            other => other.to_string(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Unavailable(_) => ApiError::Unavailable(e.into()),
            crate::store::StoreError::Corrupt(_) => ApiError::Unexpected(e.into()),
        }
    }
}

/// The JSON body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A snake_case code, e.g. `validation`, `not_found`, `already_finished`.
    pub error: String,
    /// For a person.
    pub message: String,
    /// With `already_finished`: the task's current status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    /// With a validation error about one field: its name (dotted for nested
    /// input, e.g. `input.samples`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With an error about one task of a batch: its 0-based position in `tasks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// An error body without a status.
pub fn error_body(code: &str, message: &str) -> ErrorBody {
    ErrorBody {
        error: code.to_owned(),
        message: message.to_owned(),
        status: None,
        field: None,
        index: None,
    }
}

impl ApiError {
    /// The JSON body this error is answered with.
    pub fn body(&self) -> ErrorBody {
        let mut body = error_body(self.code(), &self.public_message());
        let (index, inner) = match self {
            ApiError::AtIndex { index, error } => (Some(*index), error.as_ref()),
            other => (None, other),
        };
        body.index = index;
        match inner {
            ApiError::Conflict { status, .. } => body.status = *status,
            ApiError::Invalid { field, .. } => body.field = Some(field.clone()),
            _ => {}
        }
        body
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::AtIndex { error, .. } => error.status_code(),
            ApiError::BadRequest { .. } | ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) | ApiError::NoSuch(_) | ApiError::QueueNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) | ApiError::BrokerBlocked => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // Server-side failures are logged here, once, with the request's span
        // (and so its task id); the client gets an opaque message.
        if self.status_code().is_server_error() {
            tracing::error!(error = ?self, "request failed: {self}");
        }
        let body = self.body();
        let mut res = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized(_) => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::Unavailable(_) | ApiError::BrokerBlocked => {
                res.insert_header((header::RETRY_AFTER, "5"));
            }
            _ => {}
        }
        res.json(body)
    }
}

/// Middleware hook: any error answer that is not JSON yet (the framework's own
/// 404, 405, 413, 400 from extractors, …) gets the contract's JSON body,
/// keeping its status and headers such as `Allow`.
pub fn json_error_body<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "method not allowed on this endpoint".to_owned(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            format!(
                "request bodies are limited to {} bytes",
                crate::startup::body_limit(res.request().path())
            ),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "send application/json".to_owned())
        }
        s if s.is_client_error() => (
            "bad_request",
            s.canonical_reason().unwrap_or("bad request").to_lowercase(),
        ),
        _ => ("internal", "internal error".to_owned()),
    };
    let (req, old) = res.into_parts();
    let mut new = HttpResponse::build(status);
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.append_header((name.clone(), value.clone()));
        }
    }
    let new: HttpResponse<BoxBody> = new.json(error_body(code, &message));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, new).map_into_right_body(),
    ))
}
