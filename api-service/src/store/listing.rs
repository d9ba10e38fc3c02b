//! The newest-first task index and its opaque cursors.
//!
//! One sorted set in [`super::SHARDS`] shards ([`super::shards`]; a page
//! merges the shards), every member scored 0 and named
//! `<created_ms, 15 digits>:<task id>`, so lexicographic order is creation
//! order and `ZRANGE … BYLEX REV` pages newest first without ties. A cursor is
//! the last member seen, signed, so a cursor the api did not issue is refused.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use deadpool_redis::redis;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use task_model::{TaskId, TaskStatus, TaskView};

use super::{parse_task, Set, Store, StoreError, TaskRecord};

/// Most index entries one listing request reads when filtering by status.
const MAX_SCAN: usize = 5_000;

pub(super) fn index_member(created_ms: i64, id: &TaskId) -> String {
    format!("{created_ms:015}:{id}")
}

/// The task an index member names, if it names one.
pub(super) fn member_task(member: &str) -> Option<TaskId> {
    member
        .split_once(':')
        .and_then(|(_, id)| TaskId::parse(id).ok())
}

/// Signs and checks list cursors.
#[derive(Clone)]
pub struct Cursor {
    key: Vec<u8>,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cursor { .. }")
    }
}

impl Cursor {
    /// Cursors signed with `secret`; every api process sharing the secret accepts the others'.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: secret.to_vec(),
        }
    }

    fn tag(&self, member: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(b"taskforge-cursor:");
        mac.update(member.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..12])
    }

    /// The opaque form of an index member.
    pub fn encode(&self, member: &str) -> String {
        format!("{}.{}", URL_SAFE_NO_PAD.encode(member), self.tag(member))
    }

    /// The index member behind a cursor this api issued, or `None`.
    pub fn decode(&self, cursor: &str) -> Option<String> {
        let (body, tag) = cursor.split_once('.')?;
        let member = String::from_utf8(URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        let expected = self.tag(&member);
        // Constant-time: cursors are not secrets, but no reason to leak the tag.
        use subtle::ConstantTimeEq;
        bool::from(expected.as_bytes().ct_eq(tag.as_bytes())).then_some(member)
    }
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page {
    pub tasks: Vec<TaskView>,
    /// The index member to continue after, if there may be more.
    pub next: Option<String>,
}

impl Store {
    /// Tasks newest first, after the index member `after`, optionally only one status.
    ///
    /// With a status filter a page may hold fewer than `limit` tasks and still
    /// have a next cursor: one request reads at most `MAX_SCAN` (5,000) index entries.
    pub async fn list(
        &self,
        status: Option<TaskStatus>,
        limit: usize,
        after: Option<String>,
    ) -> Result<Page, StoreError> {
        let mut conn = self.conn().await?;
        let mut scan = Scan::new(status, limit, after);
        while scan.wants_more() {
            let want = scan.batch_size();
            let members = self.index_range(&mut conn, &scan.start, want).await?;
            let tasks = self.load_members(&mut conn, &members).await?;
            scan.take(members, tasks, want);
        }
        self.remove_members(&mut conn, Set::Index, &scan.stale, member_task)
            .await?;
        Ok(scan.into_page())
    }

    /// Up to `count` index members before `start` (a `ZRANGE … BYLEX` bound),
    /// newest first: the first `count` of every shard's, merged (members
    /// order the same in every shard, so the merge is the one index's order).
    async fn index_range(
        &self,
        conn: &mut super::Conn,
        start: &str,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut pipe = redis::pipe();
        for key in self.shard_keys(Set::Index) {
            pipe.cmd("ZRANGE")
                .arg(key)
                .arg(start)
                .arg("-")
                .arg("BYLEX")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(count);
        }
        let shards: Vec<Vec<String>> = self.query_pipe(conn, &pipe).await?;
        let mut members: Vec<String> = shards.into_iter().flatten().collect();
        members.sort_unstable_by(|a, b| b.cmp(a));
        members.truncate(count);
        Ok(members)
    }

    /// The task behind each index member, in one round trip; `None` for a
    /// member that names no task or whose task expired.
    async fn load_members(
        &self,
        conn: &mut super::Conn,
        members: &[String],
    ) -> Result<Vec<Option<TaskRecord>>, StoreError> {
        let ids: Vec<Option<TaskId>> = members.iter().map(|m| member_task(m)).collect();
        let mut pipe = redis::pipe();
        for id in ids.iter().flatten() {
            pipe.hgetall(self.task_key(id));
        }
        let hashes: Vec<Vec<(String, String)>> = if ids.iter().any(Option::is_some) {
            self.query_pipe(conn, &pipe).await?
        } else {
            Vec::new()
        };
        let mut hashes = hashes.into_iter();
        let mut tasks = Vec::with_capacity(ids.len());
        for id in ids {
            let fields = id.map(|_| hashes.next().unwrap_or_default());
            tasks.push(match (id, fields) {
                (Some(id), Some(fields)) if !fields.is_empty() => Some(parse_task(id, fields)?),
                _ => None,
            });
        }
        Ok(tasks)
    }
}

/// Where a listing is while it walks the index.
struct Scan {
    status: Option<TaskStatus>,
    limit: usize,
    /// The `ZRANGE` bound of the next batch.
    start: String,
    tasks: Vec<TaskView>,
    scanned: usize,
    last: Option<String>,
    exhausted: bool,
    done: bool,
    /// Members to drop from the index: expired tasks, or not task ids.
    stale: Vec<String>,
}

impl Scan {
    fn new(status: Option<TaskStatus>, limit: usize, after: Option<String>) -> Self {
        Self {
            status,
            limit,
            start: after.map_or_else(|| "+".to_owned(), |m| format!("({m}")),
            tasks: Vec::with_capacity(limit),
            scanned: 0,
            last: None,
            exhausted: false,
            done: false,
            stale: Vec::new(),
        }
    }

    fn wants_more(&self) -> bool {
        !self.done && self.tasks.len() < self.limit && self.scanned < MAX_SCAN
    }

    /// Filtering by status reads larger batches: many may not match.
    fn batch_size(&self) -> usize {
        if self.status.is_some() {
            self.limit.max(100)
        } else {
            self.limit - self.tasks.len()
        }
    }

    /// Takes one batch of `want` members asked for, with their tasks.
    fn take(&mut self, members: Vec<String>, tasks: Vec<Option<TaskRecord>>, want: usize) {
        self.exhausted = members.len() < want;
        let mut full = false;
        for (member, task) in members.into_iter().zip(tasks) {
            self.scanned += 1;
            self.last = Some(member.clone());
            let Some(task) = task else {
                // Expired: skipped, and dropped from the index.
                self.stale.push(member);
                continue;
            };
            if self.status.is_none_or(|s| s == task.view.status) {
                self.tasks.push(task.view);
                if self.tasks.len() == self.limit {
                    full = true;
                    break;
                }
            }
        }
        if full {
            self.exhausted = false;
        }
        match &self.last {
            Some(m) if !self.exhausted && !full => self.start = format!("({m}"),
            _ => self.done = true,
        }
    }

    fn into_page(self) -> Page {
        Page {
            tasks: self.tasks,
            next: if self.exhausted { None } else { self.last },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_forgeries_are_refused() {
        let c = Cursor::new(b"secret");
        let member = index_member(1_700_000_000_000, &TaskId::new());
        assert_eq!(
            c.decode(&c.encode(&member)).as_deref(),
            Some(member.as_str())
        );
        assert_eq!(Cursor::new(b"other").decode(&c.encode(&member)), None);
        assert_eq!(c.decode("bm9wZQ"), None);
        assert_eq!(c.decode("!!!.00"), None);
        let forged = format!("{}.{}", URL_SAFE_NO_PAD.encode(&member), "0".repeat(24));
        assert_eq!(c.decode(&forged), None);
    }

    #[test]
    fn index_members_sort_by_creation_time() {
        let id = TaskId::new();
        assert!(index_member(999, &id) < index_member(1_000, &id));
    }
}
