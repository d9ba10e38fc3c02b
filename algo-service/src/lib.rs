//! `algo-service`, the Taskforge worker: it consumes `tasks.algo`, claims each
//! task through the api's callback API, runs the `hello` routine (C, through
//! the `native` crate) stage by stage on blocking threads, reports progress
//! and the terminal state, and acks only once that state is recorded.
//!
//! # Layout
//! - [`config`]: [`Settings`] from the environment or flags (`--help` lists them).
//! - [`telemetry`]: the `tracing` subscriber (text or JSON, to stderr).
//! - [`worker`]: [`Worker`]: build, the consume loop with reconnects, drain.
//! - [`broker`]: RabbitMQ connection, the shared topology, the two consumers.
//! - [`handler`]: [`handler::process_one`]: one delivery from parse to ack.
//! - [`task_run`]: the stages, deadline, progress and heartbeats, the terminal report.
//! - [`callbacks`]: the callback API client and its retry policy.
//! - [`registry`]: running tasks and their stop flags (cancel, deadline, shutdown, lost lease).
//! - [`shutdown`]: the signal listener and the bounded drain.
//! - [`metrics`]: Prometheus metrics and the `/healthz` + `/metrics` server.
//!
//! Tests run a worker in-process with [`run`] (or [`Worker::build`] then
//! [`Worker::run_until_stopped`] to learn the metrics port first), stopping
//! it by cancelling the token they pass.

pub mod broker;
pub mod callbacks;
pub mod config;
pub mod handler;
pub mod metrics;
pub mod registry;
pub mod shutdown;
pub mod task_run;
pub mod telemetry;
pub mod worker;

use std::{
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
};

pub use config::{LogFormat, Settings};
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

/// A random number in `[0, 1)` for jitter; no RNG crate needed for that.
pub(crate) fn random_fraction() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_fractions_are_in_range_and_vary() {
        let xs: Vec<f64> = (0..100).map(|_| super::random_fraction()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.windows(2).any(|w| w[0] != w[1]));
    }
}
