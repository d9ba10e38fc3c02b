//! Bad input: a clear 4xx with `{"error", "message"}`, never a 5xx.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::spawn_app;

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    status: u16,
    error: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: &str,
    body: &str,
    status: u16,
    error: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: body.as_bytes().to_vec(),
        headers: vec![],
        status,
        error,
    }
}

#[tokio::test]
async fn each_bad_input_gets_its_status_and_a_json_error_body() {
    let app = spawn_app().await;
    let id = app.create(serde_json::json!({})).await;
    let mut cases = vec![
        case(
            "invalid json",
            Method::POST,
            "/tasks",
            "{",
            400,
            "invalid_json",
        ),
        case(
            "not an object",
            Method::POST,
            "/tasks",
            "[1,2]",
            400,
            "validation",
        ),
        case(
            "unknown field",
            Method::POST,
            "/tasks",
            r#"{"colour":"red"}"#,
            400,
            "validation",
        ),
        case(
            "stages 0",
            Method::POST,
            "/tasks",
            r#"{"stages":0}"#,
            400,
            "validation",
        ),
        case(
            "stages too many",
            Method::POST,
            "/tasks",
            r#"{"stages":1001}"#,
            400,
            "validation",
        ),
        case(
            "fractional stages",
            Method::POST,
            "/tasks",
            r#"{"stages":2.5}"#,
            400,
            "validation",
        ),
        case(
            "huge number",
            Method::POST,
            "/tasks",
            r#"{"stage_ms":1e400}"#,
            400,
            "invalid_json",
        ),
        case(
            "negative stage_ms",
            Method::POST,
            "/tasks",
            r#"{"stage_ms":-1}"#,
            400,
            "validation",
        ),
        case(
            "timeout 0",
            Method::POST,
            "/tasks",
            r#"{"timeout_secs":0}"#,
            400,
            "validation",
        ),
        case(
            "priority 10",
            Method::POST,
            "/tasks",
            r#"{"priority":10}"#,
            400,
            "validation",
        ),
        case(
            "string priority",
            Method::POST,
            "/tasks",
            r#"{"priority":"high"}"#,
            400,
            "validation",
        ),
        case(
            "unknown algorithm",
            Method::POST,
            "/tasks",
            r#"{"algorithm":"sort"}"#,
            400,
            "unknown_algorithm",
        ),
        case(
            "webhooks off",
            Method::POST,
            "/tasks",
            r#"{"webhook_url":"http://127.0.0.1/x"}"#,
            400,
            "webhooks_disabled",
        ),
        case(
            "deep json",
            Method::POST,
            "/tasks",
            &format!("{{\"input\":{}{}}}", "[".repeat(200), "]".repeat(200)),
            400,
            "invalid_json",
        ),
        case(
            "bad id",
            Method::GET,
            "/tasks/not-a-uuid",
            "",
            400,
            "invalid_id",
        ),
        case(
            "braced id",
            Method::GET,
            &format!("/tasks/{{{id}}}"),
            "",
            400,
            "invalid_id",
        ),
        case(
            "bad id on cancel",
            Method::DELETE,
            "/tasks/123",
            "",
            400,
            "invalid_id",
        ),
        case(
            "bad id on events",
            Method::GET,
            "/tasks/x/events",
            "",
            400,
            "invalid_id",
        ),
        case(
            "limit 0",
            Method::GET,
            "/tasks?limit=0",
            "",
            400,
            "validation",
        ),
        case(
            "limit huge",
            Method::GET,
            "/tasks?limit=99999999999999999999",
            "",
            400,
            "validation",
        ),
        case(
            "unknown status",
            Method::GET,
            "/tasks?status=DONE",
            "",
            400,
            "validation",
        ),
        case(
            "forged cursor",
            Method::GET,
            "/tasks?cursor=abc.def",
            "",
            400,
            "invalid_cursor",
        ),
        case("unknown route", Method::GET, "/nope", "", 404, "not_found"),
        case(
            "unknown task",
            Method::GET,
            &format!("/tasks/{}", uuid::Uuid::new_v4()),
            "",
            404,
            "not_found",
        ),
        case(
            "wrong method",
            Method::PUT,
            "/tasks",
            "",
            405,
            "method_not_allowed",
        ),
        case(
            "wrong method on a task",
            Method::PATCH,
            &format!("/tasks/{id}"),
            "",
            405,
            "method_not_allowed",
        ),
    ];
    let mut text = case(
        "text body",
        Method::POST,
        "/tasks",
        "stages=3",
        415,
        "unsupported_media_type",
    );
    text.content_type = Some("text/plain");
    cases.push(text);
    let mut form = case(
        "form body",
        Method::POST,
        "/tasks",
        "a=b",
        415,
        "unsupported_media_type",
    );
    form.content_type = Some("application/x-www-form-urlencoded");
    cases.push(form);
    let mut big = case(
        "too large",
        Method::POST,
        "/tasks",
        "",
        413,
        "payload_too_large",
    );
    big.body = format!("{{\"input\":\"{}\"}}", "a".repeat(70_000)).into_bytes();
    cases.push(big);
    let mut big_input = case(
        "input over 16 KiB",
        Method::POST,
        "/tasks",
        "",
        400,
        "validation",
    );
    big_input.body = format!("{{\"input\":\"{}\"}}", "a".repeat(17_000)).into_bytes();
    cases.push(big_input);
    let mut key = case(
        "long idempotency key",
        Method::POST,
        "/tasks",
        "{}",
        400,
        "invalid_idempotency_key",
    );
    key.headers.push(("idempotency-key", "k".repeat(201)));
    cases.push(key);
    let mut key = case(
        "idempotency key with a space",
        Method::POST,
        "/tasks",
        "{}",
        400,
        "invalid_idempotency_key",
    );
    key.headers.push(("idempotency-key", "a b".into()));
    cases.push(key);
    let mut utf8 = case("odd utf-8", Method::POST, "/tasks", "", 400, "invalid_json");
    utf8.body = b"{\"input\":\"\xff\xfe\"}".to_vec();
    cases.push(utf8);

    for c in cases {
        let mut req = app
            .http
            .request(c.method.clone(), app.url(&c.path))
            .body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in &c.headers {
            req = req.header(*k, v);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let allow = res
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: body is not JSON: {e}", c.name));
        assert_eq!(status, c.status, "{}: {body}", c.name);
        assert_eq!(body["error"], c.error, "{}: {body}", c.name);
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: no message",
            c.name
        );
        if c.status == 405 {
            assert!(allow.is_some(), "{}: 405 carries Allow", c.name);
        }
    }
    app.stop().await;
}
