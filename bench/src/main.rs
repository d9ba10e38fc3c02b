//! `bench`: Taskforge's load generator and benchmark report.
//!
//! It measures the infrastructure's own limits on this machine (RabbitMQ
//! publish+confirm and consume, Redis running the api's commands), then runs
//! every scenario against real `api-service` and `algo-service` processes it
//! starts itself, each run in a RabbitMQ vhost and Redis key prefix of its
//! own, and prints each figure beside its limit and goal. With `--out-dir`
//! it also writes `BENCHMARKS.md` and `bench.png` there. `--smoke` runs tiny
//! counts (figures not judged) so the test suite keeps the benchmark working;
//! any functional failure exits non-zero.
//!
//! Scenario `peer` runs the same scenarios against a Celery app of ours
//! (`bench/peer/`, under `--peer-python`) for each of its pools, with and
//! without publisher confirms, and the report puts both side by side.
//!
//! `scripts/bench.sh` is the way to run it.

mod client;
mod infra;
mod limit;
mod peer;
mod plot;
mod procs;
mod report;
mod scenarios;
mod stats;

use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::{
    infra::Infra,
    limit::LimitPlan,
    peer::{Peer, PeerPlan},
    procs::Launcher,
    report::{Meta, Results},
    scenarios::{Ctx, Plan, RunOut},
};

/// Taskforge benchmark: infrastructure limits, then every scenario against
/// real api and worker processes; a table on stdout, and BENCHMARKS.md +
/// bench.png with --out-dir.
///
/// `scripts/bench.sh` runs it with --out-dir run/bench/ (run/bench-smoke/,
/// run/bench-partial/ for partial runs); only `scripts/bench.sh --publish`
/// writes the tracked docs/BENCHMARKS.md and docs/bench.png.
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
struct Cli {
    /// Tiny counts, one run each, goals not judged: checks that everything works.
    #[arg(long)]
    smoke: bool,

    /// Where api-service and algo-service are [default: this executable's directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,

    /// Write BENCHMARKS.md and bench.png here (nothing is written without it).
    #[arg(long)]
    out_dir: Option<PathBuf>,

    /// Logs of the started services [default: a fresh directory under the system temp dir].
    #[arg(long)]
    log_dir: Option<PathBuf>,

    /// Runs per scenario [default: 3 for limit, create, batch, drain, makespan; 5 for dispatch, cancel; 1 for stored, makespan-large, peer, and with --smoke].
    #[arg(long)]
    runs: Option<usize>,

    /// Only these scenarios (comma-separated). `peer` runs Celery through
    /// those of create, dispatch, drain, makespan, cancel also named (all
    /// five when none is).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Scenario>,

    /// Skip the Celery peer (the smoke run always does).
    #[arg(long)]
    no_peer: bool,

    /// The Python with Celery, gevent and redis installed, for the peer
    /// (scripts/bench.sh makes run/peer-venv and passes its python).
    #[arg(long, value_name = "PATH")]
    peer_python: Option<PathBuf>,

    /// Tiny peer sizes (a few tasks each), to check the peer's path end to end; figures mean nothing.
    #[arg(long)]
    peer_tiny: bool,

    /// Where the peer's driver.py and celery_app.py are.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/peer"))]
    peer_dir: PathBuf,

    /// An extra setting for every api process, e.g. `--api-env API_WORKERS=1` (repeatable; for experiments).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    api_env: Vec<(String, String)>,

    /// An extra setting for every worker process (repeatable; for experiments).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    worker_env: Vec<(String, String)>,

    /// Redis (keys go under a fresh prefix, deleted afterwards).
    #[arg(
        long,
        env = "BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    redis_url: String,

    /// RabbitMQ's AMQP host:port (a fresh vhost per run, deleted afterwards).
    #[arg(long, env = "BENCH_AMQP_HOST", default_value = "127.0.0.1:5672")]
    amqp_host: String,

    /// RabbitMQ's management API (guest/guest), for creating vhosts and reading versions.
    #[arg(
        long,
        env = "BENCH_RABBITMQ_MGMT",
        default_value = "http://127.0.0.1:15672"
    )]
    mgmt_url: String,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Limit,
    Create,
    Batch,
    Stored,
    Dispatch,
    Drain,
    Makespan,
    /// Makespan of many more tasks (10,000) on one worker of as much concurrency.
    MakespanLarge,
    Cancel,
    /// Celery, through the selected scenarios, each pool × confirm mode.
    Peer,
}

