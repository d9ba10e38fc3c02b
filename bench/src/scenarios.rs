//! The scenarios. Each run gets a fresh sandbox (vhost + key prefix) and
//! fresh api and worker processes with the settings it needs, and returns
//! named figures; the caller keeps the median over runs.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use task_model::{EventView, TaskStatus};

use crate::{
    client::{Api, Metrics},
    infra::{self, CpuProbe, Infra, Sandbox},
    procs::{Launcher, Proc},
    stats,
};

/// What a scenario run measured: named figures and raw latency samples (ms).
#[derive(Debug, Default)]
pub(crate) struct RunOut {
    pub(crate) values: BTreeMap<String, f64>,
    pub(crate) latencies: Vec<f64>,
    /// Named latency samples (ms) of runs that measure several things (the peer).
    pub(crate) samples: BTreeMap<String, Vec<f64>>,
    /// Parts that failed while the rest went on (the peer's variants).
    pub(crate) failures: Vec<String>,
}

impl RunOut {
    fn set(&mut self, key: impl Into<String>, value: f64) {
        self.values.insert(key.into(), value);
    }
}

/// Sizes of every scenario.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) create_levels: Vec<(usize, usize)>,
    pub(crate) create_warmup: usize,
    /// `POST /tasks/batch`: this many requests of `batch_size` tasks, one client.
    pub(crate) batches: usize,
    pub(crate) batch_size: usize,
    /// Tasks stored before the `stored` scenario measures creates and lists.
    pub(crate) stored_n: usize,
    pub(crate) dispatch_n: usize,
    pub(crate) drain_n: usize,
    pub(crate) drain_workers: usize,
    pub(crate) makespan_n: usize,
    pub(crate) makespan_stage_ms: u64,
    pub(crate) makespan_concurrency: u16,
    /// The large makespan: this many tasks of `makespan_stage_ms` on one
    /// worker of as much concurrency.
    pub(crate) makespan_large_n: usize,
    pub(crate) cancel_n: usize,
    pub(crate) cancel_stage_ms: u64,
}

/// What every scenario needs.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) launcher: Launcher,
    pub(crate) plan: Plan,
}

/// Runs `body` in a fresh sandbox and removes the sandbox afterwards, whatever happened.
pub(crate) async fn in_sandbox<F, Fut, T>(infra: &Infra, body: F) -> anyhow::Result<T>
where
    F: FnOnce(Sandbox) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let sb = infra.sandbox().await?;
    let out = body(sb.clone()).await;
    // Killed children may still hold connections for a moment; the vhost goes anyway.
    if let Err(e) = sb.cleanup().await {
        eprintln!("bench: warning: cleaning up {}: {e:#}", sb.vhost);
    }
    out
}

fn one_stage(stage_ms: u64) -> Value {
    json!({"stages": 1, "stage_ms": stage_ms, "timeout_secs": 120})
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Milliseconds from `from` to `to` on the wall clock (the api's timestamps
/// come from the Redis server's clock, on this same machine, with
/// millisecond resolution).
fn diff_ms(from: impl Into<DateTime<Utc>>, to: impl Into<DateTime<Utc>>) -> f64 {
    (to.into() - from.into()).num_microseconds().unwrap_or(0) as f64 / 1e3
}

/// The middle of the millisecond an api timestamp names (they are truncated
/// to whole milliseconds), for comparing it with the client's finer clock.
fn mid(at: DateTime<Utc>) -> DateTime<Utc> {
    at + chrono::Duration::microseconds(500)
}

/// `total` creates from `concurrency` clients sharing one counter; returns
/// the elapsed time and each request's latency (ms).
async fn create_load(
    api: &Api,
    body: &Value,
    total: usize,
    concurrency: usize,
) -> anyhow::Result<(Duration, Vec<f64>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients = (0..concurrency).map(|_| {
        let (api, body, next) = (api.clone(), body.clone(), Arc::clone(&next));
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                api.create(&body).await?;
                lat.push(ms(t.elapsed()));
            }
            anyhow::Ok(lat)
        })
    });
    let mut all = Vec::with_capacity(total);
    for lat in futures_util::future::try_join_all(clients).await? {
        all.extend(lat?);
    }
    Ok((started.elapsed(), all))
}

