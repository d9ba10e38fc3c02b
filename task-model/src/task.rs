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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskRequest {
    /// Which routine to run; `hello` by default.
    pub algorithm: Option<String>,
    /// Number of stages, 1..=1000.
    pub stages: Option<i64>,
    /// Length of one stage in milliseconds, 0..=600000.
    pub stage_ms: Option<i64>,
    /// Deadline after the first claim, 1..=86400 seconds.
    pub timeout_secs: Option<i64>,
    /// 0..=9, higher runs first.
    pub priority: Option<i64>,
    /// Opaque input for the routine, at most 16 KiB serialized.
    pub input: Option<serde_json::Value>,
    /// Where to POST the finished task (checked by the api against its allow-list).
    pub webhook_url: Option<String>,
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
}

/// A create request that breaks a rule; the message is for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ValidationError {
    /// A validation error on `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
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
