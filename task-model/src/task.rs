//! The task as users see it: the create request and its validation, and the
//! GET representation with its event history.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{TaskId, TaskStatus};

/// Algorithms a worker can run: the names of `native`'s catalogue (the api
/// checks this list against `native::algorithms()` in a test; the api
/// validates `input` with the catalogue, this crate does not).
pub const ALGORITHMS: &[&str] = &["hello", "grayscale", "pi"];

/// Largest serialized `input`, in bytes.
pub const MAX_INPUT_BYTES: usize = 16 * 1024;

/// Body of `POST /tasks`, as sent. Every field is optional and `null` means absent.
///
/// The api reads it with [`CreateTaskRequest::from_json`], whose errors name
/// the offending field; the ranges below are also in the OpenAPI schema.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskRequest {
    /// Which routine to run; `hello` by default.
    pub algorithm: Option<String>,
    /// Number of stages, 1..=1000.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub stages: Option<i64>,
    /// Length of one stage in milliseconds, 0..=600000.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 600000))]
    pub stage_ms: Option<i64>,
    /// Deadline after the first claim, 1..=86400 seconds.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86400))]
    pub timeout_secs: Option<i64>,
    /// 0..=9, higher runs first.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 9))]
    pub priority: Option<i64>,
    /// Opaque input for the routine, at most 16 KiB serialized.
    pub input: Option<serde_json::Value>,
    /// Where to POST the finished task (checked by the api against its allow-list).
    #[cfg_attr(feature = "openapi", schema(format = "uri"))]
    pub webhook_url: Option<String>,
    /// The named queue it goes to, one of the api's `QUEUES`; `algo` by default.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
    // Absent stays absent when serialized, so idempotency fingerprints of
    // requests without a queue are those of v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// The fields of a [`CreateTaskRequest`], as spelled in JSON.
pub const CREATE_FIELDS: &[&str] = &[
    "algorithm",
    "stages",
    "stage_ms",
    "timeout_secs",
    "priority",
    "input",
    "webhook_url",
    "queue",
];

/// The queue of a task that names none.
pub const DEFAULT_QUEUE: &str = "algo";

impl CreateTaskRequest {
    /// Reads a create body (a JSON object) field by field, so that every
    /// error names its field: an unknown field, a string where a number
    /// belongs, or a number that is not an integer (`1.0` included: the
    /// contract's numbers are integers, written without a fraction).
    /// Ranges are checked later, by [`NewTask::parse`].
    ///
    /// # Errors
    /// The first field that is not of its type; `field` is empty when
    /// `value` is not an object at all.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ValidationError> {
        use serde_json::Value;
        let Value::Object(fields) = value else {
            return Err(ValidationError::new("", "the body must be a JSON object"));
        };
        let mut req = Self::default();
        for (name, v) in fields {
            let name = name.as_str();
            let integer = |v: &Value| match v {
                Value::Null => Ok(None),
                Value::Number(n) => n.as_i64().map(Some).ok_or_else(|| {
                    ValidationError::new(name, format!("must be an integer, got {n}"))
                }),
                other => Err(ValidationError::new(
                    name,
                    format!("must be an integer, got {}", json_type(other)),
                )),
            };
            let string = |v: &Value| match v {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                other => Err(ValidationError::new(
                    name,
                    format!("must be a string, got {}", json_type(other)),
                )),
            };
            match name {
                "algorithm" => req.algorithm = string(v)?,
                "stages" => req.stages = integer(v)?,
                "stage_ms" => req.stage_ms = integer(v)?,
                "timeout_secs" => req.timeout_secs = integer(v)?,
                "priority" => req.priority = integer(v)?,
                "input" => req.input = (!v.is_null()).then(|| v.clone()),
                "webhook_url" => req.webhook_url = string(v)?,
                "queue" => req.queue = string(v)?,
                _ => {
                    return Err(ValidationError::new(
                        name,
                        format!("unknown field; known: {}", CREATE_FIELDS.join(", ")),
                    ))
                }
            }
        }
        Ok(req)
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Defaults for fields a create request leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskDefaults {
    /// `DEFAULT_STAGES`.
    pub stages: u32,
    /// `DEFAULT_STAGE_MS`.
    pub stage_ms: u64,
    /// `DEFAULT_TIMEOUT_SECS`.
    pub timeout_secs: u64,
}

impl Default for TaskDefaults {
    fn default() -> Self {
        Self {
            stages: 10,
            stage_ms: 3000,
            timeout_secs: 50,
        }
    }
}

/// A validated create request, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// One of [`ALGORITHMS`].
    pub algorithm: String,
    /// 1..=1000.
    pub stages: u32,
    /// 0..=600000.
    pub stage_ms: u64,
    /// 1..=86400.
    pub timeout_secs: u64,
    /// 0..=9.
    pub priority: u8,
    /// `null` when absent.
    pub input: serde_json::Value,
    /// Not yet checked against an allow-list.
    pub webhook_url: Option<String>,
    /// The named queue; not yet checked against the api's `QUEUES`.
    pub queue: String,
}

