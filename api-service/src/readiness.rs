//! The `redis` check of `/readyz`: what a create needs of Redis.
//!
//! Each round (period 5 s): a PING, a write ([`Store::write_probe`]: a
//! `SET` with a short TTL, so a node answering `MOVED`, a replica answering
//! `READONLY` or a full Redis answering `OOM` is not ready), and the
//! eviction policy. Persistence ([`Store::persistence`]) is looked up once a
//! minute, cached, and reported as the check's `persistence` (`true`,
//! `false`, or `null` when Redis refuses `CONFIG` and shows no AOF). Each
//! finding about the policy or persistence is logged once, again only after
//! it changed: the first round after start is where the api warns that Redis
//! keeps nothing on disk.

use std::{
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use health::{Details, HealthChecker};

use crate::{
    startup::error_chain,
    store::{EvictionPolicy, Persistence, Store},
};

/// How long a persistence finding is reused before Redis is asked again.
const PERSISTENCE_MAX_AGE: Duration = Duration::from_secs(60);

/// What the check last logged about the policy, so each finding is logged
/// once (again only after it changed).
const POLICY_NOT_SEEN: u8 = 0;
const POLICY_OK: u8 = 1;
const POLICY_EVICTING: u8 = 2;
const POLICY_EVICTING_ALLOWED: u8 = 3;
const POLICY_UNKNOWN: u8 = 4;

/// The check's state between rounds.
struct RedisCheck {
    store: Store,
    allow_eviction: bool,
    policy_logged: AtomicU8,
    /// The last persistence finding and when it was made.
    persistence: Mutex<Option<(Instant, Persistence)>>,
}

/// Registers the `redis` check.
pub fn add_redis_check(health: &HealthChecker, store: &Store, allow_eviction: bool) {
    let check = Arc::new(RedisCheck {
        store: store.clone(),
        allow_eviction,
        policy_logged: AtomicU8::new(POLICY_NOT_SEEN),
        persistence: Mutex::new(None),
    });
    health.add_check_with_details("redis", move || Arc::clone(&check).round());
}

impl RedisCheck {
    async fn round(self: Arc<Self>) -> Result<Details, String> {
        self.store.ping().await.map_err(|e| error_chain(&e))?;
        self.store
            .write_probe()
            .await
            .map_err(|e| format!("redis refused a write: {}", error_chain(&e)))?;
        self.judge_policy().await?;
        let persistence = self.persistence().await?;
        let value = match persistence {
            Persistence::OnDisk => serde_json::Value::Bool(true),
            Persistence::Nothing => serde_json::Value::Bool(false),
            Persistence::Unknown(_) => serde_json::Value::Null,
        };
        Ok(Details::from([("persistence".to_owned(), value)]))
    }

    /// The cached finding, or a new one when it is older than
    /// [`PERSISTENCE_MAX_AGE`] (logged when it changed).
    async fn persistence(&self) -> Result<Persistence, String> {
        let cached = self.lock().clone();
        if let Some((at, found)) = &cached {
            if at.elapsed() < PERSISTENCE_MAX_AGE {
                return Ok(found.clone());
            }
        }
        let found = self
            .store
            .persistence()
            .await
            .map_err(|e| error_chain(&e))?;
        if cached.as_ref().map(|(_, old)| old) != Some(&found) {
            log_persistence(&found);
        }
        *self.lock() = Some((Instant::now(), found.clone()));
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Persistence)>> {
        self.persistence
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Redis's `maxmemory-policy` must be `noeviction`: under any other a full
    /// Redis deletes tasks and idempotency keys without an error, so the api
    /// is not ready unless `allow_eviction` (`REDIS_ALLOW_EVICTION`). A Redis
    /// that refuses `CONFIG GET` (managed services, ACLs) passes with a
    /// warning: the policy is unknown, not wrong.
    async fn judge_policy(&self) -> Result<(), String> {
        let policy = self
            .store
            .eviction_policy()
            .await
            .map_err(|e| error_chain(&e))?;
        let (seen, verdict) = match &policy {
            EvictionPolicy::NoEviction => (POLICY_OK, Ok(())),
            EvictionPolicy::Evicting(_) if self.allow_eviction => (POLICY_EVICTING_ALLOWED, Ok(())),
            EvictionPolicy::Evicting(p) => (
                POLICY_EVICTING,
                Err(format!(
                    "redis maxmemory-policy is {p}, must be noeviction: a full redis would evict \
                     tasks and idempotency keys silently; fix it with `CONFIG SET maxmemory-policy \
                     noeviction` and `maxmemory-policy noeviction` in redis.conf, or accept the \
                     risk with REDIS_ALLOW_EVICTION=1 (--redis-allow-eviction)"
                )),
            ),
            EvictionPolicy::Unknown(_) => (POLICY_UNKNOWN, Ok(())),
        };
        if self.policy_logged.swap(seen, Ordering::Relaxed) != seen {
            log_policy(&policy, &verdict);
        }
        verdict
    }
}

fn log_policy(policy: &EvictionPolicy, verdict: &Result<(), String>) {
    match (policy, verdict) {
        (EvictionPolicy::Evicting(_), Err(e)) => {
            tracing::error!(error = %e, "redis would lose tasks")
        }
        (EvictionPolicy::Evicting(p), Ok(())) => tracing::warn!(
            policy = %p,
            "redis maxmemory-policy evicts keys and REDIS_ALLOW_EVICTION is set: a full redis will drop tasks and idempotency keys silently"
        ),
        (EvictionPolicy::Unknown(why), _) => tracing::warn!(
            error = %why,
            "redis refused CONFIG GET maxmemory-policy: the eviction policy is unknown; make sure it is noeviction"
        ),
        _ => {}
    }
}

fn log_persistence(found: &Persistence) {
    match found {
        Persistence::OnDisk => tracing::info!("redis keeps its data on disk (AOF or RDB)"),
        Persistence::Nothing => tracing::warn!(
            "redis keeps nothing on disk (appendonly no, no save rules): a restart of redis loses \
             every task; enable AOF (`appendonly yes`, `appendfsync everysec`)"
        ),
        Persistence::Unknown(why) => tracing::warn!(
            error = %why,
            "redis refused CONFIG GET appendonly/save and shows no AOF: whether it keeps anything on disk is unknown"
        ),
    }
}
