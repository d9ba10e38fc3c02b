//! `Idempotency-Key`: one task per key and body, also when requests race.
//!
//! The key's record is `SET NX` before the task is created, holding the new
//! task's id and a fingerprint of the body; a second request finds it and
//! answers with the first task. A create that fails releases the key.
//!
//! The reservation lives [`RESERVATION_SECS`] at first and gets its full
//! lifetime (`RESULT_TTL_SECS`) once the task is stored
//! ([`Store::keep_idempotency_key`]): an api that dies between the two frees
//! the key within seconds, rather than answering "still in flight" (503) to
//! every retry with that key for a day.

use deadpool_redis::redis;
use sha2::{Digest, Sha256};
use task_model::TaskId;

use super::{Store, StoreError};

/// How long a reservation lives before its task is stored.
pub const RESERVATION_SECS: u64 = 30;

/// The lifetime of a fresh reservation when finished tasks are kept `result_ttl`.
pub fn reservation_secs(result_ttl: std::time::Duration) -> u64 {
    result_ttl.as_secs().min(RESERVATION_SECS)
}

/// A validated `Idempotency-Key`, scoped and hashed into a Redis key.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    redis_key: String,
    fingerprint: String,
}

/// What reserving a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdemReservation {
    /// The key is ours: create the task.
    Reserved,
    /// Another request holds the key.
    Existing {
        /// The first request's task.
        task_id: TaskId,
        /// Whether its body was the same as ours.
        same_body: bool,
    },
}

impl IdempotencyKey {
    /// Whether a header value is an acceptable key: 1 to 200 visible ASCII characters.
    pub fn is_valid(value: &str) -> bool {
        (1..=200).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
    }

    /// The key `value` within `scope` (the API key in use, if any), for a body
    /// whose canonical JSON is `body`.
    pub fn new(store: &Store, scope: &str, value: &str, body: &serde_json::Value) -> Self {
        let hash = |parts: &[&[u8]]| {
            let mut h = Sha256::new();
            for p in parts {
                h.update((p.len() as u64).to_be_bytes());
                h.update(p);
            }
            hex::encode(h.finalize())
        };
        let body = body.to_string();
        Self {
            redis_key: format!(
                "{}idem:{}",
                store.prefix(),
                hash(&[scope.as_bytes(), value.as_bytes()])
            ),
            fingerprint: hash(&[body.as_bytes()]),
        }
    }
}

impl Store {
    /// Claims `key` for `task_id` for `ttl_secs`, or reports who has it.
    pub async fn reserve_idempotency_key(
        &self,
        key: &IdempotencyKey,
        task_id: &TaskId,
        ttl_secs: u64,
    ) -> Result<IdemReservation, StoreError> {
        let mut conn = self.conn().await?;
        let value = format!("{task_id} {}", key.fingerprint);
        let set: Option<String> = redis::cmd("SET")
            .arg(&key.redis_key)
            .arg(&value)
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(ttl_secs)
            .query_async(&mut conn)
            .await?;
        let Some(existing) = set else {
            return Ok(IdemReservation::Reserved);
        };
        let (id, fingerprint) = existing
            .split_once(' ')
            .ok_or_else(|| StoreError::Corrupt("malformed idempotency record".into()))?;
        let task_id = TaskId::parse(id)
            .map_err(|_| StoreError::Corrupt("malformed idempotency record".into()))?;
        Ok(IdemReservation::Existing {
            task_id,
            same_body: fingerprint == key.fingerprint,
        })
    }

    /// Gives the reservation of `key` by `task_id` (whose task is now stored)
    /// its full lifetime, `ttl_secs`.
    pub async fn keep_idempotency_key(
        &self,
        key: &IdempotencyKey,
        task_id: &TaskId,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0",
        );
        let _: i64 = script
            .key(&key.redis_key)
            .arg(format!("{task_id} {}", key.fingerprint))
            .arg(ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Gives `key` up, if `task_id` still holds it (its create failed).
    pub async fn release_idempotency_key(
        &self,
        key: &IdempotencyKey,
        task_id: &TaskId,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        let _: i64 = script
            .key(&key.redis_key)
            .arg(format!("{task_id} {}", key.fingerprint))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}
