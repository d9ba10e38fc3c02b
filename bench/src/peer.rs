//! The Celery peer, measured in the same run: `bench/peer/driver.py` under
//! the virtualenv's Python (`--peer-python`; `scripts/bench.sh` makes it),
//! once per scenario, confirm mode and pool, each in a sandbox of its own.
//!
//! Figures land as `celery.<pool>.<confirm|noconfirm>.<figure>` (the
//! driver's names, e.g. `dispatch.p50_ms`), and dispatch and cancel
//! latencies as samples under `celery.<pool>.<mode>.<scenario>`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::{
    infra::{Infra, Sandbox},
    scenarios::{self, RunOut},
};

/// Celery's worker pools, in the report's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pool {
    Prefork,
    Threads,
    Gevent,
}

impl Pool {
    pub(crate) const ALL: [Pool; 3] = [Pool::Prefork, Pool::Threads, Pool::Gevent];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Pool::Prefork => "prefork",
            Pool::Threads => "threads",
            Pool::Gevent => "gevent",
        }
    }

    /// Concurrency per worker for a scenario. Prefork forks a process per
    /// slot: 2 (the cores) where one task at a time or short tasks run, and
    /// at most [`PREFORK_MAKESPAN_CAP`] for makespan; threads and gevent
    /// take what the scenario needs (threads are held to 16 for short tasks,
    /// where more only contend for the GIL).
    fn concurrency(self, scenario: &str, n: usize) -> usize {
        match (self, scenario) {
            (Pool::Prefork, "makespan") => n.min(PREFORK_MAKESPAN_CAP),
            (Pool::Prefork, _) => 2,
            (_, "makespan") => n,
            (Pool::Threads, _) => 16,
            (Pool::Gevent, _) => 64,
        }
    }
}

/// Processes one prefork worker forks for makespan (each a Python
/// interpreter, ≈25 MiB; more take seconds to fork on 2 cores).
pub(crate) const PREFORK_MAKESPAN_CAP: usize = 64;

/// Publisher confirms on or off.
pub(crate) const MODES: [(bool, &str); 2] = [(true, "confirm"), (false, "noconfirm")];

/// The scenarios the driver knows, in the bench's order.
pub(crate) const SCENARIOS: [&str; 5] = ["create", "dispatch", "drain", "makespan", "cancel"];

/// Sizes of the peer's runs (one run each per pool and mode).
#[derive(Debug, Clone)]
pub(crate) struct PeerPlan {
    pub(crate) create_n: usize,
    pub(crate) create_warmup: usize,
    pub(crate) dispatch_n: usize,
    pub(crate) drain_n: usize,
    pub(crate) drain_workers: usize,
    pub(crate) makespan_n: usize,
    pub(crate) makespan_stage_ms: u64,
    pub(crate) cancel_n: usize,
    pub(crate) cancel_stage_ms: u64,
}

impl PeerPlan {
    pub(crate) fn text(&self) -> String {
        format!(
            "Celery, one run per pool × confirm mode: create {} (after {} warm-up); dispatch {}; \
             drain {} with {} workers (per worker: prefork 2 processes, threads 16, gevent 64); \
             makespan {} tasks of {} ms on 1 worker of concurrency {} (prefork: {} tasks on {} processes); \
             cancel {} tasks of a {} ms stage (prefork 2 processes, gevent 64; threads cannot terminate a task)",
            self.create_n,
            self.create_warmup,
            self.dispatch_n,
            self.drain_n,
            self.drain_workers,
            self.makespan_n,
            self.makespan_stage_ms,
            self.makespan_n,
            self.makespan_n.min(PREFORK_MAKESPAN_CAP),
            self.makespan_n.min(PREFORK_MAKESPAN_CAP),
            self.cancel_n,
            self.cancel_stage_ms,
        )
    }
}

/// How to run the driver.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) python: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) log_dir: PathBuf,
    pub(crate) redis_url: String,
    pub(crate) plan: PeerPlan,
}

/// What the driver prints.
#[derive(Debug, Deserialize)]
struct DriverOut {
    values: std::collections::BTreeMap<String, Option<f64>>,
    #[serde(default)]
    latencies: Vec<f64>,
}

