//! The worker as a whole: [`Worker::build`] binds its HTTP endpoint and wires
//! the parts; [`Worker::run_until_stopped`] consumes until the shutdown token
//! fires, reconnecting to RabbitMQ with backoff whenever the session breaks,
//! then drains.
//!
//! - `consume.rs`: the session loop: connect, hand each delivery to
//!   [`crate::handler::process_one`], reconnect.
//! - `control.rs`: broadcasts from `tasks.control`: cancels to the registry,
//!   pauses and resumes to `pause.rs`.
//! - `pause.rs`: which queues are paused (broadcasts, and the api's answer
//!   when a session opens).
//!
//! A broken AMQP session never stops running tasks: they hold their leases
//! through the callback API, not the broker. Their acks fail if their channel
//! is gone; the broker then redelivers those messages, and the copies wait in
//! the registry until the local run ends, claim, and find the task finished.

mod consume;
mod control;
mod pause;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use backon::ExponentialBuilder;
use tokio::{net::TcpListener, sync::watch, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    callbacks::ApiClient,
    config::{redact_url, Settings},
    context::HandlerContext,
    metrics::{self, Metrics},
    registry::Registry,
    shutdown,
};

/// Reconnect schedule: 100 ms doubling to 5 s (jittered), forever.
pub fn reconnect_policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .without_max_times()
}

/// A built worker, ready to run.
#[derive(Debug)]
pub struct Worker {
    settings: Settings,
    listener: TcpListener,
    metrics_addr: SocketAddr,
    metrics: Metrics,
    api: ApiClient,
    registry: Registry,
    consuming: watch::Sender<bool>,
}

impl Worker {
    /// Binds `METRICS_BIND` and builds the callback client. Does not connect
    /// to RabbitMQ (that happens, with retries, in [`Worker::run_until_stopped`]).
    ///
    /// # Errors
    /// When the metrics address cannot be bound or the HTTP client not built.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = Metrics::new()?;
        let listener =
            metrics::bind(settings.metrics_bind, !settings.metrics_bind_explicit).await?;
        let metrics_addr = listener.local_addr()?;
        let api = ApiClient::new(
            &settings.api_url,
            &settings.callback_token,
            &settings.worker_name,
            settings.callback_timeout,
            metrics.clone(),
        )?;
        let (consuming, _) = watch::channel(false);
        Ok(Self {
            settings,
            listener,
            metrics_addr,
            metrics,
            api,
            registry: Registry::new(),
            consuming,
        })
    }

    /// Where `/healthz` and `/metrics` are served (the real port when `METRICS_BIND` asked for 0).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The name this worker reports in callbacks.
    pub fn worker_name(&self) -> &str {
        &self.settings.worker_name
    }

    /// `true` while the worker consumes its queues, or would but for their
    /// being paused (what `/healthz` reports).
    pub fn consuming(&self) -> watch::Receiver<bool> {
        self.consuming.subscribe()
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Runs until `shutdown` fires, then drains and returns.
    ///
    /// # Errors
    /// Only for failures of the worker itself (not of RabbitMQ or the api,
    /// which are retried forever).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Worker {
            settings,
            listener,
            metrics_addr,
            metrics,
            api,
            registry,
            consuming,
        } = self;
        tracing::info!(
            worker = %settings.worker_name,
            amqp_url = %redact_url(&settings.amqp_url),
            api_url = %settings.api_url,
            concurrency = settings.worker_concurrency,
            queues = %settings.worker_queues,
            queue_type = %settings.queue_type,
            isolation = ?settings.worker_isolation,
            %metrics_addr,
            "algo-service starting"
        );
        let server_stop = CancellationToken::new();
        let server = tokio::spawn(metrics::serve(
            listener,
            metrics.clone(),
            consuming.subscribe(),
            server_stop.clone(),
        ));

        let ctx = Arc::new(HandlerContext {
            api,
            registry: registry.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            abandon: CancellationToken::new(),
            cpu_slots: Arc::new(tokio::sync::Semaphore::new(usize::from(settings.cpu_slots))),
            allow_crash: settings.allow_crash_input,
            isolation: settings.worker_isolation,
        });
        let tracker = TaskTracker::new();

        let session = consume::consume(&settings, &ctx, &tracker, &consuming, &shutdown).await;
        let grace_end = Instant::now() + settings.shutdown_grace;
        consuming.send_replace(false);

        shutdown::drain(&tracker, &registry, &ctx.abandon, grace_end).await;
        if let Some(session) = session {
            session.close().await;
        }
        server_stop.cancel();
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the metrics server failed"),
            Err(e) => tracing::warn!(error = %e, "the metrics server crashed"),
        }
        tracing::info!("algo-service stopped");
        Ok(())
    }
}
