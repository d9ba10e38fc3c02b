//! Redis or RabbitMQ unreachable: 503 with Retry-After, nothing half-made,
//! and the process keeps serving health.

use serde_json::{json, Value};

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn with_rabbitmq_unreachable_create_answers_503_and_leaves_no_task() {
    let app = spawn_app_with(&["--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2f"]).await;
    let res = app.post_task(json!({})).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
    assert!(
        !body["message"].as_str().unwrap().contains("amqp"),
        "no internals leak: {body}"
    );

    let listed: Value = app.get_json("/tasks").await;
    assert_eq!(listed["tasks"], json!([]), "no task left behind: {listed}");
    let mut redis = app.env.redis().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}task:*", app.env.redis_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");

    let (status, ready) = app.readiness().await;
    assert_eq!(status, 503);
    assert_eq!(ready["checks"]["rabbitmq"]["ok"], false);
    assert_eq!(ready["checks"]["redis"]["ok"], true);
    app.stop().await;
}

#[tokio::test]
async fn with_redis_unreachable_endpoints_answer_503_and_health_stays_up() {
    let app = spawn_app_with(&["--redis-url", "redis://127.0.0.1:1/0"]).await;
    let res = app.post_task(json!({})).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    let res = app.get_task(&uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        app.env.queue_depth("tasks.algo").await.unwrap(),
        Some(0),
        "nothing published"
    );

    let (status, ready) = app.readiness().await;
    assert_eq!(status, 503);
    assert_eq!(ready["status"], "unavailable");
    assert_eq!(ready["checks"]["redis"]["ok"], false);
    assert!(ready["checks"]["redis"]["error"].is_string());
    assert_eq!(ready["checks"]["rabbitmq"]["ok"], true);
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_created_and_finished_tasks() {
    let app = spawn_app_with(&[]).await;
    let id = app.create(json!({"stages": 1})).await;
    app.cancel(&id).await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("taskforge_tasks_created_total 1"), "{text}");
    assert!(
        text.contains("taskforge_tasks_finished_total{status=\"CANCELLED\"} 1"),
        "{text}"
    );
    assert!(text.contains("taskforge_http_request_duration_seconds_count{method=\"POST\",route=\"/tasks\",status=\"202\"} 1"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn the_api_refuses_to_start_with_webhooks_on_but_no_secret_or_no_callback_token() {
    use clap::Parser;
    let base = ["api-service", "--bind", "127.0.0.1:0"];
    let unsigned = api_service::Settings::try_parse_from(base.iter().chain(&[
        "--callback-token",
        "t",
        "--webhook-allowed-hosts",
        "127.0.0.1",
    ]))
    .unwrap();
    let err = api_service::Application::build(unsigned).await.unwrap_err();
    assert!(err.to_string().contains("WEBHOOK_SECRET"), "{err}");

    let mut tokenless = api_service::Settings::try_parse_from(base).unwrap();
    tokenless.callback_token = Some("  ".into());
    let err = api_service::Application::build(tokenless)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CALLBACK_TOKEN"), "{err}");
}
