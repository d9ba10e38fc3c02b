//! Turning stored hashes and stream entries into typed tasks and events.
//! The only place that reads a task hash's field names (the transition
//! script and [`Store::create`](super::Store::create) write them).

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use task_model::{
    progress_percent, AttemptError, EventView, TaskId, TaskStatus, TaskView, WebhookView,
    DEFAULT_MAX_ATTEMPTS,
};

use super::StoreError;

fn time(ms: &str) -> Result<DateTime<Utc>, StoreError> {
    ms.parse::<i64>()
        .ok()
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .ok_or_else(|| StoreError::Corrupt(format!("bad timestamp {ms:?}")))
}

/// A stored task: what `GET /tasks/{id}` shows, and what only the api sees.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// The public representation.
    pub view: TaskView,
    /// Where its webhook goes, if it has one (not shown in GET).
    pub webhook_url: Option<String>,
    /// `retry_backoff_ms` and `retry_backoff_max_ms` (not shown in GET).
    pub retry_backoff: (u64, u64),
}

/// `errors` as stored by `transition.lua`: `[{"attempt", "at_ms", "error"}]`.
#[derive(serde::Deserialize)]
struct StoredError {
    attempt: u32,
    at_ms: i64,
    error: String,
}

fn parse_errors(id: TaskId, raw: Option<&str>) -> Result<Vec<AttemptError>, StoreError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    // cjson writes an empty list as `{}`.
    if raw == "{}" {
        return Ok(Vec::new());
    }
    let stored: Vec<StoredError> = serde_json::from_str(raw)
        .map_err(|e| StoreError::Corrupt(format!("task {id}: errors: {e}")))?;
    stored
        .into_iter()
        .map(|e| {
            Ok(AttemptError {
                attempt: e.attempt,
                at: time(&e.at_ms.to_string())?,
                error: e.error,
            })
        })
        .collect()
}

/// Where a webhook delivery stands, as recorded on the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookState {
    /// Not delivered yet; retrying.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl WebhookState {
    /// The spelling stored and shown in `webhook.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookState::Pending => "pending",
            WebhookState::Delivered => "delivered",
            WebhookState::Failed => "failed",
        }
    }
}

/// A task hash as a [`TaskRecord`].
pub(super) fn parse_task(
    id: TaskId,
    fields: Vec<(String, String)>,
) -> Result<TaskRecord, StoreError> {
    let f: HashMap<String, String> = fields.into_iter().collect();
    let get = |k: &str| f.get(k).filter(|v| !v.is_empty()).map(String::as_str);
    let need = |k: &str| get(k).ok_or_else(|| StoreError::Corrupt(format!("task {id} lacks {k}")));
    let num = |k: &str| -> Result<u64, StoreError> {
        need(k)?
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("task {id}: {k} is not a number")))
    };
    let json = |k: &str| -> Result<Option<serde_json::Value>, StoreError> {
        get(k)
            .map(|v| {
                serde_json::from_str(v)
                    .map_err(|e| StoreError::Corrupt(format!("task {id}: {k}: {e}")))
            })
            .transpose()
    };
    let status: TaskStatus = need("status")?
        .parse()
        .map_err(|e: task_model::status::UnknownStatus| StoreError::Corrupt(e.to_string()))?;
    let stage = num("stage")? as u32;
    let stages = num("stages")? as u32;
    let webhook_url = get("webhook_url").map(str::to_owned);
    let webhook = match get("webhook_state") {
        Some(state) => Some(WebhookView {
            state: state.to_owned(),
            attempts: get("webhook_attempts")
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
            last_error: get("webhook_error").map(str::to_owned),
        }),
        None if webhook_url.is_some() => Some(WebhookView {
            state: WebhookState::Pending.as_str().into(),
            attempts: 0,
            last_error: None,
        }),
        None => None,
    };
    let count = |k: &str, default: u64| {
        get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let view = TaskView {
        task_id: id,
        status,
        algorithm: need("algorithm")?.to_owned(),
        // Whole stages, or more when a worker reported progress within the
        // running stage (stored as `progress`, never past the next stage's).
        progress: progress_percent(stage, stages).max(
            get("progress")
                .and_then(|p| p.parse::<u8>().ok())
                .unwrap_or(0)
                .min(100),
        ),
        stage,
        stages,
        stage_ms: num("stage_ms")?,
        timeout_secs: num("timeout_secs")?,
        priority: num("priority")? as u8,
        input: json("input")?.unwrap_or(serde_json::Value::Null),
        created_at: time(need("created_ms")?)?,
        started_at: get("started_ms").map(time).transpose()?,
        finished_at: get("finished_ms").map(time).transpose()?,
        updated_at: time(need("updated_ms")?)?,
        worker: get("worker").map(str::to_owned),
        cancel_requested: get("cancel_requested") == Some("1"),
        result: json("result")?,
        error: get("error").map(str::to_owned),
        webhook,
        queue: get("queue").unwrap_or(task_model::DEFAULT_QUEUE).to_owned(),
        attempt: count("attempt", 0).max(1) as u32,
        max_attempts: count("max_attempts", u64::from(DEFAULT_MAX_ATTEMPTS)) as u32,
        takeovers: count("takeovers", 0) as u32,
        scheduled_for: match status {
            TaskStatus::Scheduled => get("scheduled_ms").map(time).transpose()?,
            _ => None,
        },
        errors: parse_errors(id, get("errors"))?,
    };
    let retry_backoff = (
        count(
            "retry_backoff_ms",
            task_model::task::DEFAULT_RETRY_BACKOFF_MS,
        ),
        count(
            "retry_backoff_max_ms",
            task_model::task::DEFAULT_RETRY_BACKOFF_MAX_MS,
        ),
    );
    Ok(TaskRecord {
        view,
        webhook_url,
        retry_backoff,
    })
}

/// Event `seq` of a task's event list: a JSON array of field, value pairs.
pub(super) fn parse_listed_event(seq: u64, json: &str) -> Result<EventView, StoreError> {
    let flat: Vec<String> =
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("event {seq}: {e}")))?;
    let fields: Vec<(String, String)> = flat
        .chunks_exact(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect();
    parse_event(&format!("0-{seq}"), &fields)
}

/// One stream entry (id `0-<seq>`) as an event.
pub(super) fn parse_event(
    entry_id: &str,
    fields: &[(String, String)],
) -> Result<EventView, StoreError> {
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let seq = entry_id
        .strip_prefix("0-")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("bad event id {entry_id:?}")))?;
    let num = |k: &str| get(k).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    let status = get("status")
        .unwrap_or_default()
        .parse::<TaskStatus>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(EventView {
        seq,
        at: time(get("at").unwrap_or_default())?,
        kind: get("type").unwrap_or("status").to_owned(),
        status,
        progress: progress_percent(num("stage"), num("stages")).max(num("progress").min(100) as u8),
        stage: num("stage"),
        worker: get("worker").map(str::to_owned),
        detail: get("detail").map(str::to_owned),
        attempt: num("attempt").max(1),
    })
}
