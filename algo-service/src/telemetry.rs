//! Logs and traces: the workspace's `telemetry` crate, the same set-up as the api's.
//!
//! `main` passes stderr, because stdout belongs to the native routine's
//! `hello world` lines. Every line about a task is inside the task's span
//! ([`crate::handler::process_one`]), so it carries `task_id`, `worker` and
//! `queue` in both formats.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported over OTLP
//! (`service.name` [`SERVICE_NAME`] unless `OTEL_SERVICE_NAME` says
//! otherwise): the task's span continues the trace its message's headers
//! name ([`amqp_header`]), with a span per stage and per callback under it,
//! and every callback request carries `traceparent` on to the api.

use lapin::{types::AMQPValue, BasicProperties};

pub use ::telemetry::{
    continue_trace, get_subscriber, init, init_subscriber, trace_headers, InitError, LogFormat,
    Telemetry, TraceExport,
};

/// The `service.name` of the worker's spans when `OTEL_SERVICE_NAME` is unset.
pub const SERVICE_NAME: &str = "algo-service";

/// [`init`], and traces exported as the environment says (off without
/// `OTEL_EXPORTER_OTLP_ENDPOINT`). Keep the [`Telemetry`] until exit.
///
/// # Errors
/// When a subscriber is already installed or the OTLP settings are unusable.
pub fn init_with_traces<W>(format: LogFormat, filter: &str, sink: W) -> Result<Telemetry, InitError>
where
    W: for<'a> ::telemetry::MakeWriter<'a> + Send + Sync + 'static,
{
    let export = TraceExport::from_env(SERVICE_NAME);
    ::telemetry::init_with_traces(format, filter, sink, export.as_ref())
}

/// A text header of an AMQP message (`traceparent`, `tracestate`).
pub fn amqp_header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a str> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
        AMQPValue::ShortString(value) => Some(value.as_str()),
        _ => None,
    }
}
