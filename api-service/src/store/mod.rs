//! Redis: where tasks live.
//!
//! One hash per task and its event stream beside it, both under the task's
//! hash tag (`…{<id>}`), so every transition — one call of
//! `transition.lua` — touches one slot and is atomic. Cross-task data (the
//! list index, idempotency keys) lives outside that step: it is rebuildable
//! ([`Store::repair_index`]), and a listed task that expired is skipped.
//!
//! Timestamps are stored as epoch milliseconds (from the Redis clock inside
//! the script) and formatted as RFC 3339 only when read.

mod batch;
mod blobs;
mod conn;
mod due;
mod hub;
mod idempotency;
mod leases;
mod listing;
mod maintenance;
mod queued;
mod queues;
mod record;
mod schedules;
mod shards;

use std::time::Duration;

use deadpool_redis::redis;
use redis::Script;
use task_model::{NewTask, TaskId, TaskStatus};

pub use batch::Stored;
pub use blobs::BlobMeta;
pub use conn::Conn;
use conn::Pools;
pub use due::{DueEntry, DUE_SHARDS};
pub use hub::{EventHub, Note, Watch};
pub use idempotency::{reservation_secs, IdemReservation, IdempotencyKey, RESERVATION_SECS};
pub use leases::{DueLease, LeaseCheck};
pub use listing::{Cursor, Page};
pub use maintenance::{EvictionPolicy, IndexRepair, Persistence};
pub use queued::OldestQueued;
pub use queues::QueueState;
use record::{parse_event, parse_listed_event, parse_task};
pub use record::{TaskRecord, WebhookState};
pub use schedules::{ScheduleRecord, SHARDS as SCHEDULE_SHARDS};
pub use shards::{shard_of, Set, SHARDS};

/// A Redis failure: the api answers 503 and retries nothing itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis refused or dropped the command, or no connection could be had.
    #[error("redis is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Redis answered with something the api did not write.
    #[error("unexpected data in redis: {0}")]
    Corrupt(String),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(e.into())
    }
}

/// What the transition script says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Applied.
    Ok,
    /// Valid but changes nothing (progress that does not move forward).
    Ignored,
    /// No such task (or it expired).
    NotFound,
    /// `create` of an id that exists.
    Exists,
    /// Another worker holds the task under a live lease.
    LeaseHeld,
    /// The task is in a terminal state.
    AlreadyFinished,
    /// The worker does not hold the task.
    NotHolder,
    /// `stages` does not match the task, or `stage` is beyond it.
    BadStages,
    /// `COMPLETED` before every stage's progress was recorded.
    StagesIncomplete,
    /// A claim of a SCHEDULED task (a stale message): it runs when due.
    NotDue,
    /// A takeover past `MAX_TAKEOVERS`: the claim ended the task `FAILED` `worker_lost`.
    WorkerLost,
}

/// The task's state right after a transition, as Redis saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub status: Option<TaskStatus>,
    pub stage: u32,
    pub stages: u32,
    pub cancel_requested: bool,
    pub worker: Option<String>,
    pub started_ms: Option<i64>,
    pub timeout_secs: u64,
    pub lease_until_ms: i64,
    /// The Redis clock at the transition.
    pub now_ms: i64,
    /// The current or last attempt (0 before the first claim).
    pub attempt: u32,
    /// The current attempt's claim (its deadline counts from there).
    pub attempt_started_ms: Option<i64>,
    /// When a SCHEDULED task is due.
    pub scheduled_ms: Option<i64>,
}

/// A transition's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub code: Code,
    pub snapshot: Snapshot,
}

/// A claim's answer: its outcome and, when granted, the task as stored.
#[derive(Debug, Clone)]
pub struct Claim {
    pub outcome: Outcome,
    pub task: Option<TaskRecord>,
}

