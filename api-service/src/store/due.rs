//! The due-task index: when each SCHEDULED task is due.
//!
//! Spread over [`DUE_SHARDS`] sorted sets, a task's shard chosen by its id,
//! each set under a hash tag of its own (`…due:{due-<n>}`), so no one key
//! takes every write and each script below touches one slot (Redis Cluster).
//! A member is `<task id>@<due ms>`, scored by when it is due (epoch ms).
//! Naming the due time in the member lets the task's own step
//! (`transition.lua`'s `due`) tell the entry of its current schedule from a
//! stale one, and lets a retry add a new entry while an old one lingers.
//!
//! Claiming ([`Store::claim_due`]) is one script per shard: it takes up to
//! `limit` members due by the Redis clock and re-scores them `hold` ahead,
//! so exactly one api process holds each until it removes the entry (once
//! the task is QUEUED and in the outbox) or, if it dies, the hold lapses and
//! another process claims it again.

use std::time::Duration;

use deadpool_redis::redis;
use redis::Script;
use task_model::TaskId;

use super::{Store, StoreError};

/// Sorted sets the due index is spread over.
pub const DUE_SHARDS: usize = 16;

/// One entry of the due index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueEntry {
    /// The SCHEDULED task.
    pub id: TaskId,
    /// When it is due (epoch ms), as its schedule said.
    pub due_ms: i64,
}

impl DueEntry {
    fn member(&self) -> String {
        format!("{}@{}", self.id, self.due_ms)
    }

    fn parse(member: &str) -> Option<Self> {
        let (id, due) = member.split_once('@')?;
        Some(Self {
            id: TaskId::parse(id).ok()?,
            due_ms: due.parse().ok()?,
        })
    }
}

/// Takes up to ARGV[1] members due by now and holds them ARGV[2] ms; answers
/// the Redis clock, then the members.
static CLAIM: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local hold = now + tonumber(ARGV[2])
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], hold, m) end
table.insert(due, 1, tostring(now))
return due",
    )
});

/// The shard of task `id`.
pub(super) fn shard_of(id: &TaskId) -> usize {
    (id.as_uuid().as_u128() % DUE_SHARDS as u128) as usize
}

impl Store {
    fn due_key(&self, shard: usize) -> String {
        format!("{}due:{{due-{shard}}}", self.prefix)
    }

    /// Puts `id`, due at `due_ms`, into the index.
    pub async fn add_due(&self, id: &TaskId, due_ms: i64) -> Result<(), StoreError> {
        let entry = DueEntry { id: *id, due_ms };
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("ZADD")
            .arg(self.due_key(shard_of(id)))
            .arg(due_ms)
            .arg(entry.member())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Takes `entry` out of the index.
    pub async fn remove_due(&self, entry: &DueEntry) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("ZREM")
            .arg(self.due_key(shard_of(&entry.id)))
            .arg(entry.member())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Claims up to `limit` entries of `shard` that are due, holding them
    /// for `hold`; answers the Redis clock (ms) and the entries. Members
    /// that are not entries are dropped.
    pub async fn claim_due(
        &self,
        shard: usize,
        limit: usize,
        hold: Duration,
    ) -> Result<(i64, Vec<DueEntry>), StoreError> {
        let mut conn = self.conn().await?;
        let key = self.due_key(shard);
        let raw: Vec<String> = CLAIM
            .key(&key)
            .arg(limit)
            .arg(hold.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        let Some((now, members)) = raw.split_first() else {
            return Err(StoreError::Corrupt("the due claim returned nothing".into()));
        };
        let now = now
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("the due claim returned {now:?}")))?;
        let mut entries = Vec::with_capacity(members.len());
        for member in members {
            match DueEntry::parse(member) {
                Some(entry) => entries.push(entry),
                None => {
                    tracing::warn!(member, "dropping a malformed due-index member");
                    let _: i64 = redis::cmd("ZREM")
                        .arg(&key)
                        .arg(member)
                        .query_async(&mut conn)
                        .await?;
                }
            }
        }
        Ok((now, entries))
    }

    /// Tasks in the due index (all shards), for `/metrics` and tests.
    pub async fn due_count(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for shard in 0..DUE_SHARDS {
            pipe.zcard(self.due_key(shard));
        }
        // Shards are slots of their own.
        let counts: Vec<u64> = self.query_pipe(&mut conn, &pipe).await?;
        Ok(counts.into_iter().sum())
    }

    /// Puts a task whose schedule came due into the outbox, before it is
    /// made QUEUED: from then on it is published even if this process dies.
    pub async fn enter_outbox(&self, id: &TaskId) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("ZADD")
            .arg(self.unpublished_key(id))
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(id.to_string())
            .query_async(&mut conn)
            .await?;
        self.note_queued(&mut conn, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_name_the_task_and_its_due_time() {
        let entry = DueEntry {
            id: TaskId::new(),
            due_ms: 1_700_000_000_123,
        };
        assert_eq!(DueEntry::parse(&entry.member()), Some(entry));
        assert_eq!(DueEntry::parse("nonsense"), None);
        assert!(shard_of(&entry.id) < DUE_SHARDS);
    }
}
