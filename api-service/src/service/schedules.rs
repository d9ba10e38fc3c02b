//! Periodic tasks: `/schedules`, and the ticker that fires them.
//!
//! A schedule is a cron expression (5 fields, UTC, parsed by `croner`) and a
//! create body. Every api process runs [`run`]: each tick (`SCHEDULE_TICK_MS`,
//! 1 s by default) it reads the due entries of the sharded due index and,
//! for each, takes the due time atomically on the schedule's own hash
//! ([`crate::store::Store::take_schedule`]), so one process fires it. Firing is
//! a normal create ([`super::create::create`]) whose `Idempotency-Key` is
//! `schedule:<id>:<due time>`, then the compare-and-set that moves the
//! schedule on to its next due time after now. So a due time makes exactly
//! one task however many api processes run: a process that dies between the
//! create and the move leaves its take to lapse ([`TAKE_LEASE`]), and the
//! next taker's create of the same key is a replay of the same task.
//!
//! Due times missed while no api ran fire once: the stored due time (the
//! first one missed) fires, and the schedule moves on to the first due time
//! after now, skipping the rest.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, SecondsFormat, Utc};
use croner::{
    parser::{CronParser, Seconds, Year},
    Cron,
};
use task_model::{CreateScheduleRequest, ScheduleCreated, ScheduleList, ScheduleView, TaskId};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    error::ApiError,
    service::create::{self, Idempotency},
    state::AppState,
    store::{ScheduleRecord, StoreError, SCHEDULE_SHARDS},
};

/// How long a take of a due time holds before another process may fire it.
pub const TAKE_LEASE: Duration = Duration::from_secs(30);
/// Due entries read per shard and tick.
const BATCH: usize = 100;

/// Parses a cron expression: 5 fields (or an alias such as `@hourly`); with
/// `seconds` (the test-only `SCHEDULE_SECONDS`) also 6, seconds first.
///
/// # Errors
/// 400 naming `cron` for anything else, or an expression that never fires.
pub fn parse_cron(expr: &str, seconds: bool) -> Result<Cron, ApiError> {
    let parser = CronParser::builder()
        .seconds(if seconds {
            Seconds::Optional
        } else {
            Seconds::Disallowed
        })
        .year(Year::Disallowed)
        .build();
    let bad =
        |why: String| ApiError::invalid("cron", format!("not a 5-field cron expression ({why})"));
    let cron = parser.parse(expr).map_err(|e| bad(e.to_string()))?;
    next_after(&cron, Utc::now()).map_err(|_| bad("it never fires".into()))?;
    Ok(cron)
}

/// The first due time of `cron` strictly after `t`.
fn next_after(cron: &Cron, t: DateTime<Utc>) -> Result<DateTime<Utc>, croner::errors::CronError> {
    cron.find_next_occurrence(&t, false)
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn view(s: ScheduleRecord) -> ScheduleView {
    ScheduleView {
        schedule_id: s.id,
        name: s.name,
        cron: s.cron,
        task: s.task,
        created_at: time(s.created_ms),
        next_run_at: time(s.next_ms),
        last_run_at: s.last_run_ms.map(time),
        last_task_id: s.last_task_id,
    }
}

/// `POST /schedules`: checks the cron expression and the task (as a create
/// would, its fields named `task.…`), stores the schedule.
///
/// # Errors
/// 400 naming the field, 503 when Redis is unavailable.
pub async fn create(
    state: &AppState,
    request: CreateScheduleRequest,
    scope: &str,
) -> Result<ScheduleCreated, ApiError> {
    let cron = parse_cron(&request.cron, state.schedule_seconds)?;
    create::validate(state, request.task.clone()).map_err(|e| match e {
        ApiError::Invalid {
            code,
            field,
            message,
        } => ApiError::Invalid {
            code,
            field: format!("task.{field}"),
            message,
        },
        e => e,
    })?;
    let now = Utc::now();
    let next = next_after(&cron, now).map_err(|e| ApiError::invalid("cron", e.to_string()))?;
    let record = ScheduleRecord {
        id: Uuid::new_v4(),
        name: request.name,
        cron: request.cron,
        task: request.task,
        scope: scope.to_owned(),
        created_ms: now.timestamp_millis(),
        next_ms: next.timestamp_millis(),
        last_run_ms: None,
        last_task_id: None,
    };
    state.store.put_schedule(&record).await?;
    tracing::info!(schedule_id = %record.id, cron = %record.cron, next_run_at = %next, "schedule created");
    Ok(ScheduleCreated {
        schedule_id: record.id,
        next_run_at: next,
    })
}

/// `GET /schedules/{id}`.
///
/// # Errors
/// 404 unknown, 503 Redis unavailable.
pub async fn get(state: &AppState, id: Uuid) -> Result<ScheduleView, ApiError> {
    match state.store.schedule(&id).await? {
        Some(s) => Ok(view(s)),
        None => Err(not_found(id)),
    }
}

/// `GET /schedules`: every schedule, newest first.
///
/// # Errors
/// 503 Redis unavailable.
pub async fn list(state: &AppState) -> Result<ScheduleList, ApiError> {
    let mut schedules = state.store.schedules().await?;
    schedules.sort_by_key(|s| std::cmp::Reverse(s.created_ms));
    Ok(ScheduleList {
        schedules: schedules.into_iter().map(view).collect(),
    })
}

/// `DELETE /schedules/{id}`: no due time fires after it (one being fired
/// right now may still make its task).
///
/// # Errors
/// 404 unknown, 503 Redis unavailable.
pub async fn delete(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    if state.store.delete_schedule(&id).await? {
        tracing::info!(schedule_id = %id, "schedule deleted");
        Ok(())
    } else {
        Err(not_found(id))
    }
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NoSuch(format!("no schedule with id {id}"))
}

/// Fires due schedules every `tick` until `stop`.
pub async fn run(state: Arc<AppState>, tick: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match tick_once(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(fired = n, "fired due schedules"),
            Err(e) => tracing::debug!(error = %e, "schedule tick failed; retrying next tick"),
        }
    }
}

