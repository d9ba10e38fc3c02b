//! The figures, their limits and goals: a table on stdout and `BENCHMARKS.md`.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{infra::Machine, infra::Versions, stats};

/// Everything measured, run by run.
#[derive(Debug, Default)]
pub(crate) struct Results {
    /// Each figure's value in each run.
    pub(crate) values: BTreeMap<String, Vec<f64>>,
    /// Every POST → COMPLETED latency of every dispatch run (ms).
    pub(crate) dispatch_latencies: Vec<f64>,
    /// Every DELETE → CANCELLED latency of every cancel run (ms).
    pub(crate) cancel_latencies: Vec<f64>,
    /// The Celery peer's latencies (ms), e.g. `celery.threads.confirm.dispatch`.
    pub(crate) samples: BTreeMap<String, Vec<f64>>,
    /// CPU used by processes other than the bench, its services, Redis and
    /// RabbitMQ during each run, in cores.
    pub(crate) foreign_cores: Vec<f64>,
}

impl Results {
    pub(crate) fn median(&self, key: &str) -> Option<f64> {
        self.values
            .get(key)
            .filter(|v| !v.is_empty())
            .map(|v| stats::median(v))
    }

    fn spread(&self, key: &str) -> String {
        match self.values.get(key) {
            Some(v) if v.len() > 1 => {
                let (lo, hi) = stats::min_max(v);
                format!("{} runs, {}–{}", v.len(), num(lo), num(hi))
            }
            Some(v) => format!("{} run", v.len()),
            None => String::new(),
        }
    }
}

/// About the run, for the report's head.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) date: String,
    pub(crate) commit: String,
    pub(crate) rustc: String,
    pub(crate) machine: Machine,
    pub(crate) versions: Versions,
    pub(crate) load_before: f64,
    pub(crate) load_after: f64,
    pub(crate) duration_s: f64,
    pub(crate) smoke: bool,
    pub(crate) message_bytes: usize,
    pub(crate) command: String,
    /// Settings beyond the bench's own (`--api-env`, `--worker-env`), or "defaults".
    pub(crate) settings: String,
    /// The Celery peer's versions and sizes, when it ran.
    pub(crate) peer: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy)]
enum Goal {
    None,
    RatioAtLeast(f64),
    RatioAtMost(f64),
    Below(f64),
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) label: String,
    key: String,
    unit: &'static str,
    pub(crate) value: Option<f64>,
    reference: Option<(f64, String)>,
    goal: Goal,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        let (r, _) = self.reference.as_ref()?;
        Some(self.value? / r)
    }

    fn goal_text(&self) -> String {
        match self.goal {
            Goal::None => "reported".to_owned(),
            Goal::RatioAtLeast(x) => format!("≥ {:.0} % of limit", x * 100.0),
            Goal::RatioAtMost(x) => format!("≤ {x} × ideal"),
            Goal::Below(x) => format!("< {} {}", num(x), self.unit),
        }
    }

    /// `Some(met)` for judged goals.
    pub(crate) fn met(&self) -> Option<bool> {
        let v = self.value?;
        match self.goal {
            Goal::None => None,
            Goal::RatioAtLeast(x) => Some(self.ratio()? >= x),
            Goal::RatioAtMost(x) => Some(self.ratio()? <= x),
            Goal::Below(x) => Some(v < x),
        }
    }
}

