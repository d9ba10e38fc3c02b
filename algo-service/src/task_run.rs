//! Running a claimed task: its stages, its deadline, its progress and lease
//! heartbeats, and the terminal report.
//!
//! Each stage is one call of [`native::run_stage`] on a blocking thread (never
//! on the runtime's threads), watching the task's [`StopFlag`]. Alongside,
//! a per-task *reporter* sends one progress callback per completed stage, in
//! order, and a heartbeat (progress with the current stage) whenever
//! `lease_ms / 3` passed without one, so the lease stays alive through long
//! stages. Slow or failing progress calls never hold up the next stage; the
//! terminal report waits until the reporter has sent everything, so the last
//! stage's progress always lands before the terminal state.
//!
//! If renewals keep failing until the lease may have run out ([`Lease`]),
//! another worker may already be taking the task over, so the run stops and
//! the delivery goes back to the queue: a task never runs on two workers at
//! once, even when this worker is cut off from the api. Whoever claims it
//! next resumes at the recorded stage, with the original deadline.

use std::time::Duration;

use native::StageOutcome;
use task_model::{CallbackAnswer, TaskId, TaskMessage, TaskStatus};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    callbacks::{Answer, ApiClient, Conflict},
    handler::{Disposition, HandlerContext},
    registry::{StopFlag, StopReason},
};

/// Lease length assumed when the api's answer does not say (`LEASE_SECS` default).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Shortest heartbeat period, however short the lease.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// How often to renew a lease of `lease_ms` (0 = unknown): a third of it.
pub fn heartbeat_period(lease_ms: u64) -> Duration {
    let lease = if lease_ms == 0 {
        DEFAULT_LEASE
    } else {
        Duration::from_millis(lease_ms)
    };
    (lease / 3).max(MIN_HEARTBEAT)
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

/// This worker's view of its lease on a task: when it surely still holds it.
///
/// The api renews the lease on every progress call and says how long it runs
/// (`lease_remaining_ms`). If renewals fail for so long that the lease may
/// have run out, another worker may take the task over, so this one must stop
/// running it: [`Lease::safe_until`] is the last renewal's answer plus the
/// remaining time, less a margin for clock skew between this process's timer
/// and the api's and for the few milliseconds the C routine takes to notice
/// its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The lease length (`LEASE_SECS`).
    pub length: Duration,
    /// Until when the lease is surely held.
    pub safe_until: Instant,
}

impl Lease {
    /// The lease as of an answer received at `now`, saying `lease_remaining_ms`
    /// (0 = not said: a full `lease_ms`) of a lease of `lease_ms` (0 = unknown).
    pub fn from_answer(now: Instant, lease_ms: u64, lease_remaining_ms: u64) -> Self {
        let length = if lease_ms == 0 {
            DEFAULT_LEASE
        } else {
            Duration::from_millis(lease_ms)
        };
        let remaining = if lease_remaining_ms == 0 {
            length
        } else {
            Duration::from_millis(lease_remaining_ms)
        };
        let margin = (length / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        Self {
            length,
            safe_until: now + remaining.saturating_sub(margin),
        }
    }

    /// How often to renew it: a third of its length.
    pub fn heartbeat(&self) -> Duration {
        heartbeat_period(self.length.as_millis() as u64)
    }

    /// After a renewal answered at `now` with `lease_remaining_ms`.
    pub fn renewed(&mut self, now: Instant, lease_remaining_ms: u64) {
        *self = Self::from_answer(now, self.length.as_millis() as u64, lease_remaining_ms);
    }
}

/// How the reporter ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every progress report was sent; the task is still ours.
    Held,
    /// A 409: another worker holds it, or it is already finished.
    Lost,
    /// A 404: the api no longer knows the task.
    Gone,
    /// Renewals failed until the lease may have run out: another worker may
    /// take the task over, so it stops here and goes back to the queue.
    Lapsed,
    /// Shutdown's grace period ended while a report was being retried.
    Abandoned,
}

/// How the run ended, and so what to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Report `COMPLETED`.
    Completed,
    /// Report `CANCELLED`.
    Cancelled,
    /// Report `TIMED_OUT`.
    TimedOut,
    /// Report `FAILED` with this error.
    Failed(String),
    /// Report nothing; settle the delivery this way.
    Silent(Disposition),
}