/// One tick: looks at every shard's due entries (starting at a random one,
/// so processes spread out) and fires those this process takes. Returns how
/// many it fired.
///
/// # Errors
/// Redis is unavailable.
pub async fn tick_once(state: &AppState) -> Result<usize, StoreError> {
    let start = rand_shard();
    let mut fired = 0;
    for k in 0..SCHEDULE_SHARDS {
        let shard = (start + k) % SCHEDULE_SHARDS;
        let now = Utc::now().timestamp_millis();
        for id in state.store.due_schedules(shard, now, BATCH).await? {
            if consider(state, id, now).await? {
                fired += 1;
            }
        }
    }
    Ok(fired)
}

fn rand_shard() -> usize {
    (Uuid::new_v4().as_u128() % SCHEDULE_SHARDS as u128) as usize
}

/// A due-index entry: fixes the index where it lags the hash, or takes and
/// fires the due time. Answers whether it fired.
async fn consider(state: &AppState, id: Uuid, now: i64) -> Result<bool, StoreError> {
    let record = match state.store.schedule(&id).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            state.store.reindex_schedule(&id, None).await?;
            return Ok(false);
        }
        Err(e @ StoreError::Unavailable(_)) => return Err(e),
        Err(e) => {
            tracing::error!(schedule_id = %id, error = %e, "unreadable schedule; dropping it from the due index");
            state.store.reindex_schedule(&id, None).await?;
            return Ok(false);
        }
    };
    if record.next_ms > now {
        state
            .store
            .reindex_schedule(&id, Some(record.next_ms))
            .await?;
        return Ok(false);
    }
    let lease = TAKE_LEASE.as_millis() as i64;
    if !state
        .store
        .take_schedule(&id, record.next_ms, now, lease)
        .await?
    {
        return Ok(false);
    }
    let span =
        tracing::info_span!("fire_schedule", schedule_id = %id, task_id = tracing::field::Empty);
    fire(state, record, now).instrument(span).await?;
    Ok(true)
}

/// Creates the task of due time `record.next_ms` and moves the schedule on.
async fn fire(state: &AppState, record: ScheduleRecord, now: i64) -> Result<(), StoreError> {
    let due = record.next_ms;
    let due_at = time(due);
    let key = format!(
        "schedule:{}:{}",
        record.id,
        due_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let idempotency = Idempotency {
        scope: &record.scope,
        key: &key,
    };
    let created = create::create(state, record.task.clone(), Some(idempotency)).await;
    let fired = match created {
        Ok(created) => Some(created.task.task_id),
        Err(e) if is_client_error(&e) => {
            // The body no longer passes (e.g. its input blob expired): this
            // due time makes no task, the next ones try again.
            tracing::error!(schedule_id = %record.id, due = %due_at, error = %e, "a due time of the schedule could not create its task");
            None
        }
        Err(e) => {
            tracing::warn!(schedule_id = %record.id, due = %due_at, error = ?e, "cannot create a scheduled task now; next tick");
            state.store.release_schedule(&record.id, due).await?;
            return Ok(());
        }
    };
    advance(state, &record, due, now, fired).await
}

fn is_client_error(e: &ApiError) -> bool {
    use actix_web::ResponseError;
    e.status_code().is_client_error()
}

/// Moves the schedule from `due` to its first due time after now (so missed
/// ones are skipped) and re-scores its index entry.
async fn advance(
    state: &AppState,
    record: &ScheduleRecord,
    due: i64,
    now: i64,
    fired: Option<TaskId>,
) -> Result<(), StoreError> {
    let after = time(now.max(due));
    let next = parse_cron(&record.cron, true)
        .ok()
        .and_then(|cron| next_after(&cron, after).ok());
    let Some(next) = next else {
        tracing::error!(schedule_id = %record.id, cron = %record.cron, "the schedule has no next due time; it stops");
        return state.store.reindex_schedule(&record.id, None).await;
    };
    let next = next.timestamp_millis();
    if state
        .store
        .advance_schedule(&record.id, due, next, fired)
        .await?
    {
        if let Some(task) = fired {
            tracing::info!(schedule_id = %record.id, task_id = %task, due = %time(due), "schedule fired");
        }
        state.store.reindex_schedule(&record.id, Some(next)).await?;
    }
    Ok(())
}
