//! Running a claimed task: its stages, its deadline, its progress and lease
//! heartbeats, and the terminal report.
//!
//! Each stage is one call of [`native::run_stage`] on a blocking thread (never
//! on the runtime's threads), watching the task's [`StopFlag`]: [`ffi`] is the
//! FFI boundary. Alongside,
//! a per-task *reporter* sends one progress callback per completed stage, in
//! order, and a heartbeat (progress with the current stage) whenever
//! `lease_ms / 3` passed without one, so the lease stays alive through long
//! stages. Slow or failing progress calls never hold up the next stage; the
//! terminal report waits until the reporter has sent everything, so the last
//! stage's progress always lands before the terminal state.
//!
//! If renewals keep failing until the lease may have run out ([`reporter::Lease`]),
//! another worker may already be taking the task over, so the run stops and
//! the delivery goes back to the queue: a task never runs on two workers at
//! once, even when this worker is cut off from the api. Whoever claims it
//! next resumes at the recorded stage, with the original deadline.
//!
//! The stage loop starts no stage past the lease's surely-held time either
//! ([`Lease::safe_until`], which the reporter publishes after every
//! renewal), and a stage's line is bound to it: [`native::run_stage_until`]
//! prints nothing for a stage that ends past it. A worker that was frozen
//! (SIGSTOP, a hung host) wakes with its lease run out, and the api may have
//! re-offered the task to another worker meanwhile: the stage that was
//! running ends without its line, the reporter stops the run and asks the
//! api (a heartbeat is overdue, so it goes at once). A 409: the task was
//! taken over, so the run ends without reporting anything and the delivery
//! is acked (the new holder has its own copy; requeueing would only add a
//! duplicate). Still ours: the delivery is requeued and the next claim
//! resumes at the recorded stage. What stays at-least-once: a stage whose
//! line was printed within the lease but whose progress report did not land
//! before a takeover runs again on the new holder (docs/REFERENCE.md,
//! worker semantics).

//! - [`ffi`]: one stage through the native routine, on a blocking thread.
//! - [`reporter`]: progress callbacks, lease heartbeats, [`reporter::Lease`].
//! - [`finish`]: how the run ended ([`finish::Ending`]) and the terminal report.

pub mod ffi;
pub mod finish;
pub mod reporter;

use std::time::Duration;

use native::StageOutcome;
use task_model::{CallbackAnswer, TaskId, TaskSpec, TaskStatus};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::Instrument;

pub use self::{
    finish::{ending, Ending},
    reporter::{heartbeat_period, Lease, Verdict, DEFAULT_LEASE, MIN_HEARTBEAT},
};
use crate::{
    context::{Disposition, HandlerContext},
    registry::{StopFlag, StopReason},
};

/// A claimed task: its id and, from the claim's answer, the stored task's
/// spec. The message that named it has no say in what runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The task.
    pub task_id: TaskId,
    /// What to run, as the api stored it.
    pub spec: TaskSpec,
}

/// When the task must be over, from the claim's `deadline_in_ms` (which the api
/// computes from `started_at`, so a takeover does not restart it). Without
/// one, `timeout_secs` from now.
pub fn deadline(now: Instant, deadline_in_ms: Option<i64>, timeout_secs: u64) -> Instant {
    match deadline_in_ms {
        Some(ms) => now + Duration::from_millis(ms.max(0).unsigned_abs()),
        None => now + Duration::from_secs(timeout_secs),
    }
}

/// Runs the claimed task from `claim.stage` on, reports its terminal state,
/// and says how to settle the delivery.
pub async fn run(
    ctx: &HandlerContext,
    job: &Job,
    claim: CallbackAnswer,
    flag: &StopFlag,
) -> Disposition {
    let spec = &job.spec;
    let start = claim.stage.min(spec.stages);
    let deadline = deadline(Instant::now(), claim.deadline_in_ms, spec.timeout_secs);
    raise_from_claim(&claim, flag);
    tracing::info!(
        stage = start,
        stages = spec.stages,
        stage_ms = spec.stage_ms,
        algorithm = %spec.algorithm,
        deadline_in_ms = claim.deadline_in_ms,
        lease_ms = claim.lease_ms,
        resumed = claim.stage > 0,
        "claimed"
    );

    let (progress, progress_rx) = mpsc::unbounded_channel();
    let lease = Lease::from_answer(Instant::now(), claim.lease_ms, claim.lease_remaining_ms);
    let (held_until, mut held_rx) = watch::channel(lease.safe_until);
    let valid_until = ffi::ValidUntil::new(lease.safe_until);
    let reporter = tokio::spawn(
        reporter::reporter(
            reporter::Reporting {
                api: ctx.api.clone(),
                task_id: job.task_id,
                stages: spec.stages,
                flag: flag.clone(),
                stop: ctx.abandon.clone(),
                held_until,
                valid_until: valid_until.clone(),
            },
            start,
            progress_rx,
            lease,
        )
        .in_current_span(),
    );
    let (stage, failure) = run_stages(
        ctx,
        spec,
        start,
        flag,
        deadline,
        &progress,
        (&mut held_rx, &valid_until),
    )
    .await;
    drop(progress);
    let verdict = reporter.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "the progress reporter crashed");
        Verdict::Held
    });

    let reason = flag.reason();
    let end = ending(stage, spec.stages, reason, failure, verdict);
    tracing::info!(stage, stages = spec.stages, ?reason, ?verdict, ending = ?end, "run over");
    finish::finish(ctx, job, stage, end).await
}

