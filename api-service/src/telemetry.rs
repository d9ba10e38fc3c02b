//! Logs: readable text by default, JSON lines with `LOG_FORMAT=json`; traces
//! over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`service.name`
//! `api-service` unless `OTEL_SERVICE_NAME` says otherwise). The set-up is
//! the workspace's `telemetry` crate, shared with the worker.

pub use ::telemetry::{continue_trace, trace_headers, InitError, Telemetry};
use ::telemetry::{LogFormat, MakeWriter, TraceExport};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// The `service.name` of the api's spans when `OTEL_SERVICE_NAME` is unset.
pub const SERVICE_NAME: &str = "api-service";

/// Installs the global subscriber writing `format` (`text` or `json`) to
/// `writer`. `RUST_LOG` filters (default `info`). Logs only: a second init
/// (several apps in one test process) keeps the first.
pub fn init<W>(format: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    drop(::telemetry::init(parse(format), &filter(), writer));
}

/// [`init`], and traces exported as the environment says (off without
/// `OTEL_EXPORTER_OTLP_ENDPOINT`). Keep the [`Telemetry`] until exit.
///
/// # Errors
/// When a subscriber is already installed or the OTLP settings are unusable.
pub fn init_with_traces<W>(format: &str, writer: W) -> Result<Telemetry, InitError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let export = TraceExport::from_env(SERVICE_NAME);
    ::telemetry::init_with_traces(parse(format), &filter(), writer, export.as_ref())
}

/// `Settings` admits only `text` and `json`.
fn parse(format: &str) -> LogFormat {
    format.parse().unwrap_or(LogFormat::Text)
}

fn filter() -> String {
    std::env::var("RUST_LOG").unwrap_or_default()
}

/// The current span's W3C trace context as AMQP message headers; `None`
/// while traces are off.
pub fn amqp_trace_headers() -> Option<FieldTable> {
    let headers = trace_headers(&tracing::Span::current());
    if headers.is_empty() {
        return None;
    }
    let mut table = FieldTable::default();
    for (name, value) in headers {
        table.insert(
            ShortString::from(name),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    Some(table)
}