/// A create request that breaks a rule; the message is for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending field, as spelled in JSON (dotted for nested input).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ValidationError {
    /// A validation error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn in_range(field: &'static str, value: i64, min: i64, max: i64) -> Result<i64, ValidationError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ValidationError::new(
            field,
            format!("must be an integer from {min} to {max}, got {value}"),
        ))
    }
}

impl NewTask {
    /// Validates `req` and fills in `defaults`.
    ///
    /// # Errors
    /// The first rule `req` breaks.
    pub fn parse(req: CreateTaskRequest, defaults: TaskDefaults) -> Result<Self, ValidationError> {
        let algorithm = req.algorithm.unwrap_or_else(|| "hello".to_owned());
        if !ALGORITHMS.contains(&algorithm.as_str()) {
            return Err(ValidationError::new(
                "algorithm",
                format!(
                    "unknown algorithm {algorithm:?}; available: {}",
                    ALGORITHMS.join(", ")
                ),
            ));
        }
        let stages = match req.stages {
            Some(v) => in_range("stages", v, 1, 1000)? as u32,
            None => defaults.stages,
        };
        let stage_ms = match req.stage_ms {
            Some(v) => in_range("stage_ms", v, 0, 600_000)? as u64,
            None => defaults.stage_ms,
        };
        let timeout_secs = match req.timeout_secs {
            Some(v) => in_range("timeout_secs", v, 1, 86_400)? as u64,
            None => defaults.timeout_secs,
        };
        let priority = match req.priority {
            Some(v) => in_range("priority", v, 0, 9)? as u8,
            None => 0,
        };
        let input = req.input.unwrap_or(serde_json::Value::Null);
        let size = serde_json::to_vec(&input)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_INPUT_BYTES {
            return Err(ValidationError::new(
                "input",
                format!("is {size} bytes serialized; the limit is {MAX_INPUT_BYTES}"),
            ));
        }
        Ok(Self {
            algorithm,
            stages,
            stage_ms,
            timeout_secs,
            priority,
            input,
            webhook_url: req.webhook_url,
            queue: req.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned()),
        })
    }
}

/// Webhook delivery outcome shown on a task.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookView {
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
}

/// `GET /tasks/{id}`: a task as users see it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// The task's id.
    pub task_id: TaskId,
    /// Current state.
    pub status: TaskStatus,
    /// The routine.
    pub algorithm: String,
    /// `floor(100 × stage / stages)`.
    pub progress: u8,
    /// Stages completed.
    pub stage: u32,
    /// Stages in all.
    pub stages: u32,
    /// Length of one stage.
    pub stage_ms: u64,
    /// Deadline after `started_at`.
    pub timeout_secs: u64,
    /// 0..=9.
    pub priority: u8,
    /// As submitted, `null` when absent.
    pub input: serde_json::Value,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// First claim by a worker (kept on takeover).
    pub started_at: Option<DateTime<Utc>>,
    /// Set with any terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last change of any kind.
    pub updated_at: DateTime<Utc>,
    /// The worker holding (or that last held) it.
    pub worker: Option<String>,
    /// True from the cancel request on.
    pub cancel_requested: bool,
    /// The routine's result, when COMPLETED.
    pub result: Option<serde_json::Value>,
    /// What went wrong, when FAILED or TIMED_OUT.
    pub error: Option<String>,
    /// Webhook delivery, when the task has a `webhook_url`.
    pub webhook: Option<WebhookView>,
    /// The named queue it was routed to (`algo` for tasks stored before v2).
    #[serde(default = "default_queue")]
    pub queue: String,
}

