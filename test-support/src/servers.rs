//! Private Redis and RabbitMQ servers, for fault tests and the chaos driver.
//!
//! The shared servers on 6379 and 5672 serve every other test in parallel, so
//! they are never stopped or paused. A test that needs Redis to freeze or
//! RabbitMQ to restart starts a server of its own on free loopback ports:
//!
//! - [`PrivateRedis`]: `redis-server` without persistence as a child process;
//!   [`PrivateRedis::pause`] / [`PrivateRedis::resume`] (SIGSTOP / SIGCONT)
//!   make it unreachable and back without losing its data.
//! - [`PrivateRabbit`]: a RabbitMQ node of its own (name `tf-<random>@localhost`,
//!   its own mnesia and log directories, config and plugins files, so neither
//!   `/etc/rabbitmq/rabbitmq.conf` nor `rabbitmq-env.conf` is read), running in
//!   the foreground in a process group of its own. [`PrivateRabbit::stop`] (a
//!   clean shutdown) or [`PrivateRabbit::kill`] (SIGKILL, a crash), then
//!   [`PrivateRabbit::start_again`] on the same mnesia directory: durable
//!   queues and persistent messages survive, as on a real broker restart.
//!   Booting takes about 7 s on a 2-core machine.
//!
//! - [`PrivateRedisCluster`]: a Redis Cluster (e.g. 3 primaries, 1 replica
//!   each) of `redis-server` processes; kill the primary of a slot, watch the
//!   replica take over, restart the old primary as a replica.
//! - [`PrivateRabbitCluster`]: [`PrivateRabbit`] nodes sharing one Erlang
//!   cookie, joined with `rabbitmqctl join_cluster`; kill and restart a node.
//!
//! All are killed, and their directories removed, when dropped.
//! Signals go through `kill(1)`, so this needs no `unsafe`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

mod rabbit_cluster;
mod redis_cluster;
pub use rabbit_cluster::PrivateRabbitCluster;
pub use redis_cluster::{ClusterNodeInfo, PrivateRedisCluster};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 works")
}

/// Sends `signal` (a name such as `TERM`, `KILL`, `STOP`, `CONT`) to `pid`,
/// or to the process group `pid` when `group` is true.
///
/// # Errors
/// `kill` could not run or refused (e.g. no such process).
pub fn send_signal(pid: u32, signal: &str, group: bool) -> anyhow::Result<()> {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(&target)
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{signal} {target} failed ({status})");
    }
    Ok(())
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

async fn wait_tcp(port: u16, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A `redis-server` of the caller's own, without persistence.
#[derive(Debug)]
pub struct PrivateRedis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    paused: bool,
}

impl PrivateRedis {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    ///
    /// # Errors
    /// `redis-server` is missing or does not come up within 10 s.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        let redis = Self {
            port,
            child,
            paused: false,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if redis.ping().await.is_ok() {
                return Ok(redis);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("redis-server on port {port} did not answer PING within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its URL (database 0).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// PING over a fresh connection.
    ///
    /// # Errors
    /// No answer.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    ///
    /// # Errors
    /// The signal could not be sent.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        send_signal(self.pid()?, "STOP", false)?;
        self.paused = true;
        Ok(())
    }

    /// Thaws it (SIGCONT); every key is still there.
    ///
    /// # Errors
    /// The signal could not be sent.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        send_signal(self.pid()?, "CONT", false)?;
        self.paused = false;
        Ok(())
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("redis-server has exited")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if self.paused {
            if let Some(pid) = self.child.id() {
                let _ = send_signal(pid, "CONT", false);
            }
        }
        // kill_on_drop sends SIGKILL.
    }
}

/// Settings of a [`PrivateRabbit`] beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct RabbitOptions {
    /// `consumer_timeout` in ms (RabbitMQ's default, 30 min, when `None`).
    pub consumer_timeout_ms: Option<u64>,
    /// How often channels check it (`channel_tick_interval`, 60 s by default).
    pub channel_tick_ms: Option<u64>,
}

/// A RabbitMQ node of the caller's own, restartable on the same data.
#[derive(Debug)]
pub struct PrivateRabbit {
    /// The node name, `tf-<random>@localhost`.
    pub node: String,
    /// Its AMQP port on 127.0.0.1.
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    boots: u32,
}

impl PrivateRabbit {
    /// Writes the node's files into a fresh directory and boots it, waiting
    /// (at most 90 s) until it accepts AMQP connections.
    ///
    /// # Errors
    /// `rabbitmq-server` is missing or the node does not come up.
    pub async fn start(options: RabbitOptions) -> anyhow::Result<Self> {
        let mut rabbit = Self::prepare(&options)?;
        rabbit.start_again().await?;
        Ok(rabbit)
    }

