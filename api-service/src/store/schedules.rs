//! Periodic schedules (`/schedules`) in Redis.
//!
//! One hash per schedule, `schedule:{<id>}` (the id is the hash tag), holds
//! its definition and where it stands (`next_ms`, the last due time fired
//! and its task). Every change of where it stands is one script on that one
//! hash, compare-and-set on `next_ms`, so api processes racing for a due
//! time agree on who fires it ([`Store::take_schedule`]) and it advances
//! once ([`Store::advance_schedule`]).
//!
//! The due index is [`SHARDS`] sorted sets `schedules:due:<n>` (a schedule
//! in the one its id picks), scored by `next_ms`, so no single key takes
//! every write. Like the list index it lives outside the atomic step: it may
//! lag the hash (a reader then re-scores the entry from the hash) or name a
//! schedule that is gone (a reader drops it); the hash decides.

use deadpool_redis::redis;
use task_model::{CreateTaskRequest, TaskId};
use uuid::Uuid;

use super::{Store, StoreError};

/// Sorted sets the due index is spread over.
pub const SHARDS: usize = 8;

/// A stored schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    pub id: Uuid,
    pub name: Option<String>,
    pub cron: String,
    /// The create body each due time submits.
    pub task: CreateTaskRequest,
    /// The creator's idempotency scope (its API key), which the tasks' keys share.
    pub scope: String,
    pub created_ms: i64,
    /// The next due time (ms since the epoch, UTC).
    pub next_ms: i64,
    /// The last due time fired.
    pub last_run_ms: Option<i64>,
    pub last_task_id: Option<TaskId>,
}

/// Takes a due time: `next_ms` must still be it, and no live take holds it.
const TAKE: &str = r"
local next = redis.call('HGET', KEYS[1], 'next_ms')
if not next or next ~= ARGV[1] then return 0 end
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'taken_until_ms') or '0')
if until_ms > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'taken_until_ms', ARGV[2] + ARGV[3])
return 1";

/// Gives a take back (its create failed; the next tick tries again).
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'next_ms') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'taken_until_ms')
end
return 0";

/// Moves `next_ms` from the due time fired to the next one, recording the
/// fired time and its task (when one was made).
const ADVANCE: &str = r"
if redis.call('HGET', KEYS[1], 'next_ms') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'next_ms', ARGV[2])
redis.call('HDEL', KEYS[1], 'taken_until_ms')
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'last_run_ms', ARGV[1], 'last_task_id', ARGV[3])
end
return 1";

impl Store {
    fn schedule_key(&self, id: &Uuid) -> String {
        format!("{}schedule:{{{}}}", self.prefix, id.hyphenated())
    }

    fn schedule_due_key(&self, shard: usize) -> String {
        format!("{}schedules:due:{shard}", self.prefix)
    }

    fn schedule_due_key_of(&self, id: &Uuid) -> String {
        self.schedule_due_key((id.as_u128() % SHARDS as u128) as usize)
    }

