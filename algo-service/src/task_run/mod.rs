//! Running a claimed task: its stages, its deadline, its progress and lease
//! heartbeats, and the terminal report.
//!
//! The task's algorithm runs as a [`native::Job`] ([`job`]: input blobs
//! fetched through the api, the job built on a blocking thread, its output
//! blob stored at the end). Each stage is one [`native::Job::run_stage`] on a
//! blocking thread (never on the runtime's threads), watching the task's
//! [`StopFlag`]: [`ffi`] is the FFI boundary. A CPU-bound algorithm's stage
//! first takes one of the worker's `WORKER_CPU_SLOTS` (a semaphore) and holds
//! it while it runs; `hello` takes none. Alongside,
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
//! renewal), and a stage's line is bound to it: [`native::Job::run_stage_until`]
//! makes a `hello` stage that ends past it print nothing. A worker that was frozen
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
//!
//! - [`job`]: building the job (blobs in), CPU slots, its output (blob out).
//! - [`ffi`]: one stage through the native routine, on a blocking thread.
//! - [`isolation`]: `WORKER_ISOLATION`: the job in this process (`thread`)
//!   or in a helper process per attempt (`process`), where a crash in C
//!   fails only the attempt (`algorithm_crashed: <signal>`).
//! - [`reporter`]: progress callbacks, lease heartbeats, [`reporter::Lease`].
//! - [`finish`]: how the run ended ([`finish::Ending`]) and the terminal report.

pub mod ffi;
pub mod finish;
pub mod isolation;
pub mod job;
pub mod reporter;

use std::{
    sync::{atomic::AtomicI32, Arc},
    time::Duration,
};

use native::StageOutcome;
use task_model::{CallbackAnswer, TaskId, TaskSpec, TaskStatus};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::Instrument;

pub use self::{
    finish::{ending, Ending, Failure},
    isolation::StageJob,
    reporter::{heartbeat_period, Lease, Verdict, DEFAULT_LEASE, MIN_HEARTBEAT},
};
use crate::{
    callbacks::Answer,
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

/// What a run needs from the task, from the claim answer's `run` (the
/// stored task's [`TaskSpec`], see [`Job`]); the queue message only names
/// the task.
#[derive(Debug, Clone, PartialEq)]
pub struct RunParams {
    /// The task.
    pub task_id: task_model::TaskId,
    /// The catalogue name.
    pub algorithm: String,
    /// The task's `input` (`null` when absent).
    pub input: serde_json::Value,
    /// Stages in all.
    pub stages: u32,
    /// `hello`'s stage length.
    pub stage_ms: u64,
    /// The task's attempt (1-based), from the claim.
    pub attempt: u32,
}

/// The run parameters of `job`, whose spec is the claim answer's `run`.
pub fn run_params(job: &Job) -> RunParams {
    RunParams {
        task_id: job.task_id,
        algorithm: job.spec.algorithm.clone(),
        input: job.spec.input.clone(),
        stages: job.spec.stages,
        stage_ms: job.spec.stage_ms,
        attempt: 1,
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
    let mut params = run_params(job);
    params.attempt = claim.attempt.max(1);
    let start = claim.stage.min(params.stages);
    let deadline = deadline(Instant::now(), claim.deadline_in_ms, job.spec.timeout_secs);
    raise_from_claim(&claim, flag);
    tracing::info!(
        algorithm = %params.algorithm,
        stage = start,
        stages = params.stages,
        stage_ms = params.stage_ms,
        attempt = params.attempt,
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
                stages: params.stages,
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
    let (stage, failure, result) = match job::prepare(ctx, &params, flag).await {
        Ok(prepared) => {
            let stages = run_stages(
                ctx,
                (prepared, &params),
                start,
                flag,
                deadline,
                &progress,
                (&mut held_rx, &valid_until),
            )
            .await;
            output_of(ctx, stages, params.stages, flag).await
        }
        Err(error) => (start, error.map(Failure::fatal), None),
    };
    report_held_back(&progress, (stage, params.stages), failure.as_ref(), flag);
    drop(progress);
    let verdict = reporter.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "the progress reporter crashed");
        Verdict::Held
    });

    let reason = flag.reason();
    let end = ending(stage, params.stages, reason, failure, verdict);
    tracing::info!(stage, stages = params.stages, ?reason, ?verdict, ending = ?end, "run over");
    finish::finish(ctx, job, stage, end, result).await
}

