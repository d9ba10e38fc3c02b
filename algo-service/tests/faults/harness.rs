//! A whole Taskforge whose parts can fail: the api in-process on a port of
//! its own (so it can be stopped and started again on the same port), real
//! `algo-service` processes (SIGTERM, SIGKILL; their `hello world` lines and
//! log lines are collected), and Redis and RabbitMQ that are either the
//! shared servers (a vhost and key prefix of the test's own) or private ones
//! from [`test_support::servers`] that the test may pause or restart.
//!
//! Synchronisation is always on observable state with bounded polling
//! ([`test_support::eventually`]), never a fixed sleep.

use std::{
    process::{ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, Once,
    },
    time::Duration,
};

use api_service::{startup::AppState, Application, Settings};
use clap::Parser;
use serde_json::{json, Value};
use test_support::{eventually, servers::free_port, TestEnv};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    task::JoinHandle,
};

pub const TOKEN: &str = "faults-callback-token";
pub const TERMINAL: [&str; 4] = ["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"];

/// Where the api and the workers find Redis and RabbitMQ.
pub struct Backends {
    pub redis_url: String,
    pub redis_prefix: String,
    pub amqp_url: String,
    /// The shared broker's vhost, when the test uses it (deleted by [`Stack::stop`]).
    env: Option<TestEnv>,
}

impl Backends {
    /// The shared Redis and RabbitMQ, with a key prefix and vhost of the test's own.
    pub async fn shared() -> Self {
        let env = TestEnv::new().await.expect("test environment");
        Self {
            redis_url: env.redis_url.clone(),
            redis_prefix: env.redis_prefix.clone(),
            amqp_url: env.amqp_url.clone(),
            env: Some(env),
        }
    }

    /// The shared Redis (own prefix) and the broker at `amqp_url` (a private node).
    pub fn with_private_broker(amqp_url: String) -> Self {
        Self {
            redis_url: std::env::var("TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned()),
            redis_prefix: format!("test:{}:", uuid::Uuid::new_v4().simple()),
            amqp_url,
            env: None,
        }
    }

    /// Replaces Redis (a private server; the prefix stays).
    pub fn with_redis(mut self, redis_url: String) -> Self {
        self.redis_url = redis_url;
        self
    }
}

struct RunningApi {
    handle: actix_web::dev::ServerHandle,
    state: Arc<AppState>,
    join: JoinHandle<anyhow::Result<()>>,
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

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the worker still runs");
        test_support::servers::send_signal(pid, signal, false).expect("signal sent");
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("worker {} did not exit within {within:?}", self.name))
            .expect("waiting for the worker")
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

    /// The value of one metric sample line of `/metrics` (`name` with its labels).
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

pub struct Stack {
    pub backends: Backends,
    pub api_url: String,
    api_port: u16,
    api_flags: Vec<String>,
    api: Option<RunningApi>,
    pub workers: Vec<WorkerProc>,
    pub http: reqwest::Client,
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
    /// The api (with extra flags) on a free port of its own; no workers yet.
    /// Does not wait for the api's broker connection ([`Stack::wait_api_connected`]).
    pub async fn start(backends: Backends, api_flags: &[&str]) -> Stack {
        init_logs();
        let api_port = free_port();
        let mut stack = Stack {
            backends,
            api_url: format!("http://127.0.0.1:{api_port}"),
            api_port,
            api_flags: api_flags.iter().map(|s| (*s).to_owned()).collect(),
            api: None,
            workers: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
        };
        stack.start_api().await;
        stack
    }

    /// Starts the api (again) on the stack's port, with the same settings.
    pub async fn start_api(&mut self) {
        assert!(self.api.is_none(), "the api already runs");
        let bind = format!("127.0.0.1:{}", self.api_port);
        let mut args = vec![
            "api-service",
            "--bind",
            &bind,
            "--redis-url",
            &self.backends.redis_url,
            "--redis-prefix",
            &self.backends.redis_prefix,
            "--amqp-url",
            &self.backends.amqp_url,
            "--callback-token",
            TOKEN,
            "--workers",
            "2",
        ];
        args.extend(self.api_flags.iter().map(String::as_str));
        let app = Application::build(Settings::try_parse_from(args).unwrap())
            .await
            .expect("the api builds and binds its port");
        let state = app.state();
        let handle = app.handle();
        let join = tokio::spawn(app.run_until_stopped());
        self.api = Some(RunningApi {
            handle,
            state,
            join,
        });
    }

    /// Stops the api at once (open connections dropped) and waits until its port is free.
    pub async fn stop_api(&mut self) {
        let api = self.api.take().expect("the api runs");
        api.handle.stop(false).await;
        let _ = tokio::time::timeout(Duration::from_secs(15), api.join).await;
    }

    pub fn api_state(&self) -> Arc<AppState> {
        Arc::clone(&self.api.as_ref().expect("the api runs").state)
    }

