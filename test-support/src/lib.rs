//! The one harness of Taskforge's integration tests, on the real Redis and
//! RabbitMQ.
//!
//! - [`TestEnv`]: a test's private corner of the shared servers. [`TestEnv::new`]
//!   creates a RabbitMQ vhost of its own (through the management API on port
//!   15672) and picks a Redis key prefix of its own, so tests run in parallel
//!   with the contract's exact queue names. [`TestEnv::on_broker`] and
//!   [`TestEnv::with_redis`] point it at private servers instead.
//!   [`TestEnv::cleanup`] deletes what it made (a test that panics leaves its
//!   vhost behind, named `taskforge-test-…`, to look at; deleting such vhosts
//!   is always safe).
//! - [`Stack`]: a whole Taskforge for one test: the api in-process on a port
//!   of its own (stoppable and restartable on that port), `algo-service`
//!   worker processes, and the HTTP calls tests make of the api and in the
//!   workers' place.
//! - [`servers`]: private Redis and RabbitMQ servers for tests that stop,
//!   pause or restart them (never the shared ones).
//!
//! A test:
//!
//! ```no_run
//! # async fn t() {
//! use std::time::Duration;
//! use test_support::{body, Stack};
//!
//! let mut sys = Stack::start(&["--lease-secs", "2"]).await;
//! sys.add_worker("w1").await;
//! let id = sys.create(body(3, 50)).await;
//! sys.assert_all_completed_once(&[id], Duration::from_secs(20)).await;
//! sys.stop().await;
//! # }
//! ```
//!
//! Endpoints come from `TEST_REDIS_URL`, `TEST_AMQP_HOST` (default
//! 127.0.0.1:5672) and `TEST_RABBITMQ_MGMT` (default http://127.0.0.1:15672).
//! `TEST_LOG=1` prints the in-process api's logs, `TEST_WORKER_LOG=<filter>`
//! the workers'.

pub mod servers;
mod stack;

use std::time::Duration;

use anyhow::Context;
use lapin::{options::BasicPublishOptions, types::ShortString, BasicProperties};

pub use stack::{
    body, status_trail, task_ids, terminal_events, worker_binary, Stack, WorkerOpts, WorkerProc,
    TERMINAL, TOKEN,
};

