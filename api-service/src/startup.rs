//! Wiring: the connections, the background tasks, the HTTP server.
//! [`Application::build`] reads as its steps; what handlers share is
//! [`crate::state`].

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{
    dev::{Server, ServerHandle},
    middleware::{from_fn, ErrorHandlers, Next},
    web, App, HttpResponse, HttpServer,
};
use anyhow::Context;
use broker_topology::Topology;
use health::HealthChecker;
use task_model::{topology, TaskId};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing_actix_web::TracingLogger;

use crate::{
    config::Settings,
    error::{error_body, json_error_body},
    metrics::Metrics,
    openapi,
    publisher::{Publisher, Routing},
    routes::{self, health::OpenApiJson},
    service::{backlog, due, reoffer, republish, schedules, webhooks},
    state::Backends,
    store::EventHub,
};

/// Kept so code naming `startup::AppState` compiles; it lives in [`crate::state`].
pub use crate::state::AppState;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 65_536;
/// Largest body of `POST /tasks/batch` (up to 1,000 create bodies).
pub const MAX_BATCH_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The body limit of the route at `path`.
pub fn body_limit(path: &str) -> usize {
    if path == "/tasks/batch" {
        MAX_BATCH_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

/// The api, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    stop: CancellationToken,
    background: TaskTracker,
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
    /// connection, event subscription, health checks, webhooks, the outbox
    /// sweep, the QUEUED-age sampler, the lease sweep, the schedule ticker). Redis and RabbitMQ need not be up: the api connects when they come.
    ///
    /// # Errors
    /// A missing `CALLBACK_TOKEN`, a bad URL, or an address that cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let callback_token = check(&settings)?;
        let stop = CancellationToken::new();
        let background = TaskTracker::new();
        let backends = connect(&settings, &stop, &background)?;
        let (state, finished) = AppState::new(&settings, callback_token, backends)?;
        let state = Arc::new(state);
        background.spawn(dispatch_webhooks(
            Arc::clone(&state),
            finished,
            background.clone(),
            stop.clone(),
        ));
        background.spawn(republish::run(
            Arc::clone(&state),
            Duration::from_secs(settings.republish_after_secs),
            stop.clone(),
        ));
        background.spawn(backlog::run(
            Arc::clone(&state),
            backlog::PERIOD,
            stop.clone(),
        ));
        background.spawn(reoffer::run(Arc::clone(&state), stop.clone()));
        background.spawn(schedules::run(
            Arc::clone(&state),
            state.schedule_tick,
            stop.clone(),
        ));
        background.spawn(due::run(Arc::clone(&state), stop.clone()));
        let (port, server) = serve(&settings, &state)?;
        tracing::info!(port, "api listening");
        Ok(Self {
            port,
            server,
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

/// The settings a start needs beyond parsing; answers the callback token.
fn check(settings: &Settings) -> anyhow::Result<String> {
    let callback_token = settings.require_callback_token()?.to_owned();
    settings.queue_names()?;
    if !settings.webhook_hosts().is_empty()
        && settings.webhook_secret.as_deref().is_none_or(str::is_empty)
    {
        anyhow::bail!("WEBHOOK_ALLOWED_HOSTS is set but WEBHOOK_SECRET is empty: webhooks would go out unsigned");
    }
    Ok(callback_token)
}

/// The store, the publisher, the event hub and the health checker, with
/// their background tasks started.
fn connect(
    settings: &Settings,
    stop: &CancellationToken,
    background: &TaskTracker,
) -> anyhow::Result<Backends> {
    let store = settings
        .store(settings.redis_pool_size)
        .context("configuring redis")?;
    if store.is_cluster() {
        tracing::info!(
            seeds = settings.redis_cluster_seeds().len(),
            "on a redis cluster (REDIS_CLUSTER_URLS)"
        );
    }
    let routing = Routing {
        topology: Topology::new(settings.queue_type),
        queues: settings.queue_names()?,
    };
    let (publisher, supervisor) = Publisher::new(settings.amqp_url.clone(), routing, stop.clone());
    background.spawn(supervisor);
    let events = Arc::new(EventHub::default());
    background.spawn(Arc::clone(&events).run(
        settings.redis_subscribe_urls(),
        store.events_channel(),
        stop.clone(),
    ));
    let metrics = Metrics::new();
    let health = HealthChecker::new(Duration::from_secs(5), Duration::from_secs(2));
    add_health_checks(&health, &publisher, &metrics);
    crate::readiness::add_redis_check(&health, &store, settings.redis_allow_eviction);
    background.spawn(health.clone().run(stop.clone()));
    Ok(Backends {
        store,
        publisher,
        events,
        health,
        metrics,
    })
}

fn add_health_checks(health: &HealthChecker, publisher: &Publisher, metrics: &Metrics) {
    let publisher = publisher.clone();
    let gauges = metrics.queue_depth.clone();
    health.add_check("rabbitmq", move || {
        check_rabbitmq(publisher.clone(), gauges.clone())
    });
}

/// A passive declare of each queue: a real round trip, and a sample of the
/// queue depths.
async fn check_rabbitmq(
    publisher: Publisher,
    gauges: prometheus::IntGaugeVec,
) -> Result<(), String> {
    // Right after start the connection may still be coming up: give it most
    // of the check's time before calling it down.
    let _ = tokio::time::timeout(Duration::from_millis(1500), publisher.wait_connected()).await;
    // What a create needs: the publishing channel open, and not blocked by
    // a resource alarm (then every publish would fail at once).
    if !publisher.is_connected().await {
        return Err("the publishing channel is not open".to_owned());
    }
    if publisher.is_blocked().await {
        return Err("rabbitmq has blocked publishing (a resource alarm)".to_owned());
    }
    // The first lane of the first named queue (v1's `tasks.algo` by default).
    let first = publisher.routing().queues.first().map_or_else(
        || topology::TASKS_QUEUE.to_owned(),
        |q| format!("tasks.{q}"),
    );
    for queue in [first.as_str(), topology::DEAD_LETTER_QUEUE] {
        let depth = publisher
            .queue_depth(queue)
            .await
            .map_err(|e| error_chain(&e))?;
        gauges.with_label_values(&[queue]).set(i64::from(depth));
    }
    Ok(())
}

/// Delivers each finished task's webhook, in a task of its own, until `stop`.
async fn dispatch_webhooks(
    state: Arc<AppState>,
    mut finished: mpsc::UnboundedReceiver<TaskId>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let id = tokio::select! { _ = stop.cancelled() => break, id = finished.recv() => id };
        let Some(id) = id else { break };
        tracker.spawn(webhooks::deliver(Arc::clone(&state), id));
    }
}

/// Binds the listener and starts the HTTP server on it.
fn serve(settings: &Settings, state: &Arc<AppState>) -> anyhow::Result<(u16, Server)> {
    let listener =
        TcpListener::bind(settings.bind).with_context(|| format!("binding {}", settings.bind))?;
    let port = listener.local_addr()?.port();
    let data = web::Data::from(Arc::clone(state));
    let doc = openapi::document(!settings.webhook_hosts().is_empty())
        .to_json()
        .context("serializing the OpenAPI document")?;
    let doc = web::Data::new(OpenApiJson(doc));
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(ErrorHandlers::new().default_handler(json_error_body))
            .wrap(from_fn(record_request))
            .wrap(TracingLogger::default())
            .app_data(data.clone())
            .app_data(doc.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .configure(routes::configure)
            .default_service(web::to(|| async {
                HttpResponse::NotFound().json(error_body("not_found", "no such endpoint"))
            }))
    })
    .on_connect(no_delay)
    .shutdown_timeout(10)
    // HTTP/1.1, and HTTP/2 over cleartext for clients with prior knowledge
    // (h2c: a connection opening with the HTTP/2 preface).
    .listen_auto_h2c(listener)?;
    if let Some(workers) = settings.workers {
        server = server.workers(workers);
    }
    Ok((port, server.run()))
}

/// Small writes (SSE frames, short JSON answers) go out at once: with
/// Nagle's algorithm on, each waited for the client's delayed ACK (~40 ms),
/// which the benchmark saw as dispatch latency.
fn no_delay(conn: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::warn!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// `e` and its causes, joined by `: `.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The `method` label: the standard methods by name, anything else `OTHER`,
/// so invented methods cannot grow `/metrics` (as unmatched paths are
/// `unmatched` and statuses are three digits).
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(m, _)| m == method)
        .map_or("OTHER", |(_, name)| name)
}

/// Records each request's latency by route pattern, method and status.
async fn record_request(
    req: actix_web::dev::ServiceRequest,
    next: Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let method = method_label(req.method());
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
            .with_label_values(&[route.as_str(), method, res.status().as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}