/// Records the peak RSS of each process as `footprint.<scenario>.<role>_mb`
/// (the largest when a role has several), then stops them.
async fn footprint(out: &mut RunOut, scenario: &str, procs: Vec<(&str, Proc)>) {
    for (role, proc) in procs {
        let key = format!("footprint.{scenario}.{role}_mb");
        let peak = proc.peak_rss_mb();
        let prev = out.values.get(&key).copied().unwrap_or(0.0);
        out.set(key, prev.max(peak));
        proc.stop().await;
    }
}

/// The creates a CPU probe and the api's metrics attribute to a phase.
fn cpu_breakdown(
    out: &mut RunOut,
    prefix: &str,
    before: &[(String, f64)],
    after: &[(String, f64)],
    tasks: usize,
    wall: Duration,
) {
    let delta = infra::cpu_delta(before, after);
    let mut total = 0.0;
    for (group, secs) in &delta {
        out.set(
            format!("{prefix}.cpu_us_per_task.{group}"),
            secs * 1e6 / tasks as f64,
        );
        total += secs;
    }
    out.set(
        format!("{prefix}.cpu_us_per_task.total"),
        total * 1e6 / tasks as f64,
    );
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    out.set(
        format!("{prefix}.cpu_busy_pct"),
        100.0 * total / (cores * wall.as_secs_f64()),
    );
}

/// Mean server-side time (ms) of a histogram between two scrapes.
fn mean_between(before: &Metrics, after: &Metrics, name: &str, labels: &[&str]) -> f64 {
    let (s0, c0) = before.histogram(name, labels);
    let (s1, c1) = after.histogram(name, labels);
    if c1 > c0 {
        (s1 - s0) / (c1 - c0) * 1e3
    } else {
        f64::NAN
    }
}

// ---------------------------------------------------------------------------
// create
// ---------------------------------------------------------------------------

/// POST /tasks per second at each client concurrency, workers stopped.
pub(crate) async fn create(ctx: &Ctx, sb: Sandbox) -> anyhow::Result<RunOut> {
    let mut out = RunOut::default();
    let (api_proc, base) = ctx.launcher.api(&sb, "create-api").await?;
    let api = Api::new(&base);
    let body = one_stage(0);
    for &(concurrency, count) in &ctx.plan.create_levels {
        create_load(&api, &body, ctx.plan.create_warmup, concurrency).await?;
        let mut probe = CpuProbe::shared();
        probe.add("api", vec![api_proc.pid]);
        let m0 = api.metrics().await?;
        let c0 = probe.read();
        let s0 = infra::context_switches(api_proc.pid);
        let (elapsed, lat) = create_load(&api, &body, count, concurrency).await?;
        let s1 = infra::context_switches(api_proc.pid);
        let c1 = probe.read();
        let m1 = api.metrics().await?;
        let key = format!("create.c{concurrency}");
        out.set(format!("{key}.rate"), count as f64 / elapsed.as_secs_f64());
        out.set(format!("{key}.p50_ms"), stats::percentile(&lat, 50.0));
        out.set(format!("{key}.p99_ms"), stats::percentile(&lat, 99.0));
        out.set(
            format!("{key}.server_ms"),
            mean_between(
                &m0,
                &m1,
                "taskforge_http_request_duration_seconds",
                &["method=\"POST\"", "status=\"202\""],
            ),
        );
        cpu_breakdown(&mut out, &key, &c0, &c1, count, elapsed);
        out.set(
            format!("{key}.api_switches_per_task"),
            (s1 - s0) / count as f64,
        );
    }
    footprint(&mut out, "create", vec![("api", api_proc)]).await;
    Ok(out)
}

// ---------------------------------------------------------------------------
// batch
// ---------------------------------------------------------------------------

