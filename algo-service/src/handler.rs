//! One delivery from a task queue (`tasks.<queue>`), from parse to ack: [`process_one`].
//!
//! ```text
//! name the task (body task_id, else message_id) ──none──> reject (dead-letters to tasks.dead)
//!   │
//! acquire (wait while the same task runs in this process)
//!   │
//! claim (PROCESSING) ──409 lease_held──> hold the delivery, retry after the lease
//!   │                ──409 already_finished──> ack, run nothing
//!   │                ──404 / 400──> reject
//! check the claim's `run` (the stored task) ──unusable──> report FAILED with why ──> ack
//!   │
//! run stages ([`crate::task_run`]) ──> terminal report ──> ack
//! ```
//! The message only names the task: what runs (algorithm, stages, stage
//! length, input, deadline) is the stored task, from the claim's answer, so
//! a forged or outdated message cannot change it. Every path ends in exactly
//! one [`Disposition`], applied to the delivery once. The only way to drop a
//! task is an ack after its terminal state was recorded (or found recorded),
//! or a reject for a message that names no task the api knows.

use std::{sync::Arc, time::Duration};

use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions},
};
use serde::Deserialize;
use task_model::{CallbackAnswer, TaskId, TaskStatus, ALGORITHMS};
use tracing::{field, Instrument};

pub use crate::context::{Disposition, HandlerContext};
use crate::{
    callbacks::{Answer, Conflict},
    task_run::{self, finish::fail_unrunnable, Job},
    telemetry,
};

/// Longest wait between two claims of a task whose lease another worker holds.
pub const MAX_CLAIM_WAIT: Duration = Duration::from_secs(3);

/// Why a message is rejected without being run: it names no task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    /// Neither the body's `task_id` nor the AMQP `message_id` is a task id.
    #[error("the message names no task (body: {0}; no task id as message_id either)")]
    NoTask(String),
}

/// Why a claimed task cannot run here; it is reported `FAILED` with this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unrunnable {
    /// The claim's answer does not say what to run (an api older than this worker).
    #[error("the api's claim answer does not say what to run (is the api older than the worker?)")]
    NoSpec,
    /// The stored algorithm is not one this worker runs.
    #[error("this worker does not run algorithm {0:?} (it runs: {list})", list = ALGORITHMS.join(", "))]
    UnknownAlgorithm(String),
    /// A task with no stages cannot be run.
    #[error("the stored task has no stages")]
    NoStages,
}

/// The part of a message body a worker reads; every other field (old
/// messages carry the whole task) is ignored.
#[derive(Debug, Deserialize)]
struct Named {
    task_id: TaskId,
}

/// The task a delivery names: the body's `task_id`, or else (a body that is
/// not a task message) the AMQP `message_id`, which the api sets to the task
/// id. Every error is permanent: the message is dead-lettered.
///
/// # Errors
/// [`InvalidMessage`] when neither names a task.
pub fn parse_message(body: &[u8], message_id: Option<&str>) -> Result<TaskId, InvalidMessage> {
    match serde_json::from_slice::<Named>(body) {
        Ok(named) => Ok(named.task_id),
        Err(e) => match message_id.and_then(|m| TaskId::parse(m).ok()) {
            Some(id) => {
                tracing::warn!(task_id = %id, error = %e, "the body is not a task message; going by its message_id");
                Ok(id)
            }
            None => Err(InvalidMessage::NoTask(e.to_string())),
        },
    }
}

/// What a successful claim's answer says to run, if this worker can.
///
/// # Errors
/// [`Unrunnable`] for an answer without a spec, an algorithm this worker
/// lacks, or no stages.
pub fn job_from_claim(task_id: TaskId, claim: &CallbackAnswer) -> Result<Job, Unrunnable> {
    let spec = claim.run.clone().ok_or(Unrunnable::NoSpec)?;
    if !ALGORITHMS.contains(&spec.algorithm.as_str()) {
        return Err(Unrunnable::UnknownAlgorithm(spec.algorithm));
    }
    if spec.stages == 0 {
        return Err(Unrunnable::NoStages);
    }
    Ok(Job { task_id, spec })
}

/// Handles one delivery to the end and settles it (ack, reject or requeue).
/// Never fails: errors are logged here, with the task id, and decide the
/// disposition.
pub async fn process_one(ctx: Arc<HandlerContext>, delivery: Delivery) {
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string());
    let span = tracing::info_span!(
        "task",
        task_id = field::Empty,
        worker = ctx.api.worker(),
        queue = delivery.routing_key.as_str(),
        message_id = message_id.as_deref().unwrap_or(""),
        redelivered = delivery.redelivered,
    );
    // A child of the api's publish span (a republished message may have none).
    telemetry::continue_trace(&span, |name| {
        telemetry::amqp_header(&delivery.properties, name)
    });
    async {
        ctx.metrics.tasks_in_flight.inc();
        let disposition = handle(&ctx, message_id.as_deref(), &delivery.data).await;
        settle(&delivery, disposition).await;
        ctx.metrics.tasks_in_flight.dec();
    }
    .instrument(span)
    .await;
}