/// A number with sensible precision for its size.
pub(crate) fn num(x: f64) -> String {
    if x.is_nan() {
        "—".to_owned()
    } else if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else if x.abs() >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The infrastructure floors and ceilings the figures are compared with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refs {
    pub(crate) publish_w64: Option<f64>,
    pub(crate) consume_ack: Option<f64>,
    pub(crate) dispatch_floor: Option<f64>,
    pub(crate) cancel_floor: Option<f64>,
}

impl Refs {
    pub(crate) fn from(r: &Results) -> Self {
        let m = |k: &str| r.median(&format!("limit.{k}"));
        let dispatch_floor = (|| {
            Some(
                m("redis_create_rtt_ms")?
                    + m("confirm_rtt_ms")?.max(m("deliver_ms")?)
                    + 3.0 * m("redis_transition_rtt_ms")?,
            )
        })();
        let cancel_floor = (|| Some(m("deliver_ms")? + 3.0 * m("redis_transition_rtt_ms")?))();
        Self {
            publish_w64: m("publish_w64"),
            consume_ack: m("consume_ack"),
            dispatch_floor,
            cancel_floor,
        }
    }
}

pub(crate) fn rows(
    r: &Results,
    makespan_stage_ms: u64,
    create_levels: &[usize],
    batch_size: usize,
) -> Vec<Row> {
    let refs = Refs::from(r);
    let mut rows = Vec::new();
    let mut add = |label: String, key: String, unit, reference: Option<(f64, String)>, goal| {
        let value = r.median(&key);
        if value.is_some() {
            rows.push(Row {
                label,
                key,
                unit,
                value,
                reference,
                goal,
            });
        }
    };
    let publish = refs
        .publish_w64
        .map(|v| (v, "publish+confirm, window 64".to_owned()));
    for &c in create_levels {
        let goal = if c == 64 {
            Goal::RatioAtLeast(0.6)
        } else {
            Goal::None
        };
        add(
            format!("create, {c} client{}", if c == 1 { "" } else { "s" }),
            format!("create.c{c}.rate"),
            "tasks/s",
            publish.clone(),
            goal,
        );
    }
    add(
        format!("`POST /tasks/batch`, {batch_size} per request"),
        "batch.rate".into(),
        "tasks/s",
        publish.clone(),
        Goal::RatioAtLeast(0.8),
    );
    let empty = r
        .median(&format!(
            "create.c{}.rate",
            create_levels.last().copied().unwrap_or(64)
        ))
        .map(|v| (v, "the same, empty store".to_owned()));
    let stored = r
        .median("stored.n")
        .map_or(String::new(), |n| format!("{n:.0}"));
    add(
        format!(
            "create, {} clients, {stored} tasks stored",
            create_levels.last().copied().unwrap_or(64)
        ),
        "stored.create_rate".into(),
        "tasks/s",
        empty,
        Goal::RatioAtLeast(0.9),
    );
    add(
        format!("`GET /tasks?limit=50` p99, {stored} tasks stored"),
        "stored.list_p99_ms".into(),
        "ms",
        None,
        Goal::Below(5.0),
    );
    let floor = refs
        .dispatch_floor
        .map(|v| (v, "broker + Redis round trips".to_owned()));
    add(
        "dispatch overhead p50".into(),
        "dispatch.p50_ms".into(),
        "ms",
        floor.clone(),
        Goal::None,
    );
    add(
        "dispatch overhead p99".into(),
        "dispatch.p99_ms".into(),
        "ms",
        floor,
        Goal::Below(5.0),
    );
    let drain_ref = refs
        .consume_ack
        .map(|a| (a, "consume+ack, 2 consumers".to_owned()));
    add(
        "drain, 2 workers".into(),
        "drain.rate".into(),
        "tasks/s",
        drain_ref,
        Goal::RatioAtLeast(0.4),
    );
    let ideal = makespan_stage_ms as f64 / 1e3;
    add(
        "makespan".into(),
        "makespan.s".into(),
        "s",
        Some((ideal, format!("ideal {} s", num(ideal)))),
        Goal::RatioAtMost(1.05),
    );
    add(
        "makespan worker peak RSS".into(),
        "makespan.worker_rss_mb".into(),
        "MiB",
        None,
        Goal::Below(100.0),
    );
    let large = r
        .median("makespan_large.n")
        .map_or(String::new(), |n| format!(", {n:.0} tasks"));
    add(
        format!("makespan{large}"),
        "makespan_large.s".into(),
        "s",
        Some((ideal, format!("ideal {} s", num(ideal)))),
        Goal::RatioAtMost(1.15),
    );
    add(
        format!("makespan{large}: worker peak RSS"),
        "makespan_large.worker_rss_mb".into(),
        "MiB",
        None,
        Goal::Below(200.0),
    );
    let cfloor = refs
        .cancel_floor
        .map(|v| (v, "broker + Redis round trips".to_owned()));
    add(
        "cancel → CANCELLED p50".into(),
        "cancel.p50_ms".into(),
        "ms",
        cfloor.clone(),
        Goal::None,
    );
    add(
        "cancel → CANCELLED p99".into(),
        "cancel.p99_ms".into(),
        "ms",
        cfloor,
        Goal::Below(50.0),
    );
    add(
        "Redis per finished task (hash, events, its share of the indexes)".into(),
        "drain.redis_bytes_per_task".into(),
        "bytes",
        None,
        Goal::Below(2048.0),
    );
    for scenario in [
        "create",
        "batch",
        "stored",
        "dispatch",
        "drain",
        "makespan",
        "makespan_large",
        "cancel",
    ] {
        for role in ["api", "worker"] {
            add(
                format!("{scenario}: {role} peak RSS"),
                format!("footprint.{scenario}.{role}_mb"),
                "MiB",
                None,
                Goal::None,
            );
        }
    }
    rows
}

fn met_text(row: &Row, smoke: bool) -> &'static str {
    match (row.met(), smoke) {
        (None, _) => "—",
        (Some(_), true) => "not judged",
        (Some(true), false) => "yes",
        (Some(false), false) => "NO",
    }
}

