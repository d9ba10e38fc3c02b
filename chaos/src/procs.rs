//! The processes under test, started from their release (or debug) binaries:
//! the api on a fixed loopback port (so a restart keeps its address) and the
//! workers, each in a slot that a restart fills with a new generation.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context};
use test_support::servers::{free_port, send_signal};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// Where the api and the workers find everything.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) bin_dir: PathBuf,
    pub(crate) log_dir: PathBuf,
    pub(crate) token: String,
    pub(crate) redis_url: String,
    pub(crate) redis_prefix: String,
    pub(crate) amqp_url: String,
    pub(crate) lease_secs: u64,
    pub(crate) grace_secs: u64,
    pub(crate) concurrency: u16,
}

/// One worker process.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) name: String,
    child: Child,
}

/// The api and the workers.
#[derive(Debug)]
pub(crate) struct Procs {
    setup: Setup,
    pub(crate) api_port: u16,
    api: Option<Child>,
    workers: Vec<Option<Worker>>,
    generations: Vec<u32>,
    /// `hello world` lines printed by every worker process so far.
    hellos: Arc<AtomicUsize>,
    /// Lines on a worker's stdout that were not `hello world`.
    strays: Arc<AtomicUsize>,
}

impl Procs {
    pub(crate) fn new(setup: Setup, workers: usize) -> Self {
        Self {
            setup,
            api_port: free_port(),
            api: None,
            workers: (0..workers).map(|_| None).collect(),
            generations: vec![0; workers],
            hellos: Arc::default(),
            strays: Arc::default(),
        }
    }

    pub(crate) fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub(crate) fn hellos(&self) -> usize {
        self.hellos.load(Ordering::SeqCst)
    }

    pub(crate) fn strays(&self) -> usize {
        self.strays.load(Ordering::SeqCst)
    }

    pub(crate) fn worker_count(&self) -> usize {
        self.workers.len()
    }

    fn log_file(&self, name: &str) -> anyhow::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.setup.log_dir.join(format!("{name}.log")))
            .with_context(|| format!("opening the log of {name}"))
    }

    fn binary(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.setup.bin_dir.join(name);
        if !path.is_file() {
            bail!(
                "{} not found: build it (cargo build --release -p api-service -p algo-service) or pass --bin-dir",
                path.display()
            );
        }
        Ok(path)
    }

    fn command(&self, binary: &Path) -> Command {
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // No .env of the repository is read: the working directory is the log directory.
            .current_dir(&self.setup.log_dir)
            .env("CALLBACK_TOKEN", &self.setup.token)
            .env("AMQP_URL", &self.setup.amqp_url)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Starts the api on its port and waits until `/healthz` answers.
    pub(crate) async fn start_api(&mut self) -> anyhow::Result<()> {
        let log = self.log_file("api")?;
        let child = self
            .command(&self.binary("api-service")?)
            .env("API_BIND", format!("127.0.0.1:{}", self.api_port))
            .env("REDIS_URL", &self.setup.redis_url)
            .env("REDIS_PREFIX", &self.setup.redis_prefix)
            .env("LEASE_SECS", self.setup.lease_secs.to_string())
            .env("API_WORKERS", "2")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting api-service")?;
        self.api = Some(child);
        let url = format!("{}/healthz", self.api_url());
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Some(status) = self.api.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("api-service exited at start ({status}); see api.log");
            }
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("api-service did not answer /healthz within 30 s")
    }

    /// SIGKILLs the api.
    pub(crate) async fn kill_api(&mut self) {
        if let Some(mut api) = self.api.take() {
            let _ = api.start_kill();
            let _ = api.wait().await;
        }
    }

    /// Starts the next generation of the worker in `slot` (`w1`, then `w1-g2`, …).
    pub(crate) fn start_worker(&mut self, slot: usize) -> anyhow::Result<String> {
        if self.workers[slot].is_some() {
            bail!("worker slot {slot} is taken");
        }
        self.generations[slot] += 1;
        let generation = self.generations[slot];
        let name = if generation == 1 {
            format!("w{}", slot + 1)
        } else {
            format!("w{}-g{generation}", slot + 1)
        };
        let mut child = self
            .command(&self.binary("algo-service")?)
            .env("API_URL", self.api_url())
            .env("WORKER_NAME", &name)
            .env("METRICS_BIND", format!("127.0.0.1:{}", free_port()))
            .env("WORKER_CONCURRENCY", self.setup.concurrency.to_string())
            .env("SHUTDOWN_GRACE_SECS", self.setup.grace_secs.to_string())
            .stdout(Stdio::piped())
            .stderr(self.log_file(&name)?)
            .spawn()
            .with_context(|| format!("starting worker {name}"))?;
        let mut lines = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        let hellos = Arc::clone(&self.hellos);
        let strays = Arc::clone(&self.strays);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "hello world" {
                    hellos.fetch_add(1, Ordering::SeqCst);
                } else {
                    strays.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        self.workers[slot] = Some(Worker {
            name: name.clone(),
            child,
        });
        Ok(name)
    }

    /// SIGKILLs the worker in `slot`; returns its name.
    pub(crate) async fn kill_worker(&mut self, slot: usize) -> Option<String> {
        let mut worker = self.workers[slot].take()?;
        let _ = worker.child.start_kill();
        let _ = worker.child.wait().await;
        Some(worker.name)
    }

    /// SIGTERMs the worker in `slot` and waits for it to exit (SIGKILL after
    /// the grace period plus 15 s). Returns its name, its exit status (`None`
    /// when it had to be killed) and how long it took.
    pub(crate) async fn stop_worker(
        &mut self,
        slot: usize,
    ) -> Option<(String, Option<ExitStatus>, Duration)> {
        let mut worker = self.workers[slot].take()?;
        let started = tokio::time::Instant::now();
        let pid = worker.child.id()?;
        let _ = send_signal(pid, "TERM", false);
        let limit = Duration::from_secs(self.setup.grace_secs + 15);
        let status = match tokio::time::timeout(limit, worker.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = worker.child.start_kill();
                let _ = worker.child.wait().await;
                None
            }
        };
        Some((worker.name, status, started.elapsed()))
    }

    /// Kills everything.
    pub(crate) async fn shutdown(&mut self) {
        for slot in 0..self.workers.len() {
            self.kill_worker(slot).await;
        }
        self.kill_api().await;
    }
}
