//! `spawn_app`: the real api in-process on a random port, with its own
//! RabbitMQ vhost and Redis prefix.

use std::{sync::Arc, time::Duration};

use api_service::{startup::AppState, Application, Settings};
use clap::Parser;
use futures_util::StreamExt;
use lapin::{options::*, types::FieldTable, Connection, ConnectionProperties};
use serde_json::{json, Value};
use test_support::TestEnv;

pub const TOKEN: &str = "test-callback-token";

pub struct TestApp {
    pub address: String,
    pub env: TestEnv,
    pub http: reqwest::Client,
    pub state: Arc<AppState>,
    handle: actix_web::dev::ServerHandle,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// The api with extra flags, e.g. `["--api-keys", "k1"]`.
pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    let env = TestEnv::new()
        .await
        .expect("test environment (is RabbitMQ's management plugin on?)");
    let app = build(&env, extra).await;
    // Publishing needs the broker connection; wait for it (unless a test
    // deliberately points the api at a dead broker).
    if !extra.contains(&"--amqp-url") {
        tokio::time::timeout(
            Duration::from_secs(10),
            app.state.publisher.wait_connected(),
        )
        .await
        .expect("the api connects to rabbitmq");
    }
    app
}

async fn build(env: &TestEnv, extra: &[&str]) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        api_service::telemetry::init("text", std::io::stdout);
    }
    let mut args = vec![
        "api-service",
        "--bind",
        "127.0.0.1:0",
        "--redis-prefix",
        &env.redis_prefix,
        "--callback-token",
        TOKEN,
        "--workers",
        "2",
    ];
    if !extra.contains(&"--amqp-url") {
        args.extend(["--amqp-url", &env.amqp_url]);
    }
    if !extra.contains(&"--redis-url") {
        args.extend(["--redis-url", &env.redis_url]);
    }
    args.extend(extra);
    let settings = Settings::try_parse_from(args).expect("test settings parse");
    let app = Application::build(settings).await.expect("the api builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        env: env.clone(),
        http: reqwest::Client::new(),
        state,
        handle,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// GETs `path` and parses the JSON answer, whatever its status.
    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("a JSON answer")
    }

    pub async fn post_task(&self, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/tasks"))
            .json(&body)
            .send()
            .await
            .expect("POST /tasks")
    }

    /// Creates a task and returns its id.
    pub async fn create(&self, body: Value) -> String {
        let res = self.post_task(body).await;
        assert_eq!(res.status(), 202, "create answers 202");
        res.json::<Value>().await.unwrap()["task_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn get_task(&self, id: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/tasks/{id}")))
            .send()
            .await
            .expect("GET /tasks/{id}")
    }

    pub async fn task(&self, id: &str) -> Value {
        let res = self.get_task(id).await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    pub async fn cancel(&self, id: &str) -> reqwest::Response {
        self.http
            .delete(self.url(&format!("/tasks/{id}")))
            .send()
            .await
            .expect("DELETE /tasks/{id}")
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        let res = self
            .http
            .get(self.url(&format!("/tasks/{id}/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    pub async fn status_callback(&self, id: &str, body: Value) -> (u16, Value) {
        self.callback(&format!("/internal/tasks/{id}/status"), body)
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

    /// Claims a task as `worker` and asserts it worked.
    pub async fn claim(&self, id: &str, worker: &str) -> Value {
        let (status, body) = self
            .status_callback(id, json!({"status": "PROCESSING", "worker": worker}))
            .await;
        assert_eq!(status, 200, "claim by {worker}: {body}");
        body
    }

    /// A channel into this test's vhost.
    pub async fn amqp(&self) -> lapin::Channel {
        let conn = Connection::connect(&self.env.amqp_url, ConnectionProperties::default())
            .await
            .unwrap();
        conn.create_channel().await.unwrap()
    }

    /// Takes the next message from `tasks.algo`, waiting for it.
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

    pub async fn stop(self) {
        self.handle.stop(false).await;
        self.env.cleanup().await;
    }
}