impl Scenario {
    const ALL: [Scenario; 10] = [
        Scenario::Limit,
        Scenario::Create,
        Scenario::Batch,
        Scenario::Stored,
        Scenario::Dispatch,
        Scenario::Drain,
        Scenario::Makespan,
        Scenario::MakespanLarge,
        Scenario::Cancel,
        Scenario::Peer,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Limit => "limit",
            Scenario::Create => "create",
            Scenario::Batch => "batch",
            Scenario::Stored => "stored",
            Scenario::Dispatch => "dispatch",
            Scenario::Drain => "drain",
            Scenario::Makespan => "makespan",
            Scenario::MakespanLarge => "makespan_large",
            Scenario::Cancel => "cancel",
            Scenario::Peer => "peer",
        }
    }

    /// Cheap scenarios get more runs; the peer (30 driver runs) one.
    fn default_runs(self) -> usize {
        match self {
            Scenario::Dispatch | Scenario::Cancel => 5,
            Scenario::Stored | Scenario::MakespanLarge | Scenario::Peer => 1,
            _ => 3,
        }
    }
}

fn plans(smoke: bool) -> (LimitPlan, Plan) {
    if smoke {
        (
            LimitPlan {
                publishes: 300,
                redis_tasks: 200,
                round_trips: 20,
            },
            Plan {
                create_levels: vec![(1, 20), (16, 20), (64, 20)],
                create_warmup: 5,
                batches: 2,
                batch_size: 20,
                stored_n: 200,
                dispatch_n: 5,
                drain_n: 50,
                drain_workers: 2,
                makespan_n: 10,
                makespan_stage_ms: 200,
                makespan_concurrency: 1000,
                makespan_large_n: 50,
                cancel_n: 3,
                cancel_stage_ms: 3000,
            },
        )
    } else {
        (
            LimitPlan {
                publishes: 20_000,
                redis_tasks: 20_000,
                round_trips: 500,
            },
            Plan {
                create_levels: vec![(1, 1500), (16, 4000), (64, 6000)],
                create_warmup: 200,
                batches: 10,
                batch_size: 1000,
                stored_n: 100_000,
                dispatch_n: 300,
                drain_n: 10_000,
                drain_workers: 2,
                makespan_n: 1000,
                makespan_stage_ms: 2000,
                makespan_concurrency: 1000,
                makespan_large_n: 10_000,
                cancel_n: 50,
                cancel_stage_ms: 3000,
            },
        )
    }
}

/// The Celery peer's sizes: smaller than ours where Celery is slow (drain
/// 2,000 instead of 10,000; makespan 200 tasks instead of 1,000, 64 on
/// prefork), one run per variant, so its 30 variants fit in a few minutes.
/// The smoke run skips the peer.
fn peer_plan(tiny: bool) -> PeerPlan {
    if tiny {
        return PeerPlan {
            create_n: 30,
            create_warmup: 5,
            dispatch_n: 10,
            drain_n: 50,
            drain_workers: 2,
            makespan_n: 10,
            makespan_stage_ms: 500,
            cancel_n: 3,
            cancel_stage_ms: 3000,
        };
    }
    PeerPlan {
        create_n: 1500,
        create_warmup: 200,
        dispatch_n: 300,
        drain_n: 2000,
        drain_workers: 2,
        makespan_n: 200,
        makespan_stage_ms: 2000,
        cancel_n: 50,
        cancel_stage_ms: 3000,
    }
}

/// The peer to run, or `None` when it is not selected, skipped or smoke.
async fn peer_of(cli: &Cli, log_dir: &std::path::Path) -> anyhow::Result<Option<(Peer, String)>> {
    let selected = cli.only.is_empty() || cli.only.contains(&Scenario::Peer);
    if !selected || cli.no_peer {
        return Ok(None);
    }
    if cli.smoke {
        eprintln!("bench: the smoke run skips the Celery peer");
        return Ok(None);
    }
    let Some(python) = &cli.peer_python else {
        anyhow::bail!(
            "the Celery peer needs --peer-python (scripts/bench.sh makes run/peer-venv and passes it); \
             or pass --no-peer"
        );
    };
    let peer = Peer {
        python: python.clone(),
        dir: cli.peer_dir.clone(),
        log_dir: log_dir.to_owned(),
        redis_url: cli.redis_url.clone(),
        plan: peer_plan(cli.peer_tiny),
    };
    let version = peer.check().await?;
    Ok(Some((peer, version)))
}

