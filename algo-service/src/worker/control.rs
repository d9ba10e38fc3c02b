//! Broadcasts on the `tasks.control` fanout, one exclusive queue per worker
//! (`tasks.control.<WORKER_NAME>`): cancels, and queues paused or resumed.

use futures_util::StreamExt;
use lapin::Consumer;
use task_model::ControlMessage;
use tokio_util::sync::CancellationToken;

use super::pause::Pauses;
use crate::registry::{Registry, StopReason};

/// Reads broadcasts: raises the flag of a cancelled task if it runs here,
/// records pauses and resumes in `pauses`. Fires `ended` when the consumer
/// stops (the session is broken).
pub(super) async fn consume_control(
    mut control: Consumer,
    registry: Registry,
    pauses: Pauses,
    ended: CancellationToken,
) {
    while let Some(delivery) = control.next().await {
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(e) => {
                tracing::warn!(error = %e, "the control consumer failed");
                break;
            }
        };
        on_control_message(&registry, &pauses, &delivery.data);
    }
    ended.cancel();
}

/// Raises the flag of the task a cancel names, if it runs here; records a
/// queue's new pause state.
fn on_control_message(registry: &Registry, pauses: &Pauses, data: &[u8]) {
    match serde_json::from_slice::<ControlMessage>(data) {
        Ok(ControlMessage::Cancel { task_id }) => {
            if registry.signal(task_id, StopReason::Cancel) {
                tracing::info!(%task_id, "cancel received; interrupting the task");
            } else {
                tracing::debug!(%task_id, "cancel received for a task not running here");
            }
        }
        Ok(ControlMessage::QueueState {
            queue,
            paused,
            version,
        }) => {
            if pauses.apply(&queue, paused, version) {
                tracing::info!(queue, paused, version, "queue state broadcast received");
            }
        }
        Err(e) => tracing::warn!(error = %e, "ignoring an unreadable control message"),
    }
}
