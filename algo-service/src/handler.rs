//! One delivery from `tasks.algo`, from parse to ack: [`process_one`].
//!
//! ```text
//! parse ──bad──> reject (dead-letters to tasks.dead)
//!   │
//! acquire (wait while the same task runs in this process)
//!   │
//! claim (PROCESSING) ──409 lease_held──> hold the delivery, retry after the lease
//!   │                ──409 already_finished──> ack, run nothing
//!   │                ──404 / 400──> reject
//! run stages ([`crate::task_run`]) ──> terminal report ──> ack
//! ```
//! Every path ends in exactly one [`Disposition`], applied to the delivery
//! once. The only way to drop a task is an ack after its terminal state was
//! recorded (or found recorded), or a reject for a message nobody can run.

use std::{sync::Arc, time::Duration};

use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions},
};
use task_model::{
    topology::TASKS_QUEUE, CallbackAnswer, TaskId, TaskMessage, TaskStatus, ALGORITHMS,
};
use tracing::{field, Instrument};

pub use crate::context::{Disposition, HandlerContext};
use crate::{
    callbacks::{Answer, Conflict},
    task_run, telemetry,
};

/// Longest wait between two claims of a task whose lease another worker holds.
pub const MAX_CLAIM_WAIT: Duration = Duration::from_secs(3);

/// Why a message is rejected without being run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    /// The body is not a `TaskMessage`.
    #[error("the body is not a task message: {0}")]
    NotATask(String),
    /// The algorithm is not one this worker runs.
    #[error("unknown algorithm {0:?}")]
    UnknownAlgorithm(String),
    /// A task with no stages cannot be run.
    #[error("a task needs at least one stage")]
    NoStages,
}

/// Parses a delivery body. Every error is permanent: the same bytes will
/// never parse on another worker, so the message is dead-lettered.
///
/// # Errors
/// [`InvalidMessage`] for bodies that are not JSON `TaskMessage`s, or name an
/// unknown algorithm, or no stages.
pub fn parse_message(body: &[u8]) -> Result<TaskMessage, InvalidMessage> {
    let msg: TaskMessage =
        serde_json::from_slice(body).map_err(|e| InvalidMessage::NotATask(e.to_string()))?;
    if !ALGORITHMS.contains(&msg.algorithm.as_str()) {
        return Err(InvalidMessage::UnknownAlgorithm(msg.algorithm));
    }
    if msg.stages == 0 {
        return Err(InvalidMessage::NoStages);
    }
    Ok(msg)
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
        queue = TASKS_QUEUE,
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
    let msg = match parse_message(body) {
        Ok(msg) => msg,
        Err(e) => {
            tracing::warn!(error = %e, "rejecting an unusable message; it dead-letters to tasks.dead");
            return Disposition::Reject;
        }
    };
    tracing::Span::current().record("task_id", field::display(msg.task_id));
    if let Some(mid) = message_id {
        if TaskId::parse(mid).ok() != Some(msg.task_id) {
            tracing::warn!(
                message_id = mid,
                "the message_id is not the body's task id; going by the body"
            );
        }
    }

    let Some(guard) = ctx.registry.acquire(msg.task_id, &ctx.shutdown).await else {
        tracing::info!("shutting down; requeueing a held delivery");
        return Disposition::Requeue;
    };
    let answer = match claim(ctx, msg.task_id).await {
        Claim::Run(answer) => answer,
        Claim::Settle(disposition) => return disposition,
    };
    let disposition = task_run::run(ctx, &msg, answer, guard.flag()).await;
    drop(guard);
    disposition
}

enum Claim {
    Run(CallbackAnswer),
    Settle(Disposition),
}

/// Claims the task (`PROCESSING`), holding the delivery while another worker's
/// lease is live.
async fn claim(ctx: &HandlerContext, task_id: TaskId) -> Claim {
    loop {
        let answer = match ctx
            .api
            .report_status(task_id, TaskStatus::Processing, None, None, &ctx.shutdown)
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
        Answer::Accepted(a) => Ok(Claim::Run(a)),
        Answer::Conflict(conflict, a)
            if conflict == Conflict::AlreadyFinished || a.status.is_terminal() =>
        {
            tracing::info!(status = %a.status, "task already finished; acking without running it");
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
    fn a_task_message_parses() {
        let msg = parse_message(&body(task("hello", 2))).unwrap();
        assert_eq!((msg.stages, msg.stage_ms, msg.priority), (2, 10, 3));
    }

    #[test]
    fn unusable_messages_are_permanent_errors() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not json", b"hello".to_vec()),
            ("empty", Vec::new()),
            ("json but not a task", body(json!({"task": 1}))),
            ("bad task id", {
                let mut t = task("hello", 1);
                t["task_id"] = json!("42");
                body(t)
            }),
            ("unknown algorithm", body(task("sort", 1))),
            ("no stages", body(task("hello", 0))),
            ("negative stages", {
                let mut t = task("hello", 1);
                t["stages"] = json!(-1);
                body(t)
            }),
        ];
        for (case, bytes) in cases {
            assert!(parse_message(&bytes).is_err(), "{case} must be rejected");
        }
        assert!(matches!(
            parse_message(&body(task("sort", 1))),
            Err(InvalidMessage::UnknownAlgorithm(a)) if a == "sort"
        ));
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
