//! Cancel broadcasts: the `tasks.control` fanout, one exclusive queue per worker.

use futures_util::StreamExt;
use lapin::Consumer;
use task_model::ControlMessage;
use tokio_util::sync::CancellationToken;

use crate::registry::{Registry, StopReason};

/// Reads cancel broadcasts and raises the flag of the named task if it runs
/// here. Fires `ended` when the consumer stops (the session is broken).
pub(super) async fn consume_control(
    mut control: Consumer,
    registry: Registry,
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
        on_control_message(&registry, &delivery.data);
    }
    ended.cancel();
}

/// Raises the flag of the task a cancel names, if it runs here.
fn on_control_message(registry: &Registry, data: &[u8]) {
    match serde_json::from_slice::<ControlMessage>(data) {
        Ok(ControlMessage::Cancel { task_id }) => {
            if registry.signal(task_id, StopReason::Cancel) {
                tracing::info!(%task_id, "cancel received; interrupting the task");
            } else {
                tracing::debug!(%task_id, "cancel received for a task not running here");
            }
        }
        Err(e) => tracing::warn!(error = %e, "ignoring an unreadable control message"),
    }
}
