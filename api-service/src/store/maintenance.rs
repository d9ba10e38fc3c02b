//! What operators need of the store beyond serving requests: rebuilding the
//! list index from the task hashes, the Redis eviction policy and
//! persistence, and the write probe of `/readyz`.

use deadpool_redis::redis::{self, ErrorKind, ServerErrorKind};
use task_model::TaskId;

use super::{listing, Store, StoreError};

/// Task hashes read per `SCAN` step of [`Store::repair_index`].
const SCAN_COUNT: usize = 500;

/// What [`Store::repair_index`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexRepair {
    /// Task hashes found under the prefix.
    pub tasks: usize,
    /// Of those, how many were missing from the index and are now listed.
    pub added: usize,
    /// Tasks left to the outbox sweep (their create has not finished), or
    /// without a readable creation time (logged).
    pub skipped: usize,
}

/// The `maxmemory-policy` a Redis reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// `noeviction`: a full Redis refuses writes, which the api answers with 503.
    NoEviction,
    /// Any other policy: a full Redis deletes keys (tasks, idempotency keys) silently.
    Evicting(String),
    /// Redis refused `CONFIG GET` (a managed Redis, or an ACL without `CONFIG`);
    /// carries Redis's answer.
    Unknown(String),
}

/// Whether Redis keeps its data on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persistence {
    /// AOF (`appendonly yes`) or RDB snapshots (`save` rules) are on.
    OnDisk,
    /// Neither: a restart of this Redis loses every task.
    Nothing,
    /// Redis refused `CONFIG GET` and its `INFO persistence` shows no AOF,
    /// so whether RDB snapshots are taken cannot be told; carries why.
    Unknown(String),
}

/// How long the `/readyz` write probe's key lives.
const PROBE_TTL_MS: u64 = 10_000;

impl Store {
    /// The key [`Store::write_probe`] sets.
    pub fn probe_key(&self) -> String {
        format!("{}readyz:probe", self.prefix)
    }

