//! Isolation for integration tests that talk to the real Redis and RabbitMQ.
//!
//! [`TestEnv::new`] creates a RabbitMQ vhost of its own (through the
//! management API on port 15672) and picks a Redis key prefix of its own, so
//! tests run in parallel with the contract's exact queue names.
//! [`TestEnv::cleanup`] deletes both; call it at the end of a test (a test
//! that panics leaves its vhost behind, named `taskforge-test-…`, to look
//! at; deleting such vhosts is always safe).
//!
//! Endpoints come from `TEST_REDIS_URL`, `TEST_AMQP_HOST` (default
//! 127.0.0.1:5672) and `TEST_RABBITMQ_MGMT` (default http://127.0.0.1:15672).
//!
//! [`servers`] starts private Redis and RabbitMQ servers for tests that stop,
//! pause or restart them (never the shared ones).

pub mod servers;

use std::time::Duration;

use anyhow::Context;

/// One test's private corner of Redis and RabbitMQ.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// The vhost's name.
    pub vhost: String,
    /// AMQP URL into the vhost.
    pub amqp_url: String,
    /// Redis URL (shared server, private prefix).
    pub redis_url: String,
    /// Prefix of every key this test's services write.
    pub redis_prefix: String,
    mgmt: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

impl TestEnv {
    /// Creates the vhost and grants `guest` full rights in it.
    ///
    /// # Errors
    /// The management API is unreachable (is `rabbitmq_management` enabled?).
    pub async fn new() -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let vhost = format!("taskforge-test-{id}");
        let mgmt = env_or("TEST_RABBITMQ_MGMT", "http://127.0.0.1:15672");
        let amqp_host = env_or("TEST_AMQP_HOST", "127.0.0.1:5672");
        let env = Self {
            amqp_url: format!("amqp://guest:guest@{amqp_host}/{vhost}"),
            redis_url: env_or("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_prefix: format!("test:{id}:"),
            vhost,
            mgmt,
        };
        let http = client();
        http.put(format!("{}/api/vhosts/{}", env.mgmt, env.vhost))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .context("creating a vhost through the RabbitMQ management API")?
            .error_for_status()?;
        http.put(format!("{}/api/permissions/{}/guest", env.mgmt, env.vhost))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await?
            .error_for_status()?;
        Ok(env)
    }

    /// Messages ready in a queue of this vhost (a passive declare, exact at
    /// the moment of asking, unlike the management API's sampled stats), or
    /// `None` when the queue does not exist.
    pub async fn queue_depth(&self, name: &str) -> anyhow::Result<Option<u32>> {
        let conn =
            lapin::Connection::connect(&self.amqp_url, lapin::ConnectionProperties::default())
                .await?;
        let channel = conn.create_channel().await?;
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

    /// A Redis connection.
    pub async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    /// Deletes the vhost (and everything in it) and every key under the prefix.
    pub async fn cleanup(&self) {
        if let Err(e) = client()
            .delete(format!("{}/api/vhosts/{}", self.mgmt, self.vhost))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
        {
            eprintln!("test cleanup: cannot delete vhost {}: {e}", self.vhost);
        }
        if let Ok(mut conn) = self.redis().await {
            let pattern = format!("{}*", self.redis_prefix);
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
            }
        }
    }
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

/// Counts the `hello world` lines a worker process prints, in the background;
/// the worker's stdout carries nothing else (its logs go to stderr), so any
/// other line fails the test.
pub fn count_hellos(
    stdout: tokio::process::ChildStdout,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use tokio::io::AsyncBufReadExt;
    let hellos = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&hellos);
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            assert_eq!(
                line, "hello world",
                "the worker's stdout carries only the routine's lines"
            );
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    hellos
}
