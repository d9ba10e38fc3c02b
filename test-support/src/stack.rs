//! [`Stack`]: the api in-process, worker processes, and the calls a test
//! makes of them.
//!
//! The api runs in the test's process (`api_service::Application`), so a test
//! can reach its state ([`Stack::state`]) and stop and start it again on the
//! same port ([`Stack::stop_api`], [`Stack::start_api`]). Workers are the real
//! `algo-service` binary as child processes, so they can be signalled and
//! their stdout (the C routine's `hello world` lines) and logs counted.
//!
//! Synchronisation is on observable state with bounded polling
//! ([`crate::eventually`]), never a fixed sleep.

use std::{
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, Once,
    },
    time::Duration,
};

use api_service::{AppState, Application, Settings};
use clap::Parser;
use futures_util::StreamExt;
use lapin::{options::*, types::FieldTable};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, ChildStdout, Command},
    task::JoinHandle,
};

use crate::{eventually, servers::free_port, TestEnv};

/// The callback token the api and the workers of a [`Stack`] share.
pub const TOKEN: &str = "test-callback-token";
/// The terminal statuses.
pub const TERMINAL: [&str; 4] = ["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"];
/// How long the api may take to connect to RabbitMQ (a private node included).
const CONNECT: Duration = Duration::from_secs(30);

struct RunningApi {
    handle: actix_web::dev::ServerHandle,
    state: Arc<AppState>,
    join: JoinHandle<anyhow::Result<()>>,
}

/// A whole Taskforge for one test: its [`TestEnv`], the api, its workers.
pub struct Stack {
    /// Where the api and the workers find Redis and RabbitMQ.
    pub env: TestEnv,
    /// The api's base URL, `http://127.0.0.1:<port>`.
    pub address: String,
    pub http: reqwest::Client,
    /// Sent as a bearer key on the public endpoints: the first of the api's
    /// `--api-keys`, if it has any.
    pub key: Option<String>,
    pub workers: Vec<WorkerProc>,
    port: u16,
    flags: Vec<String>,
    api: Option<RunningApi>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("env", &self.env)
            .field("address", &self.address)
            .field("workers", &self.workers)
            .field("api_running", &self.api.is_some())
            .finish_non_exhaustive()
    }
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            api_service::telemetry::init("text", std::io::stderr);
        }
    });
}

impl Stack {
    /// The api with extra flags (e.g. `["--lease-secs", "2"]`) in a fresh
    /// [`TestEnv`] on the shared servers; no workers yet.
    pub async fn start(flags: &[&str]) -> Stack {
        let env = TestEnv::new()
            .await
            .expect("test environment (is RabbitMQ's management plugin on?)");
        Self::start_in(env, flags).await
    }

    /// The api with extra flags on a private broker (`amqp_url`, e.g. a
    /// [`crate::servers::PrivateRabbit`]) and the shared Redis.
    pub async fn start_on_broker(amqp_url: String, flags: &[&str]) -> Stack {
        Self::start_in(TestEnv::on_broker(amqp_url), flags).await
    }

    /// The api with extra flags on a private Redis (`redis_url`, e.g. a
    /// [`crate::servers::PrivateRedis`]) and a vhost of the shared broker.
    pub async fn start_on_redis(redis_url: String, flags: &[&str]) -> Stack {
        let env = TestEnv::new()
            .await
            .expect("test environment (is RabbitMQ's management plugin on?)");
        Self::start_in(env.with_redis(redis_url), flags).await
    }

    /// The api with extra flags on a Redis Cluster (`seeds`, e.g.
    /// [`crate::servers::PrivateRedisCluster::seed_urls`]: `--redis-cluster-urls`)
    /// and a vhost of the shared broker. The env's `redis_url` is the first
    /// seed (its cleanup reaches that node only; a private cluster goes away
    /// whole).
    pub async fn start_on_redis_cluster(seeds: &[String], flags: &[&str]) -> Stack {
        let env = TestEnv::new()
            .await
            .expect("test environment (is RabbitMQ's management plugin on?)");
        let list = seeds.join(",");
        let mut all = vec!["--redis-cluster-urls", list.as_str()];
        all.extend_from_slice(flags);
        Self::start_in(env.with_redis(seeds[0].clone()), &all).await
    }

