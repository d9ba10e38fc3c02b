//! The vocabulary shared by `api-service`, `algo-service` and `taskctl`.
//!
//! Nothing here does I/O: it is the task model (ids, states, the task's public
//! representation), the legal state transitions, the messages that cross
//! RabbitMQ and the callback API, and the names of the broker topology.
//! Keeping it dependency-light (serde, uuid, chrono, thiserror) keeps every
//! consumer cheap to build.
//!
//! # Layout
//! - [`id`]: [`TaskId`], parsed strictly (canonical hyphenated UUID).
//! - [`status`]: [`TaskStatus`] and the state machine's rules.
//! - [`task`]: [`TaskView`], the GET representation, the other answers
//!   ([`TaskRef`], [`TaskPage`]), and [`NewTask`] validation.
//! - [`messages`]: the queue envelope (it names a task: built from a
//!   [`NewTask`] or a [`TaskView`]), cancel broadcasts and callback bodies
//!   (the claim answer carries the stored [`TaskSpec`]).
//! - [`batch`]: the body and answer of bulk create.
//! - [`schedule`]: periodic tasks' bodies and answers.
//! - [`topology`]: exchange, queue and routing-key names.
#![warn(missing_docs)]

pub mod batch;
pub mod id;
pub mod messages;
pub mod schedule;
pub mod status;
pub mod task;
pub mod topology;

pub use batch::{BatchAnswer, BatchError, BatchRequest, MAX_BATCH_TASKS};
pub use id::{TaskId, TaskIdError};
pub use messages::{
    BatchedAnswer, BatchedReport, CallbackAnswer, ControlMessage, ProgressReport, QueuePause,
    Report, ReportAnswers, ReportBatch, StatusReport, TaskMessage, TaskSpec, MAX_BATCHED_REPORTS,
};
pub use schedule::{CreateScheduleRequest, ScheduleCreated, ScheduleList, ScheduleView};
pub use status::{TaskStatus, UnknownStatus};
pub use task::{
    progress_percent, retry_wait_ms, AttemptError, CreateTaskRequest, EventView, NewTask,
    TaskDefaults, TaskPage, TaskRef, TaskView, ValidationError, WebhookView, ALGORITHMS,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, MAX_ERRORS_KEPT,
};
