//! The per-task reporter: progress callbacks in order, lease heartbeats,
//! and this worker's view of its lease.

use std::time::Duration;

use task_model::TaskId;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    callbacks::{Answer, ApiClient},
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

/// What the reporter of one task works with.
#[derive(Debug)]
pub(crate) struct Reporting {
    pub(crate) api: ApiClient,
    pub(crate) task_id: TaskId,
    pub(crate) stages: u32,
    /// The task's flag, raised on a cancel request or a lost task.
    pub(crate) flag: StopFlag,
    /// Fires when shutdown's grace period is over: stop retrying.
    pub(crate) stop: CancellationToken,
    /// Until when the lease is surely held, after each renewal: the stage
    /// loop starts no stage past it (see [`crate::task_run`]).
    pub(crate) held_until: watch::Sender<Instant>,
    /// The same, as the limit on a running stage's line.
    pub(crate) valid_until: super::ffi::ValidUntil,
}

/// Sends a progress callback for each completed stage received on `stages_rx`,
/// in order, and a heartbeat whenever a third of the lease passed without one.
/// Raises the flag on a cancel request (`Cancel`), a lost task (`LostLease`),
/// or a lease that could not be renewed in time (`LostLease`, verdict `Lapsed`).
pub(crate) async fn reporter(
    task: Reporting,
    mut last: u32,
    mut stages_rx: mpsc::UnboundedReceiver<u32>,
    mut lease: Lease,
) -> Verdict {
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
        let overdue = Instant::now() >= lease.safe_until;
        if overdue {
            // This process was frozen (or the runtime starved) past the
            // lease: the task may be another worker's by now. Stop the
            // running stage at once, then ask whether it is.
            task.flag.raise(StopReason::LostLease);
        }
        let answer = tokio::select! {
            answer = task.api.report_progress(task.task_id, stage, task.stages, &task.stop) => match answer {
                Ok(answer) => answer,
                Err(_abandoned) => return Verdict::Abandoned,
            },
            () = tokio::time::sleep_until(lease.safe_until), if !overdue => return lapsed(&task.flag, &lease),
            () = tokio::time::sleep(lease.length), if overdue => return lapsed(&task.flag, &lease),
        };
        if let Some(verdict) = on_answer(&task.flag, &mut lease, answer, stage, heartbeat) {
            return verdict;
        }
        if overdue {
            tracing::warn!(
                lease_ms = lease.length.as_millis() as u64,
                "the lease had run out (was this process frozen?); still ours, but its stage was stopped: requeueing to resume it"
            );
            return Verdict::Lapsed;
        }
        task.valid_until.set(lease.safe_until);
        task.held_until.send_replace(lease.safe_until);
        next_beat = Instant::now() + lease.heartbeat();
    }
}

/// The lease may have run out: another worker may take the task over.
fn lapsed(flag: &StopFlag, lease: &Lease) -> Verdict {
    flag.raise(StopReason::LostLease);
    tracing::warn!(
        lease_ms = lease.length.as_millis() as u64,
        "could not renew the lease in time; another worker may take the task over, so stopping it here and requeueing"
    );
    Verdict::Lapsed
}

/// Acts on the answer to a progress report; `Some` when reporting is over.
fn on_answer(
    flag: &StopFlag,
    lease: &mut Lease,
    answer: Answer,
    stage: u32,
    heartbeat: bool,
) -> Option<Verdict> {
    match answer {
        Answer::Accepted(a) => {
            lease.renewed(Instant::now(), a.lease_remaining_ms);
            if a.cancel_requested && flag.raise(StopReason::Cancel) {
                tracing::info!("cancel requested (seen in a progress answer); interrupting");
            }
            None
        }
        Answer::Conflict(conflict, a) => {
            flag.raise(StopReason::LostLease);
            tracing::warn!(
                ?conflict,
                status = %a.status,
                holder = a.worker.as_deref().unwrap_or(""),
                "the task is no longer ours; stopping without reporting"
            );
            Some(Verdict::Lost)
        }
        Answer::NotFound(message) => {
            flag.raise(StopReason::LostLease);
            tracing::warn!(api.message = %message, "the api no longer knows this task; stopping");
            Some(Verdict::Gone)
        }
        Answer::Rejected(status, message) => {
            tracing::error!(
                http.status = status.as_u16(),
                api.message = %message,
                stage,
                heartbeat,
                "the api rejected a progress report as malformed"
            );
            None
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
}
