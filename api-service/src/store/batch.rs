//! Bulk create (`POST /tasks/batch`): the steps of [`Store::create`] and
//! [`Store::mark_published`] for many tasks, each step one pipeline (one
//! round trip) instead of one per task.
//!
//! Every command names one task's keys (one slot) or one cross-task key
//! (a `ZADD`/`ZREM` of many members), and each task's `create` is its own
//! call of the transition script on its own hash tag. The pipelines span
//! slots, so they go through [`Store::query_pipe`] / [`Store::invoke_many`]:
//! one round trip on a single Redis, concurrent commands on a cluster.
//!
//! A batch sent with an `Idempotency-Key` also keeps the ids of its tasks,
//! in request order, under `batch:{<first task id>}`, so a replay answers
//! with all of them.

use deadpool_redis::redis;
use task_model::{NewTask, TaskId, TaskStatus};

use super::{listing, parse_outcome, Code, Set, Store, StoreError};

/// Creates sent per pipeline by [`Store::create_many`].
const CREATES_PER_TRIP: usize = 100;

/// A task [`Store::create_many`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub id: TaskId,
    /// Its creation time (ms, the Redis clock), as [`Store::create`] reports it.
    pub created_ms: i64,
}

impl Store {
    fn batch_key(&self, first: &TaskId) -> String {
        format!("{}batch:{{{first}}}", self.prefix)
    }

