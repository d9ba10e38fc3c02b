//! The web dashboard at `/`: an HTML shell and two assets from the binary.

use reqwest::header;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

const PAGES: [(&str, &str); 3] = [
    ("/", "text/html; charset=utf-8"),
    ("/assets/app.css", "text/css; charset=utf-8"),
    ("/assets/app.js", "text/javascript; charset=utf-8"),
];

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.http.get(app.url(path)).send().await.expect("GET")
}

#[tokio::test]
async fn the_page_is_html_with_the_submit_form_and_its_script_and_stylesheet() {
    let app = spawn_app().await;

    let res = get(&app, "/").await;

    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-cache");
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("connect-src 'self'") && csp.contains("script-src 'self'"),
        "the page may only talk to its own origin: {csp}"
    );
    let html = res.text().await.unwrap();
    assert!(html.starts_with("<!doctype html>"), "an HTML document");
    assert!(
        html.contains(r#"<form id="submit-form""#),
        "the submit form"
    );
    for field in ["stages", "stage_ms", "timeout_secs", "priority", "input"] {
        assert!(
            html.contains(&format!(r#"name="{field}""#)),
            "the form has a {field} field"
        );
    }
    assert!(
        html.contains(r#"<script src="/assets/app.js" defer></script>"#),
        "the script tag"
    );
    assert!(
        html.contains(r#"<link rel="stylesheet" href="/assets/app.css">"#),
        "the stylesheet"
    );
    assert!(html.contains("aria-live"), "status changes are announced");
    app.stop().await;
}

#[tokio::test]
async fn the_assets_are_served_with_their_content_types_and_the_files_bytes() {
    let app = spawn_app().await;
    let files = [
        include_str!("../../assets/dashboard/index.html"),
        include_str!("../../assets/dashboard/app.css"),
        include_str!("../../assets/dashboard/app.js"),
    ];

    for ((path, content_type), file) in PAGES.iter().zip(files) {
        let res = get(&app, path).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()[header::CONTENT_TYPE], *content_type, "{path}");
        assert_eq!(res.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(
            res.headers().contains_key(header::ETAG),
            "{path} has an ETag"
        );
        assert_eq!(res.text().await.unwrap(), file, "{path} serves the file");
    }
    app.stop().await;
}

#[tokio::test]
async fn nothing_in_the_dashboard_points_at_another_host() {
    let app = spawn_app().await;

    for (path, _) in PAGES {
        let body = get(&app, path).await.text().await.unwrap();
        let lower = body.to_ascii_lowercase();
        for scheme in ["http://", "https://", "ws://", "wss://"] {
            assert!(
                !lower.contains(scheme),
                "{path} names a {scheme} URL; the page must load nothing from the network"
            );
        }
        for relative in [r#"src="//"#, r#"href="//"#, "url(//", "url(\"//", "@import"] {
            assert!(
                !lower.contains(relative),
                "{path} has a protocol-relative or imported resource ({relative})"
            );
        }
    }
    // The one outside link, the RabbitMQ management UI, is built at run time
    // from the page's own host name.
    let js = get(&app, "/assets/app.js").await.text().await.unwrap();
    assert!(js.contains("mgmt.port = '15672'"));
    app.stop().await;
}

#[tokio::test]
async fn an_unchanged_asset_revalidates_as_304() {
    let app = spawn_app().await;

    for (path, _) in PAGES {
        let first = get(&app, path).await;
        let etag = first.headers()[header::ETAG].clone();

        let again = app
            .http
            .get(app.url(path))
            .header(header::IF_NONE_MATCH, etag.clone())
            .send()
            .await
            .unwrap();

        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()[header::ETAG], etag);
        assert!(again.bytes().await.unwrap().is_empty());
    }
    app.stop().await;
}

#[tokio::test]
async fn head_answers_without_a_body_and_other_methods_get_a_json_405() {
    let app = spawn_app().await;

    let head = app.http.head(app.url("/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert!(head.bytes().await.unwrap().is_empty());

    for (path, _) in PAGES {
        let res = app.http.post(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 405, "POST {path}");
        assert_eq!(res.headers()[header::ALLOW], "GET, HEAD");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed");
    }
    app.stop().await;
}

#[tokio::test]
async fn with_api_keys_the_shell_is_open_but_its_data_calls_need_the_key() {
    let app = spawn_app_with(&["--api-keys", "k1"]).await;

    // The shell holds no data: a browser loads it without a header...
    for (path, _) in PAGES {
        assert_eq!(get(&app, path).await.status(), 200, "{path} is open");
    }
    // ...and everything the page then asks for needs the key it prompts for.
    let res = get(&app, "/tasks?limit=50").await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer");
    let res = app
        .http
        .get(app.url("/tasks?limit=50"))
        .bearer_auth("k1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Health stays open, so the page shows it before a key is entered.
    assert_ne!(get(&app, "/readyz").await.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn the_page_has_a_schedules_list_that_the_script_fills_from_the_api() {
    let app = spawn_app().await;
    let html = get(&app, "/").await.text().await.unwrap();
    let js = get(&app, "/assets/app.js").await.text().await.unwrap();
    assert!(
        html.contains(r#"<tbody id="schedules">"#),
        "the schedules table"
    );
    assert!(
        js.contains("api('/schedules')"),
        "the script reads GET /schedules"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_page_has_a_queue_view_with_pause_and_resume() {
    let app = spawn_app().await;
    let html = get(&app, "/").await.text().await.unwrap();
    assert!(html.contains("id=\"queues\""), "a queue table");
    let js = get(&app, "/assets/app.js").await.text().await.unwrap();
    assert!(js.contains("api('/queues')"), "it lists GET /queues");
    assert!(
        js.contains("'/queues/' + encodeURIComponent(name) + '/' + verb"),
        "it pauses and resumes"
    );
    app.stop().await;
}
