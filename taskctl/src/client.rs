//! The api, as seen from the command line: one method per endpoint and a
//! typed [`ClientError`] for everything that can go wrong.
//!
//! Error answers of the api (`{"error": "<code>", "message": "<text>"}`) become
//! [`ClientError::Api`] with both kept; a 404 on a task becomes
//! [`ClientError::NotFound`]; a connection that cannot be made (or dies) is
//! [`ClientError::Unreachable`].

use std::time::Duration;

use reqwest::{header, Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use task_model::{EventView, ScheduleCreated, TaskId, TaskRef, TaskStatus, TaskView};

/// How long a plain request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call to the api did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made, or it broke before the answer was read.
    #[error("cannot reach the api at {url}: {reason} (is it running? set API_URL or --api-url)")]
    Unreachable {
        /// The api's base URL.
        url: String,
        /// What the network said, e.g. `Connection refused (os error 111)`.
        reason: String,
    },
    /// The task does not exist (or has expired).
    #[error("no task with id {id} (unknown or expired)")]
    NotFound {
        /// The id asked for.
        id: TaskId,
    },
    /// The schedule does not exist.
    #[error("no schedule with id {id}")]
    NoSchedule {
        /// The id asked for.
        id: String,
    },
    /// Any other error answer.
    #[error("{}", api_message(*.status, .code, .message))]
    Api {
        /// HTTP status.
        status: u16,
        /// The api's snake_case code, e.g. `already_finished`.
        code: String,
        /// The api's text for a person.
        message: String,
    },
    /// A success answer that is not what the contract describes.
    #[error("unexpected answer from the api: {0}")]
    InvalidResponse(String),
    /// A local file (`--input-file`, `--output`) cannot be read or written.
    #[error("{action} {path}: {reason}")]
    File {
        /// `cannot read` or `cannot write`.
        action: &'static str,
        /// The file, as given.
        path: String,
        /// What the system said.
        reason: String,
    },
    /// `get --output` of a task without a result file.
    #[error("task {id} has no result file to download: {why}")]
    NoResultFile {
        /// The task.
        id: TaskId,
        /// Why, e.g. `it is PROCESSING` or `its result has no "image" blob`.
        why: String,
    },
}

fn api_message(status: u16, code: &str, message: &str) -> String {
    let hint = match status {
        401 => "; set API_KEY or pass --api-key",
        503 => "; the api's Redis or RabbitMQ is down, retry shortly",
        _ => "",
    };
    format!("the api answered {status} {code}: {message}{hint}")
}

impl ClientError {
    /// The process exit code this error ends `taskctl` with.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } => 3,
            ClientError::NotFound { .. } | ClientError::NoSchedule { .. } => 4,
            ClientError::Api { .. } | ClientError::InvalidResponse(_) => 5,
            ClientError::File { .. } => 2,
            ClientError::NoResultFile { .. } => 1,
        }
    }
}

/// `POST /tasks`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Submitted {
    /// The new (or, for an idempotent replay, the first) task.
    pub task_id: TaskId,
    /// Its current status.
    pub status: TaskStatus,
    /// True when the api answered 200: an idempotent replay, nothing created.
    #[serde(skip)]
    pub replayed: bool,
}

/// `POST /tasks/batch`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct BatchSubmitted {
    /// One per task of the request, in its order.
    pub tasks: Vec<TaskRef>,
    /// True when the api answered 200: an idempotent replay, nothing created.
    #[serde(skip)]
    pub replayed: bool,
}

/// `DELETE /tasks/{id}`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Cancelled {
    /// The task.
    pub task_id: TaskId,
    /// `CANCELLED` (it was queued, or already cancelled) or `CANCELLING`
    /// (its worker is stopping it).
    pub status: TaskStatus,
    /// True when the task was CANCELLED before this request: the api answered
    /// 409 `already_finished` with that status, and nothing changed.
    #[serde(skip)]
    pub already: bool,
}

/// One page of `GET /tasks`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Page {
    /// Full task objects, as the api sent them.
    pub tasks: Vec<Value>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
}

/// `POST /blobs`' answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Blob {
    /// The new blob's id (a UUID).
    pub blob_id: String,
    /// Its size in bytes.
    pub size: u64,
    /// The content type the api stored.
    pub content_type: String,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
}

