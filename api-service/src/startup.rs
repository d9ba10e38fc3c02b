//! Wiring: shared state, background tasks, the HTTP server.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{
    dev::{Server, ServerHandle},
    middleware::{from_fn, ErrorHandlers, Next},
    web, App, HttpResponse, HttpServer,
};
use anyhow::Context;
use health::HealthChecker;
use task_model::{topology, TaskDefaults, TaskId, TaskStatus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing_actix_web::TracingLogger;

use crate::{
    config::Settings,
    error::{error_body, json_error_body},
    metrics::Metrics,
    publisher::Publisher,
    routes::{self, stream::EventHub},
    store::{Cursor, Store},
};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 65_536;

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
    pub result_ttl: Duration,
    pub defaults: TaskDefaults,
    pub cursor: Cursor,
    pub webhook_hosts: Vec<String>,
    pub webhook_secret: Option<String>,
    /// Wait before the first webhook retry; doubles per attempt.
    pub webhook_retry_base: Duration,
    pub http: reqwest::Client,
    finished: mpsc::UnboundedSender<TaskId>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl AppState {
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

/// The api, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    stop: CancellationToken,
    background: tokio_util::task::TaskTracker,
    state: Arc<AppState>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds the listener and starts the background tasks (RabbitMQ
    /// connection, event subscription, health checks). Redis and RabbitMQ
    /// need not be up: the api connects when they come.
    ///
    /// # Errors
    /// A missing `CALLBACK_TOKEN`, a bad URL, or an address that cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let callback_token = settings.require_callback_token()?.to_owned();
        if !settings.webhook_hosts().is_empty()
            && settings.webhook_secret.as_deref().is_none_or(str::is_empty)
        {
            anyhow::bail!("WEBHOOK_ALLOWED_HOSTS is set but WEBHOOK_SECRET is empty: webhooks would go out unsigned");
        }
        let stop = CancellationToken::new();
        let background = tokio_util::task::TaskTracker::new();

        let store = Store::new(
            &settings.redis_url,
            &settings.redis_prefix,
            settings.redis_pool_size,
        )
        .context("configuring redis")?;
        let (publisher, supervisor) = Publisher::new(settings.amqp_url.clone(), stop.clone());
        background.spawn(supervisor);

        let events = Arc::new(EventHub::default());
        background.spawn(Arc::clone(&events).run(
            settings.redis_url.clone(),
            store.events_channel(),
            stop.clone(),
        ));

        let metrics = Metrics::new();
        let health = HealthChecker::new(Duration::from_secs(5), Duration::from_secs(2));
        {
            let store = store.clone();
            health.add_check("redis", move || {
                let store = store.clone();
                async move { store.ping().await.map_err(|e| error_chain(&e)) }
            });
            let publisher = publisher.clone();
            let gauges = metrics.queue_depth.clone();
            health.add_check("rabbitmq", move || {
                let publisher = publisher.clone();
                let gauges = gauges.clone();
                async move {
                    // Right after start the connection may still be coming up:
                    // give it most of the check's time before calling it down.
                    let _ = tokio::time::timeout(
                        Duration::from_millis(1500),
                        publisher.wait_connected(),
                    )
                    .await;
                    // A passive declare is a real round trip, and samples the queue depths.
                    for queue in [topology::TASKS_QUEUE, topology::DEAD_LETTER_QUEUE] {
                        let depth = publisher
                            .queue_depth(queue)
                            .await
                            .map_err(|e| error_chain(&e))?;
                        gauges.with_label_values(&[queue]).set(i64::from(depth));
                    }
                    Ok(())
                }
            });
        }
        background.spawn(health.clone().run(stop.clone()));

        let (finished_tx, mut finished_rx) = mpsc::unbounded_channel();
        let state = Arc::new(AppState {
            cursor: Cursor::new(format!("cursor:{callback_token}").as_bytes()),
            store,
            publisher,
            events,
            health,
            metrics,
            api_keys: settings.keys(),
            callback_token,
            lease: settings.lease(),
            result_ttl: settings.result_ttl(),
            defaults: settings.defaults(),
            webhook_hosts: settings.webhook_hosts(),
            webhook_secret: settings.webhook_secret.clone(),
            webhook_retry_base: Duration::from_millis(settings.webhook_retry_base_ms),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .context("building the webhook client")?,
            finished: finished_tx,
        });
        {
            let state = Arc::clone(&state);
            let tracker = background.clone();
            let stop = stop.clone();
            background.spawn(async move {
                loop {
                    let id = tokio::select! { _ = stop.cancelled() => break, id = finished_rx.recv() => id };
                    let Some(id) = id else { break };
                    tracker.spawn(crate::webhooks::deliver(Arc::clone(&state), id));
                }
            });
        }

        background.spawn(crate::republish::run(
            Arc::clone(&state),
            Duration::from_secs(settings.republish_after_secs),
            stop.clone(),
        ));

        let listener = TcpListener::bind(settings.bind)
            .with_context(|| format!("binding {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let data = web::Data::from(Arc::clone(&state));
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(ErrorHandlers::new().default_handler(json_error_body))
                .wrap(from_fn(record_request))
                .wrap(TracingLogger::default())
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .configure(routes::configure)
                .default_service(web::to(|| async {
                    HttpResponse::NotFound().json(error_body("not_found", "no such endpoint"))
                }))
        })
        // Small writes (SSE frames, short JSON answers) go out at once: with
        // Nagle's algorithm on, each waited for the client's delayed ACK
        // (~40 ms), which the benchmark saw as dispatch latency.
        .on_connect(|conn, _| {
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::warn!(error = %e, "cannot set TCP_NODELAY");
                }
            }
        })
        .shutdown_timeout(10)
        .listen(listener)?;
        if let Some(workers) = settings.workers {
            server = server.workers(workers);
        }
        tracing::info!(port, "api listening");
        Ok(Self {
            port,
            server: server.run(),
            stop,
            background,
            state,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from elsewhere (tests).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The shared state (tests inspect it).
    pub fn state(&self) -> Arc<AppState> {
        Arc::clone(&self.state)
    }

    /// Serves until the server stops (SIGTERM/SIGINT, or [`Application::handle`]),
    /// then stops the background tasks.
    ///
    /// # Errors
    /// The server failed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        self.stop.cancel();
        self.background.close();
        if tokio::time::timeout(Duration::from_secs(10), self.background.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop within 10 s");
        }
        result.context("http server failed")
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Records each request's latency by route pattern, method and status.
async fn record_request(
    req: actix_web::dev::ServiceRequest,
    next: Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let method = req.method().to_string();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let res = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        metrics
            .http_requests
            .with_label_values(&[route.as_str(), method.as_str(), res.status().as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}
