//! Blobs: one hash per blob, `<prefix>blob:{<blob id>}` (the id is the hash
//! tag, so a blob is one slot on a Redis Cluster), with the fields `data`,
//! `content_type`, `sha256` and `size`, expiring like finished tasks.

use std::time::Duration;

use deadpool_redis::redis;
use uuid::Uuid;

use super::{Store, StoreError};

/// A stored blob's description (everything but its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    pub content_type: String,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    pub size: u64,
}

/// Extends a blob's TTL to at least ARGV[1] seconds; 0 when it does not exist.
const KEEP: &str = r"
local ttl = redis.call('TTL', KEYS[1])
if ttl == -2 then return 0 end
if ttl >= 0 and ttl < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
";

impl Store {
    fn blob_key(&self, id: &Uuid) -> String {
        format!("{}blob:{{{}}}", self.prefix, id.hyphenated())
    }

    /// Stores a new blob for `ttl`.
    pub async fn put_blob(
        &self,
        id: &Uuid,
        bytes: &[u8],
        meta: &BlobMeta,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let key = self.blob_key(id);
        let () = redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("data")
            .arg(bytes)
            .arg("content_type")
            .arg(&meta.content_type)
            .arg("sha256")
            .arg(&meta.sha256)
            .arg("size")
            .arg(meta.size)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(ttl.as_secs().max(1))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// A blob's bytes and description, `None` when unknown or expired.
    pub async fn get_blob(&self, id: &Uuid) -> Result<Option<(Vec<u8>, BlobMeta)>, StoreError> {
        let mut conn = self.conn().await?;
        let (data, content_type, sha256, size): (
            Option<Vec<u8>>,
            Option<String>,
            Option<String>,
            Option<u64>,
        ) = redis::cmd("HMGET")
            .arg(self.blob_key(id))
            .arg(&["data", "content_type", "sha256", "size"])
            .query_async(&mut conn)
            .await?;
        match (data, content_type, sha256, size) {
            (Some(data), Some(content_type), Some(sha256), Some(size)) => Ok(Some((
                data,
                BlobMeta {
                    content_type,
                    sha256,
                    size,
                },
            ))),
            (None, None, None, None) => Ok(None),
            _ => Err(StoreError::Corrupt(format!("blob {id} lacks a field"))),
        }
    }

    /// Makes a blob live at least `ttl` from now; `false` when it does not
    /// exist (unknown or expired).
    pub async fn keep_blob(&self, id: &Uuid, ttl: Duration) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let found: i64 = redis::Script::new(KEEP)
            .key(self.blob_key(id))
            .arg(ttl.as_secs().max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(found == 1)
    }
}