    /// Stores every task as [`Store::create`] stores one: first all of them
    /// into the outbox and the QUEUED set (one `ZADD` per shard), then the
    /// transition script's `create` of each, in order. On a single Redis one
    /// round trip per [`CREATES_PER_TRIP`] tasks; on a cluster the creates run
    /// concurrently, each on its task's slot ([`Store::invoke_many`]).
    ///
    /// Like a create, the batch counts once `REDIS_MIN_REPLICAS` replicas
    /// have it ([`Store::replicated_everywhere`]).
    ///
    /// # Errors
    /// Redis refused or dropped a command, or too few replicas acknowledged
    /// the writes: some of the tasks may be stored,
    /// so the caller discards them all ([`Store::discard_many`]). A fresh id
    /// that already existed is [`StoreError::Corrupt`].
    pub async fn create_many(
        &self,
        tasks: &[(TaskId, &NewTask)],
    ) -> Result<Vec<Stored>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let now = chrono::Utc::now().timestamp_millis();
        let members: Vec<(TaskId, i64, String)> = tasks
            .iter()
            .map(|(id, _)| (*id, now, id.to_string()))
            .collect();
        let mut before = redis::pipe();
        self.zadd_sharded(&mut before, Set::Outbox, &members);
        self.zadd_sharded(&mut before, Set::Queued, &members);
        let calls: Vec<_> = tasks
            .iter()
            .map(|(id, task)| self.create_call(id, task))
            .collect();
        let mut conn = self.conn().await?;
        // In pipelines of CREATES_PER_TRIP, each answered well within the
        // connection's response timeout even on a slow, loaded Redis (one
        // pipeline of 1,000 scripts is one request that must all be answered
        // in time; CI saw it time out into a 503).
        let mut raw: Vec<Vec<String>> = Vec::with_capacity(tasks.len());
        for (i, chunk) in calls.chunks(CREATES_PER_TRIP).enumerate() {
            let first = if i == 0 { &before } else { &redis::pipe() };
            raw.extend(self.invoke_many(&mut conn, first, chunk).await?);
        }
        if raw.len() != tasks.len() {
            return Err(StoreError::Corrupt(format!(
                "a batch of {} creates answered {} times",
                tasks.len(),
                raw.len()
            )));
        }
        let mut stored = Vec::with_capacity(tasks.len());
        for ((id, _), answer) in tasks.iter().zip(raw) {
            let outcome = parse_outcome(&answer)?;
            if outcome.code != Code::Ok {
                return Err(StoreError::Corrupt(format!(
                    "a fresh task id {id} answered {:?}",
                    outcome.code
                )));
            }
            stored.push(Stored {
                id: *id,
                created_ms: outcome.snapshot.now_ms,
            });
        }
        self.replicated_everywhere(&mut conn).await?;
        Ok(stored)
    }

    /// Removes every trace of tasks whose batch failed before any of them was
    /// listed (their hashes, events and outbox entries; ids never stored are
    /// no-ops), in one round trip on a single Redis. Members left in the
    /// QUEUED set are dropped by its readers.
    pub async fn discard_many(&self, ids: &[TaskId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for id in ids {
            // One task's keys: one slot.
            pipe.del(&[self.task_key(id), self.events_key(id)]);
        }
        let members: Vec<(TaskId, String)> = ids.iter().map(|id| (*id, id.to_string())).collect();
        self.zrem_sharded(&mut pipe, Set::Outbox, &members);
        let _: () = self.query_pipe(&mut conn, &pipe).await?;
        Ok(())
    }

    /// [`Store::mark_published`] for many tasks: all join the list index, and
    /// only then leave the outbox (one command each, in that order, for the
    /// reason given there).
    pub async fn mark_published_many(&self, tasks: &[Stored]) -> Result<(), StoreError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let listed: Vec<(TaskId, i64, String)> = tasks
            .iter()
            .map(|t| (t.id, 0, listing::index_member(t.created_ms, &t.id)))
            .collect();
        let mut list = redis::pipe();
        self.zadd_sharded(&mut list, Set::Index, &listed);
        let _: Vec<i64> = self.query_pipe(&mut conn, &list).await?;
        let members: Vec<(TaskId, String)> =
            tasks.iter().map(|t| (t.id, t.id.to_string())).collect();
        let mut leave = redis::pipe();
        self.zrem_sharded(&mut leave, Set::Outbox, &members);
        let _: Vec<i64> = self.query_pipe(&mut conn, &leave).await?;
        Ok(())
    }

    /// Keeps a batch's task ids (in order) under its first task for `ttl_secs`.
    pub async fn put_batch_ids(&self, ids: &[TaskId], ttl_secs: u64) -> Result<(), StoreError> {
        let Some(first) = ids.first() else {
            return Ok(());
        };
        let value = ids
            .iter()
            .map(TaskId::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let mut conn = self.conn().await?;
        let _: () = redis::cmd("SET")
            .arg(self.batch_key(first))
            .arg(value)
            .arg("EX")
            .arg(ttl_secs.max(1))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Gives a batch's ids kept with [`Store::put_batch_ids`] `ttl_secs` more.
    pub async fn keep_batch_ids(&self, first: &TaskId, ttl_secs: u64) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("EXPIRE")
            .arg(self.batch_key(first))
            .arg(ttl_secs.max(1))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Forgets a batch's ids (its create failed).
    pub async fn drop_batch_ids(&self, first: &TaskId) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("DEL")
            .arg(self.batch_key(first))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The ids of the batch whose first task is `first`, in request order;
    /// `None` when not kept (or expired).
    pub async fn batch_ids(&self, first: &TaskId) -> Result<Option<Vec<TaskId>>, StoreError> {
        let mut conn = self.conn().await?;
        let value: Option<String> = redis::cmd("GET")
            .arg(self.batch_key(first))
            .query_async(&mut conn)
            .await?;
        value
            .map(|v| {
                v.split(' ')
                    .map(|id| {
                        TaskId::parse(id)
                            .map_err(|_| StoreError::Corrupt(format!("bad id in a batch: {id:?}")))
                    })
                    .collect()
            })
            .transpose()
    }

    /// Each task's status (one round trip on a single Redis; concurrent
    /// `HGET`s on a cluster); `None` for a task that is gone.
    pub async fn statuses(&self, ids: &[TaskId]) -> Result<Vec<Option<TaskStatus>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.task_key(id), "status");
        }
        let raw: Vec<Option<String>> = self.query_pipe(&mut conn, &pipe).await?;
        raw.into_iter()
            .map(|s| {
                s.map(|s| {
                    s.parse::<TaskStatus>()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                })
                .transpose()
            })
            .collect()
    }
}
