//! `chaos`: runs tasks across workers while killing and restarting workers
//! (SIGKILL and SIGTERM), RabbitMQ and the api at random moments, then checks
//! that every task reached exactly one terminal state and none was lost.
//!
//! Everything runs on loopback and is the driver's own: a private
//! `redis-server`, a private RabbitMQ node (restarted on its own data), the
//! api and worker binaries from `--bin-dir`. The shared servers on 6379 and
//! 5672 are never touched.
//!
//! With `--cluster` it is the scale-out topology instead, on free loopback
//! ports: a 3-node RabbitMQ cluster, a Redis Cluster of 3 primaries and 3
//! replicas, HAProxy (Debian's `haproxy`, deploy/haproxy.cfg.tmpl) in front
//! of 2 api processes, the workers' `API_URL` being HAProxy; everything with
//! `QUEUE_TYPE=quorum`, `AMQP_URL` listing the 3 nodes and
//! `REDIS_CLUSTER_URLS` the 6 Redis nodes. Its faults, in turn: SIGKILL of
//! a RabbitMQ node (booted again on its data: it rejoins), SIGKILL of a
//! Redis primary (the driver waits until its replica serves its slots, then
//! starts the old one again, and waits until it is a linked replica),
//! SIGKILL of one api behind HAProxy (started again after 0.5 to 3 s), and
//! worker SIGKILL and SIGTERM.
//!
//! Tasks are submitted at a steady pace over the first half of the fault
//! window (faster than the workers run them, so faults hit running tasks), each with an `Idempotency-Key`, retried with the same key until
//! the api answers (so a create cut short by a fault is neither lost nor
//! doubled); a tenth of them (`--cancel-percent`) are also cancelled soon
//! after. About a tenth go in batches of five (`POST /tasks/batch`), about
//! one in seven fails its first attempt at one stage with a retryable error
//! (retried from that stage), and about one in seven of the others is
//! delayed up to 3 s (`delay_ms`), in a batch or not. Faults are drawn from the seed: their moments, the victims, and
//! whether RabbitMQ stops cleanly or is killed. After the window the driver
//! waits (bounded) for every task to end, then checks each through the api:
//!
//! - **lost**: the api does not know a task it accepted (404);
//! - **stuck**: not terminal when the wait is over;
//! - **duplicated**: more than one terminal `status` event.
//!
//! `hello world` lines across all workers are counted against the stages the
//! tasks recorded and reported, not judged: a worker killed between
//! printing a stage and recording it legitimately runs that stage again.
//!
//! The last line gives the figures; the exit code is 1 when anything was
//! lost, stuck, duplicated, never accepted, or a SIGTERMed worker did not
//! exit 0.

mod procs;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use serde_json::{json, Value};
use test_support::servers::{
    PrivateRabbit, PrivateRabbitCluster, PrivateRedis, PrivateRedisCluster, RabbitOptions,
};

use crate::procs::{Procs, RedisEnv, Setup};

const TERMINAL: [&str; 4] = ["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"];

