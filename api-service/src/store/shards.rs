//! The cross-task sorted sets, each spread over [`SHARDS`] keys.
//!
//! A task's own keys share its hash tag (`task:{<id>}`), so tasks spread
//! over a Redis Cluster's primaries by id. The sets that name many tasks
//! (the list index, the outbox, the QUEUED set, the lease index) would each
//! be one key on one primary taking every create; instead each is
//! [`SHARDS`] sorted sets, a task's shard chosen by its id ([`shard_of`]),
//! each under a hash tag of its own (`…tasks:index:{index-<n>}`), so the
//! shards spread over the primaries. A write touches its task's shard only;
//! a reader walks every shard (one pipeline: one round trip on a single
//! Redis, concurrent commands on a cluster) and merges.
//!
//! The layout is the same on a single Redis: one code path, and moving a
//! deployment onto a cluster changes no key name.

use deadpool_redis::redis;
use task_model::TaskId;

use super::{Conn, Store, StoreError};

/// Keys each cross-task set is spread over.
pub const SHARDS: usize = 8;

/// A cross-task sorted set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// Listed tasks, newest first ([`super::listing`]).
    Index,
    /// Tasks whose message is not confirmed yet ([`crate::service::republish`]).
    Outbox,
    /// Tasks not yet claimed ([`super::queued`]).
    Queued,
    /// Claimed tasks, scored by when their lease runs out ([`super::leases`]).
    Leases,
}

impl Set {
    fn name(self) -> String {
        match self {
            Set::Index => "tasks:index".into(),
            Set::Outbox => "tasks:unpublished".into(),
            Set::Queued => format!("tasks:queued:{}", task_model::topology::TASKS_QUEUE),
            Set::Leases => "tasks:leases".into(),
        }
    }

    /// Shard `shard` of this set, under key prefix `prefix`.
    pub fn key(self, prefix: &str, shard: usize) -> String {
        format!("{prefix}{}:{{{}-{shard}}}", self.name(), self.tag())
    }

    /// Every shard of this set, in shard order.
    pub fn keys(self, prefix: &str) -> Vec<String> {
        (0..SHARDS).map(|s| self.key(prefix, s)).collect()
    }

    /// The shard of this set that holds task `id`.
    pub fn key_for(self, prefix: &str, id: &TaskId) -> String {
        self.key(prefix, shard_of(id))
    }

    fn tag(self) -> &'static str {
        match self {
            Set::Index => "index",
            Set::Outbox => "outbox",
            Set::Queued => "queued",
            Set::Leases => "leases",
        }
    }
}

/// The shard of task `id` (the high half of its bits: the low ones pick its
/// due-index shard, [`super::due`]).
pub fn shard_of(id: &TaskId) -> usize {
    ((id.as_uuid().as_u128() >> 64) % SHARDS as u128) as usize
}

impl Store {
    /// Shard `shard` of `set`.
    pub(super) fn shard_key(&self, set: Set, shard: usize) -> String {
        set.key(&self.prefix, shard)
    }

    /// The shard of `set` that holds task `id`.
    pub(super) fn key_of(&self, set: Set, id: &TaskId) -> String {
        set.key_for(&self.prefix, id)
    }

    /// Every shard of `set`, in shard order.
    pub(super) fn shard_keys(&self, set: Set) -> Vec<String> {
        set.keys(&self.prefix)
    }

    /// Removes `members` from the shards of `set` that hold them; a member
    /// whose task (`task_of`) cannot be told is removed from every shard.
    pub(super) async fn remove_members(
        &self,
        conn: &mut Conn,
        set: Set,
        members: &[String],
        task_of: impl Fn(&str) -> Option<TaskId>,
    ) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        let mut by_shard: Vec<Vec<&str>> = vec![Vec::new(); SHARDS];
        for m in members {
            match task_of(m) {
                Some(id) => by_shard[shard_of(&id)].push(m),
                None => by_shard.iter_mut().for_each(|s| s.push(m)),
            }
        }
        let mut pipe = redis::pipe();
        for (shard, members) in by_shard.iter().enumerate() {
            if !members.is_empty() {
                pipe.zrem(self.shard_key(set, shard), members);
            }
        }
        let _: Vec<i64> = self.query_pipe(conn, &pipe).await?;
        Ok(())
    }

    /// Adds `(score, member)` for each task of `members` to its shard of
    /// `set`: one `ZADD` per shard touched, in one pipeline.
    pub(super) fn zadd_sharded(
        &self,
        pipe: &mut redis::Pipeline,
        set: Set,
        members: &[(TaskId, i64, String)],
    ) {
        let mut by_shard: Vec<Vec<(i64, &str)>> = vec![Vec::new(); SHARDS];
        for (id, score, member) in members {
            by_shard[shard_of(id)].push((*score, member));
        }
        for (shard, members) in by_shard.iter().enumerate() {
            if !members.is_empty() {
                pipe.zadd_multiple(self.shard_key(set, shard), members);
            }
        }
    }

    /// Removes each task's `member` from its shard of `set`: one `ZREM` per
    /// shard touched, into `pipe`.
    pub(super) fn zrem_sharded(
        &self,
        pipe: &mut redis::Pipeline,
        set: Set,
        members: &[(TaskId, String)],
    ) {
        let mut by_shard: Vec<Vec<&str>> = vec![Vec::new(); SHARDS];
        for (id, member) in members {
            by_shard[shard_of(id)].push(member);
        }
        for (shard, members) in by_shard.iter().enumerate() {
            if !members.is_empty() {
                pipe.zrem(self.shard_key(set, shard), members);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_spread_over_every_shard() {
        let mut seen = [0usize; SHARDS];
        for _ in 0..800 {
            seen[shard_of(&TaskId::new())] += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    }
}