/// A claim that already asks for a cancel, or whose deadline passed, stops
/// the run before its first stage.
fn raise_from_claim(claim: &CallbackAnswer, flag: &StopFlag) {
    if claim.cancel_requested || claim.status == TaskStatus::Cancelling {
        flag.raise(StopReason::Cancel);
    }
    if claim.deadline_in_ms.is_some_and(|ms| ms <= 0) {
        flag.raise(StopReason::Deadline);
    }
}

/// Whether the lease still holds for another stage: at once while it is
/// surely held; past that, after the reporter's next renewal. `false` when
/// the reporter stopped (the task was lost, or reporting was abandoned): no
/// stage may run that could not be reported.
async fn lease_holds(held_until: &mut watch::Receiver<Instant>, flag: &StopFlag) -> bool {
    let mut waited = false;
    loop {
        if flag.reason().is_some() {
            return true;
        }
        if Instant::now() < *held_until.borrow_and_update() {
            if waited {
                tracing::info!("the lease was renewed; going on with the next stage");
            }
            return true;
        }
        if !waited {
            tracing::info!("the lease may have run out (this process was frozen, or renewals failed); waiting for a renewal before the next stage");
            waited = true;
        }
        if held_until.changed().await.is_err() {
            return false;
        }
    }
}

/// Runs stages from `stage` until all ran, the flag is raised, one fails, or
/// the lease is no longer surely held and the reporter finds it lost; each
/// completed stage goes to the reporter. Returns the stages done and the
/// failure, if any.
async fn run_stages(
    ctx: &HandlerContext,
    spec: &TaskSpec,
    mut stage: u32,
    flag: &StopFlag,
    deadline: Instant,
    progress: &mpsc::UnboundedSender<u32>,
    (held_until, valid_until): (&mut watch::Receiver<Instant>, &ffi::ValidUntil),
) -> (u32, Option<String>) {
    while stage < spec.stages {
        if !lease_holds(held_until, flag).await {
            tracing::info!(stage, "the reporter stopped; no further stage");
            break;
        }
        if Instant::now() >= deadline {
            flag.raise(StopReason::Deadline);
        }
        if flag.reason().is_some() {
            break;
        }
        let started = Instant::now();
        let span = tracing::info_span!("stage", stage = stage + 1, stages = spec.stages);
        let outcome = ffi::run_stage(spec.stage_ms, flag, deadline, valid_until)
            .instrument(span)
            .await;
        let label = match &outcome {
            Ok(StageOutcome::Completed) => "completed",
            Ok(StageOutcome::Interrupted) => "interrupted",
            Ok(StageOutcome::Expired) => "expired",
            Err(_) => "error",
        };
        ctx.metrics.ffi_calls.with_label_values(&[label]).inc();
        match outcome {
            Ok(StageOutcome::Completed) => {
                ctx.metrics
                    .stage_duration
                    .observe(started.elapsed().as_secs_f64());
                stage += 1;
                tracing::debug!(stage, stages = spec.stages, "stage completed");
                // A closed channel means the reporter stopped (lost task); the flag says so.
                let _ = progress.send(stage);
            }
            Ok(StageOutcome::Interrupted) => break,
            Ok(StageOutcome::Expired) => {
                // Past the lease: another worker may hold the task now. The
                // line was not printed; the next round waits for the
                // reporter's verdict and runs the stage again if still ours.
                tracing::warn!(
                    stage,
                    "the stage ended after the lease may have run out; its line was not printed"
                );
            }
            Err(error) => {
                tracing::error!(error = %error, stage, "the native stage failed");
                return (stage, Some(error));
            }
        }
    }
    (stage, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_comes_from_the_claim() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, Some(1_500), 50),
            now + Duration::from_millis(1_500)
        );
        assert_eq!(
            deadline(now, Some(-20), 50),
            now,
            "a passed deadline is now"
        );
        assert_eq!(deadline(now, None, 50), now + Duration::from_secs(50));
    }
}