/// Chaos test of a whole Taskforge on loopback: N tasks, K faults, then the verdict.
#[derive(Debug, Parser)]
#[command(name = "chaos", version, args_override_self = true)]
struct Cli {
    /// Tasks to submit.
    #[arg(long, default_value_t = 500)]
    tasks: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Faults to inject, in turn: worker SIGKILL, worker SIGTERM, RabbitMQ
    /// restart, api restart (whatever went down is started again at once).
    /// With --cluster: worker SIGKILL, worker SIGTERM, RabbitMQ node SIGKILL,
    /// Redis primary SIGKILL, api SIGKILL behind HAProxy.
    #[arg(long, default_value_t = 30)]
    faults: usize,
    /// Run on the scale-out topology: 3 RabbitMQ nodes (quorum queues), a
    /// Redis Cluster of 3 primaries + 3 replicas, HAProxy in front of 2 apis
    /// (all private, on free loopback ports; needs Debian's haproxy).
    #[arg(long)]
    cluster: bool,
    /// Seed of every random choice (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// The window in which faults happen; tasks are submitted in its first half.
    #[arg(long, default_value_t = 100)]
    duration_secs: u64,
    /// Submit the tasks over this many seconds instead of the window's first
    /// half (node faults take seconds each, so a --cluster run's faults go on
    /// well past its window: a longer submission keeps tasks under them).
    #[arg(long)]
    submit_secs: Option<u64>,
    /// How long to wait, after the window, for every task to end.
    #[arg(long, default_value_t = 240)]
    settle_secs: u64,
    /// Where `api-service` and `algo-service` are (default: this binary's directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the processes' logs go (default: a fresh directory under the temp dir).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// The api's LEASE_SECS.
    #[arg(long, default_value_t = 5)]
    lease_secs: u64,
    /// The workers' SHUTDOWN_GRACE_SECS (short, so a SIGTERM sometimes
    /// interrupts a task and requeues it rather than waiting for it).
    #[arg(long, default_value_t = 1)]
    grace_secs: u64,
    /// Percentage of tasks also cancelled, 0 to 1.5 s after they are accepted
    /// (queued or running, whatever the faults are doing then).
    #[arg(long, default_value_t = 10)]
    cancel_percent: u8,
    /// The workers' WORKER_CONCURRENCY (low, so the workers stay busy and
    /// the faults hit running tasks).
    #[arg(long, default_value_t = 2)]
    concurrency: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    WorkerSigkill,
    WorkerSigterm,
    ApiRestart,
    RabbitmqRestart,
    RabbitmqNodeKill,
    RedisPrimaryKill,
    ApiKill,
}

impl Fault {
    /// The faults of a run on one node of each.
    const SINGLE: [Fault; 4] = [
        Fault::WorkerSigkill,
        Fault::WorkerSigterm,
        Fault::RabbitmqRestart,
        Fault::ApiRestart,
    ];

    /// The faults of a `--cluster` run.
    const CLUSTER: [Fault; 5] = [
        Fault::WorkerSigkill,
        Fault::WorkerSigterm,
        Fault::RabbitmqNodeKill,
        Fault::RedisPrimaryKill,
        Fault::ApiKill,
    ];

    fn kinds(cluster: bool) -> &'static [Fault] {
        if cluster {
            &Self::CLUSTER
        } else {
            &Self::SINGLE
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::WorkerSigkill => "worker_sigkill",
            Fault::WorkerSigterm => "worker_sigterm",
            Fault::ApiRestart => "api_restart",
            Fault::RabbitmqRestart => "rabbitmq_restart",
            Fault::RabbitmqNodeKill => "rabbitmq_node_kill",
            Fault::RedisPrimaryKill => "redis_primary_kill",
            Fault::ApiKill => "api_kill",
        }
    }
}

/// What became of one submission.
#[derive(Debug)]
enum Submitted {
    /// The ids, one per body sent.
    Accepted { ids: Vec<String> },
    /// The bodies sent, and why.
    Refused(usize, String),
    /// The bodies sent.
    GaveUp(usize),
}

#[derive(Debug, Default)]
struct Verdict {
    tasks: usize,
    accepted: usize,
    faults: BTreeMap<Fault, usize>,
    lost: Vec<String>,
    stuck: Vec<String>,
    duplicated: Vec<String>,
    unsubmitted: usize,
    bad_exits: usize,
    statuses: BTreeMap<String, usize>,
    hellos: usize,
    recorded_stages: u64,
    strays: usize,
    taken_over: usize,
    retried: usize,
    delayed: usize,
    batched: usize,
    dead_letters: Option<u32>,
    seed: u64,
    secs: u64,
    cluster: bool,
    /// Seconds from a Redis primary's SIGKILL until a replica served its slots.
    redis_failovers: Vec<f64>,
}

