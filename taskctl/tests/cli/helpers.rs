//! The real api in-process (own RabbitMQ vhost and Redis prefix, random
//! port), the test as the worker through the callback endpoints, and the
//! real `taskctl` binary as a child process.

use std::{future::Future, pin::Pin, process::Stdio, time::Duration};

use api_service::{Application, Settings};
use clap::Parser;
use serde_json::{json, Value};
use test_support::TestEnv;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

pub const TOKEN: &str = "taskctl-test-callback-token";
/// How long any single step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(15);
/// An id no task has.
pub const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

pub struct TestApi {
    pub address: String,
    pub env: TestEnv,
    pub http: reqwest::Client,
    /// Sent as a bearer key on public endpoints when the api has keys.
    pub key: Option<String>,
    /// Stops the server (not polled until [`TestApi::stop`]).
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

pub async fn spawn_api() -> TestApi {
    spawn_api_with(&[]).await
}

/// The api with extra flags, e.g. `["--api-keys", "k1"]`.
pub async fn spawn_api_with(extra: &[&str]) -> TestApi {
    let env = TestEnv::new()
        .await
        .expect("test environment (is RabbitMQ's management plugin on?)");
    let mut args = vec![
        "api-service",
        "--bind",
        "127.0.0.1:0",
        "--redis-prefix",
        &env.redis_prefix,
        "--redis-url",
        &env.redis_url,
        "--amqp-url",
        &env.amqp_url,
        "--callback-token",
        TOKEN,
        "--workers",
        "2",
    ];
    args.extend(extra);
    let settings = Settings::try_parse_from(args).expect("test settings parse");
    let app = Application::build(settings).await.expect("the api builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let server = app.handle();
    tokio::spawn(app.run_until_stopped());
    tokio::time::timeout(Duration::from_secs(10), state.publisher.wait_connected())
        .await
        .expect("the api connects to rabbitmq");
    let key = extra
        .iter()
        .position(|a| *a == "--api-keys")
        .and_then(|i| extra.get(i + 1))
        .and_then(|keys| keys.split(',').next())
        .map(str::to_owned);
    TestApi {
        address,
        env,
        http: reqwest::Client::new(),
        key,
        stop: Box::pin(async move { server.stop(false).await }),
    }
}

impl TestApi {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    fn public(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// Creates a task through the api (not through taskctl) and returns its id.
    pub async fn create(&self, body: Value) -> String {
        let res = self
            .public(self.http.post(self.url("/tasks")).json(&body))
            .send()
            .await
            .expect("POST /tasks");
        assert_eq!(res.status(), 202, "create answers 202");
        res.json::<Value>().await.unwrap()["task_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn task(&self, id: &str) -> Value {
        let res = self
            .public(self.http.get(self.url(&format!("/tasks/{id}"))))
            .send()
            .await
            .expect("GET /tasks/{id}");
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    pub async fn events(&self, id: &str) -> Value {
        let res = self
            .public(self.http.get(self.url(&format!("/tasks/{id}/events"))))
            .send()
            .await
            .expect("GET /tasks/{id}/events");
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    async fn callback(&self, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Reports a status as `worker` and asserts the api took it.
    pub async fn report(&self, id: &str, body: Value) {
        let (status, answer) = self
            .callback(&format!("/internal/tasks/{id}/status"), body.clone())
            .await;
        assert_eq!(status, 200, "status callback {body}: {answer}");
    }

    /// Claims a task as `worker`.
    pub async fn claim(&self, id: &str, worker: &str) {
        self.report(id, json!({"status": "PROCESSING", "worker": worker}))
            .await;
    }

    /// Reports `stage` of `stages` done.
    pub async fn progress(&self, id: &str, worker: &str, stage: u32, stages: u32) {
        let body = json!({"progress": stage * 100 / stages, "stage": stage, "stages": stages, "worker": worker});
        let (status, answer) = self
            .callback(&format!("/internal/tasks/{id}/progress"), body)
            .await;
        assert_eq!(status, 200, "progress {stage}/{stages}: {answer}");
    }

    /// Plays a worker that runs every stage of a claimed task and completes it.
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

    /// `taskctl` pointed at this api (no key unless the test adds one).
    pub fn taskctl(&self) -> Command {
        taskctl_at(&self.address)
    }

    pub async fn stop(self) {
        self.stop.await;
        self.env.cleanup().await;
    }
}

/// The real binary with `API_URL` set and nothing else inherited that matters.
pub fn taskctl_at(api_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskctl"));
    cmd.env("API_URL", api_url)
        .env_remove("API_KEY")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A finished run of `taskctl`.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts stderr is exactly one `taskctl: error: …` line; returns it.
    pub fn one_error_line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr, got {:?}", self.stderr);
        assert!(
            lines[0].starts_with("taskctl: error: "),
            "error format: {:?}",
            lines[0]
        );
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "no panic: {}",
            self.stderr
        );
        lines[0]
    }
}

/// Runs `cmd args…` to the end.
pub async fn run(mut cmd: Command, args: &[&str]) -> Run {
    let output = tokio::time::timeout(STEP, cmd.args(args).output())
        .await
        .unwrap_or_else(|_| panic!("taskctl {args:?} did not finish"))
        .expect("taskctl starts");
    Run {
        code: output.status.code().expect("taskctl exits (no signal)"),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    }
}

/// A running `taskctl` whose stdout is read line by line as it comes.
pub struct Live {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Live {
    pub fn start(mut cmd: Command, args: &[&str]) -> Live {
        let mut child = cmd.args(args).spawn().expect("taskctl starts");
        let stdout = child.stdout.take().expect("piped stdout");
        Live {
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// The next line of stdout (fails the test if none comes in time).
    pub async fn next_line(&mut self) -> String {
        let line = tokio::time::timeout(STEP, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no output in time; so far {:?}", self.seen))
            .expect("stdout readable")
            .unwrap_or_else(|| panic!("stdout closed early; so far {:?}", self.seen));
        self.seen.push(line.clone());
        line
    }

    /// Reads the rest of stdout and waits for the exit.
    pub async fn finish(mut self) -> (Run, Vec<String>) {
        while let Some(line) = tokio::time::timeout(STEP, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("taskctl did not finish; so far {:?}", self.seen))
            .expect("stdout readable")
        {
            self.seen.push(line);
        }
        let status = tokio::time::timeout(STEP, self.child.wait())
            .await
            .expect("taskctl exits")
            .expect("wait");
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            err.read_to_string(&mut stderr).await.expect("stderr");
        }
        let run = Run {
            code: status.code().expect("taskctl exits (no signal)"),
            stdout: self.seen.join("\n"),
            stderr,
        };
        (run, self.seen)
    }
}

/// Asserts `lines` are plain text: no terminal escape codes at all.
pub fn assert_plain(lines: &[String]) {
    for line in lines {
        assert!(
            !line.contains('\x1b') && !line.contains('\r'),
            "escape codes in {line:?}"
        );
    }
}

/// Positions of `needles` in `lines` (each must occur), asserting they ascend.
pub fn assert_in_order(lines: &[String], needles: &[String]) {
    let mut from = 0;
    for needle in needles {
        let at = lines[from..]
            .iter()
            .position(|l| l == needle)
            .unwrap_or_else(|| panic!("{needle:?} missing (in order) from {lines:#?}"));
        from += at + 1;
    }
}