/// The results as a plain-text table.
pub(crate) fn table(r: &Results, rows: &[Row], smoke: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<30} {:>10} {:<8} {:>10}  {:<30} {:>7}  {:<20} met",
        "figure", "median", "unit", "limit", "(limit is)", "ratio", "goal"
    );
    for row in rows {
        let (limit, what) = row
            .reference
            .as_ref()
            .map_or(("".to_owned(), ""), |(v, w)| (num(*v), w.as_str()));
        let ratio = row.ratio().map_or(String::new(), |x| format!("{x:.2}×"));
        let _ = writeln!(
            out,
            "{:<30} {:>10} {:<8} {:>10}  {:<30} {:>7}  {:<20} {}",
            row.label,
            row.value.map_or("—".into(), num),
            row.unit,
            limit,
            what,
            ratio,
            row.goal_text(),
            met_text(row, smoke)
        );
    }
    let _ = writeln!(out, "\nlimits (median of runs):");
    for (key, label, unit) in LIMITS {
        if let Some(v) = r.median(key) {
            let _ = writeln!(out, "  {label:<58} {:>10} {unit}", num(v));
        }
    }
    out
}

const LIMITS: &[(&str, &str, &str)] = &[
    (
        "limit.publish_w64",
        "RabbitMQ publish+confirm, persistent, window 64",
        "msgs/s",
    ),
    (
        "limit.publish_w1024",
        "RabbitMQ publish+confirm, persistent, window 1024",
        "msgs/s",
    ),
    (
        "limit.consume_ack",
        "RabbitMQ consume + ack, 2 consumers, prefetch 64",
        "msgs/s",
    ),
    (
        "limit.confirm_rtt_ms",
        "RabbitMQ publish → confirm, sequential, p50",
        "ms",
    ),
    (
        "limit.deliver_ms",
        "RabbitMQ publish → delivery to a consumer, sequential, p50",
        "ms",
    ),
    (
        "limit.redis_create",
        "Redis create (pipeline: ZADD outbox, ZADD queued, EVALSHA; then MULTI: ZADD index, ZREM outbox), 64 connections",
        "creates/s",
    ),
    (
        "limit.redis_lifecycle",
        "Redis claim + finish carrying the progress (2 EVALSHA), 64 connections",
        "tasks/s",
    ),
    (
        "limit.redis_create_rtt_ms",
        "Redis create (2 round trips), sequential, p50",
        "ms",
    ),
    (
        "limit.redis_transition_rtt_ms",
        "Redis one transition (EVALSHA), sequential, p50",
        "ms",
    ),
    (
        "limit.rabbitmq_us_per_publish",
        "RabbitMQ CPU per publish (window 64)",
        "µs",
    ),
    (
        "limit.redis_us_per_create",
        "Redis CPU per create (64 connections)",
        "µs",
    ),
];

fn md_row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

fn val(r: &Results, key: &str) -> String {
    r.median(key).map_or("—".into(), num)
}

