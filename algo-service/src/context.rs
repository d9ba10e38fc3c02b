//! What the delivery handler and the task run share: the context every
//! handler gets, and the decision each delivery ends in. Its own module so
//! imports run one way: worker → handler → task_run → callbacks.

use tokio_util::sync::CancellationToken;

use crate::{callbacks::ApiClient, metrics::Metrics, registry::Registry};

/// What happens to a delivery once its handling is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done with it: the terminal state is recorded (by us or someone else).
    Ack,
    /// Nobody can run it: reject without requeue, so it dead-letters to `tasks.dead`.
    Reject,
    /// Not finished here: back to the queue for another worker (shutdown).
    Requeue,
}

/// What every delivery handler shares.
#[derive(Debug)]
pub struct HandlerContext {
    /// The callback client.
    pub api: ApiClient,
    /// Tasks running in this process.
    pub registry: Registry,
    /// The worker's metrics.
    pub metrics: Metrics,
    /// Fires on SIGTERM/SIGINT: held deliveries go back to the queue at once.
    pub shutdown: CancellationToken,
    /// Fires when the grace period is over: running tasks stop retrying
    /// callbacks and go back to the queue.
    pub abandon: CancellationToken,
    /// `WORKER_CPU_SLOTS`: taken around each CPU-bound stage.
    pub cpu_slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// `ALLOW_CRASH_INPUT`.
    pub allow_crash: bool,
    /// `WORKER_ISOLATION`: stages on blocking threads or in helper processes.
    pub isolation: crate::config::Isolation,
}
