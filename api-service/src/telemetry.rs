//! Logs: readable text by default, JSON lines with `LOG_FORMAT=json`; traces
//! over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`service.name`
//! `api-service` unless `OTEL_SERVICE_NAME` says otherwise). The set-up is
//! the workspace's `telemetry` crate, shared with the worker.

pub use ::telemetry::{continue_trace, trace_headers, InitError, Telemetry};
use ::telemetry::{LogFormat, MakeWriter, TraceExport};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// The `service.name` of the api's spans when `OTEL_SERVICE_NAME` is unset.
pub const SERVICE_NAME: &str = "api-service";

/// Silences actix-http's connection dispatcher, which logs every request the
/// HTTP parser refuses (a URI over 64 KiB, too many headers, conflicting
/// `Content-Length`/`Transfer-Encoding`, an unknown protocol) as
/// `ERROR actix_http::h1::dispatcher: stream error: …`: a bad client could
/// flood the error log at will. Tracing levels cannot be lowered after the
/// fact, so the target is turned off; those clients still get their 400/431.
/// `RUST_LOG` naming `actix_http` itself (e.g. `info,actix_http=trace`, where
/// each parse error also shows at TRACE) replaces this directive.
pub const QUIET_PARSER_ERRORS: &str = "actix_http::h1::dispatcher=off";

/// The filter the api installs for `RUST_LOG` `rust_log`: it as given
/// (`info` when empty), plus [`QUIET_PARSER_ERRORS`] unless it names
/// `actix_http`.
pub fn filter(rust_log: &str) -> String {
    let given = match rust_log.trim() {
        "" => ::telemetry::DEFAULT_FILTER,
        given => given,
    };
    if given.contains("actix_http") {
        given.to_owned()
    } else {
        format!("{given},{QUIET_PARSER_ERRORS}")
    }
}

/// Installs the global subscriber writing `format` (`text` or `json`) to
/// `writer`. `RUST_LOG` filters (default `info`; see [`filter`]). Logs
/// only: a second init (several apps in one test process) keeps the first.
pub fn init<W>(format: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    drop(::telemetry::init(parse(format), &env_filter(), writer));
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
    ::telemetry::init_with_traces(parse(format), &env_filter(), writer, export.as_ref())
}

/// `Settings` admits only `text` and `json`.
fn parse(format: &str) -> LogFormat {
    format.parse().unwrap_or(LogFormat::Text)
}

/// [`filter`] of the environment's `RUST_LOG`.
fn env_filter() -> String {
    filter(&std::env::var("RUST_LOG").unwrap_or_default())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_errors_are_off_unless_actix_http_is_named() {
        assert_eq!(filter(""), "info,actix_http::h1::dispatcher=off");
        assert_eq!(filter("debug"), "debug,actix_http::h1::dispatcher=off");
        assert_eq!(filter("info,actix_http=trace"), "info,actix_http=trace");
    }
}
