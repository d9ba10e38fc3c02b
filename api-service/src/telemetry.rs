//! Logs: readable text by default, JSON lines with `LOG_FORMAT=json`. The
//! set-up is the workspace's `telemetry` crate, shared with the worker.

use ::telemetry::{LogFormat, MakeWriter};

/// Installs the global subscriber writing `format` (`text` or `json`) to
/// `writer`. `RUST_LOG` filters (default `info`).
pub fn init<W>(format: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // `Settings` admits only `text` and `json`.
    let format = format.parse().unwrap_or(LogFormat::Text);
    let filter = std::env::var("RUST_LOG").unwrap_or_default();
    // A second init (several apps in one test process) keeps the first.
    drop(::telemetry::init(format, &filter, writer));
}
