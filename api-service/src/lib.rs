//! Taskforge's REST API.
//!
//! Layers, with imports running one way (routes → service → store):
//!
//! ```text
//! routes/        HTTP: extract, call the service, map the answer (a request lives here)
//!   tasks.rs       POST/GET /tasks, GET/DELETE /tasks/{id}, cancel, events
//!   callbacks.rs   the worker callbacks (/internal/tasks/{id}/…)
//!   stream.rs      Server-Sent Events framing of a service::query::Feed
//!   health.rs      /healthz, /readyz, /metrics, /openapi.json
//!   dashboard.rs   the web page and its assets
//! service/       what the api does, one function per request, callable without HTTP
//!   create.rs      validate → reserve the Idempotency-Key → store → publish → list
//!   cancel.rs      cancel, and the broadcast to the workers
//!   claim.rs       a worker takes a task
//!   report.rs      progress and terminal states from the holder
//!   query.rs       a task, a page, a history, a live Feed
//!   webhooks.rs    signed notifications of finished tasks (background)
//!   republish.rs   the outbox sweep for creates cut short (background)
//!   reoffer.rs     the lease sweep: re-offers tasks whose lease lapsed (background)
//! store/         Redis: typed tasks (TaskRecord) and events; no field name leaves it
//!   transition.lua every state transition, one atomic step (the state machine)
//!   record.rs      hash and stream entry → TaskRecord / EventView
//!   listing.rs     the newest-first index and its signed cursors
//!   idempotency.rs Idempotency-Key reservations
//!   leases.rs      the lease index the lease sweep reads
//!   hub.rs         the event hub: one pub/sub subscription fanned out to watchers
//! publisher.rs   RabbitMQ: task messages (task_model::TaskMessage, built from
//!                a NewTask or a TaskView) and cancel broadcasts, confirmed
//! readiness.rs   the redis check of /readyz (a write, the policy, persistence)
//! state.rs       AppState: what handlers and services may use
//! startup.rs     wiring: connections, background tasks, the HTTP server
//! ```
//!
//! Beside them: [`config`] (settings), [`auth`] (API keys, the callback
//! token), [`error`] ([`error::ApiError`] and its JSON body), [`openapi`]
//! (the document, derived from the types the handlers serialize),
//! [`metrics`], [`telemetry`].

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod publisher;
pub mod readiness;
pub mod routes;
pub mod service;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;

pub use config::Settings;
pub use service::webhooks;
pub use startup::Application;
pub use state::AppState;
