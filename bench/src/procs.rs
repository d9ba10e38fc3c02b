//! Starting and stopping `api-service` and `algo-service` for a scenario.
//!
//! Children get a clean Taskforge environment (every contract variable the
//! bench does not set is removed, and they run in the log directory, so no
//! `.env` of the repository applies), their stderr goes to a log file, and
//! the worker's stdout (the routine's `hello world` lines) to /dev/null.
//! They are killed when dropped, so a failing bench leaves none behind.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};

use crate::infra::{self, Sandbox};

/// Every variable of the contract (and the api's extras): removed from the
/// children's inherited environment before the bench sets its own.
const TASKFORGE_VARS: &[&str] = &[
    "API_BIND",
    "REDIS_URL",
    "REDIS_PREFIX",
    "AMQP_URL",
    "API_URL",
    "CALLBACK_TOKEN",
    "API_KEYS",
    "WORKER_NAME",
    "WORKER_CONCURRENCY",
    "METRICS_BIND",
    "DEFAULT_STAGES",
    "DEFAULT_STAGE_MS",
    "DEFAULT_TIMEOUT_SECS",
    "RESULT_TTL_SECS",
    "LEASE_SECS",
    "SHUTDOWN_GRACE_SECS",
    "WEBHOOK_SECRET",
    "WEBHOOK_ALLOWED_HOSTS",
    "LOG_FORMAT",
    "RUST_LOG",
    "REDIS_POOL_SIZE",
    "API_WORKERS",
    "CALLBACK_TIMEOUT_MS",
];

/// A running child process.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) pid: u32,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Proc {
    /// Peak resident set size so far (VmHWM), MiB.
    pub(crate) fn peak_rss_mb(&self) -> f64 {
        infra::status_field(self.pid, "VmHWM").unwrap_or(f64::NAN)
    }

    /// Threads right now.
    pub(crate) fn threads(&self) -> f64 {
        infra::status_field(self.pid, "Threads").unwrap_or(f64::NAN)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails with the log's tail when the process has exited.
    pub(crate) fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.exited() {
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Kills the process and reaps it.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// A worker that is ready, and when it became so.
#[derive(Debug)]
pub(crate) struct ReadyWorker {
    pub(crate) proc: Proc,
    /// Wall-clock time of the first `/healthz` 200 (comparable with the api's timestamps).
    pub(crate) ready_at: SystemTime,
    /// From spawning to ready.
    pub(crate) startup: Duration,
    /// Its `/metrics`.
    pub(crate) metrics_url: String,
}

/// Starts the services with the bench's settings.
#[derive(Debug, Clone)]
pub(crate) struct Launcher {
    bin_dir: PathBuf,
    log_dir: PathBuf,
    token: String,
    redis_url: String,
    http: reqwest::Client,
    /// Extra settings for every api (`--api-env`), applied last.
    pub(crate) api_env: Vec<(String, String)>,
    /// Extra settings for every worker (`--worker-env`), applied last.
    pub(crate) worker_env: Vec<(String, String)>,
}

/// A free TCP port on loopback (closed again, so a small race is possible).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Launcher {
    pub(crate) fn new(bin_dir: &Path, log_dir: &Path, redis_url: &str) -> anyhow::Result<Self> {
        for bin in ["api-service", "algo-service"] {
            let path = bin_dir.join(bin);
            if !path.is_file() {
                bail!(
                    "{} not found: build it (cargo build --release -p api-service -p algo-service) or pass --bin-dir",
                    path.display()
                );
            }
        }
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        // Children run in the log directory: relative paths would break.
        Ok(Self {
            bin_dir: std::fs::canonicalize(bin_dir)?,
            log_dir: std::fs::canonicalize(log_dir)?,
            token: uuid::Uuid::new_v4().simple().to_string(),
            redis_url: redis_url.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
            api_env: Vec::new(),
            worker_env: Vec::new(),
        })
    }

    fn spawn(
        &self,
        bin: &str,
        name: &str,
        env: &[(&str, String)],
        extra: &[(String, String)],
        stdout_null: bool,
    ) -> anyhow::Result<Proc> {
        let log = self.log_dir.join(format!("{name}.log"));
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(self.bin_dir.join(bin));
        for var in TASKFORGE_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .env("LOG_FORMAT", "text")
            .env("CALLBACK_TOKEN", &self.token)
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.log_dir)
            .stdin(Stdio::null())
            .stdout(if stdout_null {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .stderr(stderr)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin_dir.join(bin).display()))?;
        Ok(Proc {
            name: name.to_owned(),
            pid: child.id().unwrap_or(0),
            child,
            log,
        })
    }

    async fn wait_ok(&self, proc: &mut Proc, url: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            proc.ensure_running()?;
            if let Ok(resp) = self.http.get(url).send().await {
                if resp.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready at {url} after {timeout:?}; last lines of its log:\n{}",
                    proc.name,
                    proc.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Starts an api in the sandbox and waits for `/readyz` 200; returns it and its base URL.
    pub(crate) async fn api(&self, sb: &Sandbox, name: &str) -> anyhow::Result<(Proc, String)> {
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let env = [
            ("API_BIND", format!("127.0.0.1:{port}")),
            ("REDIS_URL", self.redis_url.clone()),
            ("REDIS_PREFIX", sb.prefix.clone()),
            ("AMQP_URL", sb.amqp_url.clone()),
            ("API_KEYS", String::new()),
            ("RESULT_TTL_SECS", "3600".to_owned()),
        ];
        let mut proc = self.spawn("api-service", name, &env, &self.api_env, false)?;
        self.wait_ok(
            &mut proc,
            &format!("{base}/readyz"),
            Duration::from_secs(30),
        )
        .await?;
        Ok((proc, base))
    }

    /// Starts a worker in the sandbox, talking to `api`, and waits for its `/healthz` 200.
    pub(crate) async fn worker(
        &self,
        sb: &Sandbox,
        api: &str,
        name: &str,
        concurrency: u16,
    ) -> anyhow::Result<ReadyWorker> {
        let port = free_port()?;
        let env = [
            ("AMQP_URL", sb.amqp_url.clone()),
            ("API_URL", api.to_owned()),
            ("WORKER_NAME", name.to_owned()),
            ("WORKER_CONCURRENCY", concurrency.to_string()),
            ("METRICS_BIND", format!("127.0.0.1:{port}")),
        ];
        let spawned = Instant::now();
        let mut proc = self.spawn("algo-service", name, &env, &self.worker_env, true)?;
        self.wait_ok(
            &mut proc,
            &format!("http://127.0.0.1:{port}/healthz"),
            Duration::from_secs(30),
        )
        .await?;
        Ok(ReadyWorker {
            ready_at: SystemTime::now(),
            startup: spawned.elapsed(),
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            proc,
        })
    }
}
