//! The FFI boundary: one stage of a [`native::Job`], on a blocking thread
//! (never on the runtime's threads), watching the task's stop flag.
//!
//! The job moves into the blocking thread for the stage and comes back with
//! its outcome; a stage thread that panicked loses it (the run fails).

use std::sync::{atomic::AtomicI32, Arc};

use native::{Job, NativeError, StageCall, StageOutcome};
use tokio::time::Instant;

use crate::registry::{StopFlag, StopReason};

/// What a stage call needs besides the job and the flag.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StageArgs {
    pub(crate) stage: u32,
    pub(crate) attempt: u32,
    pub(crate) allow_crash: bool,
}

/// One stage on a blocking thread; raises the flag when `deadline` passes
/// meanwhile. `progress` is the stage's per-mille progress, stored by C.
///
/// # Errors
/// The stage thread panicked (the job is lost).
pub(crate) async fn run_stage(
    mut job: Job,
    args: StageArgs,
    flag: &StopFlag,
    deadline: Instant,
    progress: Arc<AtomicI32>,
) -> Result<(Job, Result<StageOutcome, NativeError>), String> {
    let stage_flag = flag.clone();
    let span = tracing::Span::current();
    let mut call = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let outcome = job.run_stage(&StageCall {
            stage: args.stage,
            attempt: args.attempt,
            cancel: stage_flag.atomic(),
            progress: &progress,
            allow_crash: args.allow_crash,
        });
        (job, outcome)
    });
    let mut deadline_armed = true;
    loop {
        tokio::select! {
            joined = &mut call => {
                return joined.map_err(|e| format!("the native stage crashed: {e}"));
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