    /// Stores a new schedule and indexes its first due time.
    ///
    /// # Errors
    /// Redis unavailable; a schedule that could not be indexed is removed again.
    pub async fn put_schedule(&self, s: &ScheduleRecord) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let task = serde_json::to_string(&s.task)
            .map_err(|e| StoreError::Corrupt(format!("schedule task: {e}")))?;
        let mut fields = vec![
            ("cron", s.cron.clone()),
            ("task", task),
            ("scope", s.scope.clone()),
            ("created_ms", s.created_ms.to_string()),
            ("next_ms", s.next_ms.to_string()),
        ];
        if let Some(name) = &s.name {
            fields.push(("name", name.clone()));
        }
        let key = self.schedule_key(&s.id);
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg(&fields)
            .query_async(&mut conn)
            .await?;
        let indexed: Result<i64, _> = redis::cmd("ZADD")
            .arg(self.schedule_due_key_of(&s.id))
            .arg(s.next_ms)
            .arg(s.id.hyphenated().to_string())
            .query_async(&mut conn)
            .await;
        if let Err(e) = indexed {
            let _: Result<i64, _> = redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// A schedule, or `None`.
    pub async fn schedule(&self, id: &Uuid) -> Result<Option<ScheduleRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.schedule_key(id))
            .query_async(&mut conn)
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_schedule(*id, fields).map(Some)
    }

    /// Every schedule (those the due index names), unordered.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        let mut conn = self.conn().await?;
        // The shards, then the schedules' hashes: keys of many slots.
        let mut shards = redis::pipe();
        for shard in 0..SHARDS {
            shards.zrange(self.schedule_due_key(shard), 0, -1);
        }
        let members: Vec<Vec<String>> = self.query_pipe(&mut conn, &shards).await?;
        let ids: Vec<Uuid> = members
            .iter()
            .flatten()
            .filter_map(|m| Uuid::parse_str(m).ok())
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.schedule_key(id));
        }
        let hashes: Vec<Vec<(String, String)>> = self.query_pipe(&mut conn, &pipe).await?;
        ids.into_iter()
            .zip(hashes)
            .filter(|(_, fields)| !fields.is_empty())
            .map(|(id, fields)| parse_schedule(id, fields))
            .collect()
    }

    /// Deletes a schedule; answers whether it existed.
    pub async fn delete_schedule(&self, id: &Uuid) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let deleted: i64 = redis::cmd("DEL")
            .arg(self.schedule_key(id))
            .query_async(&mut conn)
            .await?;
        let _: i64 = redis::cmd("ZREM")
            .arg(self.schedule_due_key_of(id))
            .arg(id.hyphenated().to_string())
            .query_async(&mut conn)
            .await?;
        Ok(deleted == 1)
    }

    /// Up to `limit` schedules of due-index `shard` due at `now_ms`.
    pub async fn due_schedules(
        &self,
        shard: usize,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut conn = self.conn().await?;
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.schedule_due_key(shard))
            .arg("-inf")
            .arg(now_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        Ok(members
            .iter()
            .filter_map(|m| Uuid::parse_str(m).ok())
            .collect())
    }

    /// Scores a schedule's due-index entry `next_ms`, or drops it (`None`).
    pub async fn reindex_schedule(
        &self,
        id: &Uuid,
        next_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let member = id.hyphenated().to_string();
        let mut cmd = match next_ms {
            Some(ms) => {
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(self.schedule_due_key_of(id)).arg(ms);
                cmd
            }
            None => {
                let mut cmd = redis::cmd("ZREM");
                cmd.arg(self.schedule_due_key_of(id));
                cmd
            }
        };
        let _: i64 = cmd.arg(member).query_async(&mut conn).await?;
        Ok(())
    }

    /// Takes due time `due_ms` of a schedule for `lease_ms` (its `next_ms` is
    /// still that, and nobody else holds it); answers whether this caller may fire it.
    pub async fn take_schedule(
        &self,
        id: &Uuid,
        due_ms: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(TAKE));
        let mut conn = self.conn().await?;
        let taken: i64 = SCRIPT
            .key(self.schedule_key(id))
            .arg(due_ms)
            .arg(now_ms)
            .arg(lease_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(taken == 1)
    }

    /// Gives a take of `due_ms` back, so the next tick fires it.
    pub async fn release_schedule(&self, id: &Uuid, due_ms: i64) -> Result<(), StoreError> {
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(RELEASE));
        let mut conn = self.conn().await?;
        let _: i64 = SCRIPT
            .key(self.schedule_key(id))
            .arg(due_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Moves a schedule on from due time `due_ms` to `next_ms`, recording
    /// `fired` as that due time's task; answers whether it was still at `due_ms`.
    pub async fn advance_schedule(
        &self,
        id: &Uuid,
        due_ms: i64,
        next_ms: i64,
        fired: Option<TaskId>,
    ) -> Result<bool, StoreError> {
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(ADVANCE));
        let mut conn = self.conn().await?;
        let advanced: i64 = SCRIPT
            .key(self.schedule_key(id))
            .arg(due_ms)
            .arg(next_ms)
            .arg(fired.map(|t| t.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await?;
        Ok(advanced == 1)
    }
}

/// A schedule hash as a [`ScheduleRecord`].
fn parse_schedule(id: Uuid, fields: Vec<(String, String)>) -> Result<ScheduleRecord, StoreError> {
    let f: std::collections::HashMap<String, String> = fields.into_iter().collect();
    let corrupt = |what: &str| StoreError::Corrupt(format!("schedule {id}: {what}"));
    let get = |k: &str| f.get(k).filter(|v| !v.is_empty());
    let need = |k: &str| get(k).ok_or_else(|| corrupt(&format!("lacks {k}")));
    let ms = |k: &str| -> Result<Option<i64>, StoreError> {
        get(k)
            .map(|v| {
                v.parse()
                    .map_err(|_| corrupt(&format!("{k} is not a number")))
            })
            .transpose()
    };
    let task = serde_json::from_str(need("task")?).map_err(|e| corrupt(&format!("task: {e}")))?;
    Ok(ScheduleRecord {
        id,
        name: get("name").cloned(),
        cron: need("cron")?.clone(),
        task,
        scope: need("scope")?.clone(),
        created_ms: ms("created_ms")?.ok_or_else(|| corrupt("lacks created_ms"))?,
        next_ms: ms("next_ms")?.ok_or_else(|| corrupt("lacks next_ms"))?,
        last_run_ms: ms("last_run_ms")?,
        last_task_id: get("last_task_id")
            .map(|t| TaskId::parse(t).map_err(|_| corrupt("bad last_task_id")))
            .transpose()?,
    })
}