/// `POST /tasks/batch` of `batch_size` tasks, one request at a time from
/// one client, workers stopped: tasks created per second (after one
/// warm-up batch).
pub(crate) async fn batch(ctx: &Ctx, sb: Sandbox) -> anyhow::Result<RunOut> {
    let mut out = RunOut::default();
    let (api_proc, base) = ctx.launcher.api(&sb, "batch-api").await?;
    let api = Api::new(&base);
    let body = one_stage(0);
    let size = ctx.plan.batch_size;
    api.create_batch(&body, size).await?;
    let mut probe = CpuProbe::shared();
    probe.add("api", vec![api_proc.pid]);
    let c0 = probe.read();
    let started = Instant::now();
    let mut created = 0;
    let mut lat = Vec::with_capacity(ctx.plan.batches);
    for _ in 0..ctx.plan.batches {
        let t = Instant::now();
        let n = api.create_batch(&body, size).await?;
        if n != size {
            bail!("a batch of {size} answered {n} tasks");
        }
        lat.push(ms(t.elapsed()));
        created += n;
    }
    let elapsed = started.elapsed();
    let c1 = probe.read();
    out.set("batch.rate", created as f64 / elapsed.as_secs_f64());
    out.set("batch.p50_ms", stats::percentile(&lat, 50.0));
    cpu_breakdown(&mut out, "batch", &c0, &c1, created, elapsed);
    footprint(&mut out, "batch", vec![("api", api_proc)]).await;
    Ok(out)
}

// ---------------------------------------------------------------------------
// stored: how cost grows with the tasks kept
// ---------------------------------------------------------------------------

/// With `stored_n` tasks stored (created in batches, workers stopped):
/// creates at 64 clients (compared with the empty store's `create` figure
/// of the same run) and `GET /tasks?limit=50`, one at a time.
pub(crate) async fn stored(ctx: &Ctx, sb: Sandbox) -> anyhow::Result<RunOut> {
    let mut out = RunOut::default();
    let (api_proc, base) = ctx.launcher.api(&sb, "stored-api").await?;
    let api = Api::new(&base);
    let body = one_stage(0);
    let n = ctx.plan.stored_n;
    let mut stored = 0;
    while stored < n {
        stored += api.create_batch(&body, 1000.min(n - stored)).await?;
    }
    // The tasks stay stored; their messages go, so the creates below meet
    // the store's growth, not a queue 100,000 deep (a cost of RabbitMQ's,
    // which no worker would leave standing).
    crate::limit::purge_tasks_queue(&sb.amqp_url).await?;
    let (concurrency, count) = *ctx
        .plan
        .create_levels
        .last()
        .context("the plan has a create level")?;
    create_load(&api, &body, ctx.plan.create_warmup, concurrency).await?;
    let (elapsed, _) = create_load(&api, &body, count, concurrency).await?;
    out.set("stored.n", (n + count) as f64);
    out.set("stored.create_rate", count as f64 / elapsed.as_secs_f64());
    let mut lat = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let listed = api.list_page(50).await?;
        lat.push(ms(t.elapsed()));
        if listed != 50.min(n) {
            bail!("GET /tasks?limit=50 listed {listed} of {n} stored tasks");
        }
    }
    out.set("stored.list_p50_ms", stats::percentile(&lat, 50.0));
    out.set("stored.list_p99_ms", stats::percentile(&lat, 99.0));
    footprint(&mut out, "stored", vec![("api", api_proc)]).await;
    Ok(out)
}

// ---------------------------------------------------------------------------
// dispatch overhead
// ---------------------------------------------------------------------------

/// Reads a task's event stream until its terminal event; returns when the
/// stream opened and the events, each with the wall-clock time it reached
/// the client.
async fn follow(
    api: &Api,
    id: task_model::TaskId,
) -> anyhow::Result<(SystemTime, Vec<(EventView, SystemTime)>)> {
    let mut stream = api.events(id).await?;
    let opened = SystemTime::now();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let next = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .with_context(|| format!("task {id}: no terminal event within 30 s"))??;
        let Some(event) = next else {
            bail!("task {id}: the event stream closed before a terminal event");
        };
        let terminal = event.kind == "status" && event.status.is_terminal();
        seen.push((event, SystemTime::now()));
        if terminal {
            return Ok((opened, seen));
        }
    }
}

