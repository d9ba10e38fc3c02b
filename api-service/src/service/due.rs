//! The due sweep: makes SCHEDULED tasks QUEUED and publishes them when due.
//!
//! Every api process runs it. Each round claims, shard by shard, the entries
//! of the due index ([`crate::store`]'s `due`) whose time came, in one script
//! per shard that also holds them for [`HOLD`], so exactly one process fires
//! each entry. For each, in this order:
//!
//! 1. the task enters the outbox (and the QUEUED set);
//! 2. its own atomic step makes it `SCHEDULED → QUEUED`, only if the entry is
//!    its current schedule (a stale entry changes nothing);
//! 3. its message is published (confirmed) and the outbox entry cleared;
//! 4. the due entry is removed.
//!
//! A process that dies after 1 or 2 leaves the entry held: after [`HOLD`]
//! another process claims it again and steps 2–4 follow (or, the task being
//! QUEUED already, the outbox sweep [`super::republish`] publishes it). A
//! process that dies after 3 leaves at most a duplicate message, which
//! workers run once (the claim). Nothing scheduled is lost.
//!
//! A stale entry (its task finished, gone, or scheduled again for another
//! time) is removed; one whose task is not SCHEDULED *yet* (a create or a
//! retry adds the entry just before storing the new schedule) is left for
//! [`STALE_AFTER`] and looked at again after each hold.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use task_model::{TaskMessage, TaskStatus};
use tokio_util::sync::CancellationToken;

use crate::{
    state::AppState,
    store::{Code, DueEntry, StoreError, DUE_SHARDS},
};

/// How often each process looks at every shard: well within the 1 s the
/// contract allows between a task's time and its publish.
pub const PERIOD: Duration = Duration::from_millis(200);
/// How long a claimed entry stays with its claimer before another process
/// may claim it again.
pub const HOLD: Duration = Duration::from_secs(10);
/// An entry whose task is not (yet) on that schedule is removed once it is
/// this much overdue.
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// Entries claimed per script call.
const BATCH: usize = 200;
/// Entries fired at once (each is a few Redis round trips and a confirmed publish).
const CONCURRENCY: usize = 64;

/// Sweeps every [`PERIOD`] until `stop`.
pub async fn run(state: Arc<AppState>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match sweep_once(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(published = n, "published due tasks"),
            Err(e) => tracing::warn!(error = %e, "due sweep failed; retrying next round"),
        }
    }
}

/// One round over every shard (from a random one, so processes spread);
/// a shard that gave a full batch is claimed from again at once. Answers
/// how many tasks it made QUEUED.
///
/// # Errors
/// Redis unavailable.
pub async fn sweep_once(state: &AppState) -> Result<usize, StoreError> {
    let first = fastrand::usize(..DUE_SHARDS);
    let mut fired = 0;
    for i in 0..DUE_SHARDS {
        let shard = (first + i) % DUE_SHARDS;
        loop {
            let (now_ms, entries) = state.store.claim_due(shard, BATCH, HOLD).await?;
            let full = entries.len() == BATCH;
            fired += fire_all(state, now_ms, entries).await?;
            if !full {
                break;
            }
        }
    }
    Ok(fired)
}

async fn fire_all(
    state: &AppState,
    now_ms: i64,
    entries: Vec<DueEntry>,
) -> Result<usize, StoreError> {
    let results: Vec<Result<bool, StoreError>> = futures_util::stream::iter(entries)
        .map(|entry| fire(state, now_ms, entry))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut fired = 0;
    for result in results {
        fired += usize::from(result?);
    }
    Ok(fired)
}

/// Steps 1–4 for one claimed entry; answers whether it made the task QUEUED.
async fn fire(state: &AppState, now_ms: i64, entry: DueEntry) -> Result<bool, StoreError> {
    let id = entry.id;
    state.store.enter_outbox(&id).await?;
    let outcome = state.store.make_due(&entry).await?;
    if outcome.code != Code::Ok {
        // The outbox entry is the outbox sweep's to settle: the task may be
        // QUEUED by a claimer that died before publishing.
        if is_stale(&entry, outcome.code, outcome.snapshot.status, now_ms) {
            tracing::debug!(task_id = %id, status = ?outcome.snapshot.status, "dropping a stale due entry");
            state.store.remove_due(&entry).await?;
        }
        return Ok(false);
    }
    state
        .metrics
        .due_lateness
        .observe((now_ms - entry.due_ms).max(0) as f64 / 1000.0);
    publish(state, &entry).await;
    state.store.remove_due(&entry).await?;
    Ok(true)
}

/// Publishes a task just made QUEUED and clears its outbox entry; a failure
/// leaves it in the outbox, whose sweep publishes it later.
async fn publish(state: &AppState, entry: &DueEntry) {
    let id = entry.id;
    let task = match state.store.load(&id).await {
        Ok(Some(task)) => task.view,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(task_id = %id, error = %e, "could not read a due task; the outbox sweep publishes it");
            return;
        }
    };
    if let Err(e) = state
        .publisher
        .publish_task(&TaskMessage::from(&task), &task.queue)
        .await
    {
        tracing::warn!(task_id = %id, error = %e, "could not publish a due task; the outbox sweep publishes it");
        return;
    }
    tracing::info!(task_id = %id, attempt = task.attempt, due_ms = entry.due_ms, "due task queued");
    let created_ms = task.created_at.timestamp_millis();
    if let Err(e) = state.store.mark_published(&id, created_ms).await {
        tracing::warn!(task_id = %id, error = %e, "a published due task is still in the outbox; its sweep clears it");
    }
}

/// Whether an entry that changed nothing can go: its task is finished or
/// gone, or on another schedule, or the entry is long overdue. A task not
/// on it *yet* (PROCESSING before its retry is recorded, or not stored yet)
/// keeps it for now.
fn is_stale(entry: &DueEntry, code: Code, status: Option<TaskStatus>, now_ms: i64) -> bool {
    let overdue = now_ms - entry.due_ms > STALE_AFTER.as_millis() as i64;
    match (code, status) {
        (_, Some(s)) if s.is_terminal() => true,
        (_, Some(TaskStatus::Scheduled | TaskStatus::Queued)) => true,
        _ => overdue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use task_model::TaskId;

    #[test]
    fn entries_not_yet_on_their_schedule_are_kept_until_long_overdue() {
        let entry = DueEntry {
            id: TaskId::new(),
            due_ms: 1_000_000,
        };
        let soon = 1_000_500;
        let late = 1_000_000 + STALE_AFTER.as_millis() as i64 + 1;
        use TaskStatus::*;
        assert!(is_stale(&entry, Code::Ignored, Some(Completed), soon));
        assert!(is_stale(&entry, Code::Ignored, Some(Scheduled), soon));
        assert!(is_stale(&entry, Code::Ignored, Some(Queued), soon));
        assert!(!is_stale(&entry, Code::Ignored, Some(Processing), soon));
        assert!(!is_stale(&entry, Code::NotFound, None, soon));
        assert!(is_stale(&entry, Code::NotFound, None, late));
        assert!(is_stale(&entry, Code::Ignored, Some(Processing), late));
    }
}