/// `docs/BENCHMARKS.md`.
pub(crate) fn markdown(
    r: &Results,
    rows: &[Row],
    side: &SideBySide,
    meta: &Meta,
    plan_text: &str,
) -> String {
    let mut md = String::new();
    let m = &meta.machine;
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Generated by `{}` (the `bench` crate) — do not edit by hand; rerun it.{}\n",
        meta.command,
        if meta.smoke {
            " **Smoke run: tiny counts, figures not judged.**"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "![latency distribution and create throughput](bench.png)\n"
    );
    let _ = writeln!(md, "## Run\n");
    md.push_str("| | |\n|---|---|\n");
    for (k, v) in [
        ("date (UTC)", meta.date.clone()),
        ("commit", meta.commit.clone()),
        (
            "machine",
            format!(
                "{}, {} cores, {:.1} GiB memory, Linux {}",
                m.cpu_model, m.cpus, m.memory_gib, m.kernel
            ),
        ),
        (
            "load average (1 min) before / after",
            format!("{:.2} / {:.2}", meta.load_before, meta.load_after),
        ),
        (
            "CPU used by other processes during the runs (Redis and RabbitMQ count as the bench's)",
            {
                let (lo, hi) = stats::min_max(&r.foreign_cores);
                format!(
                    "{lo:.2}–{hi:.2} cores (median {:.2}) — {}",
                    stats::median(&r.foreign_cores),
                    if stats::median(&r.foreign_cores) < 0.1 && hi < 0.3 {
                        "quiet"
                    } else {
                        "**not quiet: other processes shared the CPUs, figures are noisy**"
                    }
                )
            },
        ),
        ("rustc", meta.rustc.clone()),
        (
            "RabbitMQ",
            format!(
                "{} (Erlang {})",
                meta.versions.rabbitmq, meta.versions.erlang
            ),
        ),
        ("Redis", meta.versions.redis.clone()),
        ("duration of the run", format!("{:.0} s", meta.duration_s)),
        ("sizes", plan_text.to_owned()),
        ("service settings", meta.settings.clone()),
    ] {
        md.push_str(&md_row(&[k.to_owned(), v]));
    }

    let _ = writeln!(md, "\n## Results\n");
    let _ = writeln!(
        md,
        "Each figure is the median over its runs (spread in the last column); each run \
         starts its own api and workers in a RabbitMQ vhost and Redis key prefix of its own. \
         *ratio* = figure ÷ limit: for rates, the fraction of what the broker or Redis alone \
         sustains on this machine; for latencies, how many times the sum of the infrastructure \
         round trips on the path.\n"
    );
    md.push_str(&md_row(
        &["figure", "median", "limit", "ratio", "goal", "met", "runs"].map(String::from),
    ));
    md.push_str("|---|---:|---|---:|---|---|---|\n");
    for row in rows {
        let limit = row
            .reference
            .as_ref()
            .map_or("—".into(), |(v, w)| format!("{} ({w})", num(*v)));
        md.push_str(&md_row(&[
            row.label.clone(),
            format!("{} {}", row.value.map_or("—".into(), num), row.unit),
            limit,
            row.ratio().map_or("—".into(), |x| format!("{x:.2}×")),
            row.goal_text(),
            match met_text(row, meta.smoke) {
                "NO" => "**NO**".to_owned(),
                t => t.to_owned(),
            },
            r.spread(&row.key),
        ]));
    }

    if !side.is_empty() {
        md.push_str(&side_by_side_md(side, meta));
    }

    let _ = writeln!(md, "\n## Limits: the infrastructure alone, same run\n");
    let _ = writeln!(
        md,
        "Measured with `lapin` and `redis` directly, before the scenarios, in a vhost of their own. \
         Messages are {} bytes (a real task message), persistent, `mandatory`, published through \
         exchange `tasks` to the contract's durable priority queue `tasks.algo`. The Redis \
         figures run the api's own `transition.lua`.\n",
        meta.message_bytes
    );
    md.push_str("| limit | median | runs |\n|---|---:|---|\n");
    for (key, label, unit) in LIMITS {
        md.push_str(&md_row(&[
            (*label).to_owned(),
            format!("{} {unit}", val(r, key)),
            r.spread(key),
        ]));
    }
    md.push_str(&where_time_goes(r));
    md
}

fn steps_table(r: &Results, prefix: &str, labels: &[(&str, &str)]) -> String {
    let mut md = String::from("| step | mean (ms) |\n|---|---:|\n");
    for (suffix, label) in labels {
        md.push_str(&md_row(&[
            (*label).to_owned(),
            val(r, &format!("{prefix}{suffix}")),
        ]));
    }
    md
}

fn cpu_table(r: &Results, prefix: &str) -> String {
    let mut md = String::from("| process | CPU µs per task |\n|---|---:|\n");
    for g in ["api", "workers", "redis", "rabbitmq", "bench", "total"] {
        let key = format!("{prefix}.cpu_us_per_task.{g}");
        if r.median(&key).is_some() {
            md.push_str(&md_row(&[g.to_owned(), val(r, &key)]));
        }
    }
    md
}

