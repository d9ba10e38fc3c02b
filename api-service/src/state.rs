//! [`AppState`]: what a handler and the service layer may use — the store,
//! the publisher, the event hub, metrics, health, and the settings they need.
//! It imports no route and no service, so both can import it.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use health::HealthChecker;
use task_model::{TaskDefaults, TaskId, TaskStatus};
use tokio::sync::mpsc;

use crate::{
    config::Settings,
    metrics::Metrics,
    publisher::Publisher,
    store::{Cursor, EventHub, Store},
};

/// What every handler shares.
pub struct AppState {
    pub store: Store,
    pub publisher: Publisher,
    pub events: Arc<EventHub>,
    pub health: HealthChecker,
    pub metrics: Metrics,
    pub api_keys: Vec<String>,
    pub callback_token: String,
    pub lease: Duration,
    /// `MAX_TAKEOVERS`.
    pub max_takeovers: u32,
    pub result_ttl: Duration,
    /// `BLOB_MAX_BYTES`.
    pub blob_max_bytes: usize,
    pub defaults: TaskDefaults,
    pub cursor: Cursor,
    pub webhook_hosts: Vec<String>,
    /// `QUEUES`: the named queues a task may name, in order.
    pub queues: Vec<String>,
    pub webhook_secret: Option<String>,
    /// Wait before the first webhook retry; doubles per attempt.
    pub webhook_retry_base: Duration,
    pub http: reqwest::Client,
    /// `SCHEDULE_TICK_MS`: how often the schedule ticker runs.
    pub schedule_tick: Duration,
    /// `SCHEDULE_SECONDS` (tests only): 6-field cron expressions accepted.
    pub schedule_seconds: bool,
    finished: mpsc::UnboundedSender<TaskId>,
}

/// The connections an [`AppState`] is made of, started by [`crate::startup`].
#[derive(Debug)]
pub struct Backends {
    pub store: Store,
    pub publisher: Publisher,
    pub events: Arc<EventHub>,
    pub health: HealthChecker,
    pub metrics: Metrics,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The state, and the receiving end of [`AppState::on_finished`]'s
    /// webhook queue.
    ///
    /// # Errors
    /// The webhook HTTP client cannot be built.
    pub fn new(
        settings: &Settings,
        callback_token: String,
        backends: Backends,
    ) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<TaskId>)> {
        let (finished, finished_rx) = mpsc::unbounded_channel();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the webhook client")?;
        let state = Self {
            cursor: Cursor::new(format!("cursor:{callback_token}").as_bytes()),
            store: backends.store,
            publisher: backends.publisher,
            events: backends.events,
            health: backends.health,
            metrics: backends.metrics,
            api_keys: settings.keys(),
            callback_token,
            lease: settings.lease(),
            max_takeovers: settings.max_takeovers,
            result_ttl: settings.result_ttl(),
            blob_max_bytes: usize::try_from(settings.blob_max_bytes).unwrap_or(usize::MAX),
            defaults: settings.defaults(),
            webhook_hosts: settings.webhook_hosts(),
            queues: settings.queue_names()?,
            webhook_secret: settings.webhook_secret.clone(),
            webhook_retry_base: Duration::from_millis(settings.webhook_retry_base_ms),
            http,
            schedule_tick: Duration::from_millis(settings.schedule_tick_ms),
            schedule_seconds: settings.schedule_seconds,
            finished,
        };
        Ok((state, finished_rx))
    }

    /// Bookkeeping after a terminal transition: metrics, then the webhook (in the background).
    pub fn on_finished(&self, id: TaskId, status: TaskStatus) {
        self.metrics
            .tasks_finished
            .with_label_values(&[status.as_str()])
            .inc();
        if !self.webhook_hosts.is_empty() && self.finished.send(id).is_err() {
            tracing::error!(task_id = %id, "webhook dispatcher is gone; webhook not sent");
        }
    }
}
