//! How long the oldest QUEUED task has waited, per queue: the sign of a task
//! nobody takes (no worker, or every worker refusing its message). Sampled in
//! the background into `taskforge_oldest_queued_age_seconds{queue}`, which
//! `/readyz` also shows; readiness itself does not depend on it.

use std::{sync::Arc, time::Duration};

use task_model::topology::TASKS_QUEUE;
use tokio_util::sync::CancellationToken;

use crate::{
    state::AppState,
    store::{OldestQueued, StoreError},
};

/// How often the age is sampled (the health checker's period).
pub const PERIOD: Duration = Duration::from_secs(5);

/// Looks up the oldest QUEUED task of `tasks.algo` and sets the gauge to its
/// age (0 when none); answers it.
///
/// # Errors
/// Redis unavailable; the gauge keeps its last value.
pub async fn sample(state: &AppState) -> Result<Option<OldestQueued>, StoreError> {
    let oldest = state.store.oldest_queued().await?;
    let age_secs = oldest.map_or(0.0, |o| {
        (chrono::Utc::now().timestamp_millis() - o.created_ms).max(0) as f64 / 1000.0
    });
    state
        .metrics
        .oldest_queued_age
        .with_label_values(&[TASKS_QUEUE])
        .set(age_secs);
    Ok(oldest)
}

/// Samples every `period` until `stop`.
pub async fn run(state: Arc<AppState>, period: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if let Err(e) = sample(&state).await {
            tracing::warn!(error = %e, "could not sample the oldest QUEUED task's age");
        }
    }
}