/// Everything between receiving a delivery and settling it.
pub async fn handle(ctx: &HandlerContext, message_id: Option<&str>, body: &[u8]) -> Disposition {
    let task_id = match parse_message(body, message_id) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "rejecting an unusable message; it dead-letters to tasks.dead");
            return Disposition::Reject;
        }
    };
    tracing::Span::current().record("task_id", field::display(task_id));
    if let Some(mid) = message_id {
        if TaskId::parse(mid).ok() != Some(task_id) {
            tracing::warn!(
                message_id = mid,
                "the message_id is not the body's task id; going by the body"
            );
        }
    }

    let Some(guard) = ctx.registry.acquire(task_id, &ctx.shutdown).await else {
        tracing::info!("shutting down; requeueing a held delivery");
        return Disposition::Requeue;
    };
    let answer = match claim(ctx, task_id).await {
        Claim::Run(answer) => *answer,
        Claim::Settle(disposition) => return disposition,
    };
    let job = match job_from_claim(task_id, &answer) {
        Ok(job) => job,
        Err(why) => return fail_unrunnable(ctx, task_id, why.to_string()).await,
    };
    let disposition = task_run::run(ctx, &job, answer, guard.flag()).await;
    drop(guard);
    disposition
}

enum Claim {
    Run(Box<CallbackAnswer>),
    Settle(Disposition),
}

/// Claims the task (`PROCESSING`), holding the delivery while another worker's
/// lease is live.
async fn claim(ctx: &HandlerContext, task_id: TaskId) -> Claim {
    loop {
        let answer = match ctx
            .api
            .report_status(
                task_id,
                TaskStatus::Processing,
                None,
                (None, None),
                &ctx.shutdown,
            )
            .await
        {
            Ok(answer) => answer,
            Err(_abandoned) => {
                tracing::info!("shutting down before the claim was recorded; requeueing");
                return Claim::Settle(Disposition::Requeue);
            }
        };
        let wait = match on_claim_answer(answer) {
            Ok(claim) => return claim,
            Err(wait) => wait,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = ctx.shutdown.cancelled() => {
                tracing::info!("shutting down; requeueing a held delivery");
                return Claim::Settle(Disposition::Requeue);
            }
        }
    }
}

/// What a claim's answer decides, or `Err(wait)` to claim again after `wait`
/// because another worker's lease is live.
fn on_claim_answer(answer: Answer) -> Result<Claim, Duration> {
    match answer {
        Answer::Accepted(a) => Ok(Claim::Run(Box::new(a))),
        Answer::Conflict(conflict, a)
            if conflict == Conflict::AlreadyFinished || a.status.is_terminal() =>
        {
            tracing::info!(status = %a.status, "task already finished; acking without running it");
            Ok(Claim::Settle(Disposition::Ack))
        }
        Answer::Conflict(_, a) if a.status == TaskStatus::Scheduled => {
            // A stale copy: the task waits for its next attempt, whose own
            // message comes when it is due.
            tracing::info!("task is SCHEDULED; acking this stale message");
            Ok(Claim::Settle(Disposition::Ack))
        }
        Answer::Conflict(conflict, a) => {
            let wait = claim_wait(a.lease_remaining_ms);
            tracing::info!(
                ?conflict,
                holder = a.worker.as_deref().unwrap_or(""),
                lease_remaining_ms = a.lease_remaining_ms,
                retry_in_ms = wait.as_millis() as u64,
                "another worker holds the task; holding the delivery and claiming again later"
            );
            Err(wait)
        }
        Answer::NotFound(message) => {
            tracing::warn!(
                api.message = %message,
                "the api does not know this task (unknown or expired); rejecting it to tasks.dead"
            );
            Ok(Claim::Settle(Disposition::Reject))
        }
        Answer::Rejected(status, message) => {
            tracing::error!(
                http.status = status.as_u16(),
                api.message = %message,
                "the api rejected the claim as malformed; rejecting the message to tasks.dead"
            );
            Ok(Claim::Settle(Disposition::Reject))
        }
    }
}

/// How long to hold a delivery before claiming again: until the other
/// worker's lease runs out, at most [`MAX_CLAIM_WAIT`], at least 50 ms, plus
/// up to 250 ms of jitter so competing workers do not claim in lockstep.
pub fn claim_wait(lease_remaining_ms: u64) -> Duration {
    let base = Duration::from_millis(lease_remaining_ms)
        .min(MAX_CLAIM_WAIT)
        .max(Duration::from_millis(50));
    base + Duration::from_millis(250).mul_f64(crate::backoff::random_fraction())
}