fn where_time_goes(r: &Results) -> String {
    let mut md = String::from("\n## Where the time goes\n");
    if r.median("create.c64.rate").is_some() {
        let _ = writeln!(
            md,
            "\n### create\n\nPer level: client-side latency p50 / p99, the api's own \
             handling time (mean, from its `/metrics` histogram), CPU per create of each \
             process, and how busy both cores were with these processes.\n"
        );
        md.push_str("| clients | tasks/s | p50 ms | p99 ms | api handling ms | CPU µs/create: api | redis | rabbitmq | bench | CPU busy % | api context switches/create |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for c in [1, 16, 64] {
            let k = format!("create.c{c}");
            if r.median(&format!("{k}.rate")).is_none() {
                continue;
            }
            md.push_str(&md_row(&[
                c.to_string(),
                val(r, &format!("{k}.rate")),
                val(r, &format!("{k}.p50_ms")),
                val(r, &format!("{k}.p99_ms")),
                val(r, &format!("{k}.server_ms")),
                val(r, &format!("{k}.cpu_us_per_task.api")),
                val(r, &format!("{k}.cpu_us_per_task.redis")),
                val(r, &format!("{k}.cpu_us_per_task.rabbitmq")),
                val(r, &format!("{k}.cpu_us_per_task.bench")),
                val(r, &format!("{k}.cpu_busy_pct")),
                val(r, &format!("{k}.api_switches_per_task")),
            ]));
        }
        if let (Some(c64), Some(redis)) =
            (r.median("create.c64.rate"), r.median("limit.redis_create"))
        {
            let _ = writeln!(
                md,
                "\nAgainst Redis alone (the same commands per create, in the same two round trips, 64 connections): {:.2}×. \
                 In the limit runs RabbitMQ spent {} µs of CPU per publish and Redis {} µs per \
                 create (with no subscriber on the events channel).",
                c64 / redis,
                val(r, "limit.rabbitmq_us_per_publish"),
                val(r, "limit.redis_us_per_create"),
            );
        }
    }
    if r.median("dispatch.p50_ms").is_some() {
        let _ = writeln!(
            md,
            "\n### dispatch overhead (POST → COMPLETED, one 0 ms stage)\n\n\
             Per step, mean over the samples; steps 2–6 come from the task's event times \
             (Redis clock, millisecond resolution) against the client's clock, so each is \
             ±1 ms per sample but unbiased in the mean. Step 1 runs alongside 2–3.\n"
        );
        md.push_str(&steps_table(
            r,
            "dispatch.step.",
            &[
                ("1_post_answered_ms", "1. POST answered (client)"),
                ("2_stored_ms", "2. POST sent → QUEUED recorded"),
                (
                    "3_queued_to_claimed_ms",
                    "3. QUEUED → PROCESSING (confirm, delivery, claim callback)",
                ),
                (
                    "4_claimed_to_progress_ms",
                    "4. PROCESSING → last progress (stage on a blocking thread, then the finish callback that carries its progress)",
                ),
                (
                    "5_progress_to_completed_ms",
                    "5. last progress → COMPLETED (recorded in the same step: 0 but for the clock's ms)",
                ),
                (
                    "6_completed_to_client_ms",
                    "6. COMPLETED → terminal SSE event at the client",
                ),
            ],
        ));
        if r.median("dispatch.step.sse_lag_terminal_ms")
            .is_some_and(|lag| lag > 30.0)
        {
            let _ = writeln!(
                md,
                "\n**Diagnosis:** live SSE events reach the client about 40 ms after Redis \
                 records them. Each event is a small write on a connection that already has an \
                 unacknowledged one in flight: that is Nagle's algorithm waiting for the \
                 client's delayed ACK (40 ms on Linux). The api's listener does not set \
                 `TCP_NODELAY` (actix-web keeps the OS default unless `HttpServer::tcp_nodelay(true)`)."
            );
        }
        let _ = writeln!(
            md,
            "\nMean total: {} ms. The SSE path alone — from an event's time in Redis to its \
             arrival at the client, for events recorded after the stream opened: PROCESSING \
             {} ms, progress {} ms, COMPLETED {} ms.",
            val(r, "dispatch.mean_ms"),
            val(r, "dispatch.step.sse_lag_processing_ms"),
            val(r, "dispatch.step.sse_lag_progress_ms"),
            val(r, "dispatch.step.sse_lag_terminal_ms"),
        );
    }
    if r.median("drain.rate").is_some() {
        let _ = writeln!(
            md,
            "\n### drain\n\n\
             Rate between 10 % and 90 % completed (overall, including worker start-up: {} tasks/s; \
             wall time {} s). Each task costs the api {} callbacks (a claim and a finish carrying the one stage's progress), \
             {} ms of api handling in all; 2 workers × 64 in flight. CPU per task, and how busy \
             the machine's cores were ({} %):\n",
            val(r, "drain.overall_rate"),
            val(r, "drain.wall_s"),
            val(r, "drain.callbacks_per_task"),
            val(r, "drain.callback_server_ms_per_task"),
            val(r, "drain.cpu_busy_pct"),
        );
        md.push_str(&cpu_table(r, "drain"));
        let _ = writeln!(
            md,
            "\nMean api handling per callback: status (claim / finish) {} ms, progress {} ms. \
             The api's threads switched context {} times per task.",
            val(r, "drain.callback_server_ms.status"),
            val(r, "drain.callback_server_ms.progress"),
            val(r, "drain.api_switches_per_task"),
        );
    }
    if r.median("makespan.s").is_some() || r.median("makespan_large.s").is_some() {
        let _ = writeln!(
            md,
            "\n### makespan\n\n\
             All tasks are queued before the worker starts; the makespan runs from the worker's \
             first `/healthz` 200 to the last `finished_at`.\n"
        );
        md.push_str(&md_row(&[
            "part".to_owned(),
            format!("{} tasks, median", val(r, "makespan.n")),
            format!("{} tasks", val(r, "makespan_large.n")),
        ]));
        md.push_str("|---|---:|---:|\n");
        for (k, label) in [
            ("s", "makespan (s)"),
            (
                "stage_mean_s",
                "one stage in the worker (FFI call on a blocking thread), mean (s)",
            ),
            ("first_claim_s", "worker ready → first claim (s)"),
            ("claim_spread_s", "first claim → last claim (s)"),
            (
                "claim_to_finish_overrun_p50_s",
                "claim → finish beyond the stage, p50 (s)",
            ),
            (
                "claim_to_finish_overrun_max_s",
                "claim → finish beyond the stage, max (s)",
            ),
            ("worker_threads_max", "worker threads, peak"),
            ("worker_rss_mb", "worker peak RSS (MiB)"),
            ("worker_startup_ms", "worker spawn → ready (ms)"),
        ] {
            md.push_str(&md_row(&[
                label.to_owned(),
                val(r, &format!("makespan.{k}")),
                val(r, &format!("makespan_large.{k}")),
            ]));
        }
    }
    if r.median("cancel.p50_ms").is_some() {
        let _ = writeln!(
            md,
            "\n### cancel (DELETE → GET shows CANCELLED, during a running stage)\n\n\
             GET is polled every millisecond after the DELETE answers.\n"
        );
        md.push_str(&steps_table(
            r,
            "cancel.step.",
            &[
                ("1_delete_answered_ms", "1. DELETE answered (client)"),
                (
                    "2_requested_recorded_ms",
                    "2. DELETE sent → cancel_requested recorded",
                ),
                (
                    "3_requested_to_cancelled_ms",
                    "3. cancel_requested → CANCELLED (broadcast, C routine stops, callback)",
                ),
                ("4_cancelled_to_get_ms", "4. CANCELLED → a GET shows it"),
            ],
        ));
    }
    md
}

