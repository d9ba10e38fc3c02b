//! Named queues at the api: `queue` on create, `GET /queues`, pause and
//! resume and their errors, and what workers ask (`GET /internal/queues`).

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TOKEN};

#[tokio::test]
async fn a_task_names_its_queue_and_is_routed_to_it() {
    let app = spawn_app_with(&["--queues", "algo,gpu"]).await;
    let id = app.create(json!({"stages": 1, "queue": "gpu"})).await;
    assert_eq!(app.task(&id).await["queue"], "gpu");
    let default = app.create(json!({"stages": 1})).await;
    assert_eq!(app.task(&default).await["queue"], "algo");
    assert_eq!(app.queue_depth("tasks.gpu").await, 1);
    assert_eq!(app.queue_depth("tasks.algo").await, 1);
    let message = app.next_task_message(&app.amqp().await).await;
    assert_eq!(message.routing_key.as_str(), "tasks.algo");
    assert_eq!(
        app.queues().await,
        json!([
            {"name": "algo", "depth": 0, "consumers": 0, "paused": false},
            {"name": "gpu", "depth": 1, "consumers": 0, "paused": false},
        ])
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_queue_is_refused_naming_the_field() {
    let app = spawn_app_with(&["--queues", "algo,gpu"]).await;
    for queue in [json!("cpu"), json!("Bad.Name"), json!("")] {
        let res = app.post_task(json!({"queue": queue})).await;
        assert_eq!(res.status(), 400, "{queue}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unknown_queue", "{body}");
        assert_eq!(body["field"], "queue");
        assert!(
            body["message"].as_str().unwrap().contains("algo, gpu"),
            "{body}"
        );
    }
    let res = app.post_task(json!({"queue": 7})).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["field"], "queue");
    app.stop().await;
}

#[tokio::test]
async fn pause_and_resume_answer_204_and_are_what_workers_read() {
    let app = spawn_app_with(&["--queues", "algo,gpu"]).await;
    let internal = |app: &crate::helpers::TestApp| {
        app.http
            .get(app.url("/internal/queues"))
            .bearer_auth(TOKEN)
            .send()
    };
    let before: Value = internal(&app).await.unwrap().json().await.unwrap();
    assert_eq!(
        before,
        json!([
            {"queue": "algo", "paused": false, "version": 0},
            {"queue": "gpu", "paused": false, "version": 0},
        ])
    );
    assert_eq!(app.post_empty("/queues/gpu/pause").await.status(), 204);
    assert_eq!(app.queues().await[1]["paused"], true);
    let paused: Value = internal(&app).await.unwrap().json().await.unwrap();
    assert_eq!(paused[1]["paused"], true);
    let v1 = paused[1]["version"].as_u64().unwrap();
    assert!(v1 > 0);
    assert_eq!(app.post_empty("/queues/gpu/resume").await.status(), 204);
    let resumed: Value = internal(&app).await.unwrap().json().await.unwrap();
    assert_eq!(resumed[1]["paused"], false);
    assert!(
        resumed[1]["version"].as_u64().unwrap() > v1,
        "versions grow"
    );
    // Without the callback token.
    let res = app
        .http
        .get(app.url("/internal/queues"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn pausing_an_unknown_or_malformed_queue_is_a_json_error() {
    let app = spawn_app_with(&["--queues", "algo"]).await;
    for (path, status, code) in [
        ("/queues/gpu/pause", 404, "not_found"),
        ("/queues/gpu/resume", 404, "not_found"),
        ("/queues/Bad.Name/pause", 400, "invalid_queue"),
    ] {
        let res = app.post_empty(path).await;
        assert_eq!(res.status(), status, "{path}");
        assert_eq!(res.json::<Value>().await.unwrap()["error"], code, "{path}");
    }
    let res = app
        .http
        .get(app.url("/queues/algo/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    app.stop().await;
}

#[tokio::test]
async fn queues_follow_the_api_key_rules_of_tasks() {
    let app = spawn_app_with(&["--api-keys", "k1"]).await;
    for (method, path) in [
        (reqwest::Method::GET, "/queues"),
        (reqwest::Method::POST, "/queues/algo/pause"),
        (reqwest::Method::POST, "/queues/algo/resume"),
    ] {
        let res = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method} {path} without a key");
    }
    assert_eq!(app.queues().await[0]["name"], "algo");
    app.stop().await;
}