/// Applies `disposition` to the delivery. A failure means the channel it came
/// on is gone; the broker redelivers the message, and the next claim finds the
/// state recorded here, so it is logged and otherwise ignored.
async fn settle(delivery: &Delivery, disposition: Disposition) {
    let result = match disposition {
        Disposition::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
        Disposition::Reject => {
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await
        }
        Disposition::Requeue => {
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await
        }
    };
    match result {
        Ok(true) => tracing::debug!(?disposition, "delivery settled"),
        // lapin answers Ok(false) when the delivery's channel is closed (the acker is poisoned).
        Ok(false) => tracing::warn!(
            ?disposition,
            "could not settle the delivery: its channel is closed; the broker redelivers it and the next claim sees the recorded state"
        ),
        Err(e) => tracing::warn!(
            ?disposition,
            error = %e,
            "could not settle the delivery; the broker redelivers it and the next claim sees the recorded state"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn task(algorithm: &str, stages: u32) -> serde_json::Value {
        json!({
            "task_id": TaskId::new().to_string(), "algorithm": algorithm, "stages": stages,
            "stage_ms": 10, "timeout_secs": 5, "priority": 3, "input": {"x": 1}
        })
    }

    #[test]
    fn a_message_only_names_its_task_whatever_else_it_carries() {
        let id = TaskId::new();
        let named = |mut v: serde_json::Value| {
            v["task_id"] = json!(id.to_string());
            parse_message(&body(v), None)
        };
        for (case, v) in [
            ("a message of today", json!({"priority": 3})),
            ("an old message, the whole task", task("hello", 2)),
            ("a forged stage count", task("hello", 4_294_967_295)),
            ("zero stages", task("hello", 0)),
            ("an unknown algorithm", task("sort", 1)),
            (
                "fields that do not parse",
                json!({"stages": "many", "priority": -1}),
            ),
        ] {
            assert_eq!(named(v), Ok(id), "{case}");
        }
    }

    #[test]
    fn a_body_that_names_no_task_falls_back_to_the_message_id_or_is_rejected() {
        let id = TaskId::new();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not json", b"hello".to_vec()),
            ("empty", Vec::new()),
            ("json but not a task", body(json!({"task": 1}))),
            ("bad task id", {
                let mut t = task("hello", 1);
                t["task_id"] = json!("42");
                body(t)
            }),
        ];
        for (case, bytes) in cases {
            assert!(
                matches!(parse_message(&bytes, None), Err(InvalidMessage::NoTask(_))),
                "{case} must be rejected"
            );
            assert!(
                parse_message(&bytes, Some("poison-1")).is_err(),
                "{case}: a message_id that is no task id does not help"
            );
            assert_eq!(
                parse_message(&bytes, Some(&id.to_string())),
                Ok(id),
                "{case}: the message_id names the task"
            );
        }
    }

    #[test]
    fn the_claim_answer_decides_what_runs() {
        let id = TaskId::new();
        let mut claim: CallbackAnswer = serde_json::from_value(json!({
            "status": "PROCESSING", "stage": 0, "cancel_requested": false,
            "run": {"algorithm": "hello", "stages": 3, "stage_ms": 10, "timeout_secs": 5, "input": {"x": 1}}
        }))
        .unwrap();
        let job = job_from_claim(id, &claim).unwrap();
        assert_eq!(
            (job.task_id, job.spec.stages, job.spec.stage_ms),
            (id, 3, 10)
        );

        let spec = claim.run.clone().unwrap();
        claim.run = Some(task_model::TaskSpec {
            algorithm: "sort".into(),
            ..spec.clone()
        });
        assert_eq!(
            job_from_claim(id, &claim),
            Err(Unrunnable::UnknownAlgorithm("sort".into()))
        );
        claim.run = Some(task_model::TaskSpec { stages: 0, ..spec });
        assert_eq!(job_from_claim(id, &claim), Err(Unrunnable::NoStages));
        claim.run = None;
        assert_eq!(job_from_claim(id, &claim), Err(Unrunnable::NoSpec));
    }

    #[test]
    fn claim_waits_follow_the_lease_within_bounds() {
        for (remaining, lo, hi) in [(0, 50, 300), (1_000, 1_000, 1_250), (9_000, 3_000, 3_250)] {
            for _ in 0..20 {
                let ms = claim_wait(remaining).as_millis() as u64;
                assert!(
                    (lo..=hi).contains(&ms),
                    "{remaining} ms left -> {ms} ms, want {lo}..={hi}"
                );
            }
        }
    }
}
