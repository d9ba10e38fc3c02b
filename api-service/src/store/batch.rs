//! Bulk create (`POST /tasks/batch`): the steps of [`Store::create`] and
//! [`Store::mark_published`] for many tasks, each step one pipeline (one
//! round trip) instead of one per task.
//!
//! Every command still names one task's keys (or one cross-task structure
//! member), and each task's `create` is its own call of the transition
//! script on its own hash tag, so a pipeline is no multi-slot operation: on
//! Redis Cluster it splits by node like any other.
//!
//! A batch sent with an `Idempotency-Key` also keeps the ids of its tasks,
//! in request order, under `batch:{<first task id>}`, so a replay answers
//! with all of them.

use deadpool_redis::redis;
use task_model::{NewTask, TaskId, TaskStatus};

use super::{create_args, listing, parse_outcome, Code, Store, StoreError};

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

    /// Stores every task as [`Store::create`] stores one (outbox, QUEUED set,
    /// the transition script's `create`), in one pipeline, in order.
    ///
    /// # Errors
    /// Redis refused or dropped the pipeline: some of the tasks may be
    /// stored, so the caller discards them all ([`Store::discard_many`]).
    /// A fresh id that already existed is [`StoreError::Corrupt`].
    pub async fn create_many(
        &self,
        tasks: &[(TaskId, &NewTask)],
    ) -> Result<Vec<Stored>, StoreError> {
        let mut conn = self.conn().await?;
        // EVALSHA in a pipeline cannot fall back to EVAL: load the script first.
        let _: String = self.script.load_async(&mut conn).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut pipe = redis::pipe();
        for (id, task) in tasks {
            let member = id.to_string();
            pipe.zadd(self.unpublished_key(), &member, now).ignore();
            pipe.zadd(self.queued_key(), &member, now).ignore();
            let mut call = self.script.key(self.task_key(id));
            call.key(self.events_key(id))
                .arg("create")
                .arg(self.events_channel())
                .arg(&member)
                .arg(create_args(task));
            pipe.invoke_script(&call);
        }
        let raw: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
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
        Ok(stored)
    }

    /// Removes every trace of tasks whose batch failed before any of them was
    /// listed (their hashes, events and outbox entries; ids never stored are
    /// no-ops). Members left in the QUEUED set are dropped by its readers.
    pub async fn discard_many(&self, ids: &[TaskId]) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.del(self.task_key(id)).ignore();
            pipe.del(self.events_key(id)).ignore();
            pipe.zrem(self.unpublished_key(), id.to_string()).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// [`Store::mark_published`] for many tasks: all join the list index, and
    /// only then leave the outbox (two pipelines, for the reason given there).
    pub async fn mark_published_many(&self, tasks: &[Stored]) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let mut listed = redis::pipe();
        for t in tasks {
            listed
                .zadd(
                    self.index_key(),
                    listing::index_member(t.created_ms, &t.id),
                    0,
                )
                .ignore();
        }
        let _: () = listed.query_async(&mut conn).await?;
        let mut out = redis::pipe();
        for t in tasks {
            out.zrem(self.unpublished_key(), t.id.to_string()).ignore();
        }
        let _: () = out.query_async(&mut conn).await?;
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

    /// Each task's status, in one round trip; `None` for a task that is gone.
    pub async fn statuses(&self, ids: &[TaskId]) -> Result<Vec<Option<TaskStatus>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.task_key(id), "status");
        }
        let raw: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
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