/// The last stage's progress is held back for the COMPLETED report to
/// carry; when the run will not report COMPLETED (the job's output failed,
/// or shutdown requeues it), it goes to the reporter now, so the stage is
/// recorded and a later attempt does not run it again.
fn report_held_back(
    progress: &mpsc::UnboundedSender<u32>,
    (stage, stages): (u32, u32),
    failure: Option<&Failure>,
    flag: &StopFlag,
) {
    let completes = failure.is_none() && flag.reason() != Some(StopReason::Shutdown);
    if stage == stages && stages > 0 && !completes {
        let _ = progress.send(stage);
    }
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
/// completed stage goes to the reporter. CPU-bound stages each take one of
/// the worker's `WORKER_CPU_SLOTS` for as long as they run. Returns the
/// stages done, the failure if any, and the job (`None` if its stage thread
/// panicked).
async fn run_stages(
    ctx: &HandlerContext,
    (prepared, params): (job::Prepared, &RunParams),
    mut stage: u32,
    flag: &StopFlag,
    deadline: Instant,
    progress: &mpsc::UnboundedSender<u32>,
    (held_until, valid_until): (&mut watch::Receiver<Instant>, &ffi::ValidUntil),
) -> (u32, Option<Failure>, Option<StageJob>) {
    let job::Prepared { mut job, cpu_bound } = prepared;
    let within = Arc::new(AtomicI32::new(0));
    while stage < params.stages {
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
        let slot = if cpu_bound {
            match job::cpu_slot(ctx, flag, deadline).await {
                Some(slot) => Some(slot),
                None => break,
            }
        } else {
            None
        };
        let started = Instant::now();
        let ran = stage_call(
            ctx,
            job,
            (params, stage, slot.is_some()),
            (flag, deadline, valid_until),
            &within,
        )
        .await;
        drop(slot);
        let (back, outcome) = match ran {
            Ok(pair) => pair,
            Err(error) => {
                ctx.metrics.ffi_calls.with_label_values(&["error"]).inc();
                tracing::error!(error = %error, stage, "the native stage failed");
                return (stage, Some(Failure::fatal(error)), None);
            }
        };
        job = back;
        count_outcome(ctx, &outcome);
        match outcome {
            Ok(StageOutcome::Completed) => {
                ctx.metrics
                    .stage_duration
                    .observe(started.elapsed().as_secs_f64());
                stage += 1;
                tracing::debug!(stage, stages = params.stages, "stage completed");
                // The last stage's progress rides on the COMPLETED report
                // (one callback fewer); see `report_held_back`. A closed
                // channel means the reporter stopped (lost task); the flag says so.
                if stage < params.stages {
                    let _ = progress.send(stage);
                }
            }
            Ok(StageOutcome::Interrupted) => break,
            Ok(StageOutcome::Expired) => {
                // Past the lease, no line printed: the next round asks the reporter.
                tracing::warn!(
                    stage,
                    "the stage ended after the lease may have run out; its line was not printed"
                );
            }
            Err(error) => {
                // A retryable error: the api decides whether another attempt follows.
                let retryable = error.is_retryable();
                tracing::error!(error = %error, retryable, stage, "the native stage failed");
                let failure = Failure {
                    error: error.to_string(),
                    retryable,
                };
                return (stage, Some(failure), Some(job));
            }
        }
    }
    (stage, None, Some(job))
}

/// One stage's call on a blocking thread, its span, and its progress within
/// the stage; `timed` (a CPU slot is held) logs its start and end for the
/// slot accounting.
async fn stage_call(
    ctx: &HandlerContext,
    job: StageJob,
    (params, stage, timed): (&RunParams, u32, bool),
    (flag, deadline, valid_until): (&StopFlag, Instant, &ffi::ValidUntil),
    within: &Arc<AtomicI32>,
) -> Result<(StageJob, Result<StageOutcome, native::NativeError>), String> {
    if timed {
        tracing::info!(stage, at_us = job::now_us(), "cpu stage started");
    }
    let args = ffi::StageArgs {
        stage,
        attempt: params.attempt,
        allow_crash: ctx.allow_crash,
    };
    let span = tracing::info_span!("stage", stage = stage + 1, stages = params.stages);
    let call = job
        .run_stage(args, flag, deadline, valid_until, Arc::clone(within))
        .instrument(span);
    let ran = within_stage(ctx, call, params, stage, within).await;
    if timed {
        tracing::info!(stage, at_us = job::now_us(), "cpu stage ended");
    }
    ran
}

/// Counts a stage's outcome in `ffi_calls`.
fn count_outcome(ctx: &HandlerContext, outcome: &Result<StageOutcome, native::NativeError>) {
    let label = match outcome {
        Ok(StageOutcome::Completed) => "completed",
        Ok(StageOutcome::Interrupted) => "interrupted",
        Ok(StageOutcome::Expired) => "expired",
        Err(_) => "error",
    };
    ctx.metrics.ffi_calls.with_label_values(&[label]).inc();
}

/// How often progress within a stage is polled and, when it moved, reported.
pub const WITHIN_STAGE_PERIOD: Duration = Duration::from_millis(250);

/// The task's progress with `per_mille` of stage `stage` done:
/// `floor(100 × (stage + f) / stages)`, `f = min(per_mille, 999) / 1000`.
pub fn progress_within(stage: u32, stages: u32, per_mille: i32) -> u8 {
    let f = u64::try_from(per_mille.clamp(0, 999)).unwrap_or(0);
    let stages = u64::from(stages.max(1));
    ((u64::from(stage) * 1000 + f) * 100 / (stages * 1000)).min(100) as u8
}

/// Awaits the stage `call`, meanwhile reporting its progress within the
/// stage every [`WITHIN_STAGE_PERIOD`] when it moved (one report in flight
/// at most; answers only logged — the reporter owns the lease).
async fn within_stage<F: std::future::Future>(
    ctx: &HandlerContext,
    call: F,
    params: &RunParams,
    stage: u32,
    within: &AtomicI32,
) -> F::Output {
    tokio::pin!(call);
    // The first tick one period from now: `interval`'s immediate first tick
    // still goes through the timer wheel, whose millisecond granularity
    // held every stage's start back by about 1 ms (the call is not polled,
    // so not started, until then).
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + WITHIN_STAGE_PERIOD,
        WITHIN_STAGE_PERIOD,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = progress_within(stage, params.stages, 0);
    let mut in_flight: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            out = &mut call => return out,
            _ = tick.tick() => {
                let now = progress_within(stage, params.stages, within.load(std::sync::atomic::Ordering::Relaxed));
                if now <= sent || in_flight.as_ref().is_some_and(|h| !h.is_finished()) {
                    continue;
                }
                sent = now;
                in_flight = Some(send_within(ctx, params, stage, now));
            }
        }
    }
}