    /// Waits until the api's publisher is connected to RabbitMQ.
    pub async fn wait_api_connected(&self, within: Duration) {
        tokio::time::timeout(within, self.api_state().publisher.wait_connected())
            .await
            .expect("the api connects to rabbitmq");
    }

    /// Starts a worker process and waits until it consumes (`/healthz` 200).
    pub async fn add_worker(&mut self, name: &str, opts: WorkerOpts) -> usize {
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_algo-service"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CALLBACK_TOKEN", TOKEN)
            .env("AMQP_URL", &self.backends.amqp_url)
            .env("API_URL", &self.api_url)
            .env("WORKER_NAME", name)
            .env("METRICS_BIND", &metrics)
            .env("WORKER_CONCURRENCY", opts.concurrency.to_string())
            .env("SHUTDOWN_GRACE_SECS", opts.grace_secs.to_string())
            .env(
                "RUST_LOG",
                std::env::var("TEST_WORKER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the algo-service binary starts");
        let hellos = test_support::count_hellos(child.stdout.take().unwrap());
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
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
        let url = format!("http://{metrics}/healthz");
        eventually(
            &format!("worker {name} to consume"),
            Duration::from_secs(20),
            || async {
                let ok = reqwest::get(&url).await.is_ok_and(|r| r.status() == 200);
                ok.then_some(())
            },
        )
        .await;
        self.workers.push(WorkerProc {
            name: name.to_owned(),
            child,
            hellos,
            logs,
            metrics,
        });
        self.workers.len() - 1
    }

    /// `hello world` lines printed by every worker so far.
    pub fn hellos(&self) -> usize {
        self.workers.iter().map(WorkerProc::hellos).sum()
    }

    pub async fn post_task(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/tasks", self.api_url))
            .json(&body)
            .send()
            .await
            .expect("the api answers")
    }

    pub async fn create(&self, body: Value) -> String {
        let res = self.post_task(body).await;
        assert_eq!(res.status(), 202);
        res.json::<Value>().await.unwrap()["task_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn task(&self, id: &str) -> Value {
        let res = self
            .http
            .get(format!("{}/tasks/{id}", self.api_url))
            .send()
            .await
            .expect("the api answers");
        assert_eq!(res.status(), 200, "GET /tasks/{id}");
        res.json().await.unwrap()
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        self.http
            .get(format!("{}/tasks/{id}/events", self.api_url))
            .send()
            .await
            .expect("the api answers")
            .json()
            .await
            .unwrap()
    }

    /// Waits until the task's status satisfies `done`, returning the task.
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

    /// Every task the api lists (up to 1,000), newest first.
    pub async fn listed(&self) -> Vec<Value> {
        let page: Value = self
            .http
            .get(format!("{}/tasks?limit=1000", self.api_url))
            .send()
            .await
            .expect("GET /tasks")
            .json()
            .await
            .expect("a JSON page");
        page["tasks"].as_array().cloned().unwrap_or_default()
    }

    /// Messages ready in `queue` of the stack's broker.
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        queue_depth(&self.backends.amqp_url, queue)
            .await
            .expect("the queue exists")
    }

    pub async fn stop(mut self) {
        for w in &mut self.workers {
            let _ = w.child.start_kill();
            let _ = w.child.wait().await;
        }
        if let Some(api) = self.api.take() {
            api.handle.stop(false).await;
        }
        if let Some(env) = &self.backends.env {
            env.cleanup().await;
        } else if let Ok(client) = redis::Client::open(self.backends.redis_url.as_str()) {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}*", self.backends.redis_prefix))
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<i64, _> =
                        redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
                }
            }
        }
    }
}

/// Waits until `tasks.algo` is empty, then asserts nothing was dead-lettered.
pub async fn assert_drained(amqp_url: &str) {
    eventually("tasks.algo to drain", Duration::from_secs(20), || async {
        (queue_depth(amqp_url, "tasks.algo").await == Some(0)).then_some(())
    })
    .await;
    assert_eq!(
        queue_depth(amqp_url, "tasks.dead").await,
        Some(0),
        "nothing dead-lettered"
    );
}

/// Messages ready in `queue` at `amqp_url` (a passive declare), `None` if it does not exist.
pub async fn queue_depth(amqp_url: &str, queue: &str) -> Option<u32> {
    let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
        .await
        .expect("connecting to the broker");
    let channel = conn.create_channel().await.unwrap();
    let declared = channel
        .queue_declare(
            queue.into(),
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

/// The statuses of a task's `status` events, in order.
pub fn status_trail(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "status")
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

pub fn terminal_events(events: &[Value]) -> usize {
    status_trail(events)
        .iter()
        .filter(|s| TERMINAL.contains(&s.as_str()))
        .count()
}

pub fn body(stages: u32, stage_ms: u64) -> Value {
    json!({"stages": stages, "stage_ms": stage_ms})
}