fn event_at(events: &[EventView], kind: &str, status: Option<TaskStatus>) -> Option<DateTime<Utc>> {
    events
        .iter()
        .find(|e| e.kind == kind && status.is_none_or(|s| e.status == s))
        .map(|e| e.at)
}

/// POST → COMPLETED for one stage of 0 ms, one task at a time.
pub(crate) async fn dispatch(ctx: &Ctx, sb: Sandbox) -> anyhow::Result<RunOut> {
    let mut out = RunOut::default();
    let (api_proc, base) = ctx.launcher.api(&sb, "dispatch-api").await?;
    let worker = ctx
        .launcher
        .worker(&sb, &base, "dispatch-worker", 64)
        .await?;
    let api = Api::new(&base);
    let body = one_stage(0);
    let mut steps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let warmup = 10.min(ctx.plan.dispatch_n);
    for i in 0..warmup + ctx.plan.dispatch_n {
        let wall0 = SystemTime::now();
        let t0 = Instant::now();
        let id = api.create(&body).await?;
        let posted = t0.elapsed();
        let (opened, followed) = follow(&api, id).await?;
        let total = t0.elapsed();
        let events: Vec<EventView> = followed.iter().map(|(e, _)| e.clone()).collect();
        let last = events.last().expect("follow returns the terminal event");
        if last.status != TaskStatus::Completed {
            bail!("dispatch task {id} ended {}", last.status);
        }
        if i < warmup {
            continue;
        }
        out.latencies.push(ms(total));
        let queued = event_at(&events, "status", Some(TaskStatus::Queued));
        let claimed = event_at(&events, "status", Some(TaskStatus::Processing));
        let progressed = event_at(&events, "progress", None);
        if let (Some(q), Some(c), Some(p)) = (queued, claimed, progressed) {
            let client_done = wall0 + total;
            let mut step = |name, v| steps.entry(name).or_default().push(v);
            step("1_post_answered", ms(posted));
            step("2_stored", diff_ms(wall0, mid(q)));
            step("3_queued_to_claimed", diff_ms(q, c));
            step("4_claimed_to_progress", diff_ms(c, p));
            step("5_progress_to_completed", diff_ms(p, last.at));
            step("6_completed_to_client", diff_ms(mid(last.at), client_done));
        }
        // How long each live event (recorded after the stream opened) took to
        // reach the client: the SSE delivery path on its own.
        let opened: DateTime<Utc> = opened.into();
        for (e, arrived) in &followed {
            if mid(e.at) > opened {
                let lag = diff_ms(mid(e.at), *arrived);
                let name = if e.status.is_terminal() {
                    "sse_lag_terminal"
                } else if e.kind == "progress" {
                    "sse_lag_progress"
                } else {
                    "sse_lag_processing"
                };
                steps.entry(name).or_default().push(lag);
            }
        }
    }
    out.set("dispatch.p50_ms", stats::percentile(&out.latencies, 50.0));
    out.set("dispatch.p99_ms", stats::percentile(&out.latencies, 99.0));
    out.set("dispatch.mean_ms", stats::mean(&out.latencies));
    for (name, v) in steps {
        out.set(format!("dispatch.step.{name}_ms"), stats::mean(&v));
    }
    footprint(
        &mut out,
        "dispatch",
        vec![("api", api_proc), ("worker", worker.proc)],
    )
    .await;
    Ok(out)
}

// ---------------------------------------------------------------------------
// drain
// ---------------------------------------------------------------------------

/// When the completed count first reached `target`, interpolated between samples.
fn crossing(series: &[(f64, f64)], target: f64) -> Option<f64> {
    series.windows(2).find_map(|w| {
        let ((t0, c0), (t1, c1)) = (w[0], w[1]);
        (c0 < target && c1 >= target).then(|| t0 + (t1 - t0) * (target - c0) / (c1 - c0))
    })
}

