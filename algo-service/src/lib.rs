//! `algo-service`, the Taskforge worker: it consumes `tasks.algo`, claims each
//! task through the api's callback API, runs its algorithm (C, through the
//! `native` crate's `Job`) stage by stage on blocking threads — CPU-bound
//! stages under `WORKER_CPU_SLOTS` —, fetches and stores blobs through the
//! api, reports progress (also within a stage) and the terminal state, and
//! acks only once that state is recorded.
//!
//! # Layout
//! A message flows down this list, and imports run the same way:
//! worker loop → handler → run → callbacks.
//!
//! ```text
//! worker/        Worker: build, run until stopped, drain
//!   consume.rs   the consume loop: sessions, reconnects, one handler per delivery
//!   control.rs   cancel broadcasts → registry
//! handler.rs     one delivery: parse → acquire → claim → run → settle
//! task_run/      a claimed task: the stage loop, its deadline
//!   job.rs       the native::Job: blobs in, CPU slots, result and blob out
//!   ffi.rs       the FFI boundary: one native stage on a blocking thread
//!   isolation/   WORKER_ISOLATION=process: the job in a stage helper process
//!   reporter.rs  progress callbacks, lease heartbeats, the lease
//!   finish.rs    how the run ended, the terminal report
//! callbacks/     the api's callback client and its retry policy
//!   batch.rs     callbacks made while requests are in flight go together
//! blobs.rs       input and output blobs through the api's /internal/blobs
//! ```
//! Beside the flow: [`context`] (what handler and run share: the
//! [`context::HandlerContext`] and the [`context::Disposition`] every delivery
//! ends in), [`broker`] (RabbitMQ connection, topology, the two consumers),
//! [`registry`] (running tasks and their stop flags), [`shutdown`] (the signal
//! listener and the bounded drain), [`metrics`] (`/healthz`, `/metrics`),
//! [`backoff`] (jitter), [`config`] ([`Settings`] from the environment or
//! flags; `--help` lists them) and [`telemetry`] (the workspace's shared
//! `tracing` set-up; every task's lines carry `task_id`, `worker`, `queue`).
//!
//! Tests run a worker in-process with [`run`] (or [`Worker::build`] then
//! [`Worker::run_until_stopped`] to learn the metrics port first), stopping
//! it by cancelling the token they pass.

pub mod backoff;
pub mod blobs;
pub mod broker;
pub mod callbacks;
pub mod config;
pub mod context;
pub mod handler;
pub mod metrics;
pub mod registry;
pub mod shutdown;
pub mod task_run;
pub mod telemetry;
pub mod worker;

pub use config::{Isolation, LogFormat, Settings};
use tokio_util::sync::CancellationToken;
pub use worker::Worker;

/// Builds a [`Worker`] from `settings` and runs it until `shutdown` fires and
/// the drain is over.
///
/// # Errors
/// When the worker cannot start (e.g. `METRICS_BIND` is taken). Lost
/// connections to RabbitMQ or the api are retried, never returned.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    Worker::build(settings)
        .await?
        .run_until_stopped(shutdown)
        .await
}
