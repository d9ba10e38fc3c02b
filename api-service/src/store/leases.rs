//! The lease index: which running tasks may have a lapsed lease, for
//! [`crate::service::reoffer`].
//!
//! A sorted set (`tasks:leases`, in [`super::SHARDS`] shards) holds the id of every claimed task, scored
//! by when its lease may run out (ms, the Redis clock). It lives outside the
//! task's slot, so it is a hint, never the truth: the truth is the task's
//! hash (`status`, `lease_until_ms`), which the sweep reads in the task's own
//! atomic step before it acts.
//!
//! - A claim adds the id (score: now + the lease) *before* its transition, so
//!   every claimed task is in the index, whatever fails after; a claim that
//!   then fails leaves an entry the sweep drops.
//! - Progress renews the lease in the hash only. An entry whose score passed
//!   is looked at again: if the hash's lease still runs, the score moves to
//!   it; if the task finished or is gone, the entry goes. So the index
//!   repairs itself and costs one look per running task per lease.
//! - The sweep changes an entry only if its score has not moved since it
//!   read it (a claim meanwhile re-scored it), so it never drops a fresh one.
//! - Re-offering is marked in the task's hash (`reoffered_ms`), atomically
//!   with the check that the lease lapsed: several api processes sweeping
//!   at once re-offer a task once per lease (and again only after
//!   `again_ms`, should the re-offered message be lost).

use std::{sync::LazyLock, time::Duration};

use deadpool_redis::redis;
use redis::Script;
use task_model::TaskId;

use super::{Set, Store, StoreError};

/// A task the lease sweep should look at ([`Store::due_leases`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueLease {
    pub id: TaskId,
    /// The Redis clock (ms) of its shard when the sweep read it.
    pub seen_ms: i64,
}

/// What the task's hash says about a lease the index found due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseCheck {
    /// Finished, gone, or not claimed (QUEUED): the entry can go.
    Untracked,
    /// The lease still runs (renewed by progress), or the task was re-offered
    /// lately: look again at `next_ms` (Redis clock).
    Later { next_ms: i64 },
    /// The lease lapsed and the task was just marked re-offered (at
    /// `marked_ms`): publish its message again.
    Reoffer {
        marked_ms: i64,
        holder: Option<String>,
    },
}

impl LeaseCheck {
    fn holder(raw: &str) -> Option<String> {
        (!raw.is_empty()).then(|| raw.to_owned())
    }
}

/// Adds (or moves) the id with score now + ARGV[2] ms.
static TRACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return now",
    )
});

/// Up to ARGV[1] ids whose score passed; returns {now, id…}.
static DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
table.insert(ids, 1, tostring(now))
return ids",
    )
});

/// Moves the entry ARGV[1] to score ARGV[3] (or removes it when ARGV[3] is
/// empty), only if its score is still at most ARGV[2].
static RETRACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[1])
end
return 1",
    )
});

/// On the task's hash: {verdict, next_ms, holder}. Marks the task
/// re-offered when its lease lapsed and it was not re-offered since the
/// lease was granted (or not for ARGV[1] ms).
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_until_ms', 'reoffered_ms', 'worker')
local status = f[1]
if status ~= 'PROCESSING' and status ~= 'CANCELLING' then return { 'untracked', '0', '' } end
local until_ms = tonumber(f[2] or '0')
local reoffered = tonumber(f[3] or '0')
local holder = f[4] or ''
if until_ms > now then return { 'later', tostring(until_ms), holder } end
local again = reoffered + tonumber(ARGV[1])
if reoffered >= until_ms and now < again then return { 'later', tostring(again), holder } end
redis.call('HSET', KEYS[1], 'reoffered_ms', now)
return { 'reoffer', tostring(now), holder }",
    )
});

/// Clears the re-offer mark ARGV[1] if it is still the task's.
static UNMARK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('HGET', KEYS[1], 'reoffered_ms') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'reoffered_ms')
  return 1
end
return 0",
    )
});

