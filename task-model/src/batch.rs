//! Bulk create: the body and answer of `POST /tasks/batch`.

use serde::{Deserialize, Serialize};

use crate::{CreateTaskRequest, TaskRef, ValidationError};

/// Most tasks one batch may hold.
pub const MAX_BATCH_TASKS: usize = 1000;

/// Body of `POST /tasks/batch`: 1 to [`MAX_BATCH_TASKS`] create bodies.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The tasks, each a `POST /tasks` body; created in this order.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub tasks: Vec<CreateTaskRequest>,
}

/// A batch body that breaks a rule: which task (none for the body itself)
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct BatchError {
    /// The 0-based position of the offending task in `tasks`.
    pub index: Option<usize>,
    /// The rule broken; `field` is the task's field (empty when the task is
    /// not an object at all).
    pub error: ValidationError,
}

impl BatchRequest {
    /// Reads a batch body (a JSON object `{"tasks": [...]}`), each task with
    /// [`CreateTaskRequest::from_json`], so that an error names the task's
    /// index and field. Ranges are checked later, task by task.
    ///
    /// # Errors
    /// The body is not such an object, `tasks` is empty or longer than
    /// [`MAX_BATCH_TASKS`], or the first task that is not a create body.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, BatchError> {
        let whole = |field: &str, message: String| BatchError {
            index: None,
            error: ValidationError::new(field, message),
        };
        let serde_json::Value::Object(fields) = value else {
            return Err(whole("", "the body must be a JSON object".into()));
        };
        if let Some(name) = fields.keys().find(|k| *k != "tasks") {
            return Err(whole(name, "unknown field; known: tasks".into()));
        }
        let Some(serde_json::Value::Array(tasks)) = fields.get("tasks") else {
            return Err(whole("tasks", "must be an array of task bodies".into()));
        };
        if !(1..=MAX_BATCH_TASKS).contains(&tasks.len()) {
            return Err(whole(
                "tasks",
                format!(
                    "must hold 1 to {MAX_BATCH_TASKS} tasks, got {}",
                    tasks.len()
                ),
            ));
        }
        let tasks = tasks
            .iter()
            .enumerate()
            .map(|(i, task)| {
                CreateTaskRequest::from_json(task).map_err(|error| BatchError {
                    index: Some(i),
                    error,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { tasks })
    }
}

/// The answer of `POST /tasks/batch`: each task's id and status, in request order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAnswer {
    /// One per task of the request, in its order.
    pub tasks: Vec<TaskRef>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_batch_names_the_index_and_field_of_its_first_bad_task() {
        let err = BatchRequest::from_json(&json!({"tasks": [{}, {"stages": "x"}, {"nope": 1}]}))
            .unwrap_err();
        assert_eq!(err.index, Some(1));
        assert_eq!(err.error.field, "stages");
        let err = BatchRequest::from_json(&json!({"tasks": [{}, 3]})).unwrap_err();
        assert_eq!((err.index, err.error.field.as_str()), (Some(1), ""));
    }

    #[test]
    fn a_batch_holds_1_to_1000_tasks_and_nothing_else() {
        for body in [
            json!({"tasks": []}),
            json!({"tasks": vec![json!({}); 1001]}),
            json!({"tasks": {}}),
            json!({}),
        ] {
            let err = BatchRequest::from_json(&body).unwrap_err();
            assert_eq!(
                (err.index, err.error.field.as_str()),
                (None, "tasks"),
                "{body}"
            );
        }
        let err = BatchRequest::from_json(&json!({"tasks": [{}], "x": 1})).unwrap_err();
        assert_eq!(err.error.field, "x");
        let ok = BatchRequest::from_json(&json!({"tasks": vec![json!({"stages": 1}); 1000]}));
        assert_eq!(ok.unwrap().tasks.len(), 1000);
    }
}