/// One entry of `GET /algorithms` (its `input_schema` left out).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Algorithm {
    /// What a task's `algorithm` names.
    pub name: String,
    /// One line for a person.
    pub description: String,
    /// Stages of a task that names none.
    pub default_stages: u32,
    /// Whether its stages take a worker's CPU slot.
    pub cpu_bound: bool,
}

/// A client of one api.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    api_key: Option<String>,
}

impl Client {
    /// A client of the api at `base`, presenting `api_key` when given.
    ///
    /// # Errors
    /// The HTTP client cannot be set up (no usable system configuration).
    pub fn new(base: Url, api_key: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("taskctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::InvalidResponse(format!("cannot set up HTTP: {e}")))?;
        Ok(Self {
            http,
            base,
            api_key: api_key.filter(|k| !k.is_empty()),
        })
    }

    /// The api's base URL, as given.
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match &self.api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    pub(crate) fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.as_str().trim_end_matches('/').to_owned(),
            reason: root_cause(e),
        }
    }

    /// Sends `req` and turns transport failures and error answers into
    /// [`ClientError`]s; `id` names the task a 404 is about.
    async fn send(&self, req: RequestBuilder, id: Option<TaskId>) -> Result<Response, ClientError> {
        let res = req
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        self.check(res, id).await
    }

    /// Passes a success answer through; turns an error answer into a [`ClientError`].
    pub(crate) async fn check(
        &self,
        res: Response,
        id: Option<TaskId>,
    ) -> Result<Response, ClientError> {
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let body = res.bytes().await.unwrap_or_default();
        Err(error_answer(status, &body, id))
    }

    async fn json<T: DeserializeOwned>(&self, res: Response) -> Result<T, ClientError> {
        let body = res.bytes().await.map_err(|e| self.unreachable(&e))?;
        serde_json::from_slice(&body).map_err(|e| {
            ClientError::InvalidResponse(format!(
                "{e} in {:?}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })
    }

    /// `POST /tasks` with `body` (a JSON object) and an optional `Idempotency-Key`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn submit(
        &self,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, ClientError> {
        let mut req = self.request(Method::POST, "/tasks").json(body);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        let res = self.send(req, None).await?;
        let replayed = res.status() == StatusCode::OK;
        let mut submitted: Submitted = self.json(res).await?;
        submitted.replayed = replayed;
        Ok(submitted)
    }

    /// `POST /tasks/batch` with `body` (`{"tasks": [...]}`) and an optional
    /// `Idempotency-Key` covering the whole batch.
    ///
    /// # Errors
    /// See [`ClientError`]; an invalid task is an `Api` error whose message
    /// names its index (`tasks[3]: …`).
    pub async fn submit_batch(
        &self,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<BatchSubmitted, ClientError> {
        let mut req = self.request(Method::POST, "/tasks/batch").json(body);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        let res = self.send(req, None).await?;
        let replayed = res.status() == StatusCode::OK;
        let mut submitted: BatchSubmitted = self.json(res).await?;
        submitted.replayed = replayed;
        Ok(submitted)
    }

    /// Sends a `/schedules` request; a 404 names schedule `id`.
    async fn send_schedule(&self, req: RequestBuilder, id: &str) -> Result<Response, ClientError> {
        match self.send(req, None).await {
            Err(ClientError::Api { status: 404, .. }) => {
                Err(ClientError::NoSchedule { id: id.to_owned() })
            }
            other => other,
        }
    }

    /// `GET /schedules`, as the api's JSON.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn schedules_json(&self) -> Result<Value, ClientError> {
        let res = self
            .send(self.request(Method::GET, "/schedules"), None)
            .await?;
        self.json(res).await
    }

    /// `GET /schedules/{id}`, as the api's JSON.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn schedule_json(&self, id: &str) -> Result<Value, ClientError> {
        let req = self.request(Method::GET, &format!("/schedules/{id}"));
        let res = self.send_schedule(req, id).await?;
        self.json(res).await
    }

    /// `POST /schedules` with `body`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn create_schedule(&self, body: &Value) -> Result<ScheduleCreated, ClientError> {
        let req = self.request(Method::POST, "/schedules").json(body);
        let res = self.send(req, None).await?;
        self.json(res).await
    }

    /// `DELETE /schedules/{id}`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn delete_schedule(&self, id: &str) -> Result<(), ClientError> {
        let req = self.request(Method::DELETE, &format!("/schedules/{id}"));
        self.send_schedule(req, id).await.map(|_| ())
    }

    /// `GET /tasks/{id}`, as the api's JSON.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn task_json(&self, id: TaskId) -> Result<Value, ClientError> {
        let req = self.request(Method::GET, &format!("/tasks/{id}"));
        let res = self.send(req, Some(id)).await?;
        self.json(res).await
    }

    /// `GET /tasks/{id}`, typed.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn task(&self, id: TaskId) -> Result<TaskView, ClientError> {
        let value = self.task_json(id).await?;
        view(value)
    }

    /// `DELETE /tasks/{id}`.
    ///
    /// # Errors
    /// See [`ClientError`]; a task that finished otherwise than CANCELLED is
    /// an `Api` error `already_finished`. A task already CANCELLED is what was
    /// asked for: `Ok`, with [`Cancelled::already`] set.
    pub async fn cancel(&self, id: TaskId) -> Result<Cancelled, ClientError> {
        let req = self
            .request(Method::DELETE, &format!("/tasks/{id}"))
            .timeout(REQUEST_TIMEOUT);
        let res = req.send().await.map_err(|e| self.unreachable(&e))?;
        if res.status() != StatusCode::CONFLICT {
            let res = self.check(res, Some(id)).await?;
            return self.json(res).await;
        }
        let body = res.bytes().await.map_err(|e| self.unreachable(&e))?;
        let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
        let cancelled = answer.get("error").and_then(Value::as_str) == Some("already_finished")
            && answer.get("status").and_then(Value::as_str) == Some(TaskStatus::Cancelled.as_str());
        if cancelled {
            return Ok(Cancelled {
                task_id: id,
                status: TaskStatus::Cancelled,
                already: true,
            });
        }
        Err(error_answer(StatusCode::CONFLICT, &body, Some(id)))
    }

    /// One page of `GET /tasks`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn list(
        &self,
        status: Option<TaskStatus>,
        limit: u16,
        cursor: Option<&str>,
    ) -> Result<Page, ClientError> {
        let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        if let Some(status) = status {
            query.push(("status", status.as_str().to_owned()));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        let req = self.request(Method::GET, "/tasks").query(&query);
        let res = self.send(req, None).await?;
        self.json(res).await
    }

    /// `GET /queues`, as the api's JSON.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn queues_json(&self) -> Result<Value, ClientError> {
        let res = self
            .send(self.request(Method::GET, "/queues"), None)
            .await?;
        self.json(res).await
    }

    /// `POST /queues/{queue}/pause` (or `/resume`).
    ///
    /// # Errors
    /// See [`ClientError`]; an unknown queue is an `Api` error `not_found`.
    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), ClientError> {
        let verb = if paused { "pause" } else { "resume" };
        let path = format!("/queues/{}/{verb}", urlencoding(queue));
        self.send(self.request(Method::POST, &path), None).await?;
        Ok(())
    }

    /// `GET /tasks/{id}/events`, as the api's JSON.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn events_json(&self, id: TaskId) -> Result<Value, ClientError> {
        let req = self
            .request(Method::GET, &format!("/tasks/{id}/events"))
            .header(header::ACCEPT, "application/json");
        let res = self.send(req, Some(id)).await?;
        self.json(res).await
    }

    /// `GET /algorithms`, as the api's JSON.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn algorithms_json(&self) -> Result<Value, ClientError> {
        let req = self.request(Method::GET, "/algorithms");
        let res = self.send(req, None).await?;
        self.json(res).await
    }

    /// `POST /blobs` with `bytes` as `content_type`.
    ///
    /// # Errors
    /// See [`ClientError`]; a file over the api's `BLOB_MAX_BYTES` is an
    /// `Api` error 413.
    pub async fn upload_blob(
        &self,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<Blob, ClientError> {
        let req = self
            .request(Method::POST, "/blobs")
            .header(header::CONTENT_TYPE, content_type)
            .body(bytes);
        let res = self.send(req, None).await?;
        self.json(res).await
    }

    /// `GET /blobs/{id}`: the bytes.
    ///
    /// # Errors
    /// See [`ClientError`]; an unknown or expired blob is an `Api` error 404.
    pub async fn download_blob(&self, id: &str) -> Result<Vec<u8>, ClientError> {
        let req = self.request(Method::GET, &format!("/blobs/{id}"));
        let res = self.send(req, None).await?;
        let body = res.bytes().await.map_err(|e| self.unreachable(&e))?;
        Ok(body.to_vec())
    }

    /// Opens the SSE stream of a task's events, after `last_seen` (0 = all).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn event_stream(&self, id: TaskId, last_seen: u64) -> Result<Response, ClientError> {
        let mut req = self
            .request(Method::GET, &format!("/tasks/{id}/events"))
            .header(header::ACCEPT, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache");
        if last_seen > 0 {
            req = req.header("Last-Event-ID", last_seen.to_string());
        }
        // No overall timeout: the stream lives as long as the task runs; the
        // follower watches for silence itself (the api sends keep-alives).
        let res = req.send().await.map_err(|e| self.unreachable(&e))?;
        self.check(res, Some(id)).await
    }
}

