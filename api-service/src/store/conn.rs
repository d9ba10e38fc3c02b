//! The connection pool: one Redis (`REDIS_URL`, the default) or a Redis
//! Cluster (`REDIS_CLUSTER_URLS`, seed nodes), behind one connection type.
//!
//! [`Conn`] is a `redis::aio::ConnectionLike`, so every command, script and
//! pipeline runs on it unchanged. On a cluster each command goes to the
//! primary of its key's slot (following `MOVED`/`ASK`), a script to the slot
//! of its keys, and a pipeline — which redis-rs sends to one node — must
//! stay in one slot: keys of one task share the hash tag `{<id>}`, so a
//! pipeline of one task's keys is fine. A pipeline across tasks or across
//! cross-task keys goes through [`Store::query_pipe`] instead, which on a
//! cluster sends its commands concurrently, each to its own slot, and on a
//! single Redis stays one round trip.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use deadpool_redis::{
    redis::{
        self, aio::ConnectionLike, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisFuture,
        ScriptInvocation, ServerErrorKind, Value,
    },
    PoolConfig, Runtime, Timeouts,
};

use super::{Store, StoreError};

/// Where the store's connections come from.
#[derive(Clone)]
pub(super) enum Pools {
    Single(deadpool::managed::Pool<OnIo<Manager>>),
    Cluster(deadpool::managed::Pool<OnIo<deadpool_redis::cluster::Manager>>),
}

/// A pooled connection to one Redis or to a Redis Cluster.
pub enum Conn {
    Single(SingleConn),
    Cluster(deadpool::managed::Object<OnIo<deadpool_redis::cluster::Manager>>),
}

/// A connection checked out of the single-Redis pool again within this
/// long of its last checkout is handed out as it is; an older one is
/// checked first (deadpool-redis's `UNWATCH` + `PING`).
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// deadpool-redis's manager with a cheaper checkout: its recycle check is a
/// round trip before every command sequence (strace showed an `UNWATCH` +
/// `PING` ahead of each create, claim and sweep). Here only a connection
/// idle for [`RECHECK_AFTER`] is checked, or any connection once one has
/// failed in use since its last checkout (Redis restarted: its siblings are
/// dead too); the one that failed leaves the pool ([`SingleConn`]).
pub(super) struct Manager {
    inner: deadpool_redis::Manager,
    last_break: Arc<BreakClock>,
}

impl Manager {
    fn new(inner: deadpool_redis::Manager) -> Self {
        let last_break = BreakClock {
            last_ms: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        };
        Self {
            inner,
            last_break: Arc::new(last_break),
        }
    }
}

/// The runtime that drives the store's connections: one thread of its own.
///
/// redis-rs drives a connection from a task on the runtime that creates
/// it. Made on a caller's runtime (an actix worker's, a test's), a
/// connection dies when that runtime ends, without having failed, and fails
/// the first command of its next holder (`broken pipe`), on any runtime.
/// Made here, every connection lives as long as the pool.
pub(super) struct IoRuntime(Option<tokio::runtime::Runtime>);

impl IoRuntime {
    fn start() -> std::io::Result<Arc<Self>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("redis-io")
            .enable_all()
            .build()?;
        Ok(Arc::new(Self(Some(rt))))
    }

    /// Runs `make` (a connection's creation) on this runtime.
    async fn make<T: Send + 'static>(
        &self,
        make: impl std::future::Future<Output = redis::RedisResult<T>> + Send + 'static,
    ) -> redis::RedisResult<T> {
        let rt = self.0.as_ref().expect("the runtime runs until dropped");
        rt.spawn(make).await.map_err(|e| {
            redis::RedisError::from(std::io::Error::other(format!(
                "making a redis connection on the redis-io runtime: {e}"
            )))
        })?
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // Dropped from within another runtime (a store dropped in a
        // handler): a plain drop would block there, and panic.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A pool manager whose connections are made on the [`IoRuntime`].
pub struct OnIo<M> {
    inner: Arc<M>,
    io: Arc<IoRuntime>,
}

impl<M> std::fmt::Debug for OnIo<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnIo").finish_non_exhaustive()
    }
}

