//! A whole Taskforge per test: the api in-process, workers as child
//! processes of the real binary (so they can be SIGKILLed and their stdout
//! — the C routine's `hello world` lines — counted).

use std::{
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use api_service::{Application, Settings};
use clap::Parser;
use serde_json::{json, Value};
use test_support::{eventually, TestEnv};
use tokio::process::{Child, Command};

pub const TOKEN: &str = "e2e-callback-token";

pub struct System {
    pub env: TestEnv,
    pub api: String,
    pub http: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
    pub workers: Vec<WorkerProcess>,
}

pub struct WorkerProcess {
    pub child: Child,
    /// `hello world` lines the worker's C routine printed.
    pub hellos: Arc<AtomicUsize>,
    /// Address of the worker's `/metrics` and `/healthz`.
    pub metrics: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl System {
    /// The api (with extra flags) and no workers yet.
    pub async fn start(api_flags: &[&str]) -> System {
        let env = TestEnv::new().await.expect("test environment");
        let mut args = vec![
            "api-service",
            "--bind",
            "127.0.0.1:0",
            "--redis-url",
            &env.redis_url,
            "--redis-prefix",
            &env.redis_prefix,
            "--amqp-url",
            &env.amqp_url,
            "--callback-token",
            TOKEN,
            "--workers",
            "2",
        ];
        args.extend(api_flags);
        let app = Application::build(Settings::try_parse_from(args).unwrap())
            .await
            .expect("api builds");
        let api = format!("http://127.0.0.1:{}", app.port());
        let state = app.state();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        tokio::time::timeout(Duration::from_secs(10), state.publisher.wait_connected())
            .await
            .expect("api connects");
        System {
            env,
            api,
            http: reqwest::Client::new(),
            handle,
            workers: Vec::new(),
        }
    }

    /// Starts a worker process and waits until it consumes (`/healthz` 200).
    pub async fn add_worker(&mut self, name: &str) -> usize {
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_algo-service"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CALLBACK_TOKEN", TOKEN)
            .env("AMQP_URL", &self.env.amqp_url)
            .env("API_URL", &self.api)
            .env("WORKER_NAME", name)
            .env("METRICS_BIND", &metrics)
            .env("WORKER_CONCURRENCY", "8")
            .env("SHUTDOWN_GRACE_SECS", "2")
            .env(
                "RUST_LOG",
                std::env::var("TEST_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(if std::env::var("TEST_WORKER_LOG").is_ok() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .expect("the algo-service binary starts");
        let hellos = test_support::count_hellos(child.stdout.take().unwrap());
        let url = format!("http://{metrics}/healthz");
        eventually(
            &format!("worker {name} to consume"),
            Duration::from_secs(15),
            || async {
                let ok = reqwest::get(&url).await.is_ok_and(|r| r.status() == 200);
                ok.then_some(())
            },
        )
        .await;
        self.workers.push(WorkerProcess {
            child,
            hellos,
            metrics,
        });
        self.workers.len() - 1
    }

    pub fn hellos(&self) -> usize {
        self.workers
            .iter()
            .map(|w| w.hellos.load(Ordering::SeqCst))
            .sum()
    }

    pub async fn create(&self, body: Value) -> String {
        let res = self
            .http
            .post(format!("{}/tasks", self.api))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        res.json::<Value>().await.unwrap()["task_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn task(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/tasks/{id}", self.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn cancel(&self, id: &str) -> reqwest::Response {
        self.http
            .delete(format!("{}/tasks/{id}", self.api))
            .send()
            .await
            .unwrap()
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        self.http
            .get(format!("{}/tasks/{id}/events", self.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the task's status satisfies `done`, returning the task.
    pub async fn wait_for(&self, id: &str, within: Duration, done: impl Fn(&str) -> bool) -> Value {
        eventually(&format!("task {id}"), within, || async {
            let task = self.task(id).await;
            done(task["status"].as_str().unwrap_or_default()).then_some(task)
        })
        .await
    }

    pub async fn wait_terminal(&self, id: &str, within: Duration) -> Value {
        self.wait_for(id, within, |s| {
            ["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"].contains(&s)
        })
        .await
    }

    pub async fn stop(mut self) {
        for w in &mut self.workers {
            let _ = w.child.start_kill();
            let _ = w.child.wait().await;
        }
        self.handle.stop(false).await;
        self.env.cleanup().await;
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

pub fn terminal_events(events: &[Value]) -> usize {
    status_trail(events)
        .iter()
        .filter(|s| ["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"].contains(&s.as_str()))
        .count()
}

pub fn body(stages: u32, stage_ms: u64) -> Value {
    json!({"stages": stages, "stage_ms": stage_ms})
}
