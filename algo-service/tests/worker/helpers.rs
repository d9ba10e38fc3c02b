//! A worker running in-process (the vhost, publishing and polling come
//! from [`test_support`]).

use std::{net::SocketAddr, sync::Once, time::Duration};

use algo_service::{LogFormat, Settings, Worker};
use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// A worker running in-process.
pub(crate) struct RunningWorker {
    pub(crate) metrics_addr: SocketAddr,
    pub(crate) consuming: tokio::sync::watch::Receiver<bool>,
    pub(crate) metrics: algo_service::metrics::Metrics,
    pub(crate) stop: CancellationToken,
    pub(crate) handle: JoinHandle<anyhow::Result<()>>,
}

/// Settings for a worker on the broker at `amqp_url` whose api is `api_url`.
pub(crate) fn settings(amqp_url: &str, api_url: &str) -> Settings {
    let mut s = Settings::from_lookup(|name| match name {
        "CALLBACK_TOKEN" => Some(test_support::TOKEN.to_owned()),
        "AMQP_URL" => Some(amqp_url.to_owned()),
        "API_URL" => Some(api_url.to_owned()),
        "METRICS_BIND" => Some("127.0.0.1:0".to_owned()),
        "WORKER_CONCURRENCY" => Some("4".to_owned()),
        "SHUTDOWN_GRACE_SECS" => Some("2".to_owned()),
        _ => None,
    })
    .expect("test settings are valid");
    s.worker_name = format!(
        "test-worker-{}",
        &task_model::TaskId::new().to_string()[..8]
    );
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
