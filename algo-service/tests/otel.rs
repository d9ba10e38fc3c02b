//! OpenTelemetry traces end to end: the api (in this process) and a real
//! worker process export to an OTLP/HTTP receiver of the test's own, and one
//! task's spans make one whole, correctly parented trace.
//!
//! A binary of its own: the in-process api's trace exporter is the process's
//! global subscriber, installed once, here.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    body::Bytes, extract::State, http::StatusCode, response::IntoResponse, routing::post, Router,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{any_value::Value as AnyValue, KeyValue},
};
use prost::Message;
use telemetry::{LogFormat, Telemetry, TraceExport};
use test_support::{body, Stack, WorkerOpts};
use tokio::sync::watch;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attributes: HashMap<String, String>,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

type Spans = Arc<watch::Sender<Vec<Got>>>;

/// An OTLP/HTTP receiver on a free port: `POST /v1/traces`, protobuf.
async fn receiver() -> (String, watch::Receiver<Vec<Got>>) {
    let (tx, rx) = watch::channel(Vec::new());
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(Arc::new(tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> impl IntoResponse {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string().into_bytes()),
    };
    spans.send_modify(|all| all.extend(flatten(request)));
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    (StatusCode::OK, answer)
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<Got> {
    let mut out = Vec::new();
    for batch in request.resource_spans {
        let resource = batch.resource.map(|r| attributes(&r.attributes));
        let service = resource
            .and_then(|mut r| r.remove("service.name"))
            .unwrap_or_default();
        for span in batch.scope_spans.into_iter().flat_map(|s| s.spans) {
            out.push(Got {
                service: service.clone(),
                name: span.name,
                trace_id: span.trace_id,
                span_id: span.span_id,
                parent: span.parent_span_id,
                attributes: attributes(&span.attributes),
            });
        }
    }
    out
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    let text = |value: &AnyValue| match value {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    };
    pairs
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?))))
        .collect()
}

/// The api's spans go out in batches every few seconds: send them now.
fn flush(api: &Telemetry) {
    tokio::task::block_in_place(|| api.flush()).expect("the receiver takes the api's spans");
}