impl<M> deadpool::managed::Manager for OnIo<M>
where
    M: deadpool::managed::Manager<Error = redis::RedisError> + Send + Sync + 'static,
    M::Type: Send + 'static,
{
    type Type = M::Type;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<Self::Type, Self::Error> {
        let inner = Arc::clone(&self.inner);
        self.io.make(async move { inner.create().await }).await
    }

    async fn recycle(
        &self,
        conn: &mut Self::Type,
        metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Self::Error> {
        self.inner.recycle(conn, metrics).await
    }
}

impl deadpool::managed::Manager for Manager {
    type Type = redis::aio::MultiplexedConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<Self::Type, Self::Error> {
        self.inner.create().await
    }

    async fn recycle(
        &self,
        conn: &mut Self::Type,
        metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Self::Error> {
        let idle = metrics.last_used();
        let clock = &self.last_break;
        let checked_out_ms = clock.now_ms().saturating_sub(idle.as_millis() as u64);
        let broke_since = clock.last_ms.load(Ordering::Relaxed) >= checked_out_ms;
        if idle < RECHECK_AFTER && !broke_since {
            return Ok(());
        }
        self.inner.recycle(conn, metrics).await
    }
}

/// A connection of the single-Redis pool: held alone, or shared.
///
/// Shared (no `WAIT` to send): a clone of the pool's most recently used
/// multiplexed connection, which goes back to the pool at once, so the
/// commands of concurrent requests leave together on one connection (one
/// write, one read, and less work for Redis per command: less api and
/// Redis CPU per create and per drained task in every A/B round). Held
/// alone (`REDIS_MIN_REPLICAS` > 0): a `WAIT` blocks its connection, which
/// must not hold up other requests.
///
/// A command that fails for the connection's sake (I/O, a dropped
/// connection, a timeout) empties the pool of its idle connections and
/// marks the pool's break clock, so every connection out at the time is
/// checked before its next use; a held one leaves the pool when dropped,
/// instead of going back to it.
pub struct SingleConn {
    conn: Option<Held>,
    broken: bool,
    /// Where a failure is recorded ([`Manager`]'s `last_break_ms`).
    last_break: Arc<BreakClock>,
    /// Emptied of its idle connections when one fails: they share its fate.
    pool: deadpool::managed::Pool<OnIo<Manager>>,
}

/// When a connection of a pool last failed in use (ms since `epoch`; 0: never).
#[derive(Debug)]
pub(super) struct BreakClock {
    last_ms: AtomicU64,
    epoch: std::time::Instant,
}

impl BreakClock {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

enum Held {
    Alone(deadpool::managed::Object<OnIo<Manager>>),
    Shared(redis::aio::MultiplexedConnection),
}

impl Held {
    fn conn(&mut self) -> &mut redis::aio::MultiplexedConnection {
        match self {
            Self::Alone(pooled) => pooled,
            Self::Shared(conn) => conn,
        }
    }
}

impl std::fmt::Debug for SingleConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleConn")
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Drop for SingleConn {
    fn drop(&mut self) {
        if self.broken {
            if let Some(Held::Alone(pooled)) = self.conn.take() {
                drop(deadpool::managed::Object::take(pooled));
            }
        }
    }
}

/// Whether `e` means the connection itself is unusable.
fn breaks_connection(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() || e.is_timeout()
}

impl SingleConn {
    /// Runs `send` on the pooled connection, marking it broken when its
    /// answer says the connection is unusable.
    fn watched<'a, T: Send + 'a>(
        &'a mut self,
        send: impl FnOnce(&'a mut redis::aio::MultiplexedConnection) -> RedisFuture<'a, T> + Send + 'a,
    ) -> RedisFuture<'a, T> {
        let Self {
            conn,
            broken,
            last_break,
            pool,
        } = self;
        let Some(held) = conn.as_mut() else {
            return Box::pin(async { Err(gone()) });
        };
        let sent = send(held.conn());
        Box::pin(async move {
            let answer = sent.await;
            if answer.as_ref().is_err_and(breaks_connection) {
                *broken = true;
                last_break
                    .last_ms
                    .store(last_break.now_ms(), Ordering::Relaxed);
                // The idle ones go now (a shared connection among them):
                // the clock's ms-grained check missed those checked out in
                // the same millisecond, which shared checkouts made likely.
                pool.retain(|_, _| false);
            }
            answer
        })
    }
}

impl ConnectionLike for SingleConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.watched(move |c| c.req_packed_command(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.watched(move |c| c.req_packed_commands(pipeline, offset, count))
    }

    fn get_db(&self) -> i64 {
        match &self.conn {
            Some(Held::Alone(pooled)) => pooled.get_db(),
            Some(Held::Shared(conn)) => conn.get_db(),
            None => 0,
        }
    }
}

/// The error of a connection already taken out of the pool (not reached:
/// only `Drop` takes it).
fn gone() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the redis connection was closed",
    ))
}

/// Longest wait for one reply from a single Redis.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

