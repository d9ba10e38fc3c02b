//! `/openapi.json` documents every route the app serves.

use serde_json::Value;

use crate::helpers::spawn_app;

/// Pages for people, not API endpoints: served, but not in the spec.
const NOT_API: &[&str] = &["/", "/assets/app.css", "/assets/app.js"];

#[tokio::test]
async fn every_served_route_and_method_is_in_the_openapi_document() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let spec: Value = res.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));

    // The routes the app registers: every `resource(path, allow)` in routes/mod.rs.
    let source = include_str!("../../src/routes/mod.rs");
    let mut served = Vec::new();
    for piece in source.split("resource(\"").skip(1) {
        let mut parts = piece.splitn(4, '"');
        let path = parts.next().unwrap();
        let allow = parts.nth(1).unwrap();
        served.push((path.to_owned(), allow.to_owned()));
    }
    assert!(served.len() >= 10, "found the route table: {served:?}");

    for (path, allow) in served {
        if NOT_API.contains(&path.as_str()) {
            continue;
        }
        let documented = &spec["paths"][&path];
        assert!(documented.is_object(), "{path} is missing from the spec");
        for method in allow.split(", ") {
            // HEAD is GET without the body (RFC 9110): documented as the GET.
            let documented_as = if method == "HEAD" { "get" } else { method };
            assert!(
                documented[documented_as.to_lowercase()].is_object(),
                "{method} {path} is missing from the spec"
            );
            // And the route really answers that method (not 404/405).
            let res = app
                .http
                .request(
                    method.parse().unwrap(),
                    app.url(&path.replace("{id}", &uuid::Uuid::new_v4().to_string())),
                )
                .send()
                .await
                .unwrap();
            assert!(
                res.status() != 405,
                "{method} {path} is documented but not served"
            );
        }
    }
    // Shared answer sets (utoipa IntoResponses) expand into each operation.
    for (path, method, codes) in [
        (
            "/tasks/{id}",
            "delete",
            &["200", "202", "400", "401", "404", "409", "503"][..],
        ),
        (
            "/tasks/{id}/cancel",
            "post",
            &["200", "202", "400", "401", "404", "409", "503"][..],
        ),
        (
            "/internal/tasks/{id}/status",
            "post",
            &["200", "400", "401", "404", "409", "503"][..],
        ),
        (
            "/internal/tasks/{id}/progress",
            "post",
            &["200", "400", "401", "404", "409", "503"][..],
        ),
    ] {
        for code in codes {
            assert!(
                spec["paths"][path][method]["responses"][code].is_object(),
                "{method} {path} documents {code}"
            );
        }
    }
    for schema in [
        "TaskView",
        "EventView",
        "CreateTaskRequest",
        "CallbackAnswer",
        "ErrorBody",
        "TaskStatus",
    ] {
        assert!(
            spec["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    app.stop().await;
}