// ---------------------------------------------------------------------------
// Taskforge and Celery, side by side
// ---------------------------------------------------------------------------

/// One figure of both systems: ours, Celery's per pool and confirm mode, and
/// Celery's best in each mode.
#[derive(Debug, Clone)]
pub(crate) struct SideRow {
    pub(crate) label: &'static str,
    unit: &'static str,
    lower_is_better: bool,
    pub(crate) ours: Option<f64>,
    /// (pool, mode, value) in the order of [`peer::Pool::ALL`] × [`peer::MODES`].
    cells: Vec<(&'static str, &'static str, Option<f64>)>,
}

impl SideRow {
    /// Celery's best pool in `mode` ("confirm" / "noconfirm"): value and pool.
    pub(crate) fn best(&self, mode: &str) -> Option<(f64, &'static str)> {
        self.cells
            .iter()
            .filter(|(_, m, _)| *m == mode)
            .filter_map(|(pool, _, v)| Some(((*v)?, *pool)))
            .reduce(|a, b| {
                let b_better = if self.lower_is_better {
                    b.0 < a.0
                } else {
                    b.0 > a.0
                };
                if b_better {
                    b
                } else {
                    a
                }
            })
    }

    fn cell(&self, pool: &str, mode: &str) -> Option<f64> {
        self.cells
            .iter()
            .find(|(p, m, _)| *p == pool && *m == mode)
            .and_then(|c| c.2)
    }
}

/// An issue-14 goal that compares us with Celery.
#[derive(Debug, Clone)]
pub(crate) struct SideGoal {
    pub(crate) text: String,
    ours: Option<f64>,
    reference: Option<(f64, String)>,
    bound: f64,
    at_most: bool,
}

impl SideGoal {
    fn ratio(&self) -> Option<f64> {
        Some(self.ours? / self.reference.as_ref()?.0)
    }

    pub(crate) fn met(&self) -> Option<bool> {
        let r = self.ratio()?;
        Some(if self.at_most {
            r <= self.bound
        } else {
            r >= self.bound
        })
    }
}

/// Both systems' figures from this run; empty without the peer.
#[derive(Debug, Clone, Default)]
pub(crate) struct SideBySide {
    pub(crate) rows: Vec<SideRow>,
    pub(crate) goals: Vec<SideGoal>,
}

impl SideBySide {
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite())
}

