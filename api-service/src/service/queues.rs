//! The named queues (`QUEUES`): what `GET /queues` shows, pause and resume,
//! and the pause state a worker asks for when it starts.
//!
//! A pause is recorded in Redis first ([`crate::store::Store::set_queue_paused`],
//! which gives the change a version), then broadcast on the `tasks.control`
//! fanout as [`ControlMessage::QueueState`]; every worker cancels (or starts
//! again) its consumers of that queue. A worker that starts or reconnects
//! binds its control queue first and then asks `GET /internal/queues`
//! ([`pause_states`]), keeping per queue the newest version it has seen
//! from either, so no change falls between the two.

use serde::Serialize;
use task_model::{ControlMessage, QueuePause};

use crate::{error::ApiError, publisher::PublishError, state::AppState};

/// One entry of `GET /queues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QueueInfo {
    /// The named queue (a task's `queue`).
    pub name: String,
    /// Messages ready in it (summed over its priority lanes under quorum).
    pub depth: u32,
    /// Consumers attached to it (likewise summed; a paused queue has none).
    pub consumers: u32,
    /// Whether it is paused.
    pub paused: bool,
}

/// 400 `unknown_queue` (naming the field `queue`) unless `queue` is one of `QUEUES`.
///
/// # Errors
/// As said.
pub fn check_known(state: &AppState, queue: &str) -> Result<(), ApiError> {
    if state.queues.iter().any(|q| q == queue) {
        return Ok(());
    }
    Err(ApiError::invalid_field(
        "unknown_queue",
        "queue",
        format!(
            "unknown queue {queue:?}; available: {} (GET /queues)",
            state.queues.join(", ")
        ),
    ))
}

/// Every queue of `QUEUES`, in order, with its depth, consumers and pause state.
///
/// # Errors
/// Redis or RabbitMQ unavailable (503).
pub async fn list(state: &AppState) -> Result<Vec<QueueInfo>, ApiError> {
    let paused = state.store.queue_states().await?;
    let mut queues = Vec::with_capacity(state.queues.len());
    for name in &state.queues {
        let (depth, consumers) = state
            .publisher
            .queue_counts(name)
            .await
            .map_err(|e| ApiError::Unavailable(e.into()))?;
        queues.push(QueueInfo {
            name: name.clone(),
            depth,
            consumers,
            paused: paused.get(name).is_some_and(|s| s.paused),
        });
    }
    Ok(queues)
}

/// The pause state of every queue of `QUEUES` (`GET /internal/queues`).
///
/// # Errors
/// Redis unavailable (503).
pub async fn pause_states(state: &AppState) -> Result<Vec<QueuePause>, ApiError> {
    let states = state.store.queue_states().await?;
    Ok(state
        .queues
        .iter()
        .map(|name| {
            let s = states.get(name).copied().unwrap_or_default();
            QueuePause {
                queue: name.clone(),
                paused: s.paused,
                version: s.version,
            }
        })
        .collect())
}

/// Pauses (or resumes) `queue`: recorded, then broadcast to every worker.
/// Doing it twice is harmless.
///
/// # Errors
/// A malformed name (400 `invalid_queue`), one not in `QUEUES` (404), Redis
/// unavailable, or RabbitMQ unable to broadcast (503; the state is recorded
/// and workers that start learn it, but running ones did not hear: retry).
pub async fn set_paused(state: &AppState, queue: &str, paused: bool) -> Result<(), ApiError> {
    if !broker_topology::is_valid_queue_name(queue) {
        return Err(ApiError::bad_request(
            "invalid_queue",
            "queue names match [a-z0-9][a-z0-9_-]{0,62}",
        ));
    }
    if !state.queues.iter().any(|q| q == queue) {
        return Err(ApiError::QueueNotFound(queue.to_owned()));
    }
    let version = state.store.set_queue_paused(queue, paused).await?;
    let message = ControlMessage::QueueState {
        queue: queue.to_owned(),
        paused,
        version,
    };
    match state.publisher.publish_control(&message).await {
        Ok(()) => {}
        // No worker runs: none to tell (one that starts asks).
        Err(PublishError::Unroutable(_)) => {
            tracing::debug!(queue, "no worker listens on tasks.control");
        }
        Err(e) => return Err(broadcast_failed(queue, paused, version, e)),
    }
    tracing::info!(
        queue,
        paused,
        version,
        "queue {}",
        if paused { "paused" } else { "resumed" }
    );
    Ok(())
}

fn broadcast_failed(queue: &str, paused: bool, version: u64, e: PublishError) -> ApiError {
    tracing::error!(queue, paused, version, error = %e, "recorded, but the broadcast to the workers failed");
    match e {
        PublishError::Blocked => ApiError::BrokerBlocked,
        e => ApiError::Unavailable(e.into()),
    }
}