/// Completes N queued one-stage 0 ms tasks with the given workers.
pub(crate) async fn drain(ctx: &Ctx, sb: Sandbox) -> anyhow::Result<RunOut> {
    let mut out = RunOut::default();
    let n = ctx.plan.drain_n;
    let (api_proc, base) = ctx.launcher.api(&sb, "drain-api").await?;
    let api = Api::new(&base);
    create_load(&api, &one_stage(0), n, 64).await?;

    let mut probe = CpuProbe::shared();
    probe.add("api", vec![api_proc.pid]);
    let c0 = probe.read();
    let api_switches0 = infra::context_switches(api_proc.pid);
    let m0 = api.metrics().await?;
    let started = Instant::now();
    let (sb_ref, base_ref) = (&sb, &base);
    let spawns = (0..ctx.plan.drain_workers).map(|i| async move {
        let name = format!("drain-worker-{i}");
        ctx.launcher.worker(sb_ref, base_ref, &name, 64).await
    });
    let mut workers = futures_util::future::try_join_all(spawns).await?;
    probe.add("workers", workers.iter().map(|w| w.proc.pid).collect());

    let mut series = vec![(0.0, 0.0)];
    let deadline = started + Duration::from_secs(60 + (n / 50) as u64);
    loop {
        let done = api.metrics().await?.completed();
        series.push((started.elapsed().as_secs_f64(), done));
        if done >= n as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "drain: only {done} of {n} tasks completed in {:?}",
                started.elapsed()
            );
        }
        for w in &mut workers {
            w.proc.ensure_running()?;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = started.elapsed();
    let c1 = probe.read();
    let switches: f64 = infra::context_switches(api_proc.pid) - api_switches0;
    let m1 = api.metrics().await?;

    let nf = n as f64;
    let rate = match (crossing(&series, 0.1 * nf), crossing(&series, 0.9 * nf)) {
        (Some(t10), Some(t90)) if t90 > t10 => 0.8 * nf / (t90 - t10),
        _ => nf / wall.as_secs_f64(),
    };
    out.set("drain.rate", rate);
    out.set("drain.overall_rate", nf / wall.as_secs_f64());
    out.set("drain.wall_s", wall.as_secs_f64());
    out.set(
        "drain.worker_startup_ms",
        workers.iter().map(|w| ms(w.startup)).fold(0.0, f64::max),
    );
    cpu_breakdown(&mut out, "drain", &c0, &c1, n, wall);
    out.set("drain.api_switches_per_task", switches / n as f64);
    for kind in ["status", "progress"] {
        out.set(
            format!("drain.callback_server_ms.{kind}"),
            mean_between(
                &m0,
                &m1,
                "taskforge_callback_duration_seconds",
                &[&format!("kind=\"{kind}\"")],
            ),
        );
    }
    let (s0, c0) = m0.histogram("taskforge_callback_duration_seconds", &[]);
    let (s1, c1) = m1.histogram("taskforge_callback_duration_seconds", &[]);
    out.set("drain.callbacks_per_task", (c1 - c0) / nf);
    out.set("drain.callback_server_ms_per_task", (s1 - s0) * 1e3 / nf);
    let mut procs = vec![("api", api_proc)];
    procs.extend(workers.into_iter().map(|w| ("worker", w.proc)));
    footprint(&mut out, "drain", procs).await;
    out.set(
        "drain.redis_bytes_per_task",
        redis_bytes_per_task(&sb, n).await?,
    );
    Ok(out)
}

/// Redis memory per finished task of the sandbox, from `MEMORY USAGE`: the
/// mean of the task's hash and event log over a sample of up to 200 tasks,
/// plus every cross-task key's (the list index, …) share for `n` tasks.
async fn redis_bytes_per_task(sb: &Sandbox, n: usize) -> anyhow::Result<f64> {
    let mut redis = sb.redis().await?;
    let usage = |key: String| {
        let mut cmd = redis::cmd("MEMORY");
        cmd.arg("USAGE").arg(key).arg("SAMPLES").arg(0);
        cmd
    };
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", sb.prefix))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut redis)
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let task_prefix = format!("{}task:", sb.prefix);
    let tasks: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with(&task_prefix))
        .collect();
    let sample: Vec<&&String> = tasks.iter().take(200).collect();
    anyhow::ensure!(!sample.is_empty(), "no task keys under {}", sb.prefix);
    let mut per_task = 0i64;
    for key in &sample {
        let events = key.replacen("task:", "events:", 1);
        let a: Option<i64> = usage((**key).clone()).query_async(&mut redis).await?;
        let b: Option<i64> = usage(events).query_async(&mut redis).await?;
        per_task += a.unwrap_or(0) + b.unwrap_or(0);
    }
    let mut shared = 0i64;
    for key in keys
        .iter()
        .filter(|k| k.starts_with(&format!("{}tasks:", sb.prefix)))
    {
        let used: Option<i64> = usage(key.clone()).query_async(&mut redis).await?;
        shared += used.unwrap_or(0);
    }
    Ok(per_task as f64 / sample.len() as f64 + shared as f64 / n.max(1) as f64)
}

