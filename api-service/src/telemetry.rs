//! Logs: readable text by default, JSON lines with `LOG_FORMAT=json`. The
//! set-up is the workspace's `telemetry` crate, shared with the worker.

use ::telemetry::{LogFormat, MakeWriter};

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
/// `writer`. `RUST_LOG` filters (default `info`; see [`filter`]).
pub fn init<W>(format: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // `Settings` admits only `text` and `json`.
    let format = format.parse().unwrap_or(LogFormat::Text);
    let filter = filter(&std::env::var("RUST_LOG").unwrap_or_default());
    // A second init (several apps in one test process) keeps the first.
    drop(::telemetry::init(format, &filter, writer));
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