    /// Writes the node's files into a fresh directory without booting it.
    fn prepare(options: &RabbitOptions) -> anyhow::Result<Self> {
        let id = short_id();
        let port = free_port();
        let mut dist_port = free_port();
        while dist_port == port {
            dist_port = free_port();
        }
        let dir = std::env::temp_dir().join(format!("taskforge-rabbit-{id}"));
        std::fs::create_dir_all(dir.join("mnesia"))?;
        std::fs::create_dir_all(dir.join("log"))?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        std::fs::write(dir.join("env.conf"), "")?;
        let mut conf =
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users.guest = true\n");
        if let Some(ms) = options.consumer_timeout_ms {
            conf.push_str(&format!("consumer_timeout = {ms}\n"));
        }
        std::fs::write(dir.join("rabbitmq.conf"), conf)?;
        let advanced = match options.channel_tick_ms {
            Some(ms) => format!("[{{rabbit, [{{channel_tick_interval, {ms}}}]}}].\n"),
            None => "[].\n".to_owned(),
        };
        std::fs::write(dir.join("advanced.config"), advanced)?;
        Ok(Self {
            node: format!("tf-{id}@localhost"),
            port,
            dist_port,
            dir,
            child: None,
            boots: 0,
        })
    }

    /// AMQP URL of its default vhost.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The node's directory (its `out-<n>.log` files hold each boot's output).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the node process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Boots the node on its existing data (after [`Self::stop`] or
    /// [`Self::kill`]), waiting until it accepts AMQP connections.
    ///
    /// # Errors
    /// The node is running, or does not come up within 90 s.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("the node {} is already running", self.node);
        }
        self.boots += 1;
        let log = std::fs::File::create(self.dir.join(format!("out-{}.log", self.boots)))?;
        let dir = &self.dir;
        let child = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("env.conf"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("starting rabbitmq-server (is it installed?)")?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "rabbitmq node {} exited while booting ({status}); see {}",
                    self.node,
                    self.dir.display()
                );
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                self.kill().await;
                bail!(
                    "rabbitmq node {} did not accept connections within 90 s; see {}",
                    self.node,
                    self.dir.display()
                );
            }
            if wait_tcp(self.port, Duration::from_millis(200)).await {
                let connected = lapin::Connection::connect(
                    &self.amqp_url(),
                    lapin::ConnectionProperties::default(),
                )
                .await;
                if let Ok(conn) = connected {
                    let _ = conn.close(200, "ready".into()).await;
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the node cleanly (SIGTERM to its start script, which runs the
    /// broker's own shutdown), waiting for the whole process group; SIGKILL
    /// after 30 s.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = send_signal(pid, "TERM", false);
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = send_signal(pid, "KILL", true);
                let _ = child.wait().await;
            }
            wait_group_gone(pid).await;
        }
    }

    /// Runs `rabbitmqctl -n <node> <args>` against this node (never the
    /// shared one), e.g. `["set_vm_memory_high_watermark", "0.0000001"]` to
    /// raise a memory alarm; returns its output.
    ///
    /// # Errors
    /// `rabbitmqctl` is missing or fails.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .env("HOME", &self.dir)
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running rabbitmqctl (is it installed?)")?;
        if !out.status.success() {
            bail!(
                "rabbitmqctl {args:?} on {} failed ({}): {}",
                self.node,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Freezes the node (SIGSTOP to its process group): connections stay
    /// open and nothing answers, like a broker that hangs.
    ///
    /// # Errors
    /// The node is not running, or the signal could not be sent.
    pub fn pause(&self) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .context("the node is not running")?;
        send_signal(pid, "STOP", true)
    }

    /// Thaws a node frozen by [`Self::pause`] (SIGCONT to its process group).
    ///
    /// # Errors
    /// The node is not running, or the signal could not be sent.
    pub fn resume(&self) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .context("the node is not running")?;
        send_signal(pid, "CONT", true)
    }

    /// Kills the node (SIGKILL to its process group), as a crash would.
    pub async fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = send_signal(pid, "KILL", true);
            let _ = child.wait().await;
            wait_group_gone(pid).await;
        }
    }
}

/// Waits (at most 10 s) until no process of group `pgid` is left, killing stragglers.
async fn wait_group_gone(pgid: u32) {
    for i in 0..200 {
        // `kill -0` succeeds while any member of the group lives.
        if send_signal(pgid, "0", true).is_err() {
            return;
        }
        if i == 40 {
            let _ = send_signal(pgid, "KILL", true);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = send_signal(pid, "KILL", true);
        }
        if std::env::var_os("KEEP_PRIVATE_RABBIT").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
