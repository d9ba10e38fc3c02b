//! Prometheus metrics of the api, served at `/metrics`.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramTimer, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the api exports; one registry per app (so tests in one
/// process do not share counters).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    pub tasks_created: IntCounter,
    pub tasks_finished: IntCounterVec,
    pub cancels: IntCounter,
    pub callbacks: HistogramVec,
    pub http_requests: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub oldest_queued_age: GaugeVec,
    pub webhook_deliveries: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let tasks_created = IntCounter::new(
            "taskforge_tasks_created_total",
            "Tasks accepted by POST /tasks",
        )
        .unwrap();
        let tasks_finished = IntCounterVec::new(
            Opts::new(
                "taskforge_tasks_finished_total",
                "Tasks that reached a terminal state, by status",
            ),
            &["status"],
        )
        .unwrap();
        let cancels = IntCounter::new(
            "taskforge_cancel_requests_total",
            "Accepted cancel requests",
        )
        .unwrap();
        let callbacks = HistogramVec::new(
            HistogramOpts::new(
                "taskforge_callback_duration_seconds",
                "Worker callbacks handled, by kind",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["kind"],
        )
        .unwrap();
        let http_requests = HistogramVec::new(
            HistogramOpts::new(
                "taskforge_http_request_duration_seconds",
                "HTTP requests, by route, method and status",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method", "status"],
        )
        .unwrap();
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "taskforge_queue_depth",
                "Messages ready in a RabbitMQ queue (sampled by the health checker)",
            ),
            &["queue"],
        )
        .unwrap();
        let oldest_queued_age = GaugeVec::new(
            Opts::new(
                "taskforge_oldest_queued_age_seconds",
                "Age of the oldest task still QUEUED (not yet claimed by a worker), by queue; 0 when none",
            ),
            &["queue"],
        )
        .unwrap();
        let webhook_deliveries = IntCounterVec::new(
            Opts::new(
                "taskforge_webhook_deliveries_total",
                "Webhook delivery attempts, by outcome",
            ),
            &["outcome"],
        )
        .unwrap();
        for c in [
            Box::new(tasks_created.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tasks_finished.clone()),
            Box::new(cancels.clone()),
            Box::new(callbacks.clone()),
            Box::new(http_requests.clone()),
            Box::new(queue_depth.clone()),
            Box::new(oldest_queued_age.clone()),
            Box::new(webhook_deliveries.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            tasks_created,
            tasks_finished,
            cancels,
            callbacks,
            http_requests,
            queue_depth,
            oldest_queued_age,
            webhook_deliveries,
        }
    }

    pub fn callback_timer(&self, kind: &str) -> HistogramTimer {
        self.callbacks.with_label_values(&[kind]).start_timer()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