impl Store {
    /// The lease index's shard of task `id` ([`super::shards`]).
    fn leases_key(&self, id: &TaskId) -> String {
        self.key_of(Set::Leases, id)
    }

    /// Puts the task into the lease index, due when a lease of `lease`
    /// granted now would run out. Called before every claim.
    pub async fn track_lease(&self, id: &TaskId, lease: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = self.track_call(id, lease).invoke_async(&mut conn).await?;
        Ok(())
    }

    /// [`Store::track_lease`]'s script call, for a pipeline of its own
    /// (a claim on a single Redis). It answers the Redis clock (ms).
    pub(super) fn track_call(
        &self,
        id: &TaskId,
        lease: Duration,
    ) -> redis::ScriptInvocation<'static> {
        let mut call = TRACK.key(self.leases_key(id));
        call.arg(id.to_string()).arg(lease.as_millis() as u64);
        call
    }

    /// Up to `limit` indexed tasks (from each shard) whose lease may have run
    /// out, each with the clock of the Redis that holds its shard (what
    /// [`Store::retrack_lease`] compares against). Members that are not task
    /// ids are dropped.
    pub async fn due_leases(&self, limit: usize) -> Result<Vec<DueLease>, StoreError> {
        let mut conn = self.conn().await?;
        let keys = self.shard_keys(Set::Leases);
        let calls: Vec<_> = keys
            .iter()
            .map(|key| {
                let mut call = DUE.key(key);
                call.arg(limit);
                call
            })
            .collect();
        let shards: Vec<Vec<String>> = self.invoke_many(&mut conn, &redis::pipe(), &calls).await?;
        let mut due = Vec::new();
        let mut bad = Vec::new();
        for raw in shards {
            let mut raw = raw.into_iter();
            let seen_ms = raw
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| StoreError::Corrupt("the lease sweep got no clock".into()))?;
            for member in raw {
                match TaskId::parse(&member) {
                    Ok(id) => due.push(DueLease { id, seen_ms }),
                    Err(_) => bad.push(member),
                }
            }
        }
        self.remove_members(&mut conn, Set::Leases, &bad, |_| None)
            .await?;
        Ok(due)
    }

    /// Reads the task's lease in its own atomic step and, if it lapsed and
    /// the task was not re-offered since, marks it re-offered. `again`: how
    /// long after a re-offer that nobody took up to re-offer once more.
    pub async fn check_lease(
        &self,
        id: &TaskId,
        again: Duration,
    ) -> Result<LeaseCheck, StoreError> {
        let mut conn = self.conn().await?;
        let raw: Vec<String> = CHECK
            .key(self.task_key(id))
            .arg(again.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        let [verdict, ms, holder] = raw.as_slice() else {
            return Err(StoreError::Corrupt(format!(
                "the lease check returned {} fields",
                raw.len()
            )));
        };
        let ms: i64 = ms
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("the lease check returned {ms:?}")))?;
        Ok(match verdict.as_str() {
            "untracked" => LeaseCheck::Untracked,
            "later" => LeaseCheck::Later { next_ms: ms },
            "reoffer" => LeaseCheck::Reoffer {
                marked_ms: ms,
                holder: LeaseCheck::holder(holder),
            },
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unknown lease verdict {other:?}"
                )))
            }
        })
    }

    /// Moves the index entry to `next_ms` (or drops it with `None`), unless a
    /// claim re-scored it after `seen_ms` (the clock [`Store::due_leases`] gave).
    pub async fn retrack_lease(
        &self,
        id: &TaskId,
        next_ms: Option<i64>,
        seen_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = RETRACK
            .key(self.leases_key(id))
            .arg(id.to_string())
            .arg(seen_ms)
            .arg(next_ms.map(|ms| ms.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Takes back the re-offer mark `marked_ms` (its publish failed), so the
    /// next sweep tries again.
    pub async fn unmark_reoffer(&self, id: &TaskId, marked_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: i64 = UNMARK
            .key(self.task_key(id))
            .arg(marked_ms.to_string())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}
