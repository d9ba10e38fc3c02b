//! Taskforge's REST API.
//!
//! A request enters through [`routes`], is authorised by [`auth`], changes a
//! task through [`store`] (every state transition is one atomic Lua step in
//! `store/transition.lua`) and reaches workers through [`publisher`]. Workers
//! answer through [`routes::callbacks`]; live events leave through
//! [`routes::stream`].
//!
//! # Layout
//! - [`config`]: settings from the environment.
//! - [`startup`]: wiring and the HTTP server ([`startup::Application`]).
//! - [`routes`]: handlers, one module per resource.
//! - [`auth`]: API keys and the callback token.
//! - [`store`]: Redis — tasks, events, the list index, idempotency keys.
//! - [`publisher`]: RabbitMQ — tasks and cancel broadcasts, confirmed.
//! - [`republish`]: publishes tasks whose create was cut short (the outbox sweep).
//! - [`webhooks`]: signed outbound notifications.
//! - [`openapi`]: the OpenAPI document.
//! - [`metrics`], [`telemetry`], [`error`].

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod publisher;
pub mod republish;
pub mod routes;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod webhooks;

pub use config::Settings;
pub use startup::{AppState, Application};