/// Handle to the task store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pools,
    /// `REDIS_MIN_REPLICAS`: replicas that must have a create, a claim or a
    /// terminal state before it counts ([`Store::replicated`]).
    min_replicas: u32,
    prefix: String,
    script: Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store on `url` with keys under `prefix`. Connects lazily: the api
    /// starts without Redis and connects when it comes.
    ///
    /// # Errors
    /// A malformed URL.
    pub fn new(url: &str, prefix: &str, max_connections: usize) -> anyhow::Result<Self> {
        Ok(Self::on(Pools::single(url, max_connections)?, prefix))
    }

    /// A store on the Redis Cluster that `seeds` (URLs of any of its nodes,
    /// replicas included) belong to, with keys under `prefix`. Connects
    /// lazily, like [`Store::new`].
    ///
    /// # Errors
    /// No seed, or a malformed URL.
    pub fn new_cluster(
        seeds: &[String],
        prefix: &str,
        max_connections: usize,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!seeds.is_empty(), "REDIS_CLUSTER_URLS lists no node");
        Ok(Self::on(Pools::cluster(seeds, max_connections)?, prefix))
    }

    fn on(pool: Pools, prefix: &str) -> Self {
        Self {
            pool,
            min_replicas: 0,
            prefix: prefix.to_owned(),
            script: Script::new(include_str!("transition.lua")),
        }
    }

    /// The same store, requiring `n` replicas to acknowledge each create,
    /// claim and terminal state (`REDIS_MIN_REPLICAS`; 0: no `WAIT`).
    #[must_use]
    pub fn with_min_replicas(mut self, n: u32) -> Self {
        self.min_replicas = n;
        self
    }

    /// A pooled connection: to the one Redis, or to the cluster (each
    /// command routed by its key). Run commands, scripts and one-slot
    /// pipelines on it as on any redis-rs connection; a pipeline across
    /// slots goes through [`Store::query_pipe`].
    pub(crate) async fn conn(&self) -> Result<Conn, StoreError> {
        // A `WAIT` (REDIS_MIN_REPLICAS) blocks its connection: then each
        // request holds one of its own.
        self.pool.get(self.min_replicas == 0).await
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn task_key(&self, id: &TaskId) -> String {
        format!("{}task:{{{id}}}", self.prefix)
    }

    fn events_key(&self, id: &TaskId) -> String {
        format!("{}events:{{{id}}}", self.prefix)
    }

    /// The list index's shard of task `id` ([`shards`]).
    fn index_key(&self, id: &TaskId) -> String {
        self.key_of(Set::Index, id)
    }

    /// The outbox's shard of task `id`: ids of tasks being created whose
    /// message is not confirmed yet, scored by when that started (ms, the
    /// api's clock), which [`crate::service::republish`] sweeps.
    fn unpublished_key(&self, id: &TaskId) -> String {
        self.key_of(Set::Outbox, id)
    }

    /// The pub/sub channel every event is announced on as
    /// `<task id> <seq> <event JSON>` ([`EventHub`]).
    pub fn events_channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// `PING`, for the health checker.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    async fn transition(
        &self,
        id: &TaskId,
        op: &str,
        args: &[String],
    ) -> Result<Outcome, StoreError> {
        let mut conn = self.conn().await?;
        self.transition_on(&mut conn, id, op, args).await
    }

    async fn transition_on(
        &self,
        conn: &mut Conn,
        id: &TaskId,
        op: &str,
        args: &[String],
    ) -> Result<Outcome, StoreError> {
        let raw: Vec<String> = self
            .transition_call(id, op, args)
            .invoke_async(conn)
            .await?;
        let outcome = parse_outcome(&raw)?;
        // The writes whose loss would lose or strand a task.
        let must_keep = matches!(op, "create" | "claim" | "finish" | "cancel");
        if must_keep && outcome.code == Code::Ok {
            self.replicated(conn, &self.task_key(id)).await?;
        }
        Ok(outcome)
    }

    /// The transition script's call of `op` with `args` on task `id`.
    fn transition_call(
        &self,
        id: &TaskId,
        op: &str,
        args: &[String],
    ) -> redis::ScriptInvocation<'_> {
        let mut call = self.script.key(self.task_key(id));
        call.key(self.events_key(id))
            .arg(op)
            .arg(self.events_channel())
            .arg(id.to_string());
        for a in args {
            call.arg(a);
        }
        call
    }

    /// Stores a new QUEUED task (and its first event). It is listed once
    /// [`Store::mark_published`] records its message as confirmed.
    ///
    /// First of all the id goes into the outbox of unpublished tasks, which
    /// it leaves once its message is confirmed ([`Store::mark_published`]) or
    /// the task is discarded: an api that dies between storing a task and
    /// publishing it leaves the id there, and [`crate::service::republish`] publishes
    /// the task instead of leaving it QUEUED forever. It also joins the
    /// QUEUED set ([`Store::oldest_queued`]) until a worker claims it.
    pub async fn create(&self, id: &TaskId, task: &NewTask) -> Result<Outcome, StoreError> {
        // The outbox and QUEUED entries first, then the task: one round
        // trip on a single Redis ([`Store::invoke_many`] keeps that order).
        let mut conn = self.conn().await?;
        let now = chrono::Utc::now().timestamp_millis();
        let member = id.to_string();
        let mut before = redis::pipe();
        before
            .zadd(self.unpublished_key(id), &member, now)
            .zadd(self.queued_key(id), &member, now);
        let call = self.create_call(id, task);
        let raw: Vec<Vec<String>> = self
            .invoke_many(&mut conn, &before, std::slice::from_ref(&call))
            .await?;
        let answer = raw
            .first()
            .ok_or_else(|| StoreError::Corrupt("a create answered nothing".into()))?;
        let outcome = parse_outcome(answer)?;
        if outcome.code == Code::Ok {
            self.replicated(&mut conn, &self.task_key(id)).await?;
        }
        Ok(outcome)
    }

    /// The transition script's `create` of `task` as QUEUED under `id`.
    fn create_call(&self, id: &TaskId, task: &NewTask) -> redis::ScriptInvocation<'_> {
        let mut call = self.script.key(self.task_key(id));
        call.key(self.events_key(id))
            .arg("create")
            .arg(self.events_channel())
            .arg(id.to_string())
            .arg(create_args(task));
        call
    }

    /// Stores a new task that waits until `due_ms` (SCHEDULED), and lists it.
    ///
    /// Its entry goes into the due index first, so a stored SCHEDULED task
    /// always has one: an api that dies before the task is stored leaves an
    /// entry without a task, which the due sweep drops
    /// ([`crate::service::due`]). Nothing is published now.
    pub async fn create_scheduled(
        &self,
        id: &TaskId,
        task: &NewTask,
        due_ms: i64,
    ) -> Result<Outcome, StoreError> {
        self.add_due(id, due_ms).await?;
        let mut conn = self.conn().await?;
        let mut args = vec![TaskStatus::Scheduled.as_str().to_owned()];
        args.extend(task_fields(task));
        args.extend(["scheduled_ms".into(), due_ms.to_string()]);
        let outcome = self.transition_on(&mut conn, id, "create", &args).await?;
        if outcome.code == Code::Ok {
            let _: i64 = redis::cmd("ZADD")
                .arg(self.index_key(id))
                .arg(0)
                .arg(listing::index_member(outcome.snapshot.now_ms, id))
                .query_async(&mut conn)
                .await?;
        }
        Ok(outcome)
    }

    /// Removes every trace of a scheduled task whose create failed.
    pub async fn discard_scheduled(
        &self,
        id: &TaskId,
        created_ms: i64,
        due_ms: i64,
    ) -> Result<(), StoreError> {
        self.discard(id, created_ms).await?;
        self.remove_due(&DueEntry { id: *id, due_ms }).await
    }
}

