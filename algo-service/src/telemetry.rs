//! Logging: the workspace's `telemetry` crate, the same set-up as the api's.
//!
//! `main` passes stderr, because stdout belongs to the native routine's
//! `hello world` lines. Every line about a task is inside the task's span
//! ([`crate::handler::process_one`]), so it carries `task_id`, `worker` and
//! `queue` in both formats.

pub use ::telemetry::{get_subscriber, init, init_subscriber, InitError, LogFormat};
