//! Turning stored hashes and stream entries into the public representations.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use task_model::{progress_percent, EventView, TaskId, TaskStatus, TaskView, WebhookView};

use super::StoreError;

fn time(ms: &str) -> Result<DateTime<Utc>, StoreError> {
    ms.parse::<i64>()
        .ok()
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .ok_or_else(|| StoreError::Corrupt(format!("bad timestamp {ms:?}")))
}

/// A task hash as `GET /tasks/{id}` shows it.
pub fn parse_task(id: TaskId, fields: Vec<(String, String)>) -> Result<TaskView, StoreError> {
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
    let webhook = match get("webhook_state") {
        Some(state) => Some(WebhookView {
            state: state.to_owned(),
            attempts: get("webhook_attempts")
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
            last_error: get("webhook_error").map(str::to_owned),
        }),
        None if get("webhook_url").is_some() => Some(WebhookView {
            state: "pending".into(),
            attempts: 0,
            last_error: None,
        }),
        None => None,
    };
    Ok(TaskView {
        task_id: id,
        status,
        algorithm: need("algorithm")?.to_owned(),
        progress: progress_percent(stage, stages),
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
    })
}

/// One stream entry (id `0-<seq>`) as an event.
pub fn parse_event(entry_id: &str, fields: &[(String, String)]) -> Result<EventView, StoreError> {
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
        progress: progress_percent(num("stage"), num("stages")),
        stage: num("stage"),
        worker: get("worker").map(str::to_owned),
        detail: get("detail").map(str::to_owned),
    })
}
