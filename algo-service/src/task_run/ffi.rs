//! The FFI boundary: one stage of the native routine, on a blocking thread
//! (never on the runtime's threads), watching the task's stop flag, its line
//! bound to the lease ([`native::run_stage_until`]).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use native::StageOutcome;
use tokio::time::Instant;

use crate::registry::{StopFlag, StopReason};

/// The [`native::monotonic_ms`] time of `at`, for a `valid_until`.
pub(crate) fn monotonic_ms_at(at: Instant) -> u64 {
    let now = Instant::now();
    let mono = native::monotonic_ms();
    if at >= now {
        mono.saturating_add((at - now).as_millis() as u64)
    } else {
        // Never 0, which would mean "no limit".
        mono.saturating_sub((now - at).as_millis() as u64).max(1)
    }
}

/// Until when this run may print a stage's line: a [`native::monotonic_ms`]
/// time, moved forward as the lease is renewed.
#[derive(Debug, Clone)]
pub(crate) struct ValidUntil(Arc<AtomicU64>);

impl ValidUntil {
    pub(crate) fn new(until: Instant) -> Self {
        Self(Arc::new(AtomicU64::new(monotonic_ms_at(until))))
    }

    pub(crate) fn set(&self, until: Instant) {
        self.0.store(monotonic_ms_at(until), Ordering::Release);
    }
}

/// One stage on a blocking thread; raises the flag when `deadline` passes
/// meanwhile. A stage that ends past `valid_until` prints nothing
/// ([`StageOutcome::Expired`]).
pub(crate) async fn run_stage(
    stage_ms: u64,
    flag: &StopFlag,
    deadline: Instant,
    valid_until: &ValidUntil,
) -> Result<StageOutcome, String> {
    let stage_flag = flag.clone();
    let until = Arc::clone(&valid_until.0);
    let span = tracing::Span::current();
    let mut call = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        native::run_stage_until(stage_ms, stage_flag.atomic(), &until)
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
