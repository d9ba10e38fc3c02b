//! The FFI boundary: one stage of a [`native::Job`], on a blocking thread
//! (never on the runtime's threads), watching the task's stop flag, its
//! output bound to the lease ([`native::Job::run_stage_until`]).
//!
//! The job moves into the blocking thread for the stage and comes back with
//! its outcome; a stage thread that panicked loses it (the run fails).
//! Under `WORKER_ISOLATION=process` the FFI call happens in a helper
//! process instead ([`super::isolation`]); [`StageArgs`] and [`ValidUntil`]
//! serve both.

use std::sync::{
    atomic::{AtomicI32, AtomicU64, Ordering},
    Arc,
};

use native::{Job, NativeError, StageCall, StageOutcome};
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
pub struct ValidUntil(Arc<AtomicU64>);

impl ValidUntil {
    /// Until `until`.
    pub fn new(until: Instant) -> Self {
        Self(Arc::new(AtomicU64::new(monotonic_ms_at(until))))
    }

    /// Moves it to `until`.
    pub fn set(&self, until: Instant) {
        self.0.store(monotonic_ms_at(until), Ordering::Release);
    }

    /// The [`native::monotonic_ms`] time it holds now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// What a stage call needs besides the job and the flag.
#[derive(Debug, Clone, Copy)]
pub struct StageArgs {
    /// 0-based stage to run.
    pub stage: u32,
    /// 1-based attempt.
    pub attempt: u32,
    /// `ALLOW_CRASH_INPUT`.
    pub allow_crash: bool,
}

/// One stage on a blocking thread; raises the flag when `deadline` passes
/// meanwhile. `progress` is the stage's per-mille progress, stored by C. A
/// stage that ends past `valid_until` writes nothing
/// ([`StageOutcome::Expired`]).
///
/// # Errors
/// The stage thread panicked (the job is lost).
pub(crate) async fn run_stage(
    mut job: Job,
    args: StageArgs,
    flag: &StopFlag,
    deadline: Instant,
    valid_until: &ValidUntil,
    progress: Arc<AtomicI32>,
) -> Result<(Job, Result<StageOutcome, NativeError>), String> {
    let stage_flag = flag.clone();
    let until = Arc::clone(&valid_until.0);
    let span = tracing::Span::current();
    let mut call = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let outcome = job.run_stage_until(
            &StageCall {
                stage: args.stage,
                attempt: args.attempt,
                cancel: stage_flag.atomic(),
                progress: &progress,
                allow_crash: args.allow_crash,
            },
            &until,
        );
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
