//! The worker as a whole: [`Worker::build`] binds its HTTP endpoint and wires
//! the parts; [`Worker::run_until_stopped`] consumes until the shutdown token
//! fires, reconnecting to RabbitMQ with backoff whenever the session breaks,
//! then drains.
//!
//! A broken AMQP session never stops running tasks: they hold their leases
//! through the callback API, not the broker. Their acks fail if their channel
//! is gone; the broker then redelivers those messages, and the copies wait in
//! the registry until the local run ends, claim, and find the task finished.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::{options::BasicNackOptions, Consumer};
use task_model::ControlMessage;
use tokio::{net::TcpListener, sync::watch, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    broker::Session,
    callbacks::ApiClient,
    config::{redact_url, Settings},
    handler::{self, HandlerContext},
    metrics::{self, Metrics},
    registry::{Registry, StopReason},
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
        let listener = metrics::bind(settings.metrics_bind).await?;
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

    /// `true` while the worker consumes `tasks.algo` (what `/healthz` reports).
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
        });
        let tracker = TaskTracker::new();

        let session = consume(&settings, &ctx, &tracker, &consuming, &shutdown).await;
        let grace_end = Instant::now() + settings.shutdown_grace;
        consuming.send_replace(false);

        shutdown::drain(&tracker, &registry, &ctx.abandon, grace_end).await;
        if let Some(session) = session {
            session.close().await;
        }
        server_stop.cancel();
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error.message = %e, "the metrics server failed"),
            Err(e) => tracing::warn!(error.message = %e, "the metrics server crashed"),
        }
        tracing::info!("algo-service stopped");
        Ok(())
    }
}

/// Why a session stopped consuming.
enum SessionEnd {
    Shutdown,
    Broken(String),
}

/// Consumes until `shutdown` fires, reconnecting as needed. Returns the live
/// session (its consumer cancelled) so cancels keep arriving during the drain.
async fn consume(
    settings: &Settings,
    ctx: &Arc<HandlerContext>,
    tracker: &TaskTracker,
    consuming: &watch::Sender<bool>,
    shutdown: &CancellationToken,
) -> Option<Session> {
    let mut backoff = reconnect_policy().build();
    let mut generation: u64 = 0;
    loop {
        if generation > 0 {
            ctx.metrics.reconnects.inc();
        }
        generation += 1;
        let opened = tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            opened = Session::open(
                &settings.amqp_url,
                &settings.worker_name,
                settings.worker_concurrency,
                generation,
            ) => opened,
        };
        let mut session = match opened {
            Ok(session) => session,
            Err(e) => {
                let delay = next_delay(&mut backoff);
                tracing::warn!(
                    error.message = %e,
                    error.cause_chain = ?e,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot consume from RabbitMQ; retrying"
                );
                if sleep_or_shutdown(delay, shutdown).await {
                    return None;
                }
                continue;
            }
        };
        backoff = reconnect_policy().build();

        let control_ended = CancellationToken::new();
        let control = tokio::spawn(consume_control(
            session.control.clone(),
            ctx.registry.clone(),
            control_ended.clone(),
        ));
        consuming.send_replace(true);
        tracing::info!(
            generation,
            in_flight = ctx.registry.len(),
            "consuming tasks.algo"
        );

        let end = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break SessionEnd::Shutdown,
                () = control_ended.cancelled() => break SessionEnd::Broken("the control consumer ended".to_owned()),
                next = session.tasks.next() => match next {
                    Some(Ok(delivery)) => {
                        tracker.spawn(handler::process_one(Arc::clone(ctx), delivery));
                    }
                    Some(Err(e)) => break SessionEnd::Broken(e.to_string()),
                    None => break SessionEnd::Broken("the broker cancelled the consumer".to_owned()),
                },
            }
        };
        consuming.send_replace(false);

        match end {
            SessionEnd::Shutdown => {
                tracing::info!("shutdown requested; cancelling the tasks.algo consumer");
                if let Err(e) = session.cancel_tasks_consumer().await {
                    tracing::warn!(error.message = %e, "could not cancel the consumer");
                }
                tracker.spawn(requeue_buffered(session.tasks.clone()));
                return Some(session);
            }
            SessionEnd::Broken(why) => {
                let delay = next_delay(&mut backoff);
                tracing::warn!(
                    reason = %why,
                    in_flight = ctx.registry.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    "lost the AMQP session; running tasks go on; reconnecting"
                );
                control.abort();
                session.close().await;
                if sleep_or_shutdown(delay, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Hands back deliveries that reached the consumer's buffer but were not
/// taken yet, so other workers get them now rather than when this one closes
/// its channel at the end of the drain.
async fn requeue_buffered(mut tasks: Consumer) {
    let requeue = async {
        let mut returned = 0u32;
        while let Some(Ok(delivery)) = tasks.next().await {
            let nack = delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await;
            if matches!(nack, Ok(true)) {
                returned += 1;
            }
        }
        returned
    };
    match tokio::time::timeout(Duration::from_secs(2), requeue).await {
        Ok(0) => {}
        Ok(returned) => tracing::info!(returned, "requeued deliveries not yet started"),
        Err(_) => tracing::debug!(
            "the cancelled consumer did not end; its deliveries return when the channel closes"
        ),
    }
}

fn next_delay(backoff: &mut impl Iterator<Item = Duration>) -> Duration {
    crate::callbacks::jittered(backoff.next().unwrap_or(Duration::from_secs(5)))
}

/// Sleeps `delay`; returns `true` if `shutdown` fired first.
async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = shutdown.cancelled() => true,
    }
}

/// Reads cancel broadcasts and raises the flag of the named task if it runs
/// here. Fires `ended` when the consumer stops (the session is broken).
async fn consume_control(mut control: Consumer, registry: Registry, ended: CancellationToken) {
    while let Some(delivery) = control.next().await {
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(e) => {
                tracing::warn!(error.message = %e, "the control consumer failed");
                break;
            }
        };
        match serde_json::from_slice::<ControlMessage>(&delivery.data) {
            Ok(ControlMessage::Cancel { task_id }) => {
                if registry.signal(task_id, StopReason::Cancel) {
                    tracing::info!(%task_id, "cancel received; interrupting the task");
                } else {
                    tracing::debug!(%task_id, "cancel received for a task not running here");
                }
            }
            Err(e) => tracing::warn!(
                error.message = %e,
                "ignoring an unreadable control message"
            ),
        }
    }
    ended.cancel();
}
