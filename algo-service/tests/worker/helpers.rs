//! Test plumbing: a private vhost, a worker running in-process, polling.

use std::{net::SocketAddr, sync::Once, time::Duration};

use algo_service::{LogFormat, Settings, Worker};
use anyhow::Context;
use lapin::{
    options::BasicPublishOptions, types::ShortString, BasicProperties, Channel, Connection,
    ConnectionProperties,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const MGMT: &str = "http://127.0.0.1:15672";

fn mgmt() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a plain client builds")
}

/// Logs to stderr when `TEST_LOG` is set, nothing otherwise.
pub(crate) fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let subscriber = algo_service::telemetry::get_subscriber(
                LogFormat::Text,
                "info,algo_service=debug",
                std::io::stderr,
            );
            let _ = algo_service::telemetry::init_subscriber(subscriber);
        }
    });
}

/// A RabbitMQ vhost of the test's own; [`Vhost::delete`] removes it.
#[derive(Debug)]
pub(crate) struct Vhost {
    pub(crate) name: String,
    pub(crate) amqp_url: String,
}

impl Vhost {
    pub(crate) async fn create() -> anyhow::Result<Self> {
        let name = format!("taskforge-test-algo-{}", uuid_like());
        let http = mgmt();
        http.put(format!("{MGMT}/api/vhosts/{name}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .context("creating a vhost (is rabbitmq_management enabled?)")?
            .error_for_status()?;
        http.put(format!("{MGMT}/api/permissions/{name}/guest"))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await?
            .error_for_status()?;
        Ok(Self {
            amqp_url: format!("amqp://guest:guest@127.0.0.1:5672/{name}"),
            name,
        })
    }

    /// Creates `queue` through the management API with `arguments` as JSON,
    /// the way `rabbitmq/definitions.json` would.
    pub(crate) async fn put_queue(
        &self,
        queue: &str,
        arguments: serde_json::Value,
    ) -> anyhow::Result<()> {
        mgmt()
            .put(format!("{MGMT}/api/queues/{}/{queue}", self.name))
            .basic_auth("guest", Some("guest"))
            .json(
                &serde_json::json!({"durable": true, "auto_delete": false, "arguments": arguments}),
            )
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Force-closes every client connection in the vhost, as a broker restart would.
    pub(crate) async fn kill_connections(&self) -> anyhow::Result<usize> {
        let http = mgmt();
        let conns: Vec<serde_json::Value> = http
            .get(format!("{MGMT}/api/vhosts/{}/connections", self.name))
            .basic_auth("guest", Some("guest"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut killed = 0;
        for conn in conns {
            if let Some(name) = conn.get("name").and_then(|n| n.as_str()) {
                http.delete(format!("{MGMT}/api/connections/{}", encode(name)))
                    .basic_auth("guest", Some("guest"))
                    .send()
                    .await?;
                killed += 1;
            }
        }
        Ok(killed)
    }

    pub(crate) async fn delete(&self) {
        let res = mgmt()
            .delete(format!("{MGMT}/api/vhosts/{}", self.name))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
        if let Err(e) = res {
            eprintln!("cannot delete vhost {}: {e}", self.name);
        }
    }

    pub(crate) async fn channel(&self) -> anyhow::Result<(Connection, Channel)> {
        let conn = Connection::connect(&self.amqp_url, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        Ok((conn, channel))
    }
}

/// Percent-encodes a management API path segment (connection names hold `->` and spaces).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn uuid_like() -> String {
    task_model::TaskId::new().to_string().replace('-', "")
}

/// Publishes `body` to `tasks` → `tasks.algo` as the api would (persistent, message_id).
pub(crate) async fn publish(
    channel: &Channel,
    message_id: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    channel
        .basic_publish(
            "tasks".into(),
            "tasks.algo".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default()
                .with_message_id(ShortString::from(message_id))
                .with_delivery_mode(2),
        )
        .await?
        .await?;
    Ok(())
}

/// A worker running in-process.
pub(crate) struct RunningWorker {
    pub(crate) metrics_addr: SocketAddr,
    pub(crate) consuming: tokio::sync::watch::Receiver<bool>,
    pub(crate) metrics: algo_service::metrics::Metrics,
    pub(crate) stop: CancellationToken,
    pub(crate) handle: JoinHandle<anyhow::Result<()>>,
}

/// Settings for a worker in `vhost` whose api is `api_url`.
pub(crate) fn settings(vhost: &Vhost, api_url: &str) -> Settings {
    let mut s = Settings::from_lookup(|name| match name {
        "CALLBACK_TOKEN" => Some("test-token".to_owned()),
        "AMQP_URL" => Some(vhost.amqp_url.clone()),
        "API_URL" => Some(api_url.to_owned()),
        "METRICS_BIND" => Some("127.0.0.1:0".to_owned()),
        "WORKER_CONCURRENCY" => Some("4".to_owned()),
        "SHUTDOWN_GRACE_SECS" => Some("2".to_owned()),
        _ => None,
    })
    .expect("test settings are valid");
    s.worker_name = format!("test-worker-{}", &uuid_like()[..8]);
    s
}

pub(crate) async fn spawn_worker(settings: Settings) -> anyhow::Result<RunningWorker> {
    init_logs();
    let worker = Worker::build(settings).await?;
    let stop = CancellationToken::new();
    let metrics_addr = worker.metrics_addr();
    let consuming = worker.consuming();
    let metrics = worker.metrics().clone();
    let handle = tokio::spawn(worker.run_until_stopped(stop.clone()));
    Ok(RunningWorker {
        metrics_addr,
        consuming,
        metrics,
        stop,
        handle,
    })
}

impl RunningWorker {
    pub(crate) async fn wait_consuming(&mut self, want: bool, within: Duration) {
        tokio::time::timeout(within, self.consuming.wait_for(|c| *c == want))
            .await
            .unwrap_or_else(|_| panic!("worker consuming != {want} after {within:?}"))
            .expect("the worker is alive");
    }

    pub(crate) async fn healthz(&self) -> Option<u16> {
        reqwest::get(format!("http://{}/healthz", self.metrics_addr))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    pub(crate) async fn stop(self, within: Duration) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(within, self.handle)
            .await
            .context("the worker did not stop in time")??
    }
}

/// Polls `check` every 50 ms until it returns `Some`, panicking after `within`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
