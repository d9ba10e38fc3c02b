//! Pause state of the named queues: one small hash, `<prefix>queues:state`
//! (one key, so one slot on a Redis Cluster, and every change one script on
//! it). Field `<queue>` holds `<version>:<1|0>` (paused or not) for each
//! queue ever paused or resumed; field `#version` counts the changes (a
//! queue name cannot start with `#`). The version orders the changes, so a
//! worker that hears of them both by broadcast and by asking
//! (`GET /internal/queues`) keeps the newest. The hash never expires: a
//! pause survives restarts until a resume.

use std::collections::HashMap;

use deadpool_redis::redis;

use super::{Store, StoreError};

/// One queue's pause state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueState {
    pub paused: bool,
    /// The change that set it; 0 for a queue never paused or resumed.
    pub version: u64,
}

/// Sets ARGV[1]'s state to ARGV[2] (`1` paused, `0` not) under the next
/// version, which it returns.
const SET_STATE: &str = r"
local v = redis.call('HINCRBY', KEYS[1], '#version', 1)
redis.call('HSET', KEYS[1], ARGV[1], v .. ':' .. ARGV[2])
return v
";

impl Store {
    fn queue_state_key(&self) -> String {
        format!("{}queues:state", self.prefix)
    }

    /// Records `queue` as paused (or not); answers the change's version.
    pub async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let version: u64 = redis::Script::new(SET_STATE)
            .key(self.queue_state_key())
            .arg(queue)
            .arg(if paused { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        Ok(version)
    }

    /// The recorded state of every queue ever paused or resumed.
    pub async fn queue_states(&self) -> Result<HashMap<String, QueueState>, StoreError> {
        let mut conn = self.conn().await?;
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.queue_state_key())
            .query_async(&mut conn)
            .await?;
        fields
            .into_iter()
            .filter(|(name, _)| !name.starts_with('#'))
            .map(|(name, value)| {
                let state = parse_state(&value)
                    .ok_or_else(|| StoreError::Corrupt(format!("queue {name}: state {value:?}")))?;
                Ok((name, state))
            })
            .collect()
    }
}

fn parse_state(value: &str) -> Option<QueueState> {
    let (version, paused) = value.split_once(':')?;
    Some(QueueState {
        version: version.parse().ok()?,
        paused: match paused {
            "1" => true,
            "0" => false,
            _ => return None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse() {
        assert_eq!(
            parse_state("7:1"),
            Some(QueueState {
                paused: true,
                version: 7
            })
        );
        assert_eq!(
            parse_state("8:0"),
            Some(QueueState {
                paused: false,
                version: 8
            })
        );
        assert_eq!(parse_state("x:1"), None);
        assert_eq!(parse_state("8:2"), None);
    }
}
