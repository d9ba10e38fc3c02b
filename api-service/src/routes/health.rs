//! Liveness, readiness and metrics.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::state::AppState;

/// `GET /healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: &'static str,
}

/// One dependency's last check. Before the first round has ended: `ok`
/// false, `error` `pending`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckView {
    pub ok: bool,
    pub latency_ms: f64,
    pub error: Option<String>,
    /// `redis` only, when its check passed: whether Redis keeps its data on
    /// disk (AOF or RDB); `null` when Redis refuses `CONFIG` and shows no AOF.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<bool>)]
    pub persistence: Option<serde_json::Value>,
}

impl From<health::CheckResult> for CheckView {
    fn from(mut c: health::CheckResult) -> Self {
        Self {
            ok: c.ok,
            latency_ms: c.latency_ms,
            error: c.error,
            persistence: c.details.remove("persistence"),
        }
    }
}

/// One task queue's backlog, as last sampled (every 5 s).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueView {
    /// Seconds the oldest task still QUEUED has waited; 0 when none is.
    pub oldest_queued_age_secs: f64,
}

/// `GET /readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// By dependency: `redis`, `rabbitmq`.
    pub checks: BTreeMap<String, CheckView>,
    /// By task queue (`tasks.algo`): detail for operators; readiness does not
    /// depend on it.
    pub queues: BTreeMap<String, QueueView>,
}

/// `GET /healthz`: 200 while the process runs, whatever Redis and RabbitMQ do.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process runs", body = Liveness)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Liveness { status: "ok" })
}

/// `GET /readyz`: the background checker's last results.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, body = Readiness), (status = 503, description = "A dependency failed its last check", body = Readiness)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let checks = state.health.report();
    let ready = state.health.is_healthy();
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        checks: checks.into_iter().map(|(k, c)| (k, c.into())).collect(),
        queues: queues(&state),
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

fn queues(state: &AppState) -> BTreeMap<String, QueueView> {
    let queue = task_model::topology::TASKS_QUEUE;
    let age = state
        .metrics
        .oldest_queued_age
        .with_label_values(&[queue])
        .get();
    BTreeMap::from([(
        queue.to_owned(),
        QueueView {
            oldest_queued_age_secs: age,
        },
    )])
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// The OpenAPI document, built once at start from [`crate::openapi::ApiDoc`]
/// and handed to the server as app data (so no route imports the document
/// that lists the routes).
#[derive(Debug)]
pub struct OpenApiJson(pub String);

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi_json(doc: web::Data<OpenApiJson>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}