impl Verdict {
    fn failed(&self) -> bool {
        !(self.lost.is_empty()
            && self.stuck.is_empty()
            && self.duplicated.is_empty()
            && self.unsubmitted == 0
            && self.bad_exits == 0
            && self.strays == 0)
    }

    fn line(&self) -> String {
        let by_kind: Vec<String> = Fault::kinds(self.cluster)
            .iter()
            .map(|f| format!("{}={}", f.name(), self.faults.get(f).copied().unwrap_or(0)))
            .collect();
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{}={n}", s.to_ascii_lowercase()))
            .collect();
        format!(
            "chaos: tasks={} faults={} ({}) lost={} stuck={} duplicated={} unsubmitted={} bad_exits={} [{}] taken_over={} retried={} delayed={} batched={} dead_letters={} hello_world={}/{} seed={} secs={}{}",
            self.tasks,
            self.faults.values().sum::<usize>(),
            by_kind.join(" "),
            self.lost.len(),
            self.stuck.len(),
            self.duplicated.len(),
            self.unsubmitted,
            self.bad_exits,
            statuses.join(" "),
            self.taken_over,
            self.retried,
            self.delayed,
            self.batched,
            self.dead_letters
                .map_or_else(|| "?".to_owned(), |n| n.to_string()),
            self.hellos,
            self.recorded_stages,
            self.seed,
            self.secs,
            if self.cluster {
                let max = self.redis_failovers.iter().copied().fold(0.0, f64::max);
                format!(" topology=cluster redis_failover_max={max:.1}s")
            } else {
                String::new()
            },
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(verdict) => {
            for (what, ids) in [
                ("lost", &verdict.lost),
                ("stuck", &verdict.stuck),
                ("duplicated", &verdict.duplicated),
            ] {
                for id in ids.iter().take(20) {
                    println!("chaos: {what}: {id}");
                }
            }
            println!("{}", verdict.line());
            if verdict.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            println!("chaos: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn say(started: Instant, what: impl std::fmt::Display) {
    println!("chaos: t={:.1}s {what}", started.elapsed().as_secs_f64());
}

async fn run(cli: Cli) -> anyhow::Result<Verdict> {
    let started = Instant::now();
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut rng = fastrand::Rng::with_seed(seed);
    let bin_dir = match cli.bin_dir.clone() {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("this binary's directory")?
            .to_path_buf(),
    };
    let log_dir = cli.log_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("taskforge-chaos-{seed}-{}", std::process::id()))
    });
    std::fs::create_dir_all(&log_dir)?;
    say(
        started,
        format!(
            "seed={seed} tasks={} workers={} faults={} window={}s logs={}",
            cli.tasks,
            cli.workers,
            cli.faults,
            cli.duration_secs,
            log_dir.display()
        ),
    );

    let (mut infra, redis, amqp_url, queue_type) = if cli.cluster {
        let (rabbit, redis) = tokio::join!(
            PrivateRabbitCluster::start(3),
            PrivateRedisCluster::start(3, 1)
        );
        let rabbit = rabbit.context("private 3-node RabbitMQ cluster")?;
        let redis = redis.context("private Redis Cluster")?;
        say(
            started,
            format!(
                "redis cluster on :{} (3 primaries, 3 replicas), rabbitmq nodes {}",
                (0..redis.nodes())
                    .map(|i| redis.port(i).to_string())
                    .collect::<Vec<_>>()
                    .join(",:"),
                rabbit
                    .nodes
                    .iter()
                    .map(|n| format!("{} on :{}", n.node, n.port))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        let seeds = RedisEnv::Cluster(redis.seed_urls().join(","));
        let amqp = rabbit.amqp_url_list();
        (
            Infra::Cluster { redis, rabbit },
            seeds,
            amqp,
            Some("quorum"),
        )
    } else {
        let redis = PrivateRedis::start()
            .await
            .context("private redis-server")?;
        let rabbit = PrivateRabbit::start(RabbitOptions::default())
            .await
            .context("private RabbitMQ node")?;
        say(
            started,
            format!(
                "redis on :{}, rabbitmq node {} on :{}",
                redis.port, rabbit.node, rabbit.port
            ),
        );
        let url = RedisEnv::Single(redis.url());
        let amqp = rabbit.amqp_url();
        (
            Infra::Single {
                _redis: redis,
                rabbit: Box::new(rabbit),
            },
            url,
            amqp,
            None,
        )
    };
    let mut procs = Procs::new(
        Setup {
            bin_dir,
            log_dir: log_dir.clone(),
            token: format!("chaos-{seed}"),
            redis,
            redis_prefix: "chaos:".to_owned(),
            amqp_url,
            queue_type,
            lease_secs: cli.lease_secs,
            grace_secs: cli.grace_secs,
            concurrency: cli.concurrency,
        },
        if cli.cluster { 2 } else { 1 },
        cli.workers,
    );
    let outcome = drive(&cli, &mut rng, &mut procs, &mut infra, started).await;
    procs.shutdown().await;
    infra.stop().await;
    let mut verdict = outcome?;
    verdict.seed = seed;
    verdict.secs = started.elapsed().as_secs();
    Ok(verdict)
}

/// The private servers under the api and the workers.
enum Infra {
    Single {
        /// Held for the run: killed on drop.
        _redis: PrivateRedis,
        rabbit: Box<PrivateRabbit>,
    },
    Cluster {
        redis: PrivateRedisCluster,
        rabbit: PrivateRabbitCluster,
    },
}

impl Infra {
    /// An AMQP URL of a running node (for the final look at `tasks.dead`).
    fn amqp_url(&self) -> String {
        match self {
            Infra::Single { rabbit, .. } => rabbit.amqp_url(),
            Infra::Cluster { rabbit, .. } => rabbit
                .nodes
                .iter()
                .find(|n| n.is_running())
                .unwrap_or(&rabbit.nodes[0])
                .amqp_url(),
        }
    }

    async fn stop(&mut self) {
        match self {
            Infra::Single { rabbit, .. } => rabbit.stop().await,
            Infra::Cluster { redis, rabbit } => {
                rabbit.stop().await;
                redis.stop().await;
            }
        }
    }
}

async fn drive(
    cli: &Cli,
    rng: &mut fastrand::Rng,
    procs: &mut Procs,
    infra: &mut Infra,
    started: Instant,
) -> anyhow::Result<Verdict> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    for n in 0..procs.api_count() {
        procs.start_api(n).await?;
    }
    if cli.cluster {
        procs.start_haproxy().await?;
    }
    for slot in 0..procs.worker_count() {
        procs.start_worker(slot)?;
    }
    let api = procs.api_url();
    wait_ready(&http, &api).await?;
    match procs.haproxy_ports() {
        Some((_, stats)) => say(
            started,
            format!(
                "haproxy on {api} (stats http://127.0.0.1:{stats}/) in front of {} apis, {} workers",
                procs.api_count(),
                cli.workers
            ),
        ),
        None => say(started, format!("api on {api}, {} workers", cli.workers)),
    }

    let window = Duration::from_secs(cli.duration_secs);
    let t0 = tokio::time::Instant::now();

    // Submissions: steady over the first half of the window, retried with the same key.
    let submit_window = cli
        .submit_secs
        .map_or_else(|| window.mul_f64(0.5), Duration::from_secs);
    let give_up_at = t0 + window.max(submit_window) + Duration::from_secs(120);
    let mut submissions = Vec::with_capacity(cli.tasks);
    let mut verdict = Verdict {
        tasks: cli.tasks,
        cluster: cli.cluster,
        ..Verdict::default()
    };
    let mut i = 0;
    while i < cli.tasks {
        let at = t0 + submit_window.mul_f64(i as f64 / cli.tasks.max(1) as f64);
        // A tenth of the tasks go in batches of up to 5 (`POST /tasks/batch`).
        let batch = if rng.u8(0..100) < 10 {
            5.min(cli.tasks - i)
        } else {
            1
        };
        let bodies: Vec<Value> = (0..batch).map(|_| task_body(rng, &mut verdict)).collect();
        if batch > 1 {
            verdict.batched += batch;
        }
        let key = format!("chaos-{i}-{}", rng.u64(..));
        let cancel_after = (rng.u8(0..100) < cli.cancel_percent)
            .then(|| Duration::from_millis(rng.u64(0..=1_500)));
        let http = http.clone();
        let api = api.clone();
        submissions.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let submitted = submit(&http, &api, &key, &bodies, give_up_at).await;
            if let (Submitted::Accepted { ids }, Some(after)) = (&submitted, cancel_after) {
                tokio::time::sleep(after).await;
                cancel(&http, &api, &ids[0], give_up_at).await;
            }
            submitted
        }));
        i += batch;
    }

    // Faults: the kinds in turn, shuffled, at sorted random moments in the window.
    let all = Fault::kinds(cli.cluster);
    let mut kinds: Vec<Fault> = (0..cli.faults).map(|i| all[i % all.len()]).collect();
    rng.shuffle(&mut kinds);
    let mut moments: Vec<Duration> = (0..cli.faults)
        .map(|_| window.mul_f64(0.05 + 0.9 * rng.f64()))
        .collect();
    moments.sort();
    let mut next_free = t0;
    for (n, (kind, at)) in kinds.into_iter().zip(moments).enumerate() {
        // A fault that falls while the previous one was still under way (a
        // RabbitMQ boot takes seconds, a Redis failover and resync too)
        // comes 0.5 to 2 s after it instead.
        let gap = Duration::from_millis(rng.u64(500..=2_000));
        tokio::time::sleep_until((t0 + at).max(next_free + gap)).await;
        let what = inject(kind, rng, procs, infra, &mut verdict).await?;
        *verdict.faults.entry(kind).or_default() += 1;
        next_free = tokio::time::Instant::now();
        say(
            started,
            format!("fault {}/{}: {} {what}", n + 1, cli.faults, kind.name()),
        );
    }

    let mut accepted = Vec::new();
    for handle in submissions {
        match handle.await? {
            Submitted::Accepted { ids } => accepted.extend(ids),
            Submitted::Refused(n, why) => {
                say(started, format!("{n} task(s) refused: {why}"));
                verdict.unsubmitted += n;
            }
            Submitted::GaveUp(n) => verdict.unsubmitted += n,
        }
    }
    verdict.accepted = accepted.len();
    say(
        started,
        format!(
            "faults over; {} tasks accepted, {} never; waiting up to {} s for them to end",
            accepted.len(),
            verdict.unsubmitted,
            cli.settle_secs
        ),
    );

    // Wait (bounded) for every accepted task to end.
    let settle_end = tokio::time::Instant::now() + Duration::from_secs(cli.settle_secs);
    let mut pending: Vec<&String> = accepted.iter().collect();
    let mut last_report = tokio::time::Instant::now();
    while !pending.is_empty() && tokio::time::Instant::now() < settle_end {
        let mut still = Vec::new();
        for task in pending {
            match get_json(&http, &format!("{api}/tasks/{task}")).await {
                Ok((200, t)) if TERMINAL.contains(&t["status"].as_str().unwrap_or("")) => {}
                _ => still.push(task),
            }
        }
        pending = still;
        if last_report.elapsed() > Duration::from_secs(10) {
            say(started, format!("{} tasks not finished yet", pending.len()));
            last_report = tokio::time::Instant::now();
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // The verdict, task by task.
    for id in &accepted {
        let (code, task) = get_json(&http, &format!("{api}/tasks/{id}"))
            .await
            .with_context(|| format!("reading task {id}"))?;
        if code == 404 {
            verdict.lost.push(id.clone());
            continue;
        }
        let status = task["status"].as_str().unwrap_or("").to_owned();
        *verdict.statuses.entry(status.clone()).or_default() += 1;
        if !TERMINAL.contains(&status.as_str()) {
            verdict.stuck.push(format!(
                "{id} {status} stage={} worker={}",
                task["stage"], task["worker"]
            ));
            continue;
        }
        verdict.recorded_stages += task["stage"].as_u64().unwrap_or(0);
        let (_, events) = get_json(&http, &format!("{api}/tasks/{id}/events"))
            .await
            .with_context(|| format!("reading the events of {id}"))?;
        let terminal = events
            .as_array()
            .map(|evs| {
                evs.iter()
                    .filter(|e| {
                        e["type"] == "status"
                            && TERMINAL.contains(&e["status"].as_str().unwrap_or(""))
                    })
                    .count()
            })
            .unwrap_or(0);
        if events.as_array().is_some_and(|evs| {
            evs.iter().any(|e| {
                e["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("taken over"))
            })
        }) {
            verdict.taken_over += 1;
        }
        if terminal != 1 {
            verdict
                .duplicated
                .push(format!("{id} {terminal} terminal events"));
        }
    }
    verdict.dead_letters = dead_letters(&infra.amqp_url()).await;
    verdict.hellos = procs.hellos();
    verdict.strays = procs.strays();
    Ok(verdict)
}

/// Injects one fault and restarts what it took down; says what it did.
async fn inject(
    kind: Fault,
    rng: &mut fastrand::Rng,
    procs: &mut Procs,
    infra: &mut Infra,
    verdict: &mut Verdict,
) -> anyhow::Result<String> {
    Ok(match kind {
        Fault::WorkerSigkill => {
            let slot = rng.usize(..procs.worker_count());
            let old = procs.kill_worker(slot).await.unwrap_or_default();
            let new = procs.start_worker(slot)?;
            format!("{old} killed, {new} started")
        }
        Fault::WorkerSigterm => {
            let slot = rng.usize(..procs.worker_count());
            let (old, status, took) = procs.stop_worker(slot).await.context("a worker to stop")?;
            let exit = match status {
                Some(s) if s.code() == Some(0) => "exit 0".to_owned(),
                Some(s) => {
                    verdict.bad_exits += 1;
                    format!("BAD EXIT {s}")
                }
                None => {
                    verdict.bad_exits += 1;
                    "DID NOT EXIT (killed)".to_owned()
                }
            };
            let new = procs.start_worker(slot)?;
            format!(
                "{old} stopped ({exit} after {:.1}s), {new} started",
                took.as_secs_f64()
            )
        }
        Fault::ApiRestart => {
            procs.kill_api(0).await;
            procs.start_api(0).await?;
            "api killed (SIGKILL) and started again on its port".to_owned()
        }
        Fault::ApiKill => {
            let n = rng.usize(..procs.api_count());
            procs.kill_api(n).await;
            let down = Instant::now();
            // Down long enough, now and then, for HAProxy's health check
            // (every 2 s, out after 2 failures) to take it out.
            tokio::time::sleep(Duration::from_millis(rng.u64(500..=3_000))).await;
            procs.start_api(n).await?;
            format!(
                "{} killed (SIGKILL) behind haproxy, started again after {:.1}s",
                procs.api_name(n),
                down.elapsed().as_secs_f64()
            )
        }
        Fault::RabbitmqNodeKill => {
            let Infra::Cluster { rabbit, .. } = infra else {
                anyhow::bail!("a RabbitMQ node kill needs --cluster");
            };
            let n = rng.usize(..rabbit.nodes.len());
            let node = rabbit.nodes[n].node.clone();
            rabbit.kill(n).await;
            let down = Instant::now();
            tokio::time::sleep(Duration::from_millis(rng.u64(500..=3_000))).await;
            rabbit
                .restart(n)
                .await
                .with_context(|| format!("booting {node} again"))?;
            let booted = down.elapsed();
            rabbit
                .wait_running(rabbit.nodes.len(), Duration::from_secs(90))
                .await
                .with_context(|| format!("{node} rejoining the cluster"))?;
            format!(
                "{node} killed (SIGKILL), booted again on its data after {:.1}s, rejoined after {:.1}s",
                booted.as_secs_f64(),
                down.elapsed().as_secs_f64()
            )
        }
        Fault::RedisPrimaryKill => {
            let Infra::Cluster { redis, .. } = infra else {
                anyhow::bail!("a Redis primary kill needs --cluster");
            };
            let nodes = redis.cluster_nodes().await?;
            let primaries: Vec<usize> = (0..redis.nodes())
                .filter(|&i| {
                    redis.is_running(i)
                        && nodes.iter().any(|n| {
                            n.port == redis.port(i) && n.primary && !n.failed && !n.slots.is_empty()
                        })
                })
                .collect();
            anyhow::ensure!(!primaries.is_empty(), "no live Redis primary to kill");
            let victim = primaries[rng.usize(..primaries.len())];
            let port = redis.port(victim);
            redis.kill(victim).await?;
            let down = Instant::now();
            redis
                .wait_ok(Duration::from_secs(60))
                .await
                .with_context(|| format!("a replica taking over from :{port}"))?;
            let promoted = down.elapsed().as_secs_f64();
            verdict.redis_failovers.push(promoted);
            redis.restart(victim).await?;
            redis
                .wait_replicas_linked(Duration::from_secs(60))
                .await
                .with_context(|| format!(":{port} rejoining as a replica"))?;
            let replica = redis
                .cluster_nodes()
                .await?
                .iter()
                .any(|n| n.port == port && !n.primary);
            format!(
                "primary :{port} killed (SIGKILL), its replica served its slots after {promoted:.1}s, \
                 :{port} back {} after {:.1}s",
                if replica { "as a linked replica" } else { "AS A PRIMARY (unexpected)" },
                down.elapsed().as_secs_f64()
            )
        }
        Fault::RabbitmqRestart => {
            let Infra::Single { rabbit, .. } = infra else {
                anyhow::bail!("a whole-broker restart runs without --cluster");
            };
            let how = if rng.bool() {
                rabbit.stop().await;
                "stopped"
            } else {
                rabbit.kill().await;
                "killed (SIGKILL)"
            };
            let down = Instant::now();
            rabbit
                .start_again()
                .await
                .context("restarting the RabbitMQ node")?;
            format!(
                "node {how} and booted again on its data ({:.1}s down)",
                down.elapsed().as_secs_f64()
            )
        }
    })
}

/// Cancels a task (`DELETE /tasks/{id}`), retrying while the api is away;
/// any answer but a 5xx ends it (200, 202, or 409 when it already finished).
async fn cancel(http: &reqwest::Client, api: &str, id: &str, give_up_at: tokio::time::Instant) {
    let mut delay = Duration::from_millis(100);
    loop {
        if let Ok(res) = http.delete(format!("{api}/tasks/{id}")).send().await {
            if !res.status().is_server_error() {
                return;
            }
        }
        if tokio::time::Instant::now() >= give_up_at {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// One task's create body: 2 to 4 short stages, any priority; about one in
/// seven fails its first attempt at one stage with a retryable error (and
/// so runs again from that stage after a short backoff), about one in seven
/// waits up to 3 s first (`delay_ms`: SCHEDULED, then due).
fn task_body(rng: &mut fastrand::Rng, verdict: &mut Verdict) -> Value {
    let stages = rng.u64(2..=4);
    let mut body = json!({
        "stages": stages,
        "stage_ms": rng.u64(50..=300),
        "priority": rng.u8(0..=9),
        // Far beyond any delay the faults cause: a timeout would be a finding of its own.
        "timeout_secs": 3_600,
    });
    match rng.u8(0..100) {
        0..=14 => {
            verdict.retried += 1;
            body["input"] =
                json!({"fail": {"at_stage": rng.u64(1..=stages), "attempts": 1, "mode": "error"}});
            body["max_attempts"] = json!(3);
            body["retry_backoff_ms"] = json!(200);
        }
        15..=29 => {
            verdict.delayed += 1;
            body["delay_ms"] = json!(rng.u64(0..=3_000));
        }
        _ => {}
    }
    body
}

/// POSTs one task (`POST /tasks`) or several (`POST /tasks/batch`) with
/// its idempotency key until the api takes them (202, or 200 for a replay
/// of a create that went through before a fault).
async fn submit(
    http: &reqwest::Client,
    api: &str,
    key: &str,
    bodies: &[Value],
    give_up_at: tokio::time::Instant,
) -> Submitted {
    let (url, body) = match bodies {
        [one] => (format!("{api}/tasks"), one.clone()),
        many => (format!("{api}/tasks/batch"), json!({ "tasks": many })),
    };
    let mut delay = Duration::from_millis(100);
    loop {
        let sent = http
            .post(&url)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(res) if res.status() == 202 || res.status() == 200 => {
                if let Ok(answer) = res.json::<Value>().await {
                    if let Some(ids) = accepted_ids(&answer, bodies.len()) {
                        return Submitted::Accepted { ids };
                    }
                }
            }
            Ok(res) if res.status().is_server_error() || res.status() == 429 => {}
            Ok(res) => {
                let status = res.status();
                let text = res.text().await.unwrap_or_default();
                return Submitted::Refused(bodies.len(), format!("{status}: {text}"));
            }
            Err(_) => {}
        }
        if tokio::time::Instant::now() >= give_up_at {
            return Submitted::GaveUp(bodies.len());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// The task ids of a create's answer (`{"task_id"}`) or a batch's
/// (`{"tasks": [{"task_id"}, …]}`), when there are as many as bodies sent.
fn accepted_ids(answer: &Value, sent: usize) -> Option<Vec<String>> {
    let ids: Vec<String> = match answer["tasks"].as_array() {
        Some(tasks) => tasks
            .iter()
            .filter_map(|t| t["task_id"].as_str().map(str::to_owned))
            .collect(),
        None => answer["task_id"]
            .as_str()
            .map(str::to_owned)
            .into_iter()
            .collect(),
    };
    (ids.len() == sent).then_some(ids)
}

/// Messages in `tasks.dead` (messages for tasks the api discarded after a
/// failed publish that the broker had kept after all land there; they are
/// not tasks anyone was told exist).
async fn dead_letters(amqp_url: &str) -> Option<u32> {
    let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
        .await
        .ok()?;
    let channel = conn.create_channel().await.ok()?;
    let declared = channel
        .queue_declare(
            "tasks.dead".into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await;
    let _ = conn.close(200, "done".into()).await;
    declared.ok().map(|q| q.message_count())
}

/// GET with a few retries on transport errors and 5xx.
async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<(u16, Value)> {
    let mut last = None;
    for _ in 0..20 {
        match http.get(url).send().await {
            Ok(res) if !res.status().is_server_error() => {
                let code = res.status().as_u16();
                let body = res.json().await.unwrap_or(Value::Null);
                return Ok((code, body));
            }
            Ok(res) => last = Some(anyhow::anyhow!("{url} answered {}", res.status())),
            Err(e) => last = Some(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{url} failed")))
}

/// Waits until `/readyz` answers 200 (Redis and RabbitMQ both reachable).
async fn wait_ready(http: &reqwest::Client, api: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if http
            .get(format!("{api}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the api was not ready within 30 s")
}
