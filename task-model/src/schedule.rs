//! Periodic tasks: the bodies and answers of `/schedules`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{CreateTaskRequest, TaskId, ValidationError};

/// Longest schedule `name`, in bytes.
pub const MAX_SCHEDULE_NAME: usize = 200;

/// Body of `POST /schedules`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateScheduleRequest {
    /// A 5-field cron expression (minute hour day-of-month month
    /// day-of-week), in UTC.
    #[cfg_attr(feature = "openapi", schema(example = "*/5 * * * *"))]
    pub cron: String,
    /// The task each due time creates: a `POST /tasks` body.
    pub task: CreateTaskRequest,
    /// For people; at most 200 bytes.
    pub name: Option<String>,
}

impl CreateScheduleRequest {
    /// Reads a schedule body field by field, so that every error names its
    /// field (`task.…` for the task's own). The cron expression and the
    /// task's ranges are checked later, by the api.
    ///
    /// # Errors
    /// The first field missing or not of its type.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ValidationError> {
        use serde_json::Value;
        let Value::Object(fields) = value else {
            return Err(ValidationError::new("", "the body must be a JSON object"));
        };
        if let Some(name) = fields
            .keys()
            .find(|k| !["cron", "task", "name"].contains(&k.as_str()))
        {
            return Err(ValidationError::new(
                name,
                "unknown field; known: cron, task, name",
            ));
        }
        let cron = match fields.get("cron") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(ValidationError::new(
                    "cron",
                    "required: a 5-field cron expression",
                ))
            }
        };
        let task = match fields.get("task") {
            Some(task @ Value::Object(_)) => CreateTaskRequest::from_json(task)
                .map_err(|e| ValidationError::new(format!("task.{}", e.field), e.message))?,
            _ => return Err(ValidationError::new("task", "required: a POST /tasks body")),
        };
        let name = match fields.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() <= MAX_SCHEDULE_NAME => Some(s.clone()),
            Some(_) => {
                return Err(ValidationError::new(
                    "name",
                    format!("must be a string of at most {MAX_SCHEDULE_NAME} bytes"),
                ))
            }
        };
        Ok(Self { cron, task, name })
    }
}

/// The answer of `POST /schedules`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleCreated {
    /// The schedule's id.
    pub schedule_id: Uuid,
    /// Its first due time.
    pub next_run_at: DateTime<Utc>,
}

/// A schedule, as `GET /schedules/{id}` shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleView {
    /// The schedule's id.
    pub schedule_id: Uuid,
    /// As given, or null.
    pub name: Option<String>,
    /// The cron expression (UTC).
    pub cron: String,
    /// The task each due time creates.
    pub task: CreateTaskRequest,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its next due time.
    pub next_run_at: DateTime<Utc>,
    /// The last due time fired, or null.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The task that due time created, or null.
    pub last_task_id: Option<TaskId>,
}

/// The answer of `GET /schedules`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleList {
    /// Every schedule, newest first.
    pub schedules: Vec<ScheduleView>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn schedule_bodies_name_their_bad_field() {
        let field = |v| CreateScheduleRequest::from_json(&v).unwrap_err().field;
        assert_eq!(field(json!({"task": {}})), "cron");
        assert_eq!(field(json!({"cron": "* * * * *"})), "task");
        assert_eq!(
            field(json!({"cron": "* * * * *", "task": {"stages": "x"}})),
            "task.stages"
        );
        assert_eq!(
            field(json!({"cron": "* * * * *", "task": {}, "name": 3})),
            "name"
        );
        assert_eq!(field(json!({"cron": "* * * * *", "task": {}, "x": 3})), "x");
        let ok =
            CreateScheduleRequest::from_json(&json!({"cron": "* * * * *", "task": {"stages": 2}}));
        assert_eq!(ok.unwrap().task.stages, Some(2));
    }
}