/// The scenarios the peer runs: those of ours selected, or all.
fn peer_scenarios(selected: &[Scenario]) -> Vec<&'static str> {
    let ours: Vec<&'static str> = selected
        .iter()
        .map(|s| s.name())
        .filter(|n| peer::SCENARIOS.contains(n))
        .collect();
    if ours.is_empty() {
        peer::SCENARIOS.to_vec()
    } else {
        ours
    }
}

fn plan_text(l: &LimitPlan, p: &Plan) -> String {
    let levels: Vec<String> = p
        .create_levels
        .iter()
        .map(|(c, n)| format!("{n} at {c}"))
        .collect();
    format!(
        "limits: {} messages, {} Redis tasks, {} sequential round trips; create: {} (after {} warm-up each); \
         batch: {} requests of {} tasks, 1 client; stored: {} tasks (their messages then purged: the tasks stay stored), then the last create level and 200 list pages; dispatch: {} tasks; drain: {} tasks, {} workers × 64; makespan: {} tasks of {} ms, 1 worker × {}; \
         makespan-large: {} tasks of the same, 1 worker × as many; cancel: {} tasks of a {} ms stage",
        l.publishes,
        l.redis_tasks,
        l.round_trips,
        levels.join(", "),
        p.create_warmup,
        p.batches,
        p.batch_size,
        p.stored_n,
        p.dispatch_n,
        p.drain_n,
        p.drain_workers,
        p.makespan_n,
        p.makespan_stage_ms,
        p.makespan_concurrency,
        p.makespan_large_n,
        p.cancel_n,
        p.cancel_stage_ms
    )
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn commit() -> String {
    let Some(sha) = command_output("git", &["rev-parse", "--short", "HEAD"]) else {
        return "unknown".to_owned();
    };
    let dirty = command_output("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{sha} (with uncommitted changes)")
    } else {
        sha
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs everything; `Ok(false)` when a scenario failed (the rest still ran).
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let started = Instant::now();
    let bin_dir = match cli.bin_dir.clone() {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("the executable has no directory")?
            .to_owned(),
    };
    let log_dir = cli.log_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("taskforge-bench-{}", std::process::id()))
    });
    let infra = Infra::new(
        cli.redis_url.clone(),
        cli.amqp_host.clone(),
        cli.mgmt_url.clone(),
    );
    infra.check().await?;
    let mut launcher = Launcher::new(&bin_dir, &log_dir, &cli.redis_url)?;
    launcher.api_env = cli.api_env.clone();
    launcher.worker_env = cli.worker_env.clone();
    let (limit_plan, plan) = plans(cli.smoke);
    let levels: Vec<usize> = plan.create_levels.iter().map(|l| l.0).collect();
    let ctx = Ctx {
        launcher,
        plan: plan.clone(),
    };
    let peer = peer_of(&cli, &log_dir).await?;
    if let Some((_, version)) = &peer {
        eprintln!("bench: the Celery peer runs with {version}");
    }
    let load_before = infra::load_average();
    let (redis_pids, rabbitmq_pids) = infra::servers();
    eprintln!("bench: CPU accounting watches redis {redis_pids:?} and rabbitmq {rabbitmq_pids:?}");
    eprintln!(
        "bench: {} run; binaries from {}, service logs in {}; load average {load_before:.2}",
        if cli.smoke { "smoke" } else { "full" },
        bin_dir.display(),
        log_dir.display()
    );

    let selected: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| cli.only.is_empty() || cli.only.contains(s))
        .filter(|s| *s != Scenario::Peer || peer.is_some())
        .collect();
    let peer_runs = peer_scenarios(&selected);
    let mut results = Results::default();
    let mut failures = Vec::new();
    let redis_url = &cli.redis_url;
    let runs_of = |scenario: Scenario| {
        if cli.smoke {
            1
        } else {
            cli.runs.unwrap_or_else(|| scenario.default_runs())
        }
    };
    // Rounds interleave the scenarios (limit, create, …, limit, create, …),
    // so a slow drift in the machine's background load touches the limits
    // and the figures compared with them alike.
    let rounds = selected.iter().map(|&s| runs_of(s)).max().unwrap_or(0);
    let mut failed: Vec<Scenario> = Vec::new();
    for i in 1..=rounds {
        for &scenario in &selected {
            let runs = runs_of(scenario);
            if i > runs || failed.contains(&scenario) {
                continue;
            }
            let t = Instant::now();
            let shared = infra::CpuProbe::shared_servers();
            let ours = || {
                infra::own_and_children_secs() + shared.read().iter().map(|(_, s)| s).sum::<f64>()
            };
            let (busy0, ours0) = (infra::machine_busy_secs(), ours());
            let out = match scenario {
                Scenario::Limit => {
                    scenarios::in_sandbox(&infra, |sb| async move {
                        let l = limit::run(&sb, redis_url, limit_plan).await?;
                        Ok(limit_values(&l))
                    })
                    .await
                }
                Scenario::Create => {
                    scenarios::in_sandbox(&infra, |sb| scenarios::create(&ctx, sb)).await
                }
                Scenario::Batch => {
                    scenarios::in_sandbox(&infra, |sb| scenarios::batch(&ctx, sb)).await
                }
                Scenario::Stored => {
                    scenarios::in_sandbox(&infra, |sb| scenarios::stored(&ctx, sb)).await
                }
                Scenario::Dispatch => {
                    scenarios::in_sandbox(&infra, |sb| scenarios::dispatch(&ctx, sb)).await
                }
                Scenario::Drain => {
                    scenarios::in_sandbox(&infra, |sb| scenarios::drain(&ctx, sb)).await
                }
                Scenario::Makespan => {
                    scenarios::in_sandbox(&infra, |sb| scenarios::makespan(&ctx, sb)).await
                }
                Scenario::MakespanLarge => {
                    scenarios::in_sandbox(&infra, |sb| scenarios::makespan_large(&ctx, sb)).await
                }
                Scenario::Cancel => {
                    scenarios::in_sandbox(&infra, |sb| scenarios::cancel(&ctx, sb)).await
                }
                // Sandboxes of its own, one per variant; `peer` is Some when selected.
                Scenario::Peer => match &peer {
                    Some((p, _)) => Ok(p.run(&infra, &peer_runs).await),
                    None => continue,
                },
            };
            match out {
                Ok(out) => {
                    // CPU the rest of the machine used meanwhile, in cores.
                    let foreign = ((infra::machine_busy_secs() - busy0) - (ours() - ours0))
                        / t.elapsed().as_secs_f64();
                    eprintln!(
                        "bench: {} run {i}/{runs} done in {:.1} s (other processes: {:.2} cores): {}",
                        scenario.name(),
                        t.elapsed().as_secs_f64(),
                        foreign.max(0.0),
                        headline(&out)
                    );
                    results.foreign_cores.push(foreign.max(0.0));
                    failures.extend(out.failures.iter().cloned());
                    record(&mut results, scenario, out);
                }
                Err(e) => {
                    eprintln!("bench: {} run {i}/{runs} FAILED: {e:#}", scenario.name());
                    failures.push(format!("{} run {i}: {e:#}", scenario.name()));
                    failed.push(scenario);
                }
            }
        }
    }

    let rows = report::rows(&results, plan.makespan_stage_ms, &levels, plan.batch_size);
    println!("{}", report::table(&results, &rows, cli.smoke));
    let side = report::side_by_side(&results, plan.makespan_stage_ms);
    if !side.is_empty() {
        println!("{}", report::side_by_side_text(&side, cli.smoke));
    }
    if let Some(dir) = &cli.out_dir {
        std::fs::create_dir_all(dir)?;
        let meta = Meta {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M").to_string(),
            commit: commit(),
            rustc: command_output("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
            machine: infra::machine(),
            versions: infra.versions().await,
            load_before,
            load_after: infra::load_average(),
            duration_s: started.elapsed().as_secs_f64(),
            smoke: cli.smoke,
            message_bytes: results.median("limit.message_bytes").unwrap_or(0.0) as usize,
            settings: settings_text(&cli.api_env, &cli.worker_env),
            peer: peer.as_ref().map(|(p, v)| (v.clone(), p.plan.text())),
            command: if cli.smoke {
                "bench --smoke".to_owned()
            } else {
                "scripts/bench.sh".to_owned()
            },
        };
        let mut md = report::markdown(
            &results,
            &rows,
            &side,
            &meta,
            &plan_text(&limit_plan, &plan),
        );
        if !failures.is_empty() {
            md.push_str("\n## Failures\n\n");
            for f in &failures {
                md.push_str(&format!("- {}\n", f.replace('\n', " ")));
            }
        }
        std::fs::write(dir.join("BENCHMARKS.md"), md)?;
        plot::draw(&results, &levels, &dir.join("bench.png"))?;
        eprintln!(
            "bench: wrote {} and {}",
            dir.join("BENCHMARKS.md").display(),
            dir.join("bench.png").display()
        );
    }
    eprintln!(
        "bench: finished in {:.0} s; load average {:.2}",
        started.elapsed().as_secs_f64(),
        infra::load_average()
    );
    for f in &failures {
        eprintln!("bench: FAILED: {f}");
    }
    Ok(failures.is_empty())
}

