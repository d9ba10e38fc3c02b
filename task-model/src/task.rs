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
    /// When to run it (RFC 3339, at most 30 days ahead; a past time means
    /// now). Not together with `delay_ms`.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub run_at: Option<String>,
    /// Run it this many milliseconds from now, 0..=2592000000. Not together with `run_at`.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 2592000000_i64))]
    pub delay_ms: Option<i64>,
    /// Attempts in all, 1..=100 (default `DEFAULT_MAX_ATTEMPTS`).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub max_attempts: Option<i64>,
    /// Backoff before the second attempt, 0..=3600000 ms (default 1000); doubles per attempt.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 3600000))]
    pub retry_backoff_ms: Option<i64>,
    /// Cap of the backoff, ≥ `retry_backoff_ms` (default 300000).
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub retry_backoff_max_ms: Option<i64>,
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
    "run_at",
    "delay_ms",
    "max_attempts",
    "retry_backoff_ms",
    "retry_backoff_max_ms",
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
                "run_at" => req.run_at = string(v)?,
                "delay_ms" => req.delay_ms = integer(v)?,
                "max_attempts" => req.max_attempts = integer(v)?,
                "retry_backoff_ms" => req.retry_backoff_ms = integer(v)?,
                "retry_backoff_max_ms" => req.retry_backoff_max_ms = integer(v)?,
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
    /// `DEFAULT_MAX_ATTEMPTS`.
    pub max_attempts: u32,
}

/// Default `max_attempts` (`DEFAULT_MAX_ATTEMPTS`).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default `retry_backoff_ms`.
pub const DEFAULT_RETRY_BACKOFF_MS: u64 = 1000;
/// Default `retry_backoff_max_ms`.
pub const DEFAULT_RETRY_BACKOFF_MAX_MS: u64 = 300_000;
/// How far ahead `run_at` and `delay_ms` may reach: 30 days.
pub const MAX_DELAY_MS: i64 = 2_592_000_000;
/// Failed attempts kept in a task's `errors`.
pub const MAX_ERRORS_KEPT: usize = 10;

impl Default for TaskDefaults {
    fn default() -> Self {
        Self {
            stages: 10,
            stage_ms: 3000,
            timeout_secs: 50,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
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
    /// When to run it, from `run_at` or `delay_ms`; `None`: now. A time
    /// that is not in the future (when the api stores the task) means now.
    pub run_at: Option<DateTime<Utc>>,
    /// 1..=100.
    pub max_attempts: u32,
    /// 0..=3600000.
    pub retry_backoff_ms: u64,
    /// ≥ `retry_backoff_ms`.
    pub retry_backoff_max_ms: u64,
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
        let run_at = start_time(req.run_at.as_deref(), req.delay_ms, Utc::now())?;
        let max_attempts = match req.max_attempts {
            Some(v) => in_range("max_attempts", v, 1, 100)? as u32,
            None => defaults.max_attempts,
        };
        let retry_backoff_ms = match req.retry_backoff_ms {
            Some(v) => in_range("retry_backoff_ms", v, 0, 3_600_000)? as u64,
            None => DEFAULT_RETRY_BACKOFF_MS,
        };
        let retry_backoff_max_ms = match req.retry_backoff_max_ms {
            Some(v) if v < retry_backoff_ms as i64 => {
                return Err(ValidationError::new(
                    "retry_backoff_max_ms",
                    format!("must be at least retry_backoff_ms ({retry_backoff_ms}), got {v}"),
                ))
            }
            Some(v) => v as u64,
            None => DEFAULT_RETRY_BACKOFF_MAX_MS.max(retry_backoff_ms),
        };
        Ok(Self {
            algorithm,
            stages,
            stage_ms,
            timeout_secs,
            priority,
            input,
            webhook_url: req.webhook_url,
            queue: req.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned()),
            run_at,
            max_attempts,
            retry_backoff_ms,
            retry_backoff_max_ms,
        })
    }
}