/// A new task's hash fields, as `create` stores them.
fn task_fields(task: &NewTask) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "algorithm".into(),
        task.algorithm.clone(),
        "stages".into(),
        task.stages.to_string(),
        "stage_ms".into(),
        task.stage_ms.to_string(),
        "timeout_secs".into(),
        task.timeout_secs.to_string(),
        "priority".into(),
        task.priority.to_string(),
        "input".into(),
        task.input.to_string(),
        "queue".into(),
        task.queue.clone(),
    ];
    if let Some(url) = &task.webhook_url {
        args.extend(["webhook_url".into(), url.clone()]);
    }
    args.extend([
        "max_attempts".into(),
        task.max_attempts.to_string(),
        "retry_backoff_ms".into(),
        task.retry_backoff_ms.to_string(),
        "retry_backoff_max_ms".into(),
        task.retry_backoff_max_ms.to_string(),
    ]);
    args
}

impl Store {
    /// Removes every trace of a task that could not be published;
    /// `created_ms` is the creation time [`Store::create`] reported.
    pub async fn discard(&self, id: &TaskId, created_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.del(self.task_key(id))
            .del(self.events_key(id))
            .zrem(self.index_key(id), listing::index_member(created_ms, id))
            .zrem(self.unpublished_key(id), id.to_string());
        let _: () = self.query_pipe(&mut conn, &pipe).await?;
        Ok(())
    }