// ---------------------------------------------------------------------------
// makespan
// ---------------------------------------------------------------------------

/// N queued tasks of one long stage, one worker running them all at once.
pub(crate) async fn makespan(ctx: &Ctx, sb: Sandbox) -> anyhow::Result<RunOut> {
    let p = &ctx.plan;
    let size = (p.makespan_n, p.makespan_stage_ms, p.makespan_concurrency);
    makespan_of(ctx, sb, "makespan", size).await
}

/// The same with [`Plan::makespan_large_n`] tasks, on one worker whose
/// concurrency is the task count: as many C calls in flight as tasks.
pub(crate) async fn makespan_large(ctx: &Ctx, sb: Sandbox) -> anyhow::Result<RunOut> {
    let p = &ctx.plan;
    let n = p.makespan_large_n;
    let concurrency = u16::try_from(n).unwrap_or(u16::MAX);
    makespan_of(
        ctx,
        sb,
        "makespan_large",
        (n, p.makespan_stage_ms, concurrency),
    )
    .await
}

/// `n` one-stage tasks of `stage_ms`, all queued before one worker of
/// `concurrency` starts; the figures go under `name.`.
async fn makespan_of(
    ctx: &Ctx,
    sb: Sandbox,
    name: &str,
    (n, stage_ms, concurrency): (usize, u64, u16),
) -> anyhow::Result<RunOut> {
    let mut out = RunOut::default();
    let (api_proc, base) = ctx.launcher.api(&sb, &format!("{name}-api")).await?;
    let api = Api::new(&base);
    create_load(&api, &one_stage(stage_ms), n, 64).await?;

    let mut worker = ctx
        .launcher
        .worker(&sb, &base, &format!("{name}-worker"), concurrency)
        .await?;
    let ready = Instant::now();
    let mut max_threads: f64 = 0.0;
    let deadline = ready + Duration::from_millis(stage_ms * 3) + Duration::from_secs(60);
    loop {
        max_threads = max_threads.max(worker.proc.threads());
        let done = api.metrics().await?.completed();
        if done >= n as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{name}: only {done} of {n} tasks completed in {:?}",
                ready.elapsed()
            );
        }
        worker.proc.ensure_running()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tasks = api.list_all(TaskStatus::Completed).await?;
    if tasks.len() != n {
        bail!(
            "{name}: {} COMPLETED tasks listed, expected {n}",
            tasks.len()
        );
    }
    let started: Vec<DateTime<Utc>> = tasks.iter().filter_map(|t| t.started_at).collect();
    let finished: Vec<DateTime<Utc>> = tasks.iter().filter_map(|t| t.finished_at).collect();
    let (Some(first_start), Some(last_start), Some(last_finish)) = (
        started.iter().min(),
        started.iter().max(),
        finished.iter().max(),
    ) else {
        bail!("{name}: completed tasks without started_at/finished_at");
    };
    let secs = |a: &DateTime<Utc>, b: &DateTime<Utc>| diff_ms(*a, *b) / 1e3;
    let overrun: Vec<f64> = tasks
        .iter()
        .filter_map(|t| Some(secs(&t.started_at?, &t.finished_at?) - stage_ms as f64 / 1e3))
        .collect();
    out.set(format!("{name}.n"), n as f64);
    out.set(
        format!("{name}.s"),
        diff_ms(worker.ready_at, *last_finish) / 1e3,
    );
    out.set(
        format!("{name}.first_claim_s"),
        diff_ms(worker.ready_at, *first_start) / 1e3,
    );
    out.set(
        format!("{name}.claim_spread_s"),
        secs(first_start, last_start),
    );
    out.set(
        format!("{name}.claim_to_finish_overrun_max_s"),
        stats::min_max(&overrun).1,
    );
    out.set(
        format!("{name}.claim_to_finish_overrun_p50_s"),
        stats::percentile(&overrun, 50.0),
    );
    out.set(format!("{name}.worker_threads_max"), max_threads);
    out.set(format!("{name}.worker_startup_ms"), ms(worker.startup));
    let (sum, count) = crate::client::scrape(&worker.metrics_url)
        .await?
        .histogram("taskforge_worker_stage_duration_seconds", &[]);
    out.set(format!("{name}.stage_mean_s"), sum / count);
    let worker_rss = worker.proc.peak_rss_mb();
    out.set(format!("{name}.worker_rss_mb"), worker_rss);
    footprint(
        &mut out,
        name,
        vec![("api", api_proc), ("worker", worker.proc)],
    )
    .await;
    Ok(out)
}