/// When a task starts, from `run_at` or `delay_ms` (not both) at `now`;
/// `None` for now.
fn start_time(
    run_at: Option<&str>,
    delay_ms: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ValidationError> {
    let limit = chrono::Duration::milliseconds(MAX_DELAY_MS);
    match (run_at, delay_ms) {
        (Some(_), Some(_)) => Err(ValidationError::new(
            "delay_ms",
            "give run_at or delay_ms, not both",
        )),
        (Some(text), None) => {
            let at = DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    ValidationError::new("run_at", format!("must be an RFC 3339 time: {e}"))
                })?
                .with_timezone(&Utc);
            if at > now + limit + chrono::Duration::seconds(1) {
                return Err(ValidationError::new(
                    "run_at",
                    "must be at most 30 days ahead",
                ));
            }
            Ok(Some(at))
        }
        (None, Some(ms)) => {
            let ms = in_range("delay_ms", ms, 0, MAX_DELAY_MS)?;
            Ok(Some(now + chrono::Duration::milliseconds(ms)))
        }
        (None, None) => Ok(None),
    }
}

/// The wait before attempt `k + 1` after attempt `k` (1-based) failed:
/// `d/2 + fraction × d/2`, d = min(`max_ms`, `backoff_ms` × 2^(k−1)), so
/// uniform in [d/2, d] for a uniform `fraction` in [0, 1).
pub fn retry_wait_ms(backoff_ms: u64, max_ms: u64, attempt: u32, fraction: f64) -> u64 {
    let factor = 1_u64
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u64::MAX);
    let d = backoff_ms.saturating_mul(factor).min(max_ms);
    let half = d / 2;
    half + ((d - half) as f64 * fraction.clamp(0.0, 1.0)) as u64
}

/// One failed attempt in a task's `errors`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// When it failed.
    pub at: DateTime<Utc>,
    /// What went wrong.
    pub error: String,
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
    /// The current or last attempt, 1-based.
    #[serde(default = "one")]
    pub attempt: u32,
    /// Attempts in all.
    #[serde(default = "one")]
    pub max_attempts: u32,
    /// Times another worker took the task over after its holder was lost.
    #[serde(default)]
    pub takeovers: u32,
    /// When a SCHEDULED task is due; null otherwise.
    #[serde(default)]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// The last 10 failed attempts, oldest first.
    #[serde(default)]
    pub errors: Vec<AttemptError>,
}

fn one() -> u32 {
    1
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
    /// The task's attempt at the event (1-based).
    #[serde(default = "one")]
    pub attempt: u32,
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
            r#"{"max_attempts":0}"#,
            r#"{"max_attempts":101}"#,
            r#"{"retry_backoff_ms":3600001}"#,
            r#"{"retry_backoff_ms":5000,"retry_backoff_max_ms":4000}"#,
            r#"{"delay_ms":-1}"#,
            r#"{"delay_ms":2592000001}"#,
            r#"{"run_at":"tomorrow"}"#,
            r#"{"run_at":"2026-01-01T00:00:00Z","delay_ms":5}"#,
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
    fn times_and_retry_fields_parse() {
        let t = parse(r#"{"delay_ms":1000,"max_attempts":5}"#).unwrap();
        assert!(t.run_at.unwrap() > Utc::now());
        assert_eq!(
            (t.max_attempts, t.retry_backoff_ms, t.retry_backoff_max_ms),
            (5, 1000, 300_000)
        );
        let past = parse(r#"{"run_at":"2020-01-01T00:00:00Z"}"#).unwrap();
        assert!(
            past.run_at.unwrap() < Utc::now(),
            "a past time is kept (means now)"
        );
        let far = (Utc::now() + chrono::Duration::days(31)).to_rfc3339();
        assert!(parse(&format!(r#"{{"run_at":"{far}"}}"#)).is_err());
        assert_eq!(parse("{}").unwrap().max_attempts, DEFAULT_MAX_ATTEMPTS);
    }

    #[test]
    fn retry_waits_double_up_to_the_cap_and_jitter_in_the_upper_half() {
        assert_eq!(retry_wait_ms(1000, 300_000, 1, 0.0), 500);
        assert_eq!(retry_wait_ms(1000, 300_000, 1, 1.0), 1000);
        assert_eq!(retry_wait_ms(1000, 300_000, 3, 0.0), 2000);
        assert_eq!(retry_wait_ms(1000, 3000, 5, 1.0), 3000);
        assert_eq!(retry_wait_ms(1000, 300_000, 99, 1.0), 300_000);
        assert_eq!(retry_wait_ms(0, 0, 2, 0.7), 0);
    }

    #[test]
    fn progress_is_floored() {
        assert_eq!(progress_percent(1, 3), 33);
        assert_eq!(progress_percent(3, 3), 100);
        assert_eq!(progress_percent(0, 10), 0);
    }
}