/// The job's output once every stage ran without failure; otherwise the
/// stages done and the failure as they are.
async fn output_of(
    ctx: &HandlerContext,
    (stage, failure, native_job): (u32, Option<Failure>, Option<StageJob>),
    stages: u32,
    flag: &StopFlag,
) -> (u32, Option<Failure>, Option<serde_json::Value>) {
    let (None, Some(native_job)) = (&failure, native_job) else {
        return (stage, failure, None);
    };
    if stage < stages {
        return (stage, None, None);
    }
    match job::output(ctx, native_job, flag).await {
        Ok(result) => (stage, None, Some(result)),
        Err(error) => (stage, error.map(Failure::fatal), None),
    }
}

/// Reports progress `now` within stage `stage` in the background (one try:
/// the next tick or the stage's end reports again).
fn send_within(
    ctx: &HandlerContext,
    params: &RunParams,
    stage: u32,
    now: u8,
) -> tokio::task::JoinHandle<()> {
    let (api, task_id, stages) = (ctx.api.clone(), params.task_id, params.stages);
    tokio::spawn(
        async move {
            match api
                .report_progress_within(task_id, stage, stages, now)
                .await
            {
                Ok(Answer::Accepted(_)) => {}
                Ok(other) => {
                    tracing::debug!(answer = ?other, "progress within the stage not taken")
                }
                Err(e) => tracing::debug!(error = %e, "progress within the stage not sent"),
            }
        }
        .in_current_span(),
    )
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

    #[test]
    fn progress_within_a_stage_is_floored_and_never_reaches_the_next_stage() {
        assert_eq!(progress_within(0, 1, 0), 0);
        assert_eq!(progress_within(0, 1, 500), 50);
        assert_eq!(progress_within(0, 1, 1000), 99, "f < 1");
        assert_eq!(progress_within(3, 10, 999), 39);
        assert_eq!(progress_within(1, 3, 0), 33);
        assert_eq!(progress_within(2, 3, -5), 66);
        assert_eq!(progress_within(0, 0, 10), 1, "no stages: treated as one");
    }
}