    /// The api with extra flags in `env` (which [`Stack::stop`] cleans up).
    /// Flags that name their own `--amqp-url` or `--redis-url` replace the
    /// env's; the api then is not awaited to connect to RabbitMQ.
    pub async fn start_in(env: TestEnv, flags: &[&str]) -> Stack {
        init_logs();
        let key = flags
            .iter()
            .position(|f| *f == "--api-keys")
            .and_then(|i| flags.get(i + 1))
            .and_then(|keys| keys.split(',').next())
            .map(|k| k.trim().to_owned());
        let mut stack = Stack {
            env,
            address: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a plain reqwest client builds"),
            key,
            workers: Vec::new(),
            port: 0,
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            api: None,
        };
        stack.start_api().await;
        stack
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Starts the api (first on a free port, after [`Stack::stop_api`] again
    /// on the same one) and waits until it is connected to RabbitMQ.
    pub async fn start_api(&mut self) {
        assert!(self.api.is_none(), "the api already runs");
        let bind = format!("127.0.0.1:{}", self.port);
        let mut args = vec![
            "api-service",
            "--bind",
            &bind,
            "--redis-prefix",
            &self.env.redis_prefix,
            "--callback-token",
            TOKEN,
            "--workers",
            "2",
        ];
        if !self.has_flag("--amqp-url") {
            args.extend(["--amqp-url", &self.env.amqp_url]);
        }
        if !self.has_flag("--redis-url") {
            args.extend(["--redis-url", &self.env.redis_url]);
        }
        args.extend(self.flags.iter().map(String::as_str));
        let settings = Settings::try_parse_from(args).expect("test settings parse");
        let app = Application::build(settings)
            .await
            .expect("the api builds and binds its port");
        self.port = app.port();
        self.address = format!("http://127.0.0.1:{}", self.port);
        let state = app.state();
        let handle = app.handle();
        let join = tokio::spawn(app.run_until_stopped());
        if !self.has_flag("--amqp-url") {
            tokio::time::timeout(CONNECT, state.publisher.wait_connected())
                .await
                .expect("the api connects to rabbitmq");
        }
        self.api = Some(RunningApi {
            handle,
            state,
            join,
        });
    }

    /// Stops the api at once (open connections dropped) and waits until its
    /// port is free; its state is dropped.
    pub async fn stop_api(&mut self) {
        let api = self.api.take().expect("the api runs");
        api.handle.stop(false).await;
        let _ = tokio::time::timeout(Duration::from_secs(15), api.join).await;
    }

    /// The running api's state.
    pub fn state(&self) -> Arc<AppState> {
        Arc::clone(&self.api.as_ref().expect("the api runs").state)
    }

    /// Stops the workers and the api, and cleans up the env.
    pub async fn stop(mut self) {
        for w in &mut self.workers {
            let _ = w.child.start_kill();
            let _ = w.child.wait().await;
        }
        if let Some(api) = self.api.take() {
            api.handle.stop(false).await;
        }
        self.env.cleanup().await;
    }

    // --- The public api, as a client calls it (with the key, if any).

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    fn public(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> reqwest::Response {
        self.public(req)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// GETs `path` and parses the JSON answer, whatever its status.
    pub async fn get_json(&self, path: &str) -> Value {
        self.send(self.http.get(self.url(path)), path)
            .await
            .json()
            .await
            .expect("a JSON answer")
    }

    /// POSTs to `path` without a body (e.g. `/queues/algo/pause`).
    pub async fn post_empty(&self, path: &str) -> reqwest::Response {
        self.send(self.http.post(self.url(path)), path).await
    }

    /// `GET /queues` (asserting 200).
    pub async fn queues(&self) -> Value {
        let res = self
            .send(self.http.get(self.url("/queues")), "GET /queues")
            .await;
        assert_eq!(res.status(), 200, "GET /queues");
        res.json().await.expect("a JSON answer")
    }

    pub async fn post_task(&self, body: Value) -> reqwest::Response {
        self.send(
            self.http.post(self.url("/tasks")).json(&body),
            "POST /tasks",
        )
        .await
    }

    /// Creates a task (asserting 202) and returns its id.
    pub async fn create(&self, body: Value) -> String {
        let res = self.post_task(body).await;
        assert_eq!(res.status(), 202, "create answers 202");
        res.json::<Value>().await.unwrap()["task_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn get_task(&self, id: &str) -> reqwest::Response {
        self.send(
            self.http.get(self.url(&format!("/tasks/{id}"))),
            "GET /tasks/{id}",
        )
        .await
    }

    /// The task (asserting 200).
    pub async fn task(&self, id: &str) -> Value {
        let res = self.get_task(id).await;
        assert_eq!(res.status(), 200, "GET /tasks/{id}");
        res.json().await.unwrap()
    }

    pub async fn cancel(&self, id: &str) -> reqwest::Response {
        self.send(
            self.http.delete(self.url(&format!("/tasks/{id}"))),
            "DELETE /tasks/{id}",
        )
        .await
    }

    /// The task's history (asserting 200).
    pub async fn events(&self, id: &str) -> Vec<Value> {
        let res = self
            .send(
                self.http.get(self.url(&format!("/tasks/{id}/events"))),
                "GET /tasks/{id}/events",
            )
            .await;
        assert_eq!(res.status(), 200, "GET /tasks/{id}/events");
        res.json().await.unwrap()
    }

    /// The api's readiness after a fresh round of its health checks:
    /// `/healthz` (asserted 200: the process serves whatever Redis and
    /// RabbitMQ do), then `/readyz`'s status and body.
    pub async fn readiness(&self) -> (u16, Value) {
        let live = self
            .send(self.http.get(self.url("/healthz")), "/healthz")
            .await;
        assert_eq!(live.status(), 200, "/healthz");
        self.state().health.check_now().await;
        let res = self
            .send(self.http.get(self.url("/readyz")), "/readyz")
            .await;
        let status = res.status().as_u16();
        (status, res.json().await.expect("/readyz answers JSON"))
    }

    /// Every task the api lists (up to 1,000), newest first.
    pub async fn listed(&self) -> Vec<Value> {
        let page = self.get_json("/tasks?limit=1000").await;
        page["tasks"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the task satisfies `done`, returning the task.
    pub async fn wait_for(
        &self,
        id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(&format!("task {id}"), within, || async {
            let task = self.task(id).await;
            done(&task).then_some(task)
        })
        .await
    }

    /// Waits until every task satisfies `done`, each within `within`.
    pub async fn wait_all_for(
        &self,
        ids: &[String],
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) {
        for id in ids {
            self.wait_for(id, within, &done).await;
        }
    }

    pub async fn wait_terminal(&self, id: &str, within: Duration) -> Value {
        self.wait_for(id, within, |t| {
            TERMINAL.contains(&t["status"].as_str().unwrap_or_default())
        })
        .await
    }

    /// Every task reaches COMPLETED, with exactly one terminal status event
    /// and its stages recorded once each, in order.
    pub async fn assert_all_completed_once(&self, ids: &[String], within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        for id in ids {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let task = self
                .wait_terminal(id, left.max(Duration::from_secs(1)))
                .await;
            assert_eq!(task["status"], "COMPLETED", "{id}: {task}");
            let events = self.events(id).await;
            assert_eq!(terminal_events(&events), 1, "{id}: {events:?}");
            let stages: Vec<u64> = events
                .iter()
                .filter(|e| e["type"] == "progress")
                .map(|e| e["stage"].as_u64().unwrap())
                .collect();
            let want: Vec<u64> = (1..=task["stages"].as_u64().unwrap()).collect();
            assert_eq!(stages, want, "{id}: every stage recorded once, in order");
        }
    }

    // --- The callback api, in a worker's place.

    async fn callback(&self, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn status_callback(&self, id: &str, body: Value) -> (u16, Value) {
        self.callback(&format!("/internal/tasks/{id}/status"), body)
            .await
    }

    /// `POST /internal/reports` with `reports` (batched callbacks).
    pub async fn reports_callback(&self, reports: Value) -> (u16, Value) {
        self.callback("/internal/reports", json!({ "reports": reports }))
            .await
    }

    pub async fn progress_callback(
        &self,
        id: &str,
        worker: &str,
        stage: u32,
        stages: u32,
    ) -> (u16, Value) {
        let body = json!({"progress": stage * 100 / stages, "stage": stage, "stages": stages, "worker": worker});
        self.callback(&format!("/internal/tasks/{id}/progress"), body)
            .await
    }

    /// Reports a status and asserts the api took it; returns its answer.
    pub async fn report(&self, id: &str, body: Value) -> Value {
        let (status, answer) = self.status_callback(id, body.clone()).await;
        assert_eq!(status, 200, "status callback {body}: {answer}");
        answer
    }

    /// Claims a task as `worker` and asserts it worked.
    pub async fn claim(&self, id: &str, worker: &str) -> Value {
        self.report(id, json!({"status": "PROCESSING", "worker": worker}))
            .await
    }

    /// Reports `stage` of `stages` done and asserts the api took it.
    pub async fn progress(&self, id: &str, worker: &str, stage: u32, stages: u32) {
        let (status, answer) = self.progress_callback(id, worker, stage, stages).await;
        assert_eq!(status, 200, "progress {stage}/{stages}: {answer}");
    }

    /// Runs every stage of a claimed task and completes it, as a worker would.
    pub async fn run_to_completion(&self, id: &str, worker: &str, stages: u32) {
        for stage in 1..=stages {
            self.progress(id, worker, stage, stages).await;
        }
        self.report(
            id,
            json!({"status": "COMPLETED", "worker": worker, "result": {"stages": stages, "output": "hello world"}}),
        )
        .await;
    }

    // --- The broker.

    /// A channel into the env's vhost.
    pub async fn amqp(&self) -> lapin::Channel {
        self.env.channel().await.expect("an AMQP channel").1
    }

    /// Takes (and acks) the next message from `tasks.algo`, waiting for it.
    pub async fn next_task_message(&self, channel: &lapin::Channel) -> lapin::message::Delivery {
        let mut consumer = channel
            .basic_consume(
                "tasks.algo".into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a message arrives")
            .expect("consumer open")
            .expect("delivery ok");
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
            .unwrap();
        delivery
    }

    /// Messages ready in `queue` (which must exist).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        self.env
            .queue_depth(queue)
            .await
            .expect("the broker answers")
            .unwrap_or_else(|| panic!("the queue {queue} exists"))
    }

    /// Waits until `tasks.algo` is empty, then asserts nothing was dead-lettered.
    pub async fn assert_drained(&self) {
        eventually("tasks.algo to drain", Duration::from_secs(20), || async {
            (self.queue_depth("tasks.algo").await == 0).then_some(())
        })
        .await;
        assert_eq!(
            self.queue_depth("tasks.dead").await,
            0,
            "nothing dead-lettered"
        );
    }

    // --- Workers.

    /// Starts a worker process with [`WorkerOpts::default`] and waits until
    /// it consumes; returns its index in [`Stack::workers`].
    pub async fn add_worker(&mut self, name: &str) -> usize {
        self.add_worker_with(name, WorkerOpts::default()).await
    }

    /// Starts a worker process and waits until it consumes (`/healthz` 200).
    pub async fn add_worker_with(&mut self, name: &str, opts: WorkerOpts) -> usize {
        self.add_worker_with_env(name, opts, &[]).await
    }

    /// [`Stack::add_worker_with`], with more environment variables (e.g.
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`) for the process. An empty
    /// `METRICS_BIND` leaves it unset (the worker's default, with its
    /// fallback to a free port): the address is then read from the worker's
    /// `metrics_addr=` log line.
    pub async fn add_worker_with_env(
        &mut self,
        name: &str,
        opts: WorkerOpts,
        env: &[(&str, &str)],
    ) -> usize {
        let defaulted = env
            .iter()
            .any(|(k, v)| *k == "METRICS_BIND" && v.is_empty());
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(worker_binary())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CALLBACK_TOKEN", TOKEN)
            .env("AMQP_URL", &self.env.amqp_url)
            .env("API_URL", &self.address)
            .env("WORKER_NAME", name)
            .env("METRICS_BIND", &metrics)
            .env("WORKER_CONCURRENCY", opts.concurrency.to_string())
            .env("SHUTDOWN_GRACE_SECS", opts.grace_secs.to_string())
            .env(
                "RUST_LOG",
                std::env::var("TEST_WORKER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the algo-service binary starts");
        let hellos = count_hellos(child.stdout.take().expect("piped stdout"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut err = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let sink = Arc::clone(&logs);
        let echo = std::env::var_os("TEST_WORKER_LOG").is_some();
        let who = name.to_owned();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                if echo {
                    eprintln!("[{who}] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let metrics = if defaulted {
            logged_metrics_addr(&logs).await
        } else {
            metrics
        };
        let worker = WorkerProc {
            name: name.to_owned(),
            child,
            hellos,
            logs,
            metrics,
        };
        worker.wait_consuming(Duration::from_secs(20)).await;
        self.workers.push(worker);
        self.workers.len() - 1
    }

    /// `hello world` lines printed by every worker so far.
    pub fn hellos(&self) -> usize {
        self.workers.iter().map(WorkerProc::hellos).sum()
    }
}

/// The address in a worker's first `metrics_addr=` log line (its start line).
async fn logged_metrics_addr(logs: &Mutex<Vec<String>>) -> String {
    eventually(
        "the worker to log its metrics_addr",
        Duration::from_secs(20),
        || async {
            logs.lock().unwrap().iter().find_map(|line| {
                let rest = &line[line.find("metrics_addr=")? + "metrics_addr=".len()..];
                Some(rest.split_whitespace().next()?.to_owned())
            })
        },
    )
    .await
}

/// The `algo-service` binary beside the running test's executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/algo-service`), which
/// cargo builds before algo-service's own integration tests.
pub fn worker_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its executable");
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|profile| profile.join(format!("algo-service{}", std::env::consts::EXE_SUFFIX)))
        .expect("the test executable lives in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "no worker binary at {}; build it with `cargo build -p algo-service`",
        bin.display()
    );
    bin
}

/// Counts the `hello world` lines a worker process prints, in the background;
/// the worker's stdout carries nothing else (its logs go to stderr), so any
/// other line fails the test.
fn count_hellos(stdout: ChildStdout) -> Arc<AtomicUsize> {
    let hellos = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&hellos);
    let mut lines = BufReader::new(stdout).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            assert_eq!(
                line, "hello world",
                "the worker's stdout carries only the routine's lines"
            );
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    hellos
}

/// How a worker process is configured beyond the stack's URLs.
#[derive(Debug, Clone)]
pub struct WorkerOpts {
    pub concurrency: u16,
    pub grace_secs: u64,
}

impl Default for WorkerOpts {
    fn default() -> Self {
        Self {
            concurrency: 4,
            grace_secs: 2,
        }
    }
}

/// A running `algo-service` process.
#[derive(Debug)]
pub struct WorkerProc {
    pub name: String,
    pub child: Child,
    /// `hello world` lines its C routine printed.
    pub hellos: Arc<AtomicUsize>,
    /// Its log lines (stderr).
    pub logs: Arc<Mutex<Vec<String>>>,
    /// Address of its `/metrics` and `/healthz`.
    pub metrics: String,
}

impl WorkerProc {
    pub fn hellos(&self) -> usize {
        self.hellos.load(Ordering::SeqCst)
    }

    /// Sends `signal` (`TERM`, `KILL`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the worker still runs");
        crate::servers::send_signal(pid, signal, false).expect("signal sent");
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("worker {} did not exit within {within:?}", self.name))
            .expect("waiting for the worker")
    }

    /// Waits until it consumes (`/healthz` answers 200), at most `within`.
    pub async fn wait_consuming(&self, within: Duration) {
        let url = format!("http://{}/healthz", self.metrics);
        eventually(
            &format!("worker {} to consume", self.name),
            within,
            || async {
                let ok = reqwest::get(&url).await.is_ok_and(|r| r.status() == 200);
                ok.then_some(())
            },
        )
        .await;
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The value of one metric sample line of `/metrics` (`name` with its
    /// labels), 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .expect("worker metrics answer")
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// The statuses of a task's `status` events, in order.
pub fn status_trail(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "status")
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

/// How many terminal status events a history holds.
pub fn terminal_events(events: &[Value]) -> usize {
    status_trail(events)
        .iter()
        .filter(|s| TERMINAL.contains(&s.as_str()))
        .count()
}

/// The ids of a `GET /tasks` page's tasks, in order.
pub fn task_ids(page: &Value) -> Vec<&str> {
    page["tasks"]
        .as_array()
        .expect("a page of tasks")
        .iter()
        .map(|t| t["task_id"].as_str().expect("a task id"))
        .collect()
}

/// A create body: `stages` stages of `stage_ms` each.
pub fn body(stages: u32, stage_ms: u64) -> Value {
    json!({"stages": stages, "stage_ms": stage_ms})
}