/// (label, unit, lower is better, our key, Celery's key).
const SIDE_FIGURES: &[(&str, &str, bool, &str, &str)] = &[
    (
        "dispatch p50",
        "ms",
        true,
        "dispatch.p50_ms",
        "dispatch.p50_ms",
    ),
    (
        "dispatch p99",
        "ms",
        true,
        "dispatch.p99_ms",
        "dispatch.p99_ms",
    ),
    (
        "create, 1 client",
        "tasks/s",
        false,
        "create.c1.rate",
        "create.c1.rate",
    ),
    (
        "drain, 2 workers",
        "tasks/s",
        false,
        "drain.rate",
        "drain.rate",
    ),
    (
        "makespan ÷ ideal",
        "×",
        true,
        "makespan.s",
        "makespan.ratio",
    ),
    ("cancel p50", "ms", true, "cancel.p50_ms", "cancel.p50_ms"),
    ("cancel p99", "ms", true, "cancel.p99_ms", "cancel.p99_ms"),
];

pub(crate) fn side_by_side(r: &Results, makespan_stage_ms: u64) -> SideBySide {
    if !r.values.keys().any(|k| k.starts_with("celery.")) {
        return SideBySide::default();
    }
    let ideal = makespan_stage_ms as f64 / 1e3;
    let mut rows = Vec::new();
    for &(label, unit, lower_is_better, ours_key, celery_key) in SIDE_FIGURES {
        let mut cells = Vec::new();
        for pool in crate::peer::Pool::ALL {
            for (_, mode) in crate::peer::MODES {
                let key = format!("celery.{}.{mode}.{celery_key}", pool.name());
                cells.push((pool.name(), mode, finite(r.median(&key))));
            }
        }
        let mut ours = finite(r.median(ours_key));
        if ours_key == "makespan.s" {
            ours = ours.map(|s| s / ideal);
        }
        if ours.is_some() || cells.iter().any(|c| c.2.is_some()) {
            rows.push(SideRow {
                label,
                unit,
                lower_is_better,
                ours,
                cells,
            });
        }
    }
    let goals = side_goals(&rows);
    SideBySide { rows, goals }
}

fn side_goals(rows: &[SideRow]) -> Vec<SideGoal> {
    let row = |label: &str| rows.iter().find(|r| r.label == label);
    let mut goals = Vec::new();
    let mut add = |row: Option<&SideRow>, text: String, reference, bound, at_most| {
        if let Some(row) = row {
            goals.push(SideGoal {
                text,
                ours: row.ours,
                reference,
                bound,
                at_most,
            });
        }
    };
    for label in ["dispatch p50", "dispatch p99"] {
        let r = row(label);
        let best = |mode| r.and_then(|r| r.best(mode));
        add(
            r,
            format!("{label} ≤ 0.8× Celery's best pool with confirms"),
            best("confirm").map(|(v, p)| (v, format!("{p}, confirm"))),
            0.8,
            true,
        );
        add(
            r,
            format!("{label} ≤ 1.0× Celery's best pool without confirms"),
            best("noconfirm").map(|(v, p)| (v, format!("{p}, no confirm"))),
            1.0,
            true,
        );
    }
    let create = row("create, 1 client");
    add(
        create,
        "create, 1 client ≥ 1.5× Celery's confirmed apply_async".to_owned(),
        create
            .and_then(|r| r.best("confirm"))
            .map(|(v, p)| (v, format!("{p}, confirm; the best pool"))),
        1.5,
        false,
    );
    let cancel = row("cancel p99");
    add(
        cancel,
        "cancel p99 ≤ 0.5× Celery prefork's".to_owned(),
        cancel
            .and_then(|r| r.cell("prefork", "confirm"))
            .map(|v| (v, "prefork, confirm".to_owned())),
        0.5,
        true,
    );
    goals
}

fn opt_num(x: Option<f64>) -> String {
    x.map_or("—".to_owned(), num)
}

fn ratio_text(ours: Option<f64>, best: Option<(f64, &str)>) -> String {
    match (ours, best) {
        (Some(o), Some((b, _))) => format!("{:.2}×", o / b),
        _ => "—".to_owned(),
    }
}

fn side_met(goal: &SideGoal, smoke: bool) -> &'static str {
    match (goal.met(), smoke) {
        (None, _) => "—",
        (Some(_), true) => "not judged",
        (Some(true), false) => "met",
        (Some(false), false) => "NOT MET",
    }
}