fn pool_config(max_connections: usize) -> PoolConfig {
    PoolConfig {
        max_size: max_connections,
        timeouts: Timeouts {
            wait: Some(Duration::from_secs(2)),
            create: Some(Duration::from_secs(2)),
            recycle: Some(Duration::from_secs(2)),
        },
        // The most recently used first: shared checkouts
        // ([`SingleConn`]) keep to one hot connection.
        queue_mode: deadpool::managed::QueueMode::Lifo,
    }
}

/// A pool of `manager`'s connections, each made on an [`IoRuntime`] of the
/// pool's own.
fn pool_on_io<M>(
    manager: M,
    max_connections: usize,
) -> anyhow::Result<deadpool::managed::Pool<OnIo<M>>>
where
    OnIo<M>: deadpool::managed::Manager,
{
    let manager = OnIo {
        inner: Arc::new(manager),
        io: IoRuntime::start()?,
    };
    Ok(deadpool::managed::Pool::builder(manager)
        .config(pool_config(max_connections))
        .runtime(Runtime::Tokio1)
        .build()?)
}

impl Pools {
    /// A pool on one Redis at `url`. A reply may take up to
    /// [`RESPONSE_TIMEOUT`]: redis-rs's own default (500 ms) failed requests
    /// and sweeps of a loaded 2-core machine whose Redis was merely slow.
    pub(super) fn single(url: &str, max_connections: usize) -> anyhow::Result<Self> {
        let connection =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager = Manager::new(deadpool_redis::Manager::new_with_config(url, connection)?);
        Ok(Self::Single(pool_on_io(manager, max_connections)?))
    }

    /// A pool on the Redis Cluster that `seeds` (any of its nodes) belong to.
    /// Connections are multiplexed, so a few serve many requests.
    pub(super) fn cluster(seeds: &[String], max_connections: usize) -> anyhow::Result<Self> {
        let manager = deadpool_redis::cluster::Manager::new(seeds.to_vec(), false)?;
        Ok(Self::Cluster(pool_on_io(manager, max_connections)?))
    }