/// Decides how a run ended from what the stage loop, the flag and the reporter saw.
pub fn ending(
    stage: u32,
    stages: u32,
    reason: Option<StopReason>,
    failure: Option<String>,
    verdict: Verdict,
) -> Ending {
    match verdict {
        Verdict::Lost => return Ending::Silent(Disposition::Ack),
        Verdict::Gone => return Ending::Silent(Disposition::Reject),
        Verdict::Abandoned | Verdict::Lapsed => return Ending::Silent(Disposition::Requeue),
        Verdict::Held => {}
    }
    match reason {
        Some(StopReason::Shutdown) => return Ending::Silent(Disposition::Requeue),
        Some(StopReason::LostLease) => return Ending::Silent(Disposition::Ack),
        _ => {}
    }
    if let Some(error) = failure {
        return Ending::Failed(error);
    }
    if stage >= stages {
        // Every stage ran: a cancel or deadline that came too late loses the race.
        return Ending::Completed;
    }
    match reason {
        Some(StopReason::Cancel) => Ending::Cancelled,
        Some(StopReason::Deadline) => Ending::TimedOut,
        _ => Ending::Failed("the stage was interrupted without a reason".to_owned()),
    }
}

/// Runs the claimed task from `claim.stage` on, reports its terminal state,
/// and says how to settle the delivery.
pub async fn run(
    ctx: &HandlerContext,
    msg: &TaskMessage,
    claim: CallbackAnswer,
    flag: &StopFlag,
) -> Disposition {
    let stages = msg.stages;
    let mut stage = claim.stage.min(stages);
    let deadline = deadline(Instant::now(), claim.deadline_in_ms, msg.timeout_secs);

    if claim.cancel_requested || claim.status == TaskStatus::Cancelling {
        flag.raise(StopReason::Cancel);
    }
    if claim.deadline_in_ms.is_some_and(|ms| ms <= 0) {
        flag.raise(StopReason::Deadline);
    }
    tracing::info!(
        stage,
        stages,
        stage_ms = msg.stage_ms,
        deadline_in_ms = claim.deadline_in_ms,
        lease_ms = claim.lease_ms,
        resumed = claim.stage > 0,
        "claimed"
    );

    let (progress, progress_rx) = mpsc::unbounded_channel();
    let reporter = tokio::spawn(
        reporter(
            ctx.api.clone(),
            msg.task_id,
            stages,
            stage,
            progress_rx,
            Lease::from_answer(Instant::now(), claim.lease_ms, claim.lease_remaining_ms),
            flag.clone(),
            ctx.abandon.clone(),
        )
        .in_current_span(),
    );

    let mut failure = None;
    while stage < stages {
        if Instant::now() >= deadline {
            flag.raise(StopReason::Deadline);
        }
        if flag.reason().is_some() {
            break;
        }
        let started = Instant::now();
        match run_stage(msg.stage_ms, flag, deadline).await {
            Ok(StageOutcome::Completed) => {
                ctx.metrics
                    .ffi_calls
                    .with_label_values(&["completed"])
                    .inc();
                ctx.metrics
                    .stage_duration
                    .observe(started.elapsed().as_secs_f64());
                stage += 1;
                tracing::debug!(stage, stages, "stage completed");
                // A closed channel means the reporter stopped (lost task); the flag says so.
                let _ = progress.send(stage);
            }
            Ok(StageOutcome::Interrupted) => {
                ctx.metrics
                    .ffi_calls
                    .with_label_values(&["interrupted"])
                    .inc();
                break;
            }
            Err(error) => {
                ctx.metrics.ffi_calls.with_label_values(&["error"]).inc();
                tracing::error!(error.message = %error, stage, "the native stage failed");
                failure = Some(error);
                break;
            }
        }
    }
    drop(progress);
    let verdict = reporter.await.unwrap_or_else(|e| {
        tracing::error!(error.message = %e, "the progress reporter crashed");
        Verdict::Held
    });

    let reason = flag.reason();
    let end = ending(stage, stages, reason, failure, verdict);
    tracing::info!(stage, stages, ?reason, ?verdict, ending = ?end, "run over");
    finish(ctx, msg, stage, end).await
}

