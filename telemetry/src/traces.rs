//! OpenTelemetry traces: `tracing` spans exported over OTLP/HTTP (protobuf),
//! and the W3C trace context (`traceparent`, `tracestate`) carried between
//! processes.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`TraceExport::from_env`]).
//! When on, every span at `info` or above (whatever `RUST_LOG` says; the HTTP
//! access-log span of `tracing-actix-web` and the exporter's own are left
//! out) becomes an OpenTelemetry span, and the events inside it become span
//! events; spans are batched and sent from a thread of their own, so a slow
//! or absent collector never holds up a request. The `OTEL_BSP_*` variables
//! tune the batches and `OTEL_EXPORTER_OTLP_HEADERS` / `_TIMEOUT` the
//! requests, as the OpenTelemetry specification has it.
//!
//! Across processes a span's context travels as headers:
//! [`trace_headers`] writes them (into an AMQP message's headers or an HTTP
//! request), [`continue_trace`] makes a span a child of the context a
//! message or request brings. Both do nothing while traces are off.

use std::{collections::HashMap, time::Duration};

use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tracing::{level_filters::LevelFilter, Subscriber};
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};
use tracing_subscriber::{filter::Targets, registry::LookupSpan, Layer};

use crate::InitError;

/// The base URL of the OTLP/HTTP receiver; traces are off when it is unset or empty.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The `service.name` of the spans; each service has its default.
pub const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";
/// How long [`Telemetry::shutdown`] waits for the last spans to be sent.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where spans go, and as which service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// The receiver's base URL, e.g. `http://127.0.0.1:4318`; spans are
    /// POSTed to `<endpoint>/v1/traces`.
    pub endpoint: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

impl TraceExport {
    /// From `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_SERVICE_NAME` (default
    /// `default_service`); `None` (traces off) when the endpoint is unset or empty.
    pub fn from_env(default_service: &str) -> Option<Self> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Some(Self {
            endpoint: var(ENDPOINT_VAR)?.trim().to_owned(),
            service_name: var(SERVICE_NAME_VAR).unwrap_or_else(|| default_service.to_owned()),
        })
    }

    /// The URL spans are POSTed to.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
    }

    /// A tracer provider batching spans to [`Self::traces_url`].
    pub(crate) fn provider(&self) -> Result<SdkTracerProvider, InitError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(self.traces_url())
            .build()
            .map_err(|e| {
                InitError(format!(
                    "the trace exporter ({ENDPOINT_VAR}={}): {e}",
                    self.endpoint
                ))
            })?;
        let resource = Resource::builder()
            .with_service_name(self.service_name.clone())
            .build();
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build())
    }
}

/// The OpenTelemetry layer over `provider`'s tracer, for spans at `info` and above.
pub(crate) fn layer<S>(provider: &SdkTracerProvider) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let tracer = provider.tracer("taskforge");
    let spans = Targets::new()
        .with_default(LevelFilter::INFO)
        // One span per HTTP request would make every handler's span a child of
        // an access-log span and every request a trace; the handlers' own
        // spans are the ones that mean something.
        .with_target("tracing_actix_web", LevelFilter::OFF)
        // The exporter's own logs, which would otherwise feed back into it.
        .with_target("opentelemetry", LevelFilter::OFF);
    Box::new(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Parents come from the tracing span tree (and [`continue_trace`]);
            // no OpenTelemetry context is activated on entry, so a span's
            // parent can still be set from inside it (an instrumented handler).
            .with_context_activation(false)
            .with_filter(spans),
    )
}

