//! The processes under test, started from their release (or debug) binaries:
//! the api processes, each on a fixed loopback port (so a restart keeps its
//! address), the workers, each in a slot that a restart fills with a new
//! generation, and (with `--cluster`) HAProxy in front of the apis.

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
    /// The api's Redis: `REDIS_URL`, or `REDIS_CLUSTER_URLS` (comma-separated seeds).
    pub(crate) redis: RedisEnv,
    pub(crate) redis_prefix: String,
    /// `AMQP_URL`: one node, or every node of the cluster, comma-separated.
    pub(crate) amqp_url: String,
    /// `QUEUE_TYPE` of the api and the workers (`None`: the default, classic).
    pub(crate) queue_type: Option<&'static str>,
    pub(crate) lease_secs: u64,
    pub(crate) grace_secs: u64,
    pub(crate) concurrency: u16,
}

/// Which Redis the api uses.
#[derive(Debug, Clone)]
pub(crate) enum RedisEnv {
    /// `REDIS_URL`.
    Single(String),
    /// `REDIS_CLUSTER_URLS`.
    Cluster(String),
}

/// One worker process.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) name: String,
    child: Child,
}

/// The api processes, the workers and HAProxy.
#[derive(Debug)]
pub(crate) struct Procs {
    setup: Setup,
    api_ports: Vec<u16>,
    apis: Vec<Option<Child>>,
    haproxy: Option<Haproxy>,
    workers: Vec<Option<Worker>>,
    generations: Vec<u32>,
    /// `hello world` lines printed by every worker process so far.
    hellos: Arc<AtomicUsize>,
    /// Lines on a worker's stdout that were not `hello world`.
    strays: Arc<AtomicUsize>,
}

impl Procs {
    /// `apis` api processes (each on a port of its own) and `workers` worker slots.
    pub(crate) fn new(setup: Setup, apis: usize, workers: usize) -> Self {
        let mut api_ports: Vec<u16> = Vec::new();
        while api_ports.len() < apis {
            let port = free_port();
            if !api_ports.contains(&port) {
                api_ports.push(port);
            }
        }
        Self {
            setup,
            apis: (0..apis).map(|_| None).collect(),
            api_ports,
            haproxy: None,
            workers: (0..workers).map(|_| None).collect(),
            generations: vec![0; workers],
            hellos: Arc::default(),
            strays: Arc::default(),
        }
    }

    /// Where clients and workers reach the api: HAProxy when it runs, else
    /// the first api process.
    pub(crate) fn api_url(&self) -> String {
        match &self.haproxy {
            Some(h) => format!("http://127.0.0.1:{}", h.port),
            None => self.direct_url(0),
        }
    }

    fn direct_url(&self, api: usize) -> String {
        format!("http://127.0.0.1:{}", self.api_ports[api])
    }

    pub(crate) fn api_count(&self) -> usize {
        self.apis.len()
    }

    /// HAProxy's front and stats addresses, when it runs.
    pub(crate) fn haproxy_ports(&self) -> Option<(u16, u16)> {
        self.haproxy.as_ref().map(|h| (h.port, h.stats_port))
    }

    /// Starts HAProxy (Debian's `haproxy`) round-robin in front of every api
    /// port, with deploy/haproxy.cfg.tmpl's settings (health check `GET
    /// /healthz` every 2 s, out after 2 failures, `option redispatch`).
    pub(crate) async fn start_haproxy(&mut self) -> anyhow::Result<()> {
        let haproxy = Haproxy::start(&self.api_ports, &self.setup.log_dir).await?;
        self.haproxy = Some(haproxy);
        Ok(())
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
            .env("QUEUE_TYPE", self.setup.queue_type.unwrap_or("classic"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Starts api process `api` on its port and waits until its `/healthz` answers.
    pub(crate) async fn start_api(&mut self, api: usize) -> anyhow::Result<()> {
        if self.apis[api].is_some() {
            bail!("api {api} runs already");
        }
        let name = self.api_name(api);
        let log = self.log_file(&name)?;
        let mut cmd = self.command(&self.binary("api-service")?);
        match &self.setup.redis {
            RedisEnv::Single(url) => cmd.env("REDIS_URL", url),
            RedisEnv::Cluster(seeds) => cmd.env("REDIS_CLUSTER_URLS", seeds),
        };
        let child = cmd
            .env("API_BIND", format!("127.0.0.1:{}", self.api_ports[api]))
            .env("REDIS_PREFIX", &self.setup.redis_prefix)
            .env("LEASE_SECS", self.setup.lease_secs.to_string())
            .env("API_WORKERS", "2")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.apis[api] = Some(child);
        let url = format!("{}/healthz", self.direct_url(api));
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Some(status) = self.apis[api]
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.apis[api] = None;
                bail!("{name} exited at start ({status}); see {name}.log");
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
        bail!("{name} did not answer /healthz within 30 s")
    }

    /// `api` for the only api, `api-<n>` when there are several (its log's name).
    pub(crate) fn api_name(&self, api: usize) -> String {
        if self.apis.len() == 1 {
            "api".to_owned()
        } else {
            format!("api-{}", api + 1)
        }
    }

    /// SIGKILLs api process `api`.
    pub(crate) async fn kill_api(&mut self, api: usize) {
        if let Some(mut child) = self.apis[api].take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
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
        for api in 0..self.apis.len() {
            self.kill_api(api).await;
        }
        if let Some(mut haproxy) = self.haproxy.take() {
            let _ = haproxy.child.start_kill();
            let _ = haproxy.child.wait().await;
        }
    }
}

/// HAProxy in front of the api processes.
#[derive(Debug)]
struct Haproxy {
    port: u16,
    stats_port: u16,
    child: Child,
}

/// The deployment's HAProxy configuration; [`Haproxy::start`] fills in its
/// placeholders.
const HAPROXY_TEMPLATE: &str = include_str!("../../deploy/haproxy.cfg.tmpl");

impl Haproxy {
    async fn start(api_ports: &[u16], log_dir: &Path) -> anyhow::Result<Self> {
        let port = free_port();
        let mut stats_port = free_port();
        while stats_port == port || api_ports.contains(&stats_port) {
            stats_port = free_port();
        }
        let servers: String = api_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("    server api-{} 127.0.0.1:{p} check\n", i + 1))
            .collect();
        let config = HAPROXY_TEMPLATE
            .replace("@FRONT_BIND@", &format!("127.0.0.1:{port}"))
            .replace("@STATS_BIND@", &format!("127.0.0.1:{stats_port}"))
            .replace("@API_SERVERS@\n", &servers);
        let path = log_dir.join("haproxy.cfg");
        std::fs::write(&path, config)?;
        let check = Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .await
            .context(
                "running haproxy -c (is Debian's haproxy installed? apt-get install haproxy)",
            )?;
        if !check.status.success() {
            bail!(
                "haproxy rejects {}: {}",
                path.display(),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join("haproxy.log"))?;
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting haproxy")?;
        for _ in 0..200 {
            if let Some(status) = child.try_wait()? {
                bail!("haproxy exited at start ({status}); see haproxy.log");
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Self {
                    port,
                    stats_port,
                    child,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.start_kill();
        bail!("haproxy did not listen on {port} within 10 s")
    }
}
