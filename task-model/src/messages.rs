//! Messages that cross process boundaries: the task envelope on `tasks.algo`,
//! cancel broadcasts on `tasks.control`, and the callback API's bodies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{NewTask, TaskId, TaskStatus, TaskView};

/// Body of a message on `tasks.algo` (JSON). The AMQP `message_id` is the task id
/// and the AMQP priority is [`TaskMessage::priority`].
///
/// The message only names the task: the stored task is the truth, and what a
/// worker runs (algorithm, stages, stage length, input, deadline) comes back
/// in the answer to its claim ([`CallbackAnswer::run`]). Anything else a
/// message carries is ignored, so messages of earlier versions, which carried
/// the whole task, and forged ones alike run the task as it was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// The task.
    pub task_id: TaskId,
    /// 0..=9, as the AMQP priority; informational in the body.
    #[serde(default)]
    pub priority: u8,
}

impl TaskMessage {
    /// The message of a task just created as `task_id`.
    pub fn new(task_id: TaskId, task: &NewTask) -> Self {
        Self {
            task_id,
            priority: task.priority,
        }
    }
}

/// The message of a stored task (to publish it again).
impl From<&TaskView> for TaskMessage {
    fn from(task: &TaskView) -> Self {
        Self {
            task_id: task.task_id,
            priority: task.priority,
        }
    }
}

/// What a worker runs, as the task was stored at its creation: the answer to
/// a successful claim carries it ([`CallbackAnswer::run`]).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The routine to run (one of [`crate::ALGORITHMS`] when the api accepted it).
    pub algorithm: String,
    /// Stages in all.
    pub stages: u32,
    /// Length of one stage.
    pub stage_ms: u64,
    /// Deadline after the first claim (the answer's `deadline_in_ms` counts it down).
    pub timeout_secs: u64,
    /// The user's input.
    #[serde(default)]
    pub input: serde_json::Value,
}

impl From<&TaskView> for TaskSpec {
    fn from(task: &TaskView) -> Self {
        Self {
            algorithm: task.algorithm.clone(),
            stages: task.stages,
            stage_ms: task.stage_ms,
            timeout_secs: task.timeout_secs,
            input: task.input.clone(),
        }
    }
}

/// A broadcast on the `tasks.control` fanout; every worker sees every one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    /// Stop the task if you hold it, and report `CANCELLED`.
    Cancel {
        /// The task to stop.
        task_id: TaskId,
    },
    /// A named queue was paused or resumed: stop (or start again) taking
    /// deliveries from it. `version` orders the changes (it grows with each
    /// one), so a worker keeps, per queue, the state of the highest version
    /// it has seen, whether from a broadcast or from `GET /internal/queues`.
    QueueState {
        /// The named queue (`gpu`, not `tasks.gpu`).
        queue: String,
        /// `true`: paused.
        paused: bool,
        /// The change's version.
        version: u64,
    },
}

/// One entry of `GET /internal/queues`: a named queue's pause state, as
/// workers learn it when they start or reconnect (then from
/// [`ControlMessage::QueueState`] broadcasts).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePause {
    /// The named queue.
    pub queue: String,
    /// `true`: no worker takes new deliveries from it.
    pub paused: bool,
    /// The version of the change that set it (0: never paused or resumed).
    pub version: u64,
}

/// `POST /internal/tasks/{id}/status`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// `PROCESSING` (the claim) or a terminal status.
    pub status: TaskStatus,
    /// The reporting worker's name.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub worker: String,
    /// The routine's result, with `COMPLETED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// What went wrong, with `FAILED` or `TIMED_OUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `FAILED`: another attempt may succeed. The api then decides:
    /// attempts left → `SCHEDULED` (the answer says so; the task is no
    /// longer this worker's), else `FAILED`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
    /// With a terminal status: the stages done. When it is past the stored
    /// stage, the api records it (and its progress event) first, so the
    /// last stage needs no progress callback of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<u32>,
}

/// `POST /internal/tasks/{id}/progress`; also the lease heartbeat.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressReport {
    /// 0..=100; the api recomputes it from `stage` and `stages`.
    #[cfg_attr(feature = "openapi", schema(maximum = 100))]
    pub progress: u8,
    /// Stages completed.
    pub stage: u32,
    /// Stages in all; must match the task's.
    pub stages: u32,
    /// The reporting worker's name.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub worker: String,
}