impl Peer {
    /// Fails with advice unless the Python imports Celery, gevent and redis;
    /// returns Celery's version.
    pub(crate) async fn check(&self) -> anyhow::Result<String> {
        let driver = self.dir.join("driver.py");
        if !driver.is_file() {
            bail!("{} not found (pass --peer-dir)", driver.display());
        }
        let out = tokio::process::Command::new(&self.python)
            .args(["-c", "import sys, celery, gevent, kombu, redis; \
             print(f'Celery {celery.__version__}, kombu {kombu.__version__}, \
             redis-py {redis.__version__}, gevent {gevent.__version__}, Python {sys.version.split()[0]}')"])
            .output()
            .await
            .with_context(|| format!("running {}", self.python.display()))?;
        if !out.status.success() {
            bail!(
                "{} cannot import celery, gevent and redis (scripts/bench.sh installs them in run/peer-venv; \
                 or pass --no-peer):\n{}",
                self.python.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Every selected scenario for each confirm mode and pool. A failed
    /// variant is listed in `failures`; the others still run.
    pub(crate) async fn run(&self, infra: &Infra, selected: &[&str]) -> RunOut {
        let mut out = RunOut::default();
        for scenario in SCENARIOS.iter().filter(|s| selected.contains(s)) {
            for (confirm, mode) in MODES {
                for pool in Pool::ALL {
                    let prefix = format!("celery.{}.{mode}", pool.name());
                    let t = Instant::now();
                    let res = scenarios::in_sandbox(infra, |sb| async move {
                        self.driver(&sb, scenario, pool, confirm).await
                    })
                    .await;
                    match res {
                        Ok(one) => {
                            eprintln!(
                                "bench: peer {prefix} {scenario} done in {:.1} s: {}",
                                t.elapsed().as_secs_f64(),
                                headline(&one, scenario)
                            );
                            merge(&mut out, &prefix, scenario, one);
                        }
                        Err(e) => {
                            eprintln!("bench: peer {prefix} {scenario} FAILED: {e:#}");
                            out.failures
                                .push(format!("peer {prefix} {scenario}: {e:#}"));
                        }
                    }
                }
            }
        }
        out
    }

    fn args(&self, scenario: &str, pool: Pool) -> Vec<String> {
        let p = &self.plan;
        let (count, extra): (usize, Vec<String>) = match scenario {
            "create" => (
                p.create_n,
                vec!["--warmup".into(), p.create_warmup.to_string()],
            ),
            "dispatch" => (p.dispatch_n, vec![]),
            "drain" => (
                p.drain_n,
                vec!["--workers".into(), p.drain_workers.to_string()],
            ),
            "makespan" => (
                pool.concurrency("makespan", p.makespan_n),
                vec!["--stage-ms".into(), p.makespan_stage_ms.to_string()],
            ),
            _ => (
                p.cancel_n,
                vec!["--stage-ms".into(), p.cancel_stage_ms.to_string()],
            ),
        };
        let mut args = vec![
            "--scenario".to_owned(),
            scenario.to_owned(),
            "--pool".to_owned(),
            pool.name().to_owned(),
            "--concurrency".to_owned(),
            pool.concurrency(scenario, count).to_string(),
            "--count".to_owned(),
            count.to_string(),
        ];
        args.extend(extra);
        args
    }

    /// One driver run in `sb`; its figures, un-prefixed.
    async fn driver(
        &self,
        sb: &Sandbox,
        scenario: &str,
        pool: Pool,
        confirm: bool,
    ) -> anyhow::Result<DriverOut> {
        let mode = if confirm { "on" } else { "off" };
        let name = format!("peer-{}-{mode}-{scenario}", pool.name());
        let log_dir = self.log_dir.join(&name);
        std::fs::create_dir_all(&log_dir)?;
        let stderr_path = log_dir.join("driver.log");
        let stderr = std::fs::File::create(&stderr_path)?;
        let mut child = tokio::process::Command::new(&self.python)
            .arg(self.dir.join("driver.py"))
            .args(self.args(scenario, pool))
            .args(["--confirm", mode])
            .args(["--broker-url", &sb.amqp_url])
            .args(["--redis-url", &self.redis_url])
            .args(["--prefix", &sb.prefix])
            .arg("--log-dir")
            .arg(&log_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.python.display()))?;
        let stdout = child.stdout.take().context("the driver's stdout")?;
        let read = async {
            use tokio::io::AsyncReadExt;
            let mut text = String::new();
            let mut stdout = stdout;
            stdout.read_to_string(&mut text).await?;
            let status = child.wait().await?;
            anyhow::Ok((status, text))
        };
        let (status, text) = match tokio::time::timeout(Duration::from_secs(300), read).await {
            Ok(r) => r?,
            Err(_) => {
                terminate(&mut child).await;
                bail!("{name}: no answer in 300 s; see {}", stderr_path.display());
            }
        };
        if !status.success() {
            bail!(
                "{name} exited {status}; last lines of {}:\n{}",
                stderr_path.display(),
                tail(&stderr_path)
            );
        }
        serde_json::from_str(text.trim())
            .with_context(|| format!("{name}: its output is not the JSON expected: {text:?}"))
    }
}

/// SIGTERM (the driver then stops its workers), SIGKILL 20 s later.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn merge(out: &mut RunOut, prefix: &str, scenario: &str, one: DriverOut) {
    for (k, v) in one.values {
        // The driver writes null for a percentile of no samples.
        out.values
            .insert(format!("{prefix}.{k}"), v.unwrap_or(f64::NAN));
    }
    if !one.latencies.is_empty() {
        out.samples
            .insert(format!("{prefix}.{scenario}"), one.latencies);
    }
}

fn headline(one: &DriverOut, scenario: &str) -> String {
    one.values
        .iter()
        .filter(|(k, _)| k.starts_with(scenario) && !k.ends_with("driver_s"))
        .filter_map(|(k, v)| Some(format!("{k}={}", crate::report::num((*v)?))))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefork_makespan_is_capped() {
        assert_eq!(
            Pool::Prefork.concurrency("makespan", 200),
            PREFORK_MAKESPAN_CAP
        );
        assert_eq!(Pool::Threads.concurrency("makespan", 200), 200);
        assert_eq!(Pool::Prefork.concurrency("dispatch", 300), 2);
    }

    #[test]
    fn driver_output_parses_with_nulls() {
        let one: DriverOut = serde_json::from_str(
            r#"{"values": {"cancel.p99_ms": null, "cancel.supported": 0}, "latencies": [], "notes": ["x"]}"#,
        )
        .expect("parses");
        let mut out = RunOut::default();
        merge(&mut out, "celery.threads.confirm", "cancel", one);
        assert!(out.values["celery.threads.confirm.cancel.p99_ms"].is_nan());
        assert_eq!(out.values["celery.threads.confirm.cancel.supported"], 0.0);
        assert!(out.samples.is_empty());
    }
}
