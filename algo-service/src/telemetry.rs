//! Logging: one `tracing` subscriber for the process, text or JSON lines.
//!
//! Logs go to the writer the caller picks; `main` passes stderr, because
//! stdout belongs to the native routine's `hello world` lines. Every line
//! about a task is inside the task's span, so it carries `task_id` in both
//! formats.

use tracing::Subscriber;
use tracing_subscriber::{
    fmt::MakeWriter, layer::SubscriberExt, registry::LookupSpan, EnvFilter, Layer, Registry,
};

use crate::config::LogFormat;

/// A subscriber writing to `sink` in `format`, filtered by `filter`
/// (`RUST_LOG` syntax; an unparsable filter falls back to `info`).
pub fn get_subscriber<W>(
    format: LogFormat,
    filter: &str,
    sink: W,
) -> Box<dyn Subscriber + Send + Sync + 'static>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    Box::new(
        Registry::default()
            .with(filter)
            .with(fmt_layer(format, sink)),
    )
}

fn fmt_layer<S, W>(format: LogFormat, sink: W) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(sink);
    match format {
        LogFormat::Text => Box::new(layer.with_ansi(false)),
        // Span fields (task_id) are flattened into each line via the current span.
        LogFormat::Json => Box::new(
            layer
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .flatten_event(true),
        ),
    }
}

/// Installs `subscriber` for the whole process.
///
/// # Errors
/// When a global subscriber is already installed (e.g. a second call in tests).
pub fn init_subscriber(
    subscriber: Box<dyn Subscriber + Send + Sync + 'static>,
) -> anyhow::Result<()> {
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