/// One stage on a blocking thread; raises the flag when `deadline` passes meanwhile.
async fn run_stage(
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

/// Sends a progress callback for each completed stage received on `stages_rx`,
/// in order, and a heartbeat whenever a third of the lease passed without one.
/// Raises the flag on a cancel request (`Cancel`), a lost task (`LostLease`),
/// or a lease that could not be renewed in time (`LostLease`, verdict `Lapsed`).
#[allow(clippy::too_many_arguments)]
async fn reporter(
    api: ApiClient,
    task_id: TaskId,
    stages: u32,
    mut last: u32,
    mut stages_rx: mpsc::UnboundedReceiver<u32>,
    mut lease: Lease,
    flag: StopFlag,
    stop: CancellationToken,
) -> Verdict {
    let lapsed = |flag: &StopFlag, lease: &Lease| {
        flag.raise(StopReason::LostLease);
        tracing::warn!(
            lease_ms = lease.length.as_millis() as u64,
            "could not renew the lease in time; another worker may take the task over, so stopping it here and requeueing"
        );
        Verdict::Lapsed
    };
    let mut next_beat = Instant::now() + lease.heartbeat();
    loop {
        let (stage, heartbeat) = tokio::select! {
            biased;
            received = stages_rx.recv() => match received {
                Some(stage) => (stage, false),
                None => return Verdict::Held,
            },
            () = tokio::time::sleep_until(next_beat) => (last, true),
        };
        last = stage;
        let answer = tokio::select! {
            answer = api.report_progress(task_id, stage, stages, &stop) => match answer {
                Ok(answer) => answer,
                Err(_abandoned) => return Verdict::Abandoned,
            },
            () = tokio::time::sleep_until(lease.safe_until) => return lapsed(&flag, &lease),
        };
        match answer {
            Answer::Accepted(a) => {
                lease.renewed(Instant::now(), a.lease_remaining_ms);
                if a.cancel_requested && flag.raise(StopReason::Cancel) {
                    tracing::info!("cancel requested (seen in a progress answer); interrupting");
                }
            }
            Answer::Conflict(conflict, a) => {
                flag.raise(StopReason::LostLease);
                tracing::warn!(
                    ?conflict,
                    status = %a.status,
                    holder = a.worker.as_deref().unwrap_or(""),
                    "the task is no longer ours; stopping without reporting"
                );
                return Verdict::Lost;
            }
            Answer::NotFound(message) => {
                flag.raise(StopReason::LostLease);
                tracing::warn!(api.message = %message, "the api no longer knows this task; stopping");
                return Verdict::Gone;
            }
            Answer::Rejected(status, message) => tracing::error!(
                http.status = status.as_u16(),
                api.message = %message,
                stage,
                heartbeat,
                "the api rejected a progress report as malformed"
            ),
        }
        next_beat = Instant::now() + lease.heartbeat();
    }
}

/// Reports the terminal state (retrying until recorded or abandoned) and
/// says how to settle the delivery.
async fn finish(ctx: &HandlerContext, msg: &TaskMessage, stage: u32, end: Ending) -> Disposition {
    let (status, result, error) = match end {
        Ending::Silent(disposition) => return disposition,
        Ending::Completed => (
            TaskStatus::Completed,
            Some(serde_json::json!({"stages": msg.stages, "output": "hello world"})),
            None,
        ),
        Ending::Cancelled => (TaskStatus::Cancelled, None, None),
        Ending::TimedOut => (
            TaskStatus::TimedOut,
            None,
            Some(format!(
                "the deadline ({} s after the first claim) passed after {stage} of {} stages",
                msg.timeout_secs, msg.stages
            )),
        ),
        Ending::Failed(error) => (TaskStatus::Failed, None, Some(error)),
    };
    let answer = match ctx
        .api
        .report_status(msg.task_id, status, result, error, &ctx.abandon)
        .await
    {
        Ok(answer) => answer,
        Err(_abandoned) => {
            tracing::warn!(%status, "shutting down before the terminal state was recorded; requeueing");
            return Disposition::Requeue;
        }
    };
    match answer {
        Answer::Accepted(_) => {
            ctx.metrics
                .tasks_finished
                .with_label_values(&[status.as_str()])
                .inc();
            tracing::info!(%status, "terminal state recorded");
            Disposition::Ack
        }
        Answer::Conflict(Conflict::AlreadyFinished | Conflict::NotHolder, a) => {
            tracing::info!(reported = %status, current = %a.status, "the task was already finished or taken over; acking");
            Disposition::Ack
        }
        Answer::Conflict(conflict, a) if a.status.is_terminal() => {
            tracing::info!(?conflict, reported = %status, current = %a.status, "the task is already finished; acking");
            Disposition::Ack
        }
        Answer::Conflict(conflict, a) => {
            tracing::warn!(?conflict, reported = %status, current = %a.status, "the api refused the terminal state; requeueing so a fresh claim sorts it out");
            Disposition::Requeue
        }
        Answer::NotFound(message) => {
            tracing::warn!(api.message = %message, "the api no longer knows this task; rejecting it to tasks.dead");
            Disposition::Reject
        }
        Answer::Rejected(code, message) => {
            tracing::error!(http.status = code.as_u16(), api.message = %message, %status, "the api rejected the terminal report as malformed; rejecting the message to tasks.dead");
            Disposition::Reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_come_every_third_of_the_lease() {
        assert_eq!(heartbeat_period(9_000), Duration::from_secs(3));
        assert_eq!(heartbeat_period(0), DEFAULT_LEASE / 3);
        assert_eq!(heartbeat_period(30), MIN_HEARTBEAT);
    }

    #[test]
    fn the_lease_is_surely_held_until_the_answer_plus_remaining_less_a_margin() {
        let now = Instant::now();
        let lease = Lease::from_answer(now, 10_000, 9_990);
        assert_eq!(lease.safe_until, now + Duration::from_millis(8_990));
        assert_eq!(lease.heartbeat(), Duration::from_secs(10) / 3);

        let unknown = Lease::from_answer(now, 0, 0);
        assert_eq!(unknown.length, DEFAULT_LEASE);
        assert_eq!(unknown.safe_until, now + Duration::from_secs(9));

        let short = Lease::from_answer(now, 300, 300);
        assert_eq!(
            short.safe_until,
            now + Duration::from_millis(250),
            "margin at least 50 ms"
        );

        let mut renewed = lease;
        renewed.renewed(now + Duration::from_secs(3), 10_000);
        assert_eq!(renewed.safe_until, now + Duration::from_secs(12));
    }

    #[test]
    fn the_deadline_comes_from_the_claim_not_from_the_message() {
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
    fn endings_follow_the_flag_the_stages_and_the_reporter() {
        use Disposition::*;
        use StopReason::*;
        let held = Verdict::Held;
        let cases = [
            (3, 3, None, None, held, Ending::Completed),
            (3, 3, Some(Cancel), None, held, Ending::Completed),
            (3, 3, Some(Deadline), None, held, Ending::Completed),
            (1, 3, Some(Cancel), None, held, Ending::Cancelled),
            (1, 3, Some(Deadline), None, held, Ending::TimedOut),
            (1, 3, Some(Shutdown), None, held, Ending::Silent(Requeue)),
            (3, 3, Some(Shutdown), None, held, Ending::Silent(Requeue)),
            (1, 3, Some(LostLease), None, held, Ending::Silent(Ack)),
            (
                1,
                3,
                Some(LostLease),
                None,
                Verdict::Lost,
                Ending::Silent(Ack),
            ),
            (
                1,
                3,
                Some(LostLease),
                None,
                Verdict::Gone,
                Ending::Silent(Reject),
            ),
            (
                1,
                3,
                Some(Cancel),
                None,
                Verdict::Abandoned,
                Ending::Silent(Requeue),
            ),
            (
                1,
                3,
                None,
                Some("io".to_owned()),
                held,
                Ending::Failed("io".to_owned()),
            ),
        ];
        for (stage, stages, reason, failure, verdict, want) in cases {
            assert_eq!(
                ending(stage, stages, reason, failure.clone(), verdict),
                want,
                "stage {stage}/{stages}, {reason:?}, {failure:?}, {verdict:?}"
            );
        }
    }
}