fn settings_text(api: &[(String, String)], worker: &[(String, String)]) -> String {
    let join = |kv: &[(String, String)]| {
        kv.iter()
            .map(|(k, v)| format!("`{k}={v}`"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut parts = vec!["contract defaults, `RUST_LOG=warn`".to_owned()];
    if !api.is_empty() {
        parts.push(format!("api: {}", join(api)));
    }
    if !worker.is_empty() {
        parts.push(format!("workers: {}", join(worker)));
    }
    parts.join("; ")
}

fn limit_values(l: &limit::Limits) -> RunOut {
    let mut out = RunOut::default();
    for (k, v) in [
        ("publish_w64", l.publish_w64),
        ("publish_w1024", l.publish_w1024),
        ("consume_ack", l.consume_ack),
        ("confirm_rtt_ms", l.confirm_rtt_ms),
        ("deliver_ms", l.deliver_ms),
        ("redis_create", l.redis_create),
        ("redis_lifecycle", l.redis_lifecycle),
        ("redis_create_rtt_ms", l.redis_create_rtt_ms),
        ("redis_transition_rtt_ms", l.redis_transition_rtt_ms),
        ("message_bytes", l.message_bytes as f64),
        ("rabbitmq_us_per_publish", l.rabbitmq_us_per_publish),
        ("redis_us_per_create", l.redis_us_per_create),
    ] {
        out.values.insert(format!("limit.{k}"), v);
    }
    out
}

fn record(results: &mut Results, scenario: Scenario, out: RunOut) {
    match scenario {
        Scenario::Dispatch => results.dispatch_latencies.extend(&out.latencies),
        Scenario::Cancel => results.cancel_latencies.extend(&out.latencies),
        _ => {}
    }
    for (k, v) in out.samples {
        results.samples.entry(k).or_default().extend(v);
    }
    for (k, v) in out.values {
        results.values.entry(k).or_default().push(v);
    }
}

/// The run's main figures, for the progress line.
fn headline(out: &RunOut) -> String {
    if out.values.keys().any(|k| k.starts_with("celery.")) {
        return format!(
            "{} Celery figures, {} variants failed",
            out.values.len(),
            out.failures.len()
        );
    }
    const MAIN: &[&str] = &[
        "limit.publish_w64",
        "limit.redis_create",
        "create.c1.rate",
        "create.c16.rate",
        "create.c64.rate",
        "batch.rate",
        "stored.create_rate",
        "stored.list_p99_ms",
        "dispatch.p50_ms",
        "dispatch.p99_ms",
        "drain.rate",
        "makespan.s",
        "makespan.worker_rss_mb",
        "makespan_large.s",
        "makespan_large.worker_rss_mb",
        "cancel.p50_ms",
        "cancel.p99_ms",
    ];
    MAIN.iter()
        .filter_map(|k| {
            out.values
                .get(*k)
                .map(|v| format!("{k}={}", report::num(*v)))
        })
        .collect::<Vec<_>>()
        .join(" ")
}
