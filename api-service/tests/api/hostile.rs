//! Hostile input, generated: random methods, paths, headers and bodies at
//! every endpoint. Whatever arrives, the answer is never a 5xx, and every
//! error is the contract's JSON.

use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};
use serde_json::Value;

use crate::helpers::{spawn_app, TOKEN};

fn path() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        Just(uuid::Uuid::new_v4().to_string()),
        "[0-9a-fA-F-]{0,40}",
        "\\PC{0,12}",
        Just("%00".to_owned()),
        Just("..%2F..%2Fetc".to_owned()),
    ];
    (0..8usize, id, "[a-z=&%0-9]{0,30}").prop_map(|(route, id, query)| {
        let id = id.replace(['/', '?', '#', ' '], "_");
        let id: String = id.chars().filter(|c| !c.is_control()).collect();
        let id = if id.is_empty() { "x".to_owned() } else { id };
        let path = match route {
            0 => "/tasks".to_owned(),
            1 => format!("/tasks/{id}"),
            2 => format!("/tasks/{id}/cancel"),
            3 => format!("/tasks/{id}/events"),
            4 => format!("/internal/tasks/{id}/status"),
            5 => format!("/internal/tasks/{id}/progress"),
            6 => "/readyz".to_owned(),
            _ => format!("/{id}"),
        };
        format!("{path}?{query}")
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let json_value = prop_oneof![
        Just(serde_json::json!({})),
        any::<i64>().prop_map(|n| serde_json::json!({"stages": n, "stage_ms": n, "priority": n})),
        any::<f64>().prop_map(|f| serde_json::json!({"timeout_secs": f})),
        "\\PC{0,40}".prop_map(|s| serde_json::json!({"algorithm": s, "webhook_url": s})),
        "\\PC{0,40}".prop_map(|s| serde_json::json!({"status": s, "worker": s, "progress": 5, "stage": 1, "stages": 1})),
        Just(serde_json::json!({"status": "PROCESSING", "worker": "w"})),
        any::<u64>().prop_map(|n| serde_json::json!({"progress": n, "stage": n, "stages": n, "worker": "w"})),
        Just(serde_json::json!([1, 2, 3])),
    ];
    prop_oneof![
        json_value.prop_map(|v| serde_json::to_vec(&v).unwrap()),
        proptest::collection::vec(any::<u8>(), 0..200),
        (1..300usize)
            .prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
    ]
}

#[test]
fn random_requests_never_get_a_5xx_and_errors_are_json() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(spawn_app());
    // `/readyz` is 503 until the first round of health checks; wait for it
    // (a later failing check is still a legitimate 503, accepted below).
    rt.block_on(app.readiness());
    let methods = ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"];
    let content_types = [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=utf-8",
        "",
    ];
    let mut runner = TestRunner::new(Config {
        cases: 1000,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        0..methods.len(),
        path(),
        body(),
        0..content_types.len(),
        any::<bool>(),
        "[ -~]{0,250}",
    );
    let result = runner.run(&strategy, |(m, path, body, ct, worker_auth, idem)| {
        let (status, text) = rt.block_on(async {
            let mut req = app
                .http
                .request(methods[m].parse().unwrap(), app.url(&path))
                .body(body.clone())
                .header("idempotency-key", idem.clone());
            if !content_types[ct].is_empty() {
                req = req.header("content-type", content_types[ct]);
            }
            if worker_auth {
                req = req.bearer_auth(TOKEN);
            }
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        });
        // `/readyz` answers 503 while a dependency failed its last check: not
        // an error of the request, and its body is the readiness report.
        let not_ready = status == 503
            && path.starts_with("/readyz?")
            && serde_json::from_str::<Value>(&text)
                .is_ok_and(|b| b["status"] == "unavailable" && b["checks"].is_object());
        if not_ready {
            return Ok(());
        }
        prop_assert!(status < 500, "{} {path} → {status}: {text}", methods[m]);
        if status >= 400 {
            let body: Value = serde_json::from_str(&text).map_err(|e| {
                TestCaseError::fail(format!(
                    "{} {path} → {status}: not JSON: {e}: {text}",
                    methods[m]
                ))
            })?;
            prop_assert!(
                body["error"].is_string() && body["message"].is_string(),
                "{} {path} → {status}: {text}",
                methods[m]
            );
        }
        Ok(())
    });
    rt.block_on(app.stop());
    result.unwrap();
}
