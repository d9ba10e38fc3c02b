//! The worker's own HTTP endpoint on `METRICS_BIND`: `/healthz` and `/metrics`.
//!
//! `/healthz` answers 200 only while the worker consumes `tasks.algo` (the
//! contract's "ready"), 503 while it connects, reconnects or shuts down.
//! `/metrics` is the Prometheus text format of a registry private to this
//! worker, so two workers in one test process do not share counters.

use std::net::SocketAddr;

use anyhow::Context;
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;

/// The worker's metrics. Cheap to clone (every handle is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Deliveries being handled (held, claiming, running or reporting).
    pub tasks_in_flight: IntGauge,
    /// Wall time of each completed stage.
    pub stage_duration: Histogram,
    /// Calls into the C routine by `outcome`: `completed`, `interrupted`, `expired` (ended past the lease, no line), `error`.
    pub ffi_calls: IntCounterVec,
    /// AMQP (re)connection attempts after the first.
    pub reconnects: IntCounter,
    /// Terminal states this worker recorded, by `status`.
    pub tasks_finished: IntCounterVec,
    /// Callback attempts that failed transiently and were retried.
    pub callback_retries: IntCounter,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    ///
    /// # Errors
    /// Only if two metrics clash, which would be a bug here.
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let tasks_in_flight = IntGauge::new(
            "taskforge_worker_tasks_in_flight",
            "Deliveries this worker is handling",
        )?;
        let stage_duration = Histogram::with_opts(
            HistogramOpts::new(
                "taskforge_worker_stage_duration_seconds",
                "Wall time of each completed stage",
            )
            .buckets(vec![
                0.005, 0.05, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
            ]),
        )?;
        let ffi_calls = IntCounterVec::new(
            Opts::new(
                "taskforge_worker_ffi_calls_total",
                "Calls into the native stage routine",
            ),
            &["outcome"],
        )?;
        let reconnects = IntCounter::new(
            "taskforge_worker_reconnects_total",
            "AMQP connection attempts after the first",
        )?;
        let tasks_finished = IntCounterVec::new(
            Opts::new(
                "taskforge_worker_tasks_finished_total",
                "Terminal states this worker recorded",
            ),
            &["status"],
        )?;
        let callback_retries = IntCounter::new(
            "taskforge_worker_callback_retries_total",
            "Callback attempts that failed transiently and were retried",
        )?;
        registry.register(Box::new(tasks_in_flight.clone()))?;
        registry.register(Box::new(stage_duration.clone()))?;
        registry.register(Box::new(ffi_calls.clone()))?;
        registry.register(Box::new(reconnects.clone()))?;
        registry.register(Box::new(tasks_finished.clone()))?;
        registry.register(Box::new(callback_retries.clone()))?;
        Ok(Self {
            registry,
            tasks_in_flight,
            stage_duration,
            ffi_calls,
            reconnects,
            tasks_finished,
            callback_retries,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding gathered families into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    consuming: watch::Receiver<bool>,
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if *state.consuming.borrow() {
        (StatusCode::OK, "consuming\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not consuming\n")
    }
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Binds `addr` (port 0 picks one) for [`serve`]. With `fallback` (the
/// address is the default, not one the operator gave), a taken port is not
/// an error: a free port on the same interface is bound instead and logged,
/// so several workers start on one host without settings.
///
/// # Errors
/// When the address cannot be bound (with `fallback`: nor a free port).
pub async fn bind(addr: SocketAddr, fallback: bool) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(listener),
        Err(e) if fallback && e.kind() == std::io::ErrorKind::AddrInUse => {
            let listener = TcpListener::bind(SocketAddr::new(addr.ip(), 0))
                .await
                .with_context(|| format!("binding a free port on {} (the default METRICS_BIND {addr} is taken)", addr.ip()))?;
            tracing::warn!(
                default = %addr,
                metrics_addr = %listener.local_addr()?,
                "the default METRICS_BIND is taken (another worker on this host?); /metrics and /healthz are on a free port instead"
            );
            Ok(listener)
        }
        Err(e) => Err(e).with_context(|| {
            format!("binding METRICS_BIND {addr} (is another process on it? give another address, or leave METRICS_BIND unset to fall back to a free port)")
        }),
    }
}

/// Serves `/healthz` and `/metrics` on `listener` until `stop` fires.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    consuming: watch::Receiver<bool>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { metrics, consuming });
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .context("serving /metrics and /healthz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_default_falls_back_to_a_free_port_and_a_taken_explicit_address_fails() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let other = bind(addr, true).await.expect("falls back");
        let bound = other.local_addr().unwrap();
        assert_eq!(bound.ip(), addr.ip());
        assert_ne!(bound.port(), addr.port());
        let err = bind(addr, false).await.expect_err("explicit and taken");
        assert!(
            format!("{err:#}").contains(&format!("binding METRICS_BIND {addr}")),
            "{err:#}"
        );
    }

    #[test]
    fn every_contract_metric_is_exposed() {
        let m = Metrics::new().unwrap();
        m.ffi_calls.with_label_values(&["completed"]).inc();
        m.tasks_finished.with_label_values(&["COMPLETED"]).inc();
        m.stage_duration.observe(0.01);
        let text = m.render();
        for name in [
            "taskforge_worker_tasks_in_flight",
            "taskforge_worker_stage_duration_seconds_bucket",
            "taskforge_worker_ffi_calls_total{outcome=\"completed\"} 1",
            "taskforge_worker_reconnects_total",
            "taskforge_worker_tasks_finished_total{status=\"COMPLETED\"} 1",
            "taskforge_worker_callback_retries_total",
        ] {
            assert!(text.contains(name), "missing {name} in:\n{text}");
        }
    }
}