/// Parses the api's task JSON.
///
/// # Errors
/// The JSON is not a task as the contract describes it.
pub fn view(value: Value) -> Result<TaskView, ClientError> {
    serde_json::from_value(value)
        .map_err(|e| ClientError::InvalidResponse(format!("not a task: {e}")))
}

/// Parses the api's algorithm catalogue.
///
/// # Errors
/// The JSON is not a list of algorithms.
pub fn algorithms(value: Value) -> Result<Vec<Algorithm>, ClientError> {
    serde_json::from_value(value)
        .map_err(|e| ClientError::InvalidResponse(format!("not a list of algorithms: {e}")))
}

/// Parses the api's event-history JSON.
///
/// # Errors
/// The JSON is not a list of events.
pub fn events(value: Value) -> Result<Vec<EventView>, ClientError> {
    serde_json::from_value(value)
        .map_err(|e| ClientError::InvalidResponse(format!("not a list of events: {e}")))
}

/// The innermost cause of a transport error, which is what a person can act
/// on (`Connection refused`), rather than reqwest's outer wrapping.
/// The [`ClientError`] for an error answer with `body`; `id` names the task a 404 is about.
fn error_answer(status: StatusCode, body: &[u8], id: Option<TaskId>) -> ClientError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let code = field("error");
    if status == StatusCode::NOT_FOUND && code.as_deref().is_none_or(|c| c == "not_found") {
        if let Some(id) = id {
            return ClientError::NotFound { id };
        }
    }
    let mut message = field("message").unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() || text.len() > 200 || text.contains('\n') {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text.to_owned()
        }
    });
    if let Some(current) = field("status") {
        message = format!("{message} (status {current})");
    }
    ClientError::Api {
        status: status.as_u16(),
        code: code.unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase()
                .replace(' ', "_")
        }),
        message,
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer in time".to_owned();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if text.is_empty() {
        e.to_string()
    } else {
        text
    }
}

