//! HTTP as outside tools use it: metric labels that cannot grow, HEAD, the
//! HTTP parser's refusals, query parameters, `Accept` negotiation, h2c, and
//! validation errors that name their field.

use std::time::Duration;

use reqwest::{header, Method};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_app, TestApp};

#[tokio::test]
async fn invented_methods_share_one_metric_label() {
    let app = spawn_app().await;
    for i in 0..20 {
        let method = Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        let res = app
            .http
            .request(method, app.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405);
    }
    let long = Method::from_bytes("X".repeat(4000).as_bytes()).unwrap();
    app.http
        .request(long, app.url("/tasks"))
        .send()
        .await
        .unwrap();
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("INVENTED"), "an invented method is a label");
    assert!(!text.contains("XXXX"), "an invented method is a label");
    assert!(
        text.contains(r#"method="OTHER",route="/healthz",status="405""#)
            || text.contains(r#"route="/healthz",method="OTHER""#)
            || text.lines().any(|l| l.contains("method=\"OTHER\"")
                && l.contains("/healthz")
                && l.contains("status=\"405\"")),
        "invented methods are counted as OTHER:\n{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn every_get_route_answers_head_with_the_same_headers_and_no_body() {
    let app = spawn_app().await;
    let id = app.create(json!({"stages": 1, "stage_ms": 0})).await;
    // Readiness is 503 until the first round of checks; settle it first.
    app.readiness().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for path in [
        "/healthz".to_owned(),
        "/readyz".to_owned(),
        "/metrics".to_owned(),
        "/openapi.json".to_owned(),
        "/tasks".to_owned(),
        "/tasks?limit=1&_=123".to_owned(),
        format!("/tasks/{id}"),
        format!("/tasks/{unknown}"),
        format!("/tasks/{id}/events"),
        "/".to_owned(),
    ] {
        let get = app.http.get(app.url(&path)).send().await.unwrap();
        let head = app.http.head(app.url(&path)).send().await.unwrap();
        assert_eq!(head.status(), get.status(), "HEAD {path}");
        assert!(head.status() != 405, "HEAD {path} → 405");
        assert_eq!(
            head.headers().get(header::CONTENT_TYPE),
            get.headers().get(header::CONTENT_TYPE),
            "HEAD {path}: content type"
        );
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path}: body");
    }
    // HEAD of the live stream: its headers, at once, no feed left open.
    let head = app
        .http
        .head(app.url(&format!("/tasks/{id}/events")))
        .header(header::ACCEPT, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()[header::CONTENT_TYPE],
        "text/event-stream",
        "HEAD of the stream"
    );
    app.stop().await;
}

/// Sends `raw` on a fresh connection and returns the answer's status line
/// and the whole answer.
async fn raw_request(app: &TestApp, raw: &[u8]) -> (u16, String) {
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything.
    let _ = conn.write_all(raw).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP answer, got {text:?}"));
    (status, text)
}

#[tokio::test]
async fn requests_the_http_parser_refuses_get_a_4xx_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let long_uri = format!(
        "GET /tasks?x={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let params: Vec<String> = (0..10_000).map(|i| format!("p{i}=1")).collect();
    let many_params = format!(
        "GET /tasks?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        params.join("&")
    );
    let headers: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many_headers = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    let conflicting = "POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}";
    for (what, raw, want) in [
        ("a URI over 64 KiB", long_uri.as_str(), 400),
        ("10,000 query parameters", many_params.as_str(), 400),
        ("200 headers", many_headers.as_str(), 431),
        ("Content-Length and Transfer-Encoding", conflicting, 400),
    ] {
        let (status, answer) = raw_request(&app, raw.as_bytes()).await;
        assert_eq!(status, want, "{what}: {answer}");
    }
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn unknown_query_parameters_are_ignored_and_query_errors_name_their_field() {
    let app = spawn_app().await;
    let id = app.create(json!({})).await;
    for path in [
        "/tasks?_=123",
        "/tasks?limit=5&colour=red",
        "/tasks?LIMIT=0",
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let page: Value = res.json().await.unwrap();
        assert!(
            page["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["task_id"] == id.as_str()),
            "{path}: {page}"
        );
    }
    for (path, field) in [
        ("/tasks?limit=0", "limit"),
        ("/tasks?limit=1&limit=2", "limit"),
        ("/tasks?status=DONE", "status"),
        ("/tasks?status=QUEUED&status=FAILED", "status"),
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 400, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "validation", "{path}: {body}");
        assert_eq!(body["field"], field, "{path}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(!message.contains("deserialize"), "{path}: {message}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_event_stream_is_negotiated_by_media_type_and_q_value() {
    let app = spawn_app().await;
    let id = app.create(json!({})).await;
    // Cancelled while queued: finished, so a stream sends the past and closes.
    assert_eq!(app.cancel(&id).await.status(), 200);
    let path = format!("/tasks/{id}/events");
    for (accept, stream) in [
        ("text/event-stream", true),
        ("TEXT/EVENT-STREAM", true),
        ("Text/Event-Stream; charset=utf-8", true),
        ("application/json;q=0.5, text/event-stream", true),
        ("text/event-stream, application/json", true),
        ("text/event-stream;q=0.1, application/json", false),
        ("text/event-stream;q=0.5, */*", false),
        ("text/event-stream;q=0", false),
        ("application/json", false),
        ("*/*", false),
        ("text/*", false),
        ("not a media type", false),
    ] {
        let res = app
            .http
            .get(app.url(&path))
            .header(header::ACCEPT, accept)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{accept}");
        let ct = res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = res.text().await.unwrap();
        if stream {
            assert_eq!(ct, "text/event-stream", "{accept}");
            assert!(body.contains("event: status"), "{accept}: {body}");
        } else {
            assert_eq!(ct, "application/json", "{accept}");
            assert!(
                serde_json::from_str::<Vec<Value>>(&body).is_ok(),
                "{accept}: {body}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let app = spawn_app().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = h2.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
    let res = h2
        .post(app.url("/tasks"))
        .json(&json!({"stages": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 202);
    let res = h2.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn every_create_validation_error_names_its_field() {
    let app = spawn_app().await;
    // The catalogue's checks have their own codes (GET /algorithms).
    for (body, field, code) in [
        (r#"{"stages":1.0}"#, "stages", "validation"),
        (r#"{"stages":2.5}"#, "stages", "validation"),
        (r#"{"stages":0}"#, "stages", "validation"),
        (r#"{"stage_ms":-1}"#, "stage_ms", "validation"),
        (r#"{"timeout_secs":"5"}"#, "timeout_secs", "validation"),
        (r#"{"priority":10}"#, "priority", "validation"),
        (
            r#"{"priority":99999999999999999999999}"#,
            "priority",
            "validation",
        ),
        (r#"{"algorithm":"sort"}"#, "algorithm", "unknown_algorithm"),
        (r#"{"algorithm":5}"#, "algorithm", "validation"),
        (r#"{"colour":"red"}"#, "colour", "validation"),
        (
            r#"{"input":"a","webhook_url":true}"#,
            "webhook_url",
            "validation",
        ),
    ] {
        let res = app
            .http
            .post(app.url("/tasks"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{body}");
        let answer: Value = res.json().await.unwrap();
        assert_eq!(answer["error"], code, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_states_the_constraints() {
    let app = spawn_app().await;
    let spec = app.get_json("/openapi.json").await;
    let create = &spec["components"]["schemas"]["CreateTaskRequest"]["properties"];
    for (field, min, max) in [
        ("stages", 1, 1000),
        ("stage_ms", 0, 600_000),
        ("timeout_secs", 1, 86_400),
        ("priority", 0, 9),
    ] {
        assert_eq!(create[field]["minimum"], min, "{field}: {}", create[field]);
        assert_eq!(create[field]["maximum"], max, "{field}: {}", create[field]);
    }
    let list = spec["paths"]["/tasks"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let limit = list.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(limit["schema"]["minimum"], 1, "{limit}");
    assert_eq!(limit["schema"]["maximum"], 1000, "{limit}");
    let mut ids = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" && p["name"] == "name" {
                    // A queue name (`/queues/{name}/…`).
                    assert_eq!(
                        p["schema"]["pattern"], "^[a-z0-9][a-z0-9_-]{0,62}$",
                        "{method} {path}: {p}"
                    );
                } else if p["in"] == "path" {
                    assert_eq!(p["schema"]["format"], "uuid", "{method} {path}: {p}");
                    ids += 1;
                }
            }
        }
    }
    assert!(ids >= 6, "path ids found: {ids}");
    let body = &spec["paths"]["/tasks"]["post"]["requestBody"];
    let schema = &body["content"]["application/json"]["schema"];
    assert_eq!(
        schema["$ref"], "#/components/schemas/CreateTaskRequest",
        "the create body is the object, not null: {body}"
    );
    app.stop().await;
}

/// The api binary as an operator runs it (default log filter, logs on
/// stdout): requests the parser refuses leave no ERROR line.
#[tokio::test]
async fn parser_refusals_leave_no_error_in_the_log_of_the_binary() {
    let env = test_support::TestEnv::new()
        .await
        .expect("test environment");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let api = tokio::process::Command::new(env!("CARGO_BIN_EXE_api-service"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["--bind", &bind, "--redis-prefix", &env.redis_prefix])
        .args(["--redis-url", &env.redis_url, "--amqp-url", &env.amqp_url])
        .args(["--callback-token", crate::helpers::TOKEN, "--workers", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the api binary starts");
    let base = format!("http://{bind}");
    test_support::eventually(
        "the api binary to serve",
        Duration::from_secs(20),
        || async {
            let res = reqwest::get(format!("{base}/healthz")).await;
            res.is_ok_and(|r| r.status() == 200).then_some(())
        },
    )
    .await;
    let too_long = format!(
        "GET /tasks?x={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let headers: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let too_many = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    for raw in [too_long.as_str(), too_many.as_str(), "PRI * HTTP/9\r\n\r\n"] {
        let mut conn = tokio::net::TcpStream::connect(&bind).await.unwrap();
        let _ = conn.write_all(raw.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 4"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    // A request after them: once it is answered, their lines were written.
    let res = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(res.status(), 200);
    test_support::servers::send_signal(api.id().expect("the api runs"), "TERM", false)
        .expect("SIGTERM sent");
    let out = tokio::time::timeout(Duration::from_secs(20), api.wait_with_output())
        .await
        .expect("the api stops on SIGTERM")
        .unwrap();
    env.cleanup().await;
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("api listening"), "the log was captured: {log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "ERROR lines: {errors:#?}");
}