/// Most callbacks one `POST /internal/reports` carries.
pub const MAX_BATCHED_REPORTS: usize = 256;

/// One callback of a batch: what `POST /internal/tasks/{id}/status` or
/// `…/progress` would carry.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Report {
    /// As `POST /internal/tasks/{id}/status`.
    Status(StatusReport),
    /// As `POST /internal/tasks/{id}/progress`.
    Progress(ProgressReport),
}

/// A callback of a batch, with the task it is about.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchedReport {
    /// The task.
    pub task_id: TaskId,
    /// What is reported.
    pub report: Report,
    /// The W3C trace context of the worker's callback span (what the single
    /// callback carries as the `traceparent` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// `POST /internal/reports`: callbacks of one worker, answered one by one.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBatch {
    /// 1 to [`MAX_BATCHED_REPORTS`] callbacks, each handled as if sent alone.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 256))]
    pub reports: Vec<BatchedReport>,
}

/// The answer to one callback of a batch: what the single callback would
/// have been answered.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchedAnswer {
    /// The task.
    pub task_id: TaskId,
    /// The HTTP status the single callback would have got (200, 409, 400, 404, 503).
    pub code: u16,
    /// Its body: a `CallbackAnswer` with 200 and 409, an error body otherwise.
    pub body: serde_json::Value,
}

/// The answers to a `POST /internal/reports`, in the order of its reports.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportAnswers {
    /// One per report, in order.
    pub answers: Vec<BatchedAnswer>,
}

/// Every callback answer, 200 or 409: the task's current state as the api
/// recorded it, plus what a worker needs to act on it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackAnswer {
    /// Current status.
    pub status: TaskStatus,
    /// Stages completed (where a claiming worker resumes).
    pub stage: u32,
    /// True from the cancel request on.
    pub cancel_requested: bool,
    /// The worker holding the task, if any.
    #[serde(default)]
    pub worker: Option<String>,
    /// First claim.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// Milliseconds left until the deadline (negative once passed), once started.
    #[serde(default)]
    pub deadline_in_ms: Option<i64>,
    /// Milliseconds left on the holder's lease (0 when none or expired).
    #[serde(default)]
    pub lease_remaining_ms: u64,
    /// The lease length the api grants (`LEASE_SECS`), so workers renew at a third of it.
    #[serde(default)]
    pub lease_ms: u64,
    /// The task's current attempt (1-based); `hello`'s `fail` input counts them.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// With a successful claim (200 to `PROCESSING`): what to run, from the
    /// stored task. Absent from every other answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<TaskSpec>,
    /// On 409: a snake_case reason such as `lease_held`, `already_finished`
    /// or `stages_incomplete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On 409: the reason for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn first_attempt() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_task_and_its_create_request_give_the_same_message() {
        let req = crate::CreateTaskRequest {
            stages: Some(3),
            priority: Some(7),
            input: Some(serde_json::json!({"n": 1})),
            ..Default::default()
        };
        let task = NewTask::parse(req, crate::TaskDefaults::default()).unwrap();
        let id = TaskId::new();
        let now = chrono::Utc::now();
        let view = TaskView {
            task_id: id,
            status: TaskStatus::Queued,
            algorithm: task.algorithm.clone(),
            progress: 0,
            stage: 0,
            stages: task.stages,
            stage_ms: task.stage_ms,
            timeout_secs: task.timeout_secs,
            priority: task.priority,
            input: task.input.clone(),
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            worker: None,
            cancel_requested: false,
            result: None,
            error: None,
            webhook: None,
            queue: task.queue.clone(),
            attempt: 1,
            max_attempts: 3,
            takeovers: 0,
            scheduled_for: None,
            errors: Vec::new(),
        };
        assert_eq!(TaskMessage::from(&view), TaskMessage::new(id, &task));
        assert_eq!(TaskMessage::new(id, &task).priority, 7);
        assert_eq!(TaskSpec::from(&view).stages, 3);
        assert_eq!(
            serde_json::to_value(TaskMessage::new(id, &task)).unwrap(),
            serde_json::json!({"task_id": id.to_string(), "priority": 7}),
            "the message only names the task"
        );
    }

    #[test]
    fn control_messages_are_tagged() {
        let id = TaskId::new();
        let json = serde_json::to_value(ControlMessage::Cancel { task_id: id }).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "cancel", "task_id": id.to_string()})
        );
    }
}