    /// A `SET` with a short TTL of [`Store::probe_key`]: what a create needs
    /// of Redis beyond a PING. A Redis that answers PING but refuses the
    /// write (`MOVED` from a cluster node that does not own the key's slot,
    /// `READONLY` from a replica, `OOM` when full under `noeviction`) fails it.
    ///
    /// # Errors
    /// Redis is unavailable or refused the write.
    pub async fn write_probe(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: () = redis::cmd("SET")
            .arg(self.probe_key())
            .arg(chrono::Utc::now().timestamp_millis())
            .arg("PX")
            .arg(PROBE_TTL_MS)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Whether Redis keeps anything on disk: `CONFIG GET appendonly` and
    /// `CONFIG GET save`, or, when Redis refuses `CONFIG` (managed services,
    /// ACLs), `INFO persistence` (`aof_enabled`), else
    /// [`Persistence::Unknown`].
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn persistence(&self) -> Result<Persistence, StoreError> {
        let mut conn = self.conn().await?;
        // Two commands: a CONFIG GET of several parameters needs Redis 7.
        let mut answer: Result<std::collections::HashMap<String, String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query_async(&mut conn)
            .await;
        if let Ok(config) = &mut answer {
            let save: std::collections::HashMap<String, String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("save")
                .query_async(&mut conn)
                .await?;
            config.extend(save);
        }
        match answer {
            Ok(config) => {
                let aof = config.get("appendonly").is_some_and(|v| v == "yes");
                let rdb = config.get("save").is_some_and(|v| !v.trim().is_empty());
                Ok(if aof || rdb {
                    Persistence::OnDisk
                } else {
                    Persistence::Nothing
                })
            }
            Err(e) if is_refusal(&e) => {
                let info: String = redis::cmd("INFO")
                    .arg("persistence")
                    .query_async(&mut conn)
                    .await?;
                Ok(if info.lines().any(|l| l.trim() == "aof_enabled:1") {
                    Persistence::OnDisk
                } else {
                    Persistence::Unknown(e.to_string())
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Lists every stored task that is missing from the list index: `SCAN`s
    /// the task hashes under the prefix and `ZADD`s the index member of each
    /// from its creation time. Tasks still in the outbox are left alone: the
    /// outbox sweep lists them once their message is out. Safe to run at any
    /// time, also while apis serve, and again (it only adds what is missing).
    ///
    /// # Errors
    /// Redis is unavailable, or the store is on a Redis Cluster.
    pub async fn repair_index(&self) -> Result<IndexRepair, StoreError> {
        if self.is_cluster() {
            // A SCAN through the cluster client sees one node's keys only.
            return Err(StoreError::Unavailable(anyhow::anyhow!(
                "repair-index does not run on a Redis Cluster yet (REDIS_CLUSTER_URLS):                  a SCAN would see one node's tasks only"
            )));
        }
        let mut conn = self.conn().await?;
        let pattern = format!("{}task:{{*}}", glob_escape(&self.prefix));
        let mut report = IndexRepair::default();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .arg("TYPE")
                .arg("hash")
                .query_async(&mut conn)
                .await?;
            let ids: Vec<TaskId> = keys
                .iter()
                .filter_map(|k| {
                    let id = k.strip_prefix(&self.prefix)?.strip_prefix("task:{")?;
                    TaskId::parse(id.strip_suffix('}')?).ok()
                })
                .collect();
            report.tasks += ids.len();
            if !ids.is_empty() {
                let (added, skipped) = self.relist(&mut conn, &ids).await?;
                report.added += added;
                report.skipped += skipped;
            }
            if next == 0 {
                return Ok(report);
            }
            cursor = next;
        }
    }

    /// Adds the index members of `ids` that are missing, skipping those in
    /// the outbox; answers how many it added and skipped.
    async fn relist(
        &self,
        conn: &mut super::Conn,
        ids: &[TaskId],
    ) -> Result<(usize, usize), StoreError> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.task_key(id), "created_ms")
                .zscore(self.unpublished_key(id), id.to_string());
        }
        let found: Vec<(Option<String>, Option<f64>)> = self.query_pipe(conn, &pipe).await?;
        let mut members = Vec::new();
        let mut skipped = 0;
        for (id, (created, outbox)) in ids.iter().zip(found) {
            if outbox.is_some() {
                skipped += 1;
                continue;
            }
            match created.as_deref().map(str::parse::<i64>) {
                Some(Ok(ms)) => members.push((*id, listing::index_member(ms, id))),
                // Expired or deleted since the SCAN saw it.
                None => {}
                Some(Err(_)) => {
                    tracing::error!(task_id = %id, "task without a readable created_ms; not listed");
                    skipped += 1;
                }
            }
        }
        if members.is_empty() {
            return Ok((0, skipped));
        }
        let mut by_shard: Vec<Vec<&(TaskId, String)>> = vec![Vec::new(); super::SHARDS];
        for m in &members {
            by_shard[super::shards::shard_of(&m.0)].push(m);
        }
        let mut pipe = redis::pipe();
        for (shard, members) in by_shard.iter().enumerate() {
            if members.is_empty() {
                continue;
            }
            let add = pipe
                .cmd("ZADD")
                .arg(self.shard_key(super::Set::Index, shard))
                .arg("NX");
            for (_, m) in members {
                add.arg(0).arg(m);
            }
        }
        let added: Vec<usize> = self.query_pipe(conn, &pipe).await?;
        Ok((added.into_iter().sum(), skipped))
    }

    /// Redis's `maxmemory-policy` (`CONFIG GET`), or
    /// [`EvictionPolicy::Unknown`] when Redis refuses the command.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn eviction_policy(&self) -> Result<EvictionPolicy, StoreError> {
        let mut conn = self.conn().await?;
        let answer: Result<std::collections::HashMap<String, String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn)
            .await;
        let config = match answer {
            Ok(config) => config,
            Err(e) if is_refusal(&e) => return Ok(EvictionPolicy::Unknown(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        Ok(match config.get("maxmemory-policy").map(String::as_str) {
            Some("noeviction") => EvictionPolicy::NoEviction,
            Some(other) => EvictionPolicy::Evicting(other.to_owned()),
            None => EvictionPolicy::Unknown("CONFIG GET maxmemory-policy answered nothing".into()),
        })
    }
}

/// Redis answered, and the answer is no (unknown or renamed command, ACL).
fn is_refusal(e: &redis::RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::NoPerm)
            | ErrorKind::Extension
    )
}

/// `s` with the `SCAN MATCH` glob characters escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::glob_escape;

    #[test]
    fn glob_characters_of_the_prefix_are_escaped() {
        assert_eq!(glob_escape("tf:"), "tf:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