    /// Its message is confirmed: the task joins the list index (as created
    /// at `created_ms`), then leaves the outbox.
    ///
    /// Two commands in that order, the second only once the first succeeded,
    /// so an id never leaves the outbox unlisted: a Redis out of memory
    /// (`noeviction`) refuses the `ZADD` (`OOM command not allowed`) but
    /// would still take a `ZREM`, and a pipeline of both then lost the task
    /// from the list for good. When the `ZADD` fails the id stays in the
    /// outbox and [`crate::service::republish`] lists it later; when the
    /// `ZREM` fails the sweep repeats both (the `ZADD` is idempotent). The two
    /// keys are not in one slot, so this is not one script: it stays correct
    /// on Redis Cluster. On a single Redis both go as one `MULTI`/`EXEC`
    /// (one round trip): a command Redis refuses when it is queued (`OOM`)
    /// aborts the whole transaction, so the `ZREM` runs only with the `ZADD`.
    pub async fn mark_published(&self, id: &TaskId, created_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        if let Conn::Single(c) = &mut conn {
            let _: (i64, i64) = redis::pipe()
                .atomic()
                .zadd(self.index_key(id), listing::index_member(created_ms, id), 0)
                .zrem(self.unpublished_key(id), id.to_string())
                .query_async(c)
                .await?;
            return Ok(());
        }
        let _: i64 = redis::cmd("ZADD")
            .arg(self.index_key(id))
            .arg(0)
            .arg(listing::index_member(created_ms, id))
            .query_async(&mut conn)
            .await?;
        let _: i64 = redis::cmd("ZREM")
            .arg(self.unpublished_key(id))
            .arg(id.to_string())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Takes a task out of the outbox without listing it (it is gone or no
    /// longer QUEUED).
    pub async fn drop_from_outbox(&self, id: &TaskId) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("ZREM")
            .arg(self.unpublished_key(id))
            .arg(id.to_string())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Up to `limit` ids that entered the outbox before `before_ms` (api clock),
    /// oldest first over every shard. Members that are not task ids are dropped.
    pub async fn unpublished_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<TaskId>, StoreError> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for key in self.shard_keys(Set::Outbox) {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg("-inf")
                .arg(before_ms)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(limit);
        }
        let shards: Vec<Vec<(String, f64)>> = self.query_pipe(&mut conn, &pipe).await?;
        let mut members: Vec<(String, f64)> = shards.into_iter().flatten().collect();
        members.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut ids = Vec::with_capacity(limit.min(members.len()));
        let mut bad = Vec::new();
        for (member, _) in members {
            match TaskId::parse(&member) {
                Ok(id) if ids.len() < limit => ids.push(id),
                Ok(_) => {}
                Err(_) => bad.push(member),
            }
        }
        self.remove_members(&mut conn, Set::Outbox, &bad, |_| None)
            .await?;
        Ok(ids)
    }

    /// A worker's claim (`PROCESSING`): from QUEUED, or a takeover. The
    /// task enters the lease index first ([`Store::track_lease`]), so a
    /// claimed task is always there for [`crate::service::reoffer`]; after
    /// the transition it leaves the QUEUED set, and a granted claim answers
    /// the task as stored (what the worker runs; `None` if it vanished).
    /// Those steps, in that order: one round trip on a single Redis (one
    /// pipeline, not atomic), three on a cluster (other slots).
    ///
    /// A takeover that would be the (`max_takeovers` + 1)-th ends the task
    /// `FAILED` `worker_lost` instead ([`Code::WorkerLost`]; it then
    /// expires after `ttl`).
    pub async fn claim(
        &self,
        id: &TaskId,
        worker: &str,
        lease: Duration,
        max_takeovers: u32,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let args = [
            worker.to_owned(),
            lease.as_millis().to_string(),
            max_takeovers.to_string(),
            ttl.as_secs().to_string(),
        ];
        let mut conn = self.conn().await?;
        let Conn::Single(single) = &mut conn else {
            self.track_lease(id, lease).await?;
            let outcome = self.transition_on(&mut conn, id, "claim", &args).await?;
            let task = match outcome.code {
                Code::Ok => self.claimed(id).await?,
                _ => None,
            };
            return Ok(Claim { outcome, task });
        };
        let scripts = [
            self.track_call(id, lease),
            self.transition_call(id, "claim", &args),
        ];
        let mut pipe = redis::pipe();
        // Each step repeats harmlessly (a NOSCRIPT sends it all again): the
        // index entry moves, the holder's claim renews its lease.
        pipe.invoke_script(&scripts[0])
            .invoke_script(&scripts[1])
            .hgetall(self.task_key(id))
            .zrem(self.queued_key(id), id.to_string());
        let (_, raw, fields, _): (i64, Vec<String>, Vec<(String, String)>, i64) =
            conn::query_loading(single, &pipe, &scripts).await?;
        let outcome = parse_outcome(&raw)?;
        if outcome.code != Code::Ok {
            return Ok(Claim {
                outcome,
                task: None,
            });
        }
        self.replicated(&mut conn, &self.task_key(id)).await?;
        let task = if fields.is_empty() {
            None
        } else {
            Some(parse_task(*id, fields)?)
        };
        Ok(Claim { outcome, task })
    }

    /// A retryable failure of the holder's attempt `attempt`: `SCHEDULED`,
    /// due at `due_ms`, when attempts are left (the caller has put the due
    /// entry in first), else `FAILED`. The error joins `errors` either way;
    /// `detail` is the retry's event detail.
    pub async fn retry(
        &self,
        id: &TaskId,
        worker: &str,
        (attempt, due_ms): (u32, i64),
        error: &str,
        detail: &str,
        ttl: Duration,
    ) -> Result<Outcome, StoreError> {
        let args = [
            worker.to_owned(),
            due_ms.to_string(),
            attempt.to_string(),
            error.to_owned(),
            ttl.as_secs().to_string(),
            detail.to_owned(),
        ];
        self.transition(id, "retry", &args).await
    }

    /// The due sweep's step on a claimed entry: `SCHEDULED → QUEUED` when
    /// the entry is the task's current schedule ([`Code::Ok`]), else
    /// [`Code::Ignored`] (a stale entry).
    pub async fn make_due(&self, entry: &DueEntry) -> Result<Outcome, StoreError> {
        self.transition(&entry.id, "due", &[entry.due_ms.to_string()])
            .await
    }

    /// Stage progress from the holder; renews its lease. `within`: the
    /// task's progress percent within stage `stage` (already checked to lie
    /// within it), kept when it moves forward.
    pub async fn progress(
        &self,
        id: &TaskId,
        worker: &str,
        stage: u32,
        stages: u32,
        within: Option<u8>,
        lease: Duration,
    ) -> Result<Outcome, StoreError> {
        let args = [
            worker.to_owned(),
            stage.to_string(),
            stages.to_string(),
            lease.as_millis().to_string(),
            within.map(|p| p.to_string()).unwrap_or_default(),
        ];
        self.transition(id, "progress", &args).await
    }

    /// A terminal state from the holder, after `stage` stages (`None`: the
    /// stored stage; one past it is recorded first, with its progress
    /// event). The task and its events then expire after `ttl`.
    pub async fn finish(
        &self,
        id: &TaskId,
        (worker, stage): (&str, Option<u32>),
        status: TaskStatus,
        result: Option<&serde_json::Value>,
        error: Option<&str>,
        ttl: Duration,
    ) -> Result<Outcome, StoreError> {
        let args = [
            worker.to_owned(),
            status.as_str().to_owned(),
            ttl.as_secs().to_string(),
            result.map(|r| r.to_string()).unwrap_or_default(),
            error.unwrap_or_default().to_owned(),
            stage.map(|s| s.to_string()).unwrap_or_default(),
        ];
        self.transition(id, "finish", &args).await
    }

    /// A user's cancel: QUEUED → CANCELLED, PROCESSING → CANCELLING.
    pub async fn cancel(&self, id: &TaskId, ttl: Duration) -> Result<Outcome, StoreError> {
        self.transition(id, "cancel", &[ttl.as_secs().to_string()])
            .await
    }

    /// A task, or `None` when unknown or expired.
    pub async fn load(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.task_key(id))
            .query_async(&mut conn)
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_task(*id, fields).map(Some)
    }

