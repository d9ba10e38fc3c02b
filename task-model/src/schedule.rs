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
    /// The task each due time creates, as given (fields left out or null
    /// are not shown).
    #[serde(serialize_with = "without_nulls")]
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

/// A create body as a JSON object of the fields it sets: a body shown back
/// names no field the api does not take (with webhooks off, `webhook_url`).
fn without_nulls<S: serde::Serializer>(task: &CreateTaskRequest, s: S) -> Result<S::Ok, S::Error> {
    let mut value = serde_json::to_value(task).map_err(serde::ser::Error::custom)?;
    if let serde_json::Value::Object(fields) = &mut value {
        fields.retain(|_, v| !v.is_null());
    }
    value.serialize(s)
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
    fn a_schedules_task_shows_only_the_fields_it_sets() {
        let view = ScheduleView {
            schedule_id: Uuid::nil(),
            name: None,
            cron: "* * * * *".into(),
            task: CreateTaskRequest {
                stages: Some(2),
                ..CreateTaskRequest::default()
            },
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            next_run_at: DateTime::<Utc>::UNIX_EPOCH,
            last_run_at: None,
            last_task_id: None,
        };
        let shown = serde_json::to_value(&view).unwrap();
        assert_eq!(shown["task"], json!({"stages": 2}));
        let back: ScheduleView = serde_json::from_value(shown).unwrap();
        assert_eq!(back, view);
    }

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