fn default_queue() -> String {
    DEFAULT_QUEUE.to_owned()
}

/// A task's id and status: the answer of `POST /tasks` and of a cancel.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    /// The task.
    pub task_id: TaskId,
    /// Its status after the request.
    pub status: TaskStatus,
}

/// One page of `GET /tasks`, newest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    /// The tasks of this page.
    pub tasks: Vec<TaskView>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// Progress as the contract defines it: `floor(100 × stage / stages)`.
pub fn progress_percent(stage: u32, stages: u32) -> u8 {
    if stages == 0 {
        return 0;
    }
    (u64::from(stage.min(stages)) * 100 / u64::from(stages)) as u8
}

/// One entry of `GET /tasks/{id}/events`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// 1, 2, … in order.
    pub seq: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// `status`, `progress` or `cancel_requested`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status after the event.
    pub status: TaskStatus,
    /// Progress after the event.
    pub progress: u8,
    /// Stage after the event.
    pub stage: u32,
    /// The worker involved, if any.
    pub worker: Option<String>,
    /// Free text, e.g. who took a task over or why it failed.
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<NewTask, String> {
        let req: CreateTaskRequest = serde_json::from_str(json).map_err(|e| e.to_string())?;
        NewTask::parse(req, TaskDefaults::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_object_takes_every_default() {
        let t = parse("{}").unwrap();
        assert_eq!(
            (
                t.algorithm.as_str(),
                t.stages,
                t.stage_ms,
                t.timeout_secs,
                t.priority
            ),
            ("hello", 10, 3000, 50, 0)
        );
        assert_eq!(t.input, serde_json::Value::Null);
    }

    #[test]
    fn nulls_mean_absent() {
        assert_eq!(
            parse(r#"{"stages":null,"input":null}"#).unwrap(),
            parse("{}").unwrap()
        );
    }

    #[test]
    fn out_of_range_non_integer_and_unknown_fields_are_rejected() {
        for bad in [
            r#"{"stages":0}"#,
            r#"{"stages":1001}"#,
            r#"{"stages":1.5}"#,
            r#"{"stages":"3"}"#,
            r#"{"stage_ms":-1}"#,
            r#"{"stage_ms":600001}"#,
            r#"{"timeout_secs":0}"#,
            r#"{"priority":10}"#,
            r#"{"priority":99999999999999999999999}"#,
            r#"{"algorithm":"sort"}"#,
            r#"{"colour":"red"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn every_type_error_names_its_field() {
        for (bad, field) in [
            (r#"{"stages":1.0}"#, "stages"),
            (r#"{"stage_ms":2.5}"#, "stage_ms"),
            (r#"{"priority":"high"}"#, "priority"),
            (r#"{"timeout_secs":[1]}"#, "timeout_secs"),
            (r#"{"algorithm":7}"#, "algorithm"),
            (r#"{"webhook_url":{}}"#, "webhook_url"),
            (r#"{"queue":3}"#, "queue"),
            (r#"{"colour":"red"}"#, "colour"),
        ] {
            let value: serde_json::Value = serde_json::from_str(bad).unwrap();
            let err = CreateTaskRequest::from_json(&value).unwrap_err();
            assert_eq!(err.field, field, "{bad}: {err}");
        }
        let value = serde_json::json!({"stages": 3, "input": {"a": 1}, "algorithm": null});
        let req = CreateTaskRequest::from_json(&value).unwrap();
        assert_eq!(req, serde_json::from_value(value).unwrap());
    }

    #[test]
    fn input_is_limited_to_16_kib() {
        let ok = format!(r#"{{"input":"{}"}}"#, "a".repeat(MAX_INPUT_BYTES - 2));
        assert!(parse(&ok).is_ok());
        let too_big = format!(r#"{{"input":"{}"}}"#, "a".repeat(MAX_INPUT_BYTES - 1));
        assert!(parse(&too_big).is_err());
    }

    #[test]
    fn progress_is_floored() {
        assert_eq!(progress_percent(1, 3), 33);
        assert_eq!(progress_percent(3, 3), 100);
        assert_eq!(progress_percent(0, 10), 0);
    }
}