/// `queue` for a URL path: kept as is when it is a queue name, percent-encoded otherwise
/// (the api then answers 400 `invalid_queue`).
fn urlencoding(queue: &str) -> String {
    queue
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_one_line_and_name_the_fix() {
        let e = ClientError::Api {
            status: 401,
            code: "unauthorized".into(),
            message: "send Authorization: Bearer <api key>".into(),
        };
        let text = e.to_string();
        assert!(text.contains("401") && text.contains("API_KEY"), "{text}");
        assert!(!text.contains('\n'));
        assert_eq!(e.exit_code(), 5);
        let e = ClientError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            reason: "Connection refused (os error 111)".into(),
        };
        assert!(e.to_string().contains("http://127.0.0.1:1"));
        assert_eq!(e.exit_code(), 3);
        let id = TaskId::new();
        assert_eq!(ClientError::NotFound { id }.exit_code(), 4);
    }

    #[test]
    fn base_urls_with_a_path_keep_it() {
        let c = Client::new(Url::parse("http://h:1/api/").unwrap(), Some(String::new())).unwrap();
        assert_eq!(c.url("/tasks"), "http://h:1/api/tasks");
        assert!(c.api_key.is_none(), "an empty key is no key");
        let c = Client::new(Url::parse("http://h:1").unwrap(), None).unwrap();
        assert_eq!(c.url("/tasks"), "http://h:1/tasks");
    }
}
