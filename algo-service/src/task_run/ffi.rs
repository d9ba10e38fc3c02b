//! The FFI boundary: one stage of the native routine, on a blocking thread
//! (never on the runtime's threads), watching the task's stop flag.

use native::StageOutcome;
use tokio::time::Instant;

use crate::registry::{StopFlag, StopReason};

/// One stage on a blocking thread; raises the flag when `deadline` passes meanwhile.
pub(crate) async fn run_stage(
    stage_ms: u64,
    flag: &StopFlag,
    deadline: Instant,
) -> Result<StageOutcome, String> {
    let stage_flag = flag.clone();
    let span = tracing::Span::current();
    let mut call = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        native::run_stage(stage_ms, stage_flag.atomic())
    });
    let mut deadline_armed = true;
    loop {
        tokio::select! {
            joined = &mut call => {
                return match joined {
                    Ok(Ok(outcome)) => Ok(outcome),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("the native stage crashed: {e}")),
                };
            }
            () = tokio::time::sleep_until(deadline), if deadline_armed => {
                deadline_armed = false;
                if flag.raise(StopReason::Deadline) {
                    tracing::info!("deadline passed; interrupting the stage");
                }
            }
        }
    }
}