/// The side-by-side figures and goals as plain text, for stdout.
pub(crate) fn side_by_side_text(s: &SideBySide, smoke: bool) -> String {
    let mut out = String::from("Taskforge and Celery, side by side (same run):\n");
    let _ = write!(out, "{:<18} {:>10}", "figure", "Taskforge");
    for pool in crate::peer::Pool::ALL {
        for (_, mode) in crate::peer::MODES {
            let _ = write!(
                out,
                " {:>10}",
                format!("{}/{}", &pool.name()[..4], &mode[..2])
            );
        }
    }
    let _ = writeln!(out, "  {:<20} {:>7}", "best confirmed", "ours÷");
    for row in &s.rows {
        let _ = write!(out, "{:<18} {:>10}", row.label, opt_num(row.ours));
        for c in &row.cells {
            let _ = write!(out, " {:>10}", opt_num(c.2));
        }
        let best = row.best("confirm");
        let _ = writeln!(
            out,
            "  {:<20} {:>7}",
            best.map_or("—".to_owned(), |(v, p)| format!("{} ({p})", num(v))),
            ratio_text(row.ours, best)
        );
    }
    let _ = writeln!(
        out,
        "(pool/co = confirms on, /no = off)\ngoals against Celery:"
    );
    for g in &s.goals {
        let _ = writeln!(
            out,
            "  {:<58} {:>7}  {}",
            g.text,
            g.ratio().map_or("—".to_owned(), |x| format!("{x:.2}×")),
            side_met(g, smoke)
        );
    }
    out
}

/// The side-by-side section of `BENCHMARKS.md`.
fn side_by_side_md(s: &SideBySide, meta: &Meta) -> String {
    let mut md = String::from("\n## Taskforge and Celery, side by side (same run)\n\n");
    if let Some((version, plan)) = &meta.peer {
        let _ = writeln!(
            md,
            "A Celery app of ours (`bench/peer/`, {version}) on the same RabbitMQ and Redis, \
             each variant in a vhost and key prefix of its own, with Taskforge's guarantees: \
             persistent messages on a durable queue, `task_acks_late`, `task_track_started`, one \
             `PROGRESS` update per stage, results in Redis (the client waits with \
             `AsyncResult.get`, by pub/sub), cancel by `revoke(terminate=True)`. Taskforge always \
             publishes with confirms; Celery runs with `confirm_publish` on and off. Sizes: {plan}.\n"
        );
    }
    md.push_str(
        "Taskforge's figure is the median of its runs; Celery's are one run each. \
         *ours ÷ best*: below 1 is better for latencies and the makespan, above 1 for rates. \
         Create runs no worker, so its three pool columns are three runs of the same client. \
         Drain and makespan poll the result keys (one `MGET`) as ours polls the api's metrics; \
         Celery's makespan runs from the first ping answered (or the first task's start, when \
         earlier) to the last `date_done`. Celery records `REVOKED` when the worker sends the \
         signal, before the task has stopped; Taskforge records `CANCELLED` once the C routine \
         has returned. The threads pool cannot terminate a running task.\n\n",
    );
    let mut head = vec!["figure".to_owned(), "Taskforge".to_owned()];
    for pool in crate::peer::Pool::ALL {
        for (_, mode) in crate::peer::MODES {
            let m = if mode == "confirm" {
                "confirms"
            } else {
                "no confirms"
            };
            head.push(format!("{} ({m})", pool.name()));
        }
    }
    head.extend(
        [
            "Celery best, confirms",
            "ours ÷ it",
            "Celery best, no confirms",
            "ours ÷ it",
        ]
        .map(String::from),
    );
    md.push_str(&md_row(&head));
    md.push_str(&format!("|---|{}\n", "---:|".repeat(head.len() - 1)));
    for row in &s.rows {
        let mut cells = vec![row.label.to_owned(), unit_num(row.ours, row.unit)];
        for c in &row.cells {
            cells.push(if c.0 == "threads" && row.label.starts_with("cancel") {
                "n/a (no terminate)".to_owned()
            } else {
                unit_num(c.2, row.unit)
            });
        }
        for mode in ["confirm", "noconfirm"] {
            let best = row.best(mode);
            cells.push(best.map_or("—".to_owned(), |(v, p)| {
                format!("{} ({p})", unit_num(Some(v), row.unit))
            }));
            cells.push(ratio_text(row.ours, best));
        }
        md.push_str(&md_row(&cells));
    }
    md.push_str("\nThe goals of issue 14 that involve Celery:\n\n");
    md.push_str("| goal | Taskforge | Celery | ratio | met |\n|---|---:|---:|---:|---|\n");
    for g in &s.goals {
        md.push_str(&md_row(&[
            g.text.clone(),
            opt_num(g.ours),
            g.reference
                .as_ref()
                .map_or("—".to_owned(), |(v, w)| format!("{} ({w})", num(*v))),
            g.ratio().map_or("—".to_owned(), |x| format!("{x:.2}×")),
            match side_met(g, meta.smoke) {
                "NOT MET" => "**not met**".to_owned(),
                t => t.to_owned(),
            },
        ]));
    }
    md
}

fn unit_num(x: Option<f64>, unit: &str) -> String {
    match x {
        Some(v) if unit == "×" => format!("{v:.2}×"),
        Some(v) => format!("{} {unit}", num(v)),
        None => "—".to_owned(),
    }
}