/// One test's private corner of Redis and RabbitMQ.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// The vhost's name (`/` on a private broker).
    pub vhost: String,
    /// AMQP URL into the vhost.
    pub amqp_url: String,
    /// Redis URL (shared server, private prefix, unless [`Self::with_redis`]).
    pub redis_url: String,
    /// Prefix of every key this test's services write.
    pub redis_prefix: String,
    mgmt: String,
    /// Whether [`Self::cleanup`] deletes the vhost (it was made here).
    own_vhost: bool,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl TestEnv {
    /// Creates the vhost and grants `guest` full rights in it.
    ///
    /// # Errors
    /// The management API is unreachable (is `rabbitmq_management` enabled?).
    pub async fn new() -> anyhow::Result<Self> {
        let id = new_id();
        let amqp_host = env_or("TEST_AMQP_HOST", "127.0.0.1:5672");
        let vhost = format!("taskforge-test-{id}");
        let env = Self {
            amqp_url: format!("amqp://guest:guest@{amqp_host}/{vhost}"),
            redis_prefix: format!("test:{id}:"),
            vhost,
            own_vhost: true,
            ..Self::on_broker(String::new())
        };
        env.mgmt(reqwest::Method::PUT, &format!("/api/vhosts/{}", env.vhost))
            .send()
            .await
            .context("creating a vhost through the RabbitMQ management API")?
            .error_for_status()?;
        env.mgmt(
            reqwest::Method::PUT,
            &format!("/api/permissions/{}/guest", env.vhost),
        )
        .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
        .send()
        .await?
        .error_for_status()?;
        Ok(env)
    }

    /// The broker at `amqp_url` (a private node from [`servers`], used as it
    /// is: no vhost is made or deleted) and the shared Redis with a prefix of
    /// the test's own.
    pub fn on_broker(amqp_url: impl Into<String>) -> Self {
        Self {
            vhost: "/".to_owned(),
            amqp_url: amqp_url.into(),
            redis_url: env_or("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_prefix: format!("test:{}:", new_id()),
            mgmt: env_or("TEST_RABBITMQ_MGMT", "http://127.0.0.1:15672"),
            own_vhost: false,
        }
    }

    /// The same, with Redis at `redis_url` (a private server; the prefix stays).
    #[must_use]
    pub fn with_redis(self, redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            ..self
        }
    }

    /// A request to the management API, as `guest`.
    fn mgmt(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        client()
            .request(method, format!("{}{path}", self.mgmt))
            .basic_auth("guest", Some("guest"))
    }

    /// An AMQP connection and a channel into this vhost.
    ///
    /// # Errors
    /// The broker refuses.
    pub async fn channel(&self) -> anyhow::Result<(lapin::Connection, lapin::Channel)> {
        let conn =
            lapin::Connection::connect(&self.amqp_url, lapin::ConnectionProperties::default())
                .await?;
        let channel = conn.create_channel().await?;
        Ok((conn, channel))
    }

    /// Messages ready in a queue of this vhost (a passive declare, exact at
    /// the moment of asking, unlike the management API's sampled stats), or
    /// `None` when the queue does not exist.
    ///
    /// # Errors
    /// The broker is unreachable.
    pub async fn queue_depth(&self, name: &str) -> anyhow::Result<Option<u32>> {
        let (conn, channel) = self.channel().await?;
        let declared = channel
            .queue_declare(
                name.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await;
        let _ = conn.close(200, "done".into()).await;
        match declared {
            Ok(q) => Ok(Some(q.message_count())),
            Err(e) if e.to_string().contains("NOT_FOUND") => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates `queue` in this vhost through the management API, with
    /// `arguments` as JSON, the way `rabbitmq/definitions.json` would.
    ///
    /// # Errors
    /// The management API refuses.
    pub async fn put_queue(&self, queue: &str, arguments: serde_json::Value) -> anyhow::Result<()> {
        self.mgmt(
            reqwest::Method::PUT,
            &format!("/api/queues/{}/{queue}", self.vhost),
        )
        .json(&serde_json::json!({"durable": true, "auto_delete": false, "arguments": arguments}))
        .send()
        .await?
        .error_for_status()?;
        Ok(())
    }

    /// Force-closes every client connection in the vhost, as a broker
    /// restart would; returns how many were listed (the management API lists
    /// a connection a few seconds late).
    ///
    /// # Errors
    /// The management API refuses.
    pub async fn kill_connections(&self) -> anyhow::Result<usize> {
        let conns: Vec<serde_json::Value> = self
            .mgmt(
                reqwest::Method::GET,
                &format!("/api/vhosts/{}/connections", self.vhost),
            )
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut killed = 0;
        for name in conns.iter().filter_map(|c| c.get("name")?.as_str()) {
            self.mgmt(
                reqwest::Method::DELETE,
                &format!("/api/connections/{}", encode(name)),
            )
            .send()
            .await?;
            killed += 1;
        }
        Ok(killed)
    }

    /// A Redis connection.
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    /// How many members the cross-task set `set` (every shard) holds under
    /// this test's prefix.
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn set_size(&self, set: api_service::store::Set) -> anyhow::Result<u64> {
        let mut conn = self.redis().await?;
        let mut pipe = redis::pipe();
        for key in set.keys(&self.redis_prefix) {
            pipe.zcard(key);
        }
        let sizes: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(sizes.into_iter().sum())
    }

    /// Deletes the vhost (and everything in it) if it was made here, and
    /// every key under the prefix.
    pub async fn cleanup(&self) {
        if self.own_vhost {
            let path = format!("/api/vhosts/{}", self.vhost);
            if let Err(e) = self.mgmt(reqwest::Method::DELETE, &path).send().await {
                eprintln!("test cleanup: cannot delete vhost {}: {e}", self.vhost);
            }
        }
        let deleted = async {
            let mut conn = self.redis().await?;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.redis_prefix))
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
            }
            anyhow::Ok(())
        };
        if let Err(e) = deleted.await {
            eprintln!(
                "test cleanup: cannot delete the keys under {}: {e}",
                self.redis_prefix
            );
        }
    }
}

/// Percent-encodes a management API path segment (connection names hold `->` and spaces).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Publishes `body` to `tasks` → `tasks.algo` as the api does (persistent,
/// with a message_id) and waits for the broker's confirm.
///
/// # Errors
/// The broker refuses.
pub async fn publish(
    channel: &lapin::Channel,
    message_id: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    channel
        .basic_publish(
            "tasks".into(),
            "tasks.algo".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default()
                .with_message_id(ShortString::from(message_id))
                .with_delivery_mode(2),
        )
        .await?
        .await?;
    Ok(())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a plain reqwest client builds")
}

/// Polls `check` until it returns `Some`, at most `timeout`; for waiting on
/// state that changes elsewhere (another process) where no event can be
/// awaited. Panics with `what` on timeout.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
