//! The QUEUED set of `tasks.algo`: every task not yet claimed, scored by when
//! it was created (ms, the api's clock), so the age of the oldest QUEUED task
//! is one `ZRANGE` per shard away ([`Store::oldest_queued`]; the set is
//! spread over [`super::SHARDS`] keys, [`super::shards`]).
//!
//! Like the list index it lives outside the transition step (another slot),
//! so it may hold members that are no longer QUEUED: a claim takes its task
//! out ([`Store::claim`]); a task cancelled while queued, or one whose
//! create failed, is dropped by the next reader that meets it. It is never
//! missing a QUEUED task: the id goes in before the task is stored.

use deadpool_redis::redis;
use task_model::{TaskId, TaskStatus};

use super::{parse_task, Set, Store, StoreError, TaskRecord};

/// Members read per round trip when looking for the oldest QUEUED task.
const BATCH: usize = 50;
/// Most rounds one look takes; stale members past that wait for the next.
const MAX_ROUNDS: usize = 20;

/// The oldest task still QUEUED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldestQueued {
    pub task_id: TaskId,
    /// When it was created (ms, the api's clock).
    pub created_ms: i64,
}

impl Store {
    /// The QUEUED set's shard of task `id` ([`super::shards`]).
    pub(super) fn queued_key(&self, id: &TaskId) -> String {
        self.key_of(Set::Queued, id)
    }

    /// Puts a task about to be created into the QUEUED set.
    pub(super) async fn note_queued(
        &self,
        conn: &mut super::Conn,
        id: &TaskId,
    ) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("ZADD")
            .arg(self.queued_key(id))
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(id.to_string())
            .query_async(conn)
            .await?;
        Ok(())
    }

    /// After a successful claim on a cluster ([`Store::claim`]): the task as
    /// stored (what the worker runs), and out of the QUEUED set, concurrently.
    /// `None` when it is gone.
    pub(super) async fn claimed(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.hgetall(self.task_key(id))
            .zrem(self.queued_key(id), id.to_string());
        let (fields, _): (Vec<(String, String)>, i64) = self.query_pipe(&mut conn, &pipe).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_task(*id, fields).map(Some)
    }

    /// The oldest task still QUEUED, if any: the oldest of each shard's
    /// oldest. Members of the set that are no longer QUEUED (or no task id)
    /// are dropped on the way.
    pub async fn oldest_queued(&self) -> Result<Option<OldestQueued>, StoreError> {
        let mut conn = self.conn().await?;
        let mut oldest: Option<OldestQueued> = None;
        for key in self.shard_keys(Set::Queued) {
            if let Some(found) = self.oldest_in(&mut conn, &key).await? {
                if oldest.is_none_or(|o| found.created_ms < o.created_ms) {
                    oldest = Some(found);
                }
            }
        }
        Ok(oldest)
    }

    /// The oldest task still QUEUED in the shard `key`.
    async fn oldest_in(
        &self,
        conn: &mut super::Conn,
        key: &str,
    ) -> Result<Option<OldestQueued>, StoreError> {
        for _ in 0..MAX_ROUNDS {
            let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(BATCH - 1)
                .arg("WITHSCORES")
                .query_async(conn)
                .await?;
            if members.is_empty() {
                return Ok(None);
            }
            let ids: Vec<Option<TaskId>> =
                members.iter().map(|(m, _)| TaskId::parse(m).ok()).collect();
            let mut pipe = redis::pipe();
            for id in ids.iter().flatten() {
                pipe.hget(self.task_key(id), "status");
            }
            let statuses: Vec<Option<String>> = if ids.iter().any(Option::is_some) {
                self.query_pipe(conn, &pipe).await?
            } else {
                Vec::new()
            };
            let (oldest, stale) = first_queued(&members, &ids, statuses);
            drop_stale(conn, key, &stale).await?;
            if oldest.is_some() {
                return Ok(oldest);
            }
        }
        tracing::warn!(
            shard = key,
            dropped = MAX_ROUNDS * BATCH,
            "a shard of the QUEUED set still starts with tasks no longer queued; the next look goes on"
        );
        Ok(None)
    }
}

async fn drop_stale(conn: &mut super::Conn, key: &str, stale: &[String]) -> Result<(), StoreError> {
    if !stale.is_empty() {
        let _: i64 = redis::cmd("ZREM")
            .arg(key)
            .arg(stale)
            .query_async(conn)
            .await?;
    }
    Ok(())
}

/// The first member of a batch whose task is still QUEUED, and the members
/// before it that are stale (no task id, or a task no longer QUEUED).
/// `statuses` holds one status per parsed id, in order.
fn first_queued(
    members: &[(String, f64)],
    ids: &[Option<TaskId>],
    statuses: Vec<Option<String>>,
) -> (Option<OldestQueued>, Vec<String>) {
    let mut statuses = statuses.into_iter();
    let mut stale = Vec::new();
    for ((member, score), id) in members.iter().zip(ids) {
        let status = id.and_then(|_| statuses.next().flatten());
        match (id, status) {
            (Some(id), Some(s)) if s == TaskStatus::Queued.as_str() => {
                let oldest = OldestQueued {
                    task_id: *id,
                    created_ms: *score as i64,
                };
                return (Some(oldest), stale);
            }
            _ => stale.push(member.clone()),
        }
    }
    (None, stale)
}
