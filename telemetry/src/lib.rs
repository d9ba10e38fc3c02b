//! Logging for every Taskforge service: one `tracing` subscriber per process,
//! human-readable text or one JSON object per line, filtered with `RUST_LOG`
//! syntax. `api-service` and `algo-service` both install it through [`init`]
//! (or [`get_subscriber`] + [`init_subscriber`]), so their lines look alike.
//!
//! Fields: a line about a task is inside a span carrying `task_id`, so both
//! formats show it (JSON under `span`, the event's own fields at the top
//! level). Records of crates that log through `log` are forwarded too.
//!
//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, [`init_with_traces`] also
//! exports the spans over OTLP ([`traces`]); the services carry the trace
//! context between them with [`trace_headers`] and [`continue_trace`].

pub mod traces;

use std::{fmt, str::FromStr};

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;

pub use traces::{continue_trace, trace_headers, Telemetry, TraceExport};
/// What a sink must be (`std::io::stderr`, a file, a test buffer).
pub use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{
    layer::SubscriberExt, registry::LookupSpan, util::SubscriberInitExt, EnvFilter, Layer, Registry,
};

/// The filter used when none is given or the given one does not parse.
pub const DEFAULT_FILTER: &str = "info";

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for machines.
    Json,
}

impl LogFormat {
    /// The names `LOG_FORMAT` accepts.
    pub const NAMES: [&'static str; 2] = ["text", "json"];

    /// `text` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("expected `text` or `json`, got {other:?}")),
        }
    }
}

/// A process-wide subscriber is already installed, or the trace exporter
/// cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InitError(String);

/// A subscriber writing to `sink` in `format`, filtered by `filter`
/// (`RUST_LOG` syntax; an empty or unparsable filter means [`DEFAULT_FILTER`]).
pub fn get_subscriber<W>(
    format: LogFormat,
    filter: &str,
    sink: W,
) -> Box<dyn Subscriber + Send + Sync + 'static>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    subscriber(format, filter, sink, None)
}

/// [`get_subscriber`], plus the OpenTelemetry layer over `traces` if given.
/// `filter` applies to the log lines only; the trace layer takes every span
/// at `info` and above.
fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    sink: W,
    traces: Option<&SdkTracerProvider>,
) -> Box<dyn Subscriber + Send + Sync + 'static>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = match filter.trim() {
        "" => EnvFilter::new(DEFAULT_FILTER),
        given => EnvFilter::try_new(given).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)),
    };
    Box::new(
        Registry::default()
            .with(fmt_layer(format, sink).with_filter(filter))
            .with(traces.map(traces::layer)),
    )
}

fn fmt_layer<S, W>(format: LogFormat, sink: W) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(sink);
    match format {
        // Logs go to files and collectors more often than to a terminal.
        LogFormat::Text => Box::new(layer.with_ansi(false)),
        // The current span's fields (task_id) come along under `span`.
        LogFormat::Json => Box::new(
            layer
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .flatten_event(true),
        ),
    }
}

/// Installs `subscriber` for the whole process, and forwards `log` records to it.
///
/// # Errors
/// When a global subscriber is already installed (e.g. a second call in tests).
pub fn init_subscriber(
    subscriber: Box<dyn Subscriber + Send + Sync + 'static>,
) -> Result<(), InitError> {
    subscriber
        .try_init()
        .map_err(|e| InitError(format!("installing the log subscriber: {e}")))
}

/// [`get_subscriber`] then [`init_subscriber`].
///
/// # Errors
/// When a global subscriber is already installed.
pub fn init<W>(format: LogFormat, filter: &str, sink: W) -> Result<(), InitError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    init_subscriber(get_subscriber(format, filter, sink))
}

/// [`init`], and traces exported to `export` when given (see
/// [`TraceExport::from_env`]). Keep the returned [`Telemetry`] until the
/// process exits, then [`Telemetry::shutdown`] it to send the last spans.
///
/// # Errors
/// When a global subscriber is already installed, or the exporter cannot be
/// built (e.g. the endpoint is not a URL).
pub fn init_with_traces<W>(
    format: LogFormat,
    filter: &str,
    sink: W,
    export: Option<&TraceExport>,
) -> Result<Telemetry, InitError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let provider = export.map(TraceExport::provider).transpose()?;
    init_subscriber(subscriber(format, filter, sink, provider.as_ref()))?;
    Ok(Telemetry::exporting(provider))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A sink that keeps what is written, for one test's scoped subscriber.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn logged(format: LogFormat, filter: &str) -> String {
        let sink = Captured::default();
        let subscriber = get_subscriber(format, filter, sink.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("task", task_id = "t-1");
            let _entered = span.enter();
            tracing::info!(attempt = 2, "claimed");
            tracing::debug!("hidden at info");
        });
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn formats_parse_case_insensitively_and_print_back() {
        for name in LogFormat::NAMES {
            let format: LogFormat = name.to_uppercase().parse().unwrap();
            assert_eq!(format.to_string(), name);
        }
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn json_lines_carry_the_event_fields_and_the_task_span() {
        let out = logged(LogFormat::Json, "info");
        let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(line["message"], "claimed");
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["span"]["task_id"], "t-1");
    }

    #[test]
    fn text_lines_are_plain_and_filtered() {
        let out = logged(LogFormat::Text, "nonsense=[=");
        assert!(
            out.contains("task{task_id=\"t-1\"}") || out.contains("task{task_id=t-1}"),
            "{out}"
        );
        assert!(out.contains("claimed attempt=2"), "{out}");
        assert!(
            !out.contains("hidden at info"),
            "an unparsable filter means info: {out}"
        );
        assert!(!out.contains('\u{1b}'), "no colour codes: {out}");
    }
}