// ---------------------------------------------------------------------------
// cancel
// ---------------------------------------------------------------------------

/// DELETE during a long stage → GET shows CANCELLED.
pub(crate) async fn cancel(ctx: &Ctx, sb: Sandbox) -> anyhow::Result<RunOut> {
    let mut out = RunOut::default();
    let (api_proc, base) = ctx.launcher.api(&sb, "cancel-api").await?;
    let worker = ctx.launcher.worker(&sb, &base, "cancel-worker", 64).await?;
    let api = Api::new(&base);
    let body = one_stage(ctx.plan.cancel_stage_ms);
    let mut steps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..ctx.plan.cancel_n {
        let id = api.create(&body).await?;
        let mut stream = api.events(id).await?;
        let running = async {
            while let Some(e) = stream.next().await? {
                if e.status == TaskStatus::Processing {
                    return Ok(());
                }
            }
            bail!("task {id}: the stream ended before PROCESSING")
        };
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .with_context(|| format!("task {id} not PROCESSING within 10 s"))??;
        drop(stream);
        // Let the stage itself begin (the claim is recorded before the FFI call starts).
        tokio::time::sleep(Duration::from_millis(50)).await;

        let wall0 = SystemTime::now();
        let t0 = Instant::now();
        let (code, status) = api.cancel(id).await?;
        let answered = t0.elapsed();
        if code != 202 {
            bail!("DELETE of a running task answered {code} {status}");
        }
        let seen = loop {
            let task = api.get(id).await?;
            if task.status == TaskStatus::Cancelled {
                break t0.elapsed();
            }
            if task.status.is_terminal() {
                bail!("cancelled task {id} ended {}", task.status);
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("task {id} not CANCELLED 10 s after DELETE");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        out.latencies.push(ms(seen));
        let history = api.history(id).await?;
        let requested = event_at(&history, "cancel_requested", None);
        let cancelled = event_at(&history, "status", Some(TaskStatus::Cancelled));
        if let (Some(r), Some(c)) = (requested, cancelled) {
            let mut step = |name, v| steps.entry(name).or_default().push(v);
            step("1_delete_answered", ms(answered));
            step("2_requested_recorded", diff_ms(wall0, mid(r)));
            step("3_requested_to_cancelled", diff_ms(r, c));
            step("4_cancelled_to_get", diff_ms(mid(c), wall0 + seen));
        }
    }
    out.set("cancel.p50_ms", stats::percentile(&out.latencies, 50.0));
    out.set("cancel.p99_ms", stats::percentile(&out.latencies, 99.0));
    for (name, v) in steps {
        out.set(format!("cancel.step.{name}_ms"), stats::mean(&v));
    }
    footprint(
        &mut out,
        "cancel",
        vec![("api", api_proc), ("worker", worker.proc)],
    )
    .await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossings_interpolate() {
        let s = [(0.0, 0.0), (1.0, 10.0), (2.0, 30.0)];
        assert_eq!(crossing(&s, 5.0), Some(0.5));
        assert_eq!(crossing(&s, 20.0), Some(1.5));
        assert_eq!(crossing(&s, 40.0), None);
    }
}
