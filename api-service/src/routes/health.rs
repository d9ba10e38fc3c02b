//! Liveness, readiness and metrics.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::startup::AppState;

/// `GET /healthz`: 200 while the process runs, whatever Redis and RabbitMQ do.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process runs")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the background checker's last results.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, body = crate::openapi::Readiness), (status = 503, description = "A dependency failed its last check", body = crate::openapi::Readiness)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let checks = state.health.report();
    let ready = state.health.is_healthy();
    let body = json!({ "status": if ready { "ready" } else { "unavailable" }, "checks": checks });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
