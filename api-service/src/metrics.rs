//! Prometheus metrics of the api, served at `/metrics`.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramTimer, HistogramVec, IntCounter,
    IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
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
    pub due_lateness: Histogram,
    pub retries: IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// `metric` (its options checked), registered in `registry`.
fn registered<C>(registry: &Registry, metric: prometheus::Result<C>) -> C
where
    C: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("metric options are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    registered(r, IntCounter::new(name, help))
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(r, IntCounterVec::new(Opts::new(name, help), labels))
}

/// A histogram with the api's latency buckets.
fn latency_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    registered(r, HistogramVec::new(opts, labels))
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        Self {
            tasks_created: counter(&r, "taskforge_tasks_created_total", "Tasks accepted by POST /tasks and POST /tasks/batch"),
            tasks_finished: counter_vec(
                &r,
                "taskforge_tasks_finished_total",
                "Tasks that reached a terminal state, by status",
                &["status"],
            ),
            cancels: counter(&r, "taskforge_cancel_requests_total", "Accepted cancel requests"),
            callbacks: latency_vec(
                &r,
                "taskforge_callback_duration_seconds",
                "Worker callbacks handled, by kind",
                &["kind"],
            ),
            http_requests: latency_vec(
                &r,
                "taskforge_http_request_duration_seconds",
                "HTTP requests, by route, method and status",
                &["route", "method", "status"],
            ),
            queue_depth: registered(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "taskforge_queue_depth",
                        "Messages ready in a RabbitMQ queue (sampled by the health checker)",
                    ),
                    &["queue"],
                ),
            ),
            oldest_queued_age: registered(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "taskforge_oldest_queued_age_seconds",
                        "Age of the oldest task still QUEUED (not yet claimed by a worker), by queue; 0 when none",
                    ),
                    &["queue"],
                ),
            ),
            webhook_deliveries: counter_vec(
                &r,
                "taskforge_webhook_deliveries_total",
                "Webhook delivery attempts, by outcome",
                &["outcome"],
            ),
            due_lateness: registered(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "taskforge_due_lateness_seconds",
                        "How late (Redis clock) the due sweep made a SCHEDULED task QUEUED",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                ),
            ),
            retries: counter(
                &r,
                "taskforge_task_retries_total",
                "Retryable failures that scheduled another attempt",
            ),
            registry: r,
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