    /// The task's events after `after_seq`, oldest first, at most `count`.
    pub async fn events(
        &self,
        id: &TaskId,
        after_seq: u64,
        count: usize,
    ) -> Result<Vec<task_model::EventView>, StoreError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        // Event n is at index n - 1: those after `after_seq` start at index `after_seq`.
        let first = after_seq.min(i64::MAX as u64) as i64;
        let last = first.saturating_add(count as i64 - 1);
        let listed: Result<Vec<String>, _> = redis::cmd("LRANGE")
            .arg(self.events_key(id))
            .arg(first)
            .arg(last)
            .query_async(&mut conn)
            .await;
        match listed {
            Ok(raw) => (first..)
                .zip(raw)
                .map(|(index, json)| parse_listed_event(index as u64 + 1, &json))
                .collect(),
            // A task stored by a version that kept its events in a stream.
            Err(e) if e.code() == Some("WRONGTYPE") => {
                let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                    .arg(self.events_key(id))
                    .arg(format!("(0-{after_seq}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn)
                    .await?;
                raw.into_iter()
                    .map(|(entry_id, fields)| parse_event(&entry_id, &fields))
                    .collect()
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Records a webhook delivery attempt's outcome, if the task still
    /// exists; answers whether it did. A task that expired while its webhook
    /// was being retried must stay gone: a plain HSET would bring it back as
    /// a hash of only these fields, without a TTL, which reads as corrupt.
    pub async fn record_webhook(
        &self,
        id: &TaskId,
        state: WebhookState,
        attempts: u32,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        static SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
            Script::new(
                r"if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'webhook_state', ARGV[1], 'webhook_attempts', ARGV[2])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'webhook_error')
else
  redis.call('HSET', KEYS[1], 'webhook_error', ARGV[3])
end
return 1",
            )
        });
        let mut conn = self.conn().await?;
        let recorded: i64 = SCRIPT
            .key(self.task_key(id))
            .arg(state.as_str())
            .arg(attempts)
            .arg(error.unwrap_or(""))
            .invoke_async(&mut conn)
            .await?;
        Ok(recorded == 1)
    }
}

/// The arguments of the transition script's `create` for `task`: the
/// fields of its hash (also [`Store::create_many`]'s).
/// The transition script's `create` arguments for a task stored QUEUED.
fn create_args(task: &NewTask) -> Vec<String> {
    let mut args = vec![TaskStatus::Queued.as_str().to_owned()];
    args.extend(task_fields(task));
    args
}

fn parse_outcome(raw: &[String]) -> Result<Outcome, StoreError> {
    let [code, status, stage, stages, cancel, worker, started, timeout, lease, now, attempt, attempt_started, scheduled] =
        raw
    else {
        return Err(StoreError::Corrupt(format!(
            "transition returned {} fields",
            raw.len()
        )));
    };
    let code = match code.as_str() {
        "ok" => Code::Ok,
        "ignored" => Code::Ignored,
        "not_found" => Code::NotFound,
        "exists" => Code::Exists,
        "lease_held" => Code::LeaseHeld,
        "already_finished" => Code::AlreadyFinished,
        "not_holder" => Code::NotHolder,
        "bad_stages" => Code::BadStages,
        "stages_incomplete" => Code::StagesIncomplete,
        "not_due" => Code::NotDue,
        "worker_lost" => Code::WorkerLost,
        other => {
            return Err(StoreError::Corrupt(format!(
                "unknown transition code {other:?}"
            )))
        }
    };
    let num = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| StoreError::Corrupt(format!("not a number: {s:?}")))
    };
    let optional = |s: &str| {
        if s.is_empty() {
            Ok(None)
        } else {
            num(s).map(Some)
        }
    };
    let status = if status.is_empty() {
        None
    } else {
        Some(
            status
                .parse::<TaskStatus>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        )
    };
    Ok(Outcome {
        code,
        snapshot: Snapshot {
            status,
            stage: num(stage)? as u32,
            stages: num(stages)? as u32,
            cancel_requested: cancel == "1",
            worker: (!worker.is_empty()).then(|| worker.clone()),
            started_ms: if started.is_empty() {
                None
            } else {
                Some(num(started)?)
            },
            timeout_secs: num(timeout)? as u64,
            lease_until_ms: num(lease)?,
            now_ms: num(now)?,
            attempt: num(attempt)? as u32,
            attempt_started_ms: optional(attempt_started)?,
            scheduled_ms: optional(scheduled)?,
        },
    })
}