    /// A connection: on one Redis, `shared` with other requests or held
    /// alone ([`SingleConn`]); on a cluster, its multiplexed connection.
    pub(super) async fn get(&self, shared: bool) -> Result<Conn, StoreError> {
        Ok(match self {
            Self::Single(pool) => Conn::Single(SingleConn {
                conn: Some({
                    let pooled = pool.get().await.map_err(|e| {
                        StoreError::Unavailable(anyhow::Error::new(e).context("redis pool"))
                    })?;
                    if shared {
                        Held::Shared((*pooled).clone())
                    } else {
                        Held::Alone(pooled)
                    }
                }),
                broken: false,
                last_break: Arc::clone(&pool.manager().inner.last_break),
                pool: pool.clone(),
            }),
            Self::Cluster(pool) => Conn::Cluster(pool.get().await.map_err(|e| {
                StoreError::Unavailable(anyhow::Error::new(e).context("redis cluster pool"))
            })?),
        })
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Conn::Single",
            Self::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl Store {
    /// Whether the store runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.pool, Pools::Cluster(_))
    }

    /// Runs `pipe`, whose commands may touch keys of different slots (tasks
    /// of their own, cross-task keys): one round trip on a single Redis; on a
    /// cluster its commands concurrently, each routed by its key, their
    /// answers in order. Not atomic either way. `pipe` must not use
    /// `.ignore()` or `.atomic()` (the cluster path answers every command).
    pub(super) async fn query_pipe<T: FromRedisValue>(
        &self,
        conn: &mut Conn,
        pipe: &Pipeline,
    ) -> Result<T, StoreError> {
        match conn {
            Conn::Single(c) => Ok(pipe.query_async(c).await?),
            Conn::Cluster(c) => {
                let values = concurrently(c, pipe).await?;
                redis::from_redis_value(Value::Array(values))
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            }
        }
    }
}

impl Store {
    /// Runs `before` (commands of any slots, their answers discarded), then
    /// every script call of `calls`, answering the calls' results in order.
    /// On a single Redis: one pipeline (one round trip; `EVALSHA` in a
    /// pipeline cannot fall back to `EVAL`, so on `NOSCRIPT` it loads the
    /// script and sends the pipeline again). On a cluster:
    /// `before` through [`Store::query_pipe`], then the calls concurrently,
    /// each to the slot of its keys (all of one call's keys in one slot),
    /// each loading its script on a primary that lacks it (`NOSCRIPT`).
    /// Not atomic either way. `before` must not use `.ignore()` or `.atomic()`.
    pub(super) async fn invoke_many<T: FromRedisValue>(
        &self,
        conn: &mut Conn,
        before: &Pipeline,
        calls: &[ScriptInvocation<'_>],
    ) -> Result<Vec<T>, StoreError> {
        match conn {
            Conn::Single(c) => {
                let mut pipe = redis::pipe();
                for cmd in before.cmd_iter() {
                    pipe.add_command(cmd.clone()).ignore();
                }
                for call in calls {
                    pipe.invoke_script(call);
                }
                // Only `before` ran when the script was missing, and its
                // commands (`ZADD`s) repeat harmlessly. Every call runs the
                // same script: loading the first loads them all.
                query_loading(c, &pipe, &calls[..calls.len().min(1)]).await
            }
            Conn::Cluster(c) => {
                let shared: &redis::cluster_async::ClusterConnection = c;
                concurrently(shared, before).await?;
                let answers = calls.iter().map(|call| {
                    let mut c = shared.clone();
                    async move { call.invoke_async::<T>(&mut c).await }
                });
                Ok(futures_util::future::try_join_all(answers).await?)
            }
        }
    }
}

/// Sends `pipe` on a single Redis, one round trip. `EVALSHA` in a pipeline
/// cannot fall back to `EVAL`: on `NOSCRIPT` (a fresh or restarted Redis)
/// the scripts of `calls` are loaded and the pipeline is sent again, so
/// every command of `pipe` must be harmless to repeat.
pub(super) async fn query_loading<T: FromRedisValue>(
    c: &mut SingleConn,
    pipe: &Pipeline,
    calls: &[ScriptInvocation<'_>],
) -> Result<T, StoreError> {
    match pipe.query_async(c).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            for call in calls {
                let _: String = call.load_async(c).await?;
            }
            Ok(pipe.query_async(c).await?)
        }
        answer => Ok(answer?),
    }
}

/// The commands of `pipe`, sent concurrently on the cluster, each routed by
/// its key; their answers in order.
async fn concurrently(
    shared: &redis::cluster_async::ClusterConnection,
    pipe: &Pipeline,
) -> redis::RedisResult<Vec<Value>> {
    let answers = pipe.cmd_iter().map(|cmd| {
        let mut c = shared.clone();
        async move { cmd.query_async::<Value>(&mut c).await }
    });
    futures_util::future::try_join_all(answers).await
}

/// Longest wait for replicas to acknowledge a write ([`Store::replicated`]).
pub(super) const REPLICA_WAIT: Duration = Duration::from_millis(1000);

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM of its hash tag, or of
/// the whole key, mod 16384), as Redis computes it.
fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

impl Store {
    /// After a write to `key` on `conn` that must not be lost (a create, a
    /// claim, a terminal state): `WAIT` until `REDIS_MIN_REPLICAS` replicas
    /// have it, at most [`REPLICA_WAIT`]; fewer → an error (the request
    /// answers 503, not success unreplicated). On a cluster the `WAIT` goes
    /// to the primary of `key`'s slot, over the connection the write took.
    /// Nothing to do when the setting is 0.
    pub(super) async fn replicated(&self, conn: &mut Conn, key: &str) -> Result<(), StoreError> {
        self.wait_replicas(conn, Some(key)).await
    }

    /// [`Store::replicated`] after writes to keys of many slots (a batch):
    /// on a cluster the `WAIT` goes to every primary, and the fewest
    /// acknowledgements count.
    pub(super) async fn replicated_everywhere(&self, conn: &mut Conn) -> Result<(), StoreError> {
        self.wait_replicas(conn, None).await
    }

    async fn wait_replicas(&self, conn: &mut Conn, key: Option<&str>) -> Result<(), StoreError> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        if self.min_replicas == 0 {
            return Ok(());
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.min_replicas)
            .arg(REPLICA_WAIT.as_millis() as u64);
        let acked: i64 = match conn {
            Conn::Single(c) => wait.query_async(c).await?,
            // redis-rs sends a `WAIT` to every primary, answering the least.
            Conn::Cluster(c) if key.is_none() => wait.query_async(&mut **c).await?,
            Conn::Cluster(c) => {
                let route = Route::new(key_slot(key.unwrap_or_default()), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = c.route_command(wait, routing).await?;
                redis::from_redis_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))?
            }
        };
        if acked < i64::from(self.min_replicas) {
            return Err(StoreError::Unavailable(anyhow::anyhow!(
                "only {acked} of REDIS_MIN_REPLICAS={} redis replicas acknowledged the write \
                 within {} ms",
                self.min_replicas,
                REPLICA_WAIT.as_millis()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::key_slot;

    #[test]
    fn slots_are_redis_s() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("a{}b"), key_slot("a{}b"));
        assert_eq!(key_slot("task:{abc}"), key_slot("abc"));
    }
}