/// What [`crate::init_with_traces`] set up; flushes the spans not yet sent
/// when shut down or dropped. Keep it until the process exits.
#[derive(Debug, Default)]
#[must_use = "dropping it stops exporting traces"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub(crate) fn exporting(provider: Option<SdkTracerProvider>) -> Self {
        Self { provider }
    }

    /// Whether spans are exported.
    pub fn traces_on(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans ended so far and waits until the receiver took them.
    /// Blocks the calling thread.
    ///
    /// # Errors
    /// When the export fails (the receiver is away or refuses them).
    pub fn flush(&self) -> Result<(), String> {
        match &self.provider {
            Some(provider) => provider.force_flush().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Sends the spans not yet sent (waiting at most [`SHUTDOWN_TIMEOUT`])
    /// and stops exporting. Blocks the calling thread: call it on the way out.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            // The subscriber may be gone by now: say it where it is seen.
            eprintln!("could not send the last trace spans: {e}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The W3C trace-context headers (`traceparent`, and `tracestate` when it
/// has entries) naming `span` as the parent; empty when `span` is not
/// exported (traces off, or the span filtered out).
pub fn trace_headers(span: &tracing::Span) -> Vec<(String, String)> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut headers = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut headers);
    let mut headers: Vec<_> = headers.into_iter().collect();
    headers.sort();
    headers
}

/// Makes `span` a child of the remote span that `header` (a lookup by
/// lower-case header name) names in `traceparent` (and `tracestate`). Without
/// a valid `traceparent`, or while traces are off, `span` stays as it is (a
/// root, or the child of its tracing parent).
///
/// Call it before `span` has children: an instrumented function's first line.
pub fn continue_trace<'a>(span: &tracing::Span, header: impl Fn(&str) -> Option<&'a str>) {
    let carrier: HashMap<String, String> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| Some((name.to_owned(), header(name)?.to_owned())))
        .collect();
    let context = TraceContextPropagator::new().extract(&carrier);
    if !context.span().span_context().is_valid() {
        return;
    }
    match span.set_parent(context) {
        // Traces are off (no OpenTelemetry layer), or this span is not exported.
        Ok(()) | Err(SetParentError::LayerNotFound | SetParentError::SpanDisabled) => {}
        Err(e @ SetParentError::AlreadyStarted) => tracing::warn!(
            error = %e,
            "the incoming trace context came too late for this span; it starts a trace of its own"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn the_traces_url_is_the_endpoint_with_the_signal_path() {
        let export = |endpoint: &str| TraceExport {
            endpoint: endpoint.to_owned(),
            service_name: "api-service".to_owned(),
        };
        assert_eq!(
            export("http://collector:4318").traces_url(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            export("http://collector:4318/").traces_url(),
            "http://collector:4318/v1/traces"
        );
    }

    const REMOTE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn remote(name: &str) -> Option<&'static str> {
        (name == "traceparent").then_some(REMOTE)
    }

    /// `traceparent`'s trace id and span id.
    fn ids(headers: &[(String, String)]) -> (String, String) {
        let (_, value) = headers
            .iter()
            .find(|(name, _)| name == "traceparent")
            .expect("a traceparent");
        let parts: Vec<&str> = value.split('-').collect();
        assert_eq!(
            (parts.len(), parts[0], parts[3]),
            (4, "00", "01"),
            "{value}"
        );
        (parts[1].to_owned(), parts[2].to_owned())
    }

    /// Runs `f` under a subscriber with the trace layer (exporting nowhere).
    fn traced(f: impl FnOnce()) {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(layer(&provider));
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn a_span_continues_the_incoming_trace_and_hands_it_on() {
        traced(|| {
            let span = tracing::info_span!("create_task");
            continue_trace(&span, remote);
            let (trace, id) = ids(&trace_headers(&span));
            assert_eq!(trace, "0af7651916cd43dd8448eb211c80319c");
            assert_ne!(
                id, "b7ad6b7169203331",
                "the span is a child, not the remote span"
            );

            let child = span.in_scope(|| tracing::info_span!("publish"));
            let (child_trace, child_id) = ids(&trace_headers(&child));
            assert_eq!(child_trace, trace, "children stay in the trace");
            assert_ne!(child_id, id);

            let other = tracing::info_span!("get_task");
            assert_ne!(
                ids(&trace_headers(&other)).0,
                trace,
                "a root starts its own trace"
            );
        });
    }

    #[test]
    fn without_a_valid_traceparent_a_span_stays_a_root() {
        traced(|| {
            for bad in [
                "",
                "nonsense",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            ] {
                let span = tracing::info_span!("create_task");
                continue_trace(&span, |name| (name == "traceparent").then_some(bad));
                let (trace, _) = ids(&trace_headers(&span));
                assert_ne!(trace, "00000000000000000000000000000000", "{bad:?}");
            }
        });
    }

    #[test]
    fn access_log_and_debug_spans_are_not_exported() {
        traced(|| {
            let access =
                tracing::info_span!(target: "tracing_actix_web::root_span_builder", "HTTP request");
            assert!(trace_headers(&access).is_empty());
            let debug = tracing::debug_span!("chatty");
            assert!(trace_headers(&debug).is_empty());
            // A handler's span inside the access-log span is a root of its own.
            let handler = access.in_scope(|| tracing::info_span!("create_task"));
            assert_eq!(ids(&trace_headers(&handler)).0.len(), 32);
        });
    }

    #[test]
    fn spans_carry_no_headers_while_traces_are_off() {
        let span = tracing::info_span!("untraced");
        assert!(trace_headers(&span).is_empty());
        // And an incoming context is ignored without complaint.
        continue_trace(&span, remote);
    }
}
