//! HTTP routes: one module per resource, handlers named by verb.
//!
//! - [`tasks`]: the public task API.
//! - [`batch`]: bulk create.
//! - [`algorithms`]: the catalogue of algorithms.
//! - [`blobs`]: blob upload and download, public and for workers.
//! - [`schedules`]: periodic tasks.
//! - [`queues`]: the named queues, their pause and resume.
//! - [`stream`]: live events over SSE.
//! - [`callbacks`]: the worker callback API.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`dashboard`]: the web page at `/` and its two assets.

pub mod algorithms;
pub mod batch;
pub mod blobs;
pub mod callbacks;
pub mod dashboard;
pub mod health;
pub mod queues;
pub mod schedules;
pub mod stream;
pub mod tasks;

use actix_web::{http::header, web, HttpResponse};

use crate::error::error_body;

/// A resource that answers 405 with `Allow` for methods it does not serve.
pub(crate) fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, allow))
            .json(error_body(
                "method_not_allowed",
                &format!("allowed: {allow}"),
            ))
    }))
}

/// Registers every route. Every GET route also answers HEAD: the same
/// handler, whose body the server drops (the headers, `Content-Length`
/// included, stay those of the GET).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/", "GET, HEAD")
            .route(web::get().to(dashboard::index))
            .route(web::head().to(dashboard::index)),
    )
    .service(
        resource("/assets/app.css", "GET, HEAD")
            .route(web::get().to(dashboard::stylesheet))
            .route(web::head().to(dashboard::stylesheet)),
    )
    .service(
        resource("/assets/app.js", "GET, HEAD")
            .route(web::get().to(dashboard::script))
            .route(web::head().to(dashboard::script)),
    )
    .service(
        resource("/tasks", "GET, HEAD, POST")
            .route(web::post().to(tasks::create_task))
            .route(web::get().to(tasks::list_tasks))
            .route(web::head().to(tasks::list_tasks)),
    )
    // Before `/tasks/{id}`, which would take `batch` for an id.
    .service(
        resource("/tasks/batch", "POST")
            .app_data(web::PayloadConfig::new(
                crate::startup::MAX_BATCH_BODY_BYTES,
            ))
            .route(web::post().to(batch::create_batch)),
    )
    .service(
        resource("/tasks/{id}", "GET, HEAD, DELETE")
            .route(web::get().to(tasks::get_task))
            .route(web::head().to(tasks::get_task))
            .route(web::delete().to(tasks::cancel_task)),
    )
    .service(
        resource("/schedules", "GET, HEAD, POST")
            .route(web::post().to(schedules::create_schedule))
            .route(web::get().to(schedules::list_schedules))
            .route(web::head().to(schedules::list_schedules)),
    )
    .service(
        resource("/schedules/{id}", "GET, HEAD, DELETE")
            .route(web::get().to(schedules::get_schedule))
            .route(web::head().to(schedules::get_schedule))
            .route(web::delete().to(schedules::delete_schedule)),
    )
    .service(resource("/algorithms", "GET").route(web::get().to(algorithms::list_algorithms)))
    .service(resource("/queues", "GET").route(web::get().to(queues::list_queues)))
    .service(resource("/queues/{name}/pause", "POST").route(web::post().to(queues::pause_queue)))
    .service(resource("/queues/{name}/resume", "POST").route(web::post().to(queues::resume_queue)))
    .service(resource("/internal/queues", "GET").route(web::get().to(queues::internal_queues)))
    .service(resource("/blobs", "POST").route(web::post().to(blobs::upload_blob)))
    .service(resource("/blobs/{id}", "GET").route(web::get().to(blobs::get_blob)))
    .service(resource("/internal/blobs", "POST").route(web::post().to(blobs::worker_upload_blob)))
    .service(resource("/internal/blobs/{id}", "GET").route(web::get().to(blobs::worker_get_blob)))
    .service(resource("/tasks/{id}/cancel", "POST").route(web::post().to(tasks::cancel_task_post)))
    .service(
        resource("/tasks/{id}/events", "GET, HEAD")
            .route(web::get().to(tasks::task_events))
            .route(web::head().to(tasks::task_events)),
    )
    .service(
        resource("/internal/tasks/{id}/status", "POST")
            .route(web::post().to(callbacks::report_status)),
    )
    .service(
        resource("/internal/tasks/{id}/progress", "POST")
            .route(web::post().to(callbacks::report_progress)),
    )
    .service(resource("/internal/reports", "POST").route(web::post().to(callbacks::report_batch)))
    .service(
        resource("/healthz", "GET, HEAD")
            .route(web::get().to(health::healthz))
            .route(web::head().to(health::healthz)),
    )
    .service(
        resource("/readyz", "GET, HEAD")
            .route(web::get().to(health::readyz))
            .route(web::head().to(health::readyz)),
    )
    .service(
        resource("/metrics", "GET, HEAD")
            .route(web::get().to(health::metrics))
            .route(web::head().to(health::metrics)),
    )
    .service(
        resource("/openapi.json", "GET, HEAD")
            .route(web::get().to(health::openapi_json))
            .route(web::head().to(health::openapi_json)),
    );
}