/// Whether the task's worker spans arrived (its task span ends last, after
/// the ack), and as many api callback spans as the worker made calls.
fn trace_arrived(spans: &[Got], task_id: &str) -> bool {
    let of_task = |s: &&Got| s.attr("task_id") == Some(task_id);
    let worker_task = spans.iter().filter(of_task).any(|s| s.name == "task");
    let calls = spans.iter().filter(|s| s.name == "callback").count();
    let handled = spans
        .iter()
        .filter(of_task)
        .filter(|s| s.name == "report_status" || s.name == "report_progress")
        .count();
    worker_task && calls >= 3 && handled >= calls
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span list short enough for a failure message.
fn names(spans: &[Got]) -> Vec<(&str, &str)> {
    spans
        .iter()
        .map(|s| (s.service.as_str(), s.name.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_task_is_one_trace_from_the_create_to_its_last_callback() {
    // Arrange: the receiver, the api exporting to it, a worker exporting to it.
    let (endpoint, mut received) = receiver().await;
    let export = TraceExport {
        endpoint: endpoint.clone(),
        service_name: "api-service".into(),
    };
    let api_traces = match std::env::var_os("TEST_LOG") {
        Some(_) => {
            telemetry::init_with_traces(LogFormat::Text, "info", std::io::stderr, Some(&export))
        }
        None => telemetry::init_with_traces(LogFormat::Text, "info", std::io::sink, Some(&export)),
    }
    .expect("this test installs the process's subscriber");
    let mut sys = Stack::start(&[]).await;
    let worker_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    sys.add_worker_with_env("w1", WorkerOpts::default(), &worker_env)
        .await;

    // Act: one task of two stages, to the end.
    let id = sys.create(body(2, 50)).await;
    sys.assert_all_completed_once(std::slice::from_ref(&id), Duration::from_secs(30))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        flush(&api_traces);
        let spans = received.borrow_and_update().clone();
        if trace_arrived(&spans, &id) {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task's spans did not all arrive: {:?}",
            names(&spans)
        );
        // Until the next export arrives (the worker's come every 100 ms).
        let _ = tokio::time::timeout(Duration::from_millis(500), received.changed()).await;
    };

    // Assert: one trace, rooted at the create.
    let creates: Vec<&Got> = spans
        .iter()
        .filter(|s| s.name == "create_task" && s.attr("task_id") == Some(id.as_str()))
        .collect();
    assert_eq!(creates.len(), 1, "one create span: {creates:#?}");
    let create = creates[0];
    assert_eq!(create.service, "api-service");
    assert!(create.parent.is_empty(), "the create span is the root");
    let trace: Vec<&Got> = spans
        .iter()
        .filter(|s| s.trace_id == create.trace_id)
        .collect();
    let by_id: HashMap<&[u8], &Got> = trace.iter().map(|s| (s.span_id.as_slice(), *s)).collect();
    let parent_of = |s: &Got| by_id.get(s.parent.as_slice()).copied();
    let named =
        |name: &str| -> Vec<&Got> { trace.iter().copied().filter(|s| s.name == name).collect() };

    // No orphans: every span but the root has its parent in the trace, and
    // every chain of parents ends at the create span.
    for span in &trace {
        let mut at = *span;
        let mut hops = 0;
        while !at.parent.is_empty() {
            at = parent_of(at).unwrap_or_else(|| panic!("orphan: {span:#?} in {trace:#?}"));
            hops += 1;
            assert!(hops < 10, "a parent cycle at {span:#?}");
        }
        assert_eq!(at.span_id, create.span_id, "{span:#?} roots elsewhere");
    }
    // Every span the worker exported is in it: the worker ran only this task.
    for span in spans.iter().filter(|s| s.service == "algo-service") {
        assert_eq!(
            span.trace_id, create.trace_id,
            "outside the trace: {span:#?}"
        );
    }

    // The publish, under the create.
    let publish = named("publish");
    assert_eq!(publish.len(), 1, "{trace:#?}");
    assert_eq!(publish[0].parent, create.span_id);
    assert_eq!(publish[0].service, "api-service");
    // The consume (the worker's task span), under the publish: the context
    // came in the message's headers.
    let consume = named("task");
    assert_eq!(consume.len(), 1, "{trace:#?}");
    let consume = consume[0];
    assert_eq!(consume.parent, publish[0].span_id);
    assert_eq!(consume.service, "algo-service");
    assert_eq!(consume.attr("task_id"), Some(id.as_str()));
    assert_eq!(consume.attr("worker"), Some("w1"));
    // Each stage, under the task.
    let mut stages: Vec<&str> = named("stage")
        .iter()
        .inspect(|s| assert_eq!(s.parent, consume.span_id, "{s:#?}"))
        .filter_map(|s| s.attr("stage"))
        .collect();
    stages.sort_unstable();
    assert_eq!(stages, ["1", "2"]);
    // Each callback (claim, the first stage's progress, the completion that
    // carries the last stage's), under the
    // task, and the api's handling of each under it: the request carried
    // its traceparent.
    let callbacks = named("callback");
    assert!(callbacks.len() >= 3, "{callbacks:#?}");
    for callback in &callbacks {
        assert_eq!(callback.parent, consume.span_id, "{callback:#?}");
    }
    let handled: Vec<&Got> = trace
        .iter()
        .copied()
        .filter(|s| s.name == "report_status" || s.name == "report_progress")
        .collect();
    for span in &handled {
        let parent = parent_of(span).expect("a parent");
        assert_eq!(parent.name, "callback", "{span:#?}");
        assert_eq!(span.service, "api-service");
        assert_eq!(span.attr("task_id"), Some(id.as_str()));
    }
    let count = |name: &str| handled.iter().filter(|s| s.name == name).count();
    assert!(
        count("report_status") >= 2,
        "claim and completion: {handled:#?}"
    );
    assert!(
        count("report_progress") >= 1,
        "one per stage but the last: {handled:#?}"
    );
    // And no callback of this task was handled outside the trace.
    let stray = spans.iter().filter(|s| {
        (s.name == "report_status" || s.name == "report_progress")
            && s.attr("task_id") == Some(id.as_str())
            && s.trace_id != create.trace_id
    });
    assert_eq!(stray.count(), 0, "callbacks outside the trace");

    // A create that brings a traceparent continues that trace instead.
    let remote_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let remote_span = "00f067aa0ba902b7";
    let res = sys
        .http
        .post(sys.url("/tasks"))
        .header("traceparent", format!("00-{remote_trace}-{remote_span}-01"))
        .json(&body(1, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let second: serde_json::Value = res.json().await.unwrap();
    let second = second["task_id"].as_str().unwrap().to_owned();
    flush(&api_traces);
    let spans = received.borrow().clone();
    let create = spans
        .iter()
        .find(|s| s.name == "create_task" && s.attr("task_id") == Some(second.as_str()))
        .expect("the second create's span was flushed");
    assert_eq!(hex(&create.trace_id), remote_trace);
    assert_eq!(hex(&create.parent), remote_span);

    sys.stop().await;
    tokio::task::block_in_place(|| api_traces.shutdown());
}
