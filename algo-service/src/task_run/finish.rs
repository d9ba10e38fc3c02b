//! How a run ended, and the terminal report that follows.

use task_model::{TaskId, TaskStatus};

use super::{reporter::Verdict, Job};
use crate::{
    callbacks::{Answer, Conflict},
    context::{Disposition, HandlerContext},
    registry::StopReason,
};

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
    /// Report `FAILED` with this error, retryable: the api schedules another
    /// attempt if any is left (and the delivery is acked either way).
    Retryable(String),
    /// Report nothing; settle the delivery this way.
    Silent(Disposition),
}

/// A stage's (or the job's) failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub error: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl Failure {
    /// A failure no retry can mend.
    pub fn fatal(error: String) -> Self {
        Self {
            error,
            retryable: false,
        }
    }
}

/// Decides how a run ended from what the stage loop, the flag and the reporter saw.
pub fn ending(
    stage: u32,
    stages: u32,
    reason: Option<StopReason>,
    failure: Option<Failure>,
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
    if let Some(failure) = failure {
        return if failure.retryable {
            Ending::Retryable(failure.error)
        } else {
            Ending::Failed(failure.error)
        };
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

/// Reports the terminal state (retrying until recorded or abandoned) and
/// says how to settle the delivery.
///
/// `result` is the job's, with `COMPLETED`.
pub(crate) async fn finish(
    ctx: &HandlerContext,
    job: &Job,
    stage: u32,
    end: Ending,
    result: Option<serde_json::Value>,
) -> Disposition {
    let (status, result, error) = match end {
        Ending::Silent(disposition) => return disposition,
        Ending::Retryable(error) => return report_retryable(ctx, job.task_id, error).await,
        Ending::Completed => (TaskStatus::Completed, result, None),
        Ending::Cancelled => (TaskStatus::Cancelled, None, None),
        Ending::TimedOut => (TaskStatus::TimedOut, None, Some(timed_out(job, stage))),
        Ending::Failed(error) => (TaskStatus::Failed, None, Some(error)),
    };
    report(ctx, job.task_id, status, result, (error, Some(stage))).await
}

/// Reports `FAILED` with `reason` for a claimed task this worker cannot run
/// (its stored spec is unusable here), so it does not stay QUEUED or
/// PROCESSING for ever; says how to settle the delivery.
pub async fn fail_unrunnable(ctx: &HandlerContext, task_id: TaskId, reason: String) -> Disposition {
    tracing::error!(%reason, "cannot run the claimed task; reporting it FAILED");
    report(ctx, task_id, TaskStatus::Failed, None, (Some(reason), None)).await
}

async fn report(
    ctx: &HandlerContext,
    task_id: TaskId,
    status: TaskStatus,
    result: Option<serde_json::Value>,
    error_and_stage: (Option<String>, Option<u32>),
) -> Disposition {
    let answer = ctx
        .api
        .report_status(task_id, status, result, error_and_stage, &ctx.abandon)
        .await;
    match answer {
        Ok(answer) => settle_after_report(ctx, status, answer),
        Err(_abandoned) => {
            tracing::warn!(%status, "shutting down before the terminal state was recorded; requeueing");
            Disposition::Requeue
        }
    }
}

/// Reports a retryable `FAILED`; the api answers `SCHEDULED` (another
/// attempt follows, as a new claim of a new message: this delivery is done)
/// or `FAILED` (none left). Either way the delivery is settled as after a
/// terminal report.
async fn report_retryable(ctx: &HandlerContext, task_id: TaskId, error: String) -> Disposition {
    let answer = ctx
        .api
        .report_retryable_failure(task_id, error, &ctx.abandon)
        .await;
    match answer {
        Ok(Answer::Accepted(a)) if a.status == TaskStatus::Scheduled => {
            tracing::info!(
                attempt = a.attempt,
                "the api scheduled another attempt; acking"
            );
            Disposition::Ack
        }
        Ok(answer) => settle_after_report(ctx, TaskStatus::Failed, answer),
        Err(_abandoned) => {
            tracing::warn!("shutting down before the failure was recorded; requeueing");
            Disposition::Requeue
        }
    }
}

fn timed_out(job: &Job, stage: u32) -> String {
    format!(
        "the deadline ({} s after the claim of this attempt) passed after {stage} of {} stages",
        job.spec.timeout_secs, job.spec.stages
    )
}

/// How to settle the delivery once the api answered the terminal report.
fn settle_after_report(ctx: &HandlerContext, status: TaskStatus, answer: Answer) -> Disposition {
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
                Some(Failure::fatal("io".to_owned())),
                held,
                Ending::Failed("io".to_owned()),
            ),
            (
                1,
                3,
                None,
                Some(Failure {
                    error: "flaky".to_owned(),
                    retryable: true,
                }),
                held,
                Ending::Retryable("flaky".to_owned()),
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
