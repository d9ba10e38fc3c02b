//! Creating, reading and cancelling tasks.

use serde_json::{json, Value};

use crate::helpers::spawn_app;

#[tokio::test]
async fn create_task_returns_202_stores_it_and_publishes_one_persistent_message() {
    let app = spawn_app().await;

    // Act
    let res = app
        .post_task(json!({"stages": 3, "stage_ms": 10, "priority": 7, "input": {"n": 1}}))
        .await;

    // Assert: the answer
    assert_eq!(res.status(), 202);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    let id = body["task_id"].as_str().unwrap();
    assert_eq!(body["status"], "QUEUED");
    assert_eq!(location, format!("/tasks/{id}"));

    // Assert: the stored task
    let task = app.task(id).await;
    assert_eq!(task["status"], "QUEUED");
    assert_eq!(
        (
            task["stages"].as_u64(),
            task["stage_ms"].as_u64(),
            task["priority"].as_u64()
        ),
        (Some(3), Some(10), Some(7))
    );
    assert_eq!(task["input"], json!({"n": 1}));
    assert_eq!(task["progress"], 0);
    assert!(task["started_at"].is_null() && task["finished_at"].is_null());

    // Assert: the message
    let channel = app.amqp().await;
    let delivery = app.next_task_message(&channel).await;
    let props = &delivery.properties;
    assert_eq!(props.message_id().as_ref().map(|m| m.as_str()), Some(id));
    assert_eq!(*props.delivery_mode(), Some(2), "persistent");
    assert_eq!(*props.priority(), Some(7));
    let message: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(
        message,
        json!({"task_id": id, "priority": 7}),
        "the message only names the task; the claim answer carries the rest"
    );
    assert_eq!(
        app.env.queue_depth("tasks.algo").await.unwrap(),
        Some(0),
        "exactly one message"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_empty_body_takes_the_defaults_and_ids_are_case_insensitive() {
    let app = spawn_app().await;
    let res = app.http.post(app.url("/tasks")).send().await.unwrap();
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_uppercase();
    let task = app.task(&id).await;
    assert_eq!(
        (
            task["stages"].as_u64(),
            task["stage_ms"].as_u64(),
            task["timeout_secs"].as_u64()
        ),
        (Some(10), Some(3000), Some(50))
    );
    assert_eq!(task["algorithm"], "hello");
    assert_eq!(task["task_id"], id.to_lowercase());
    app.stop().await;
}

#[tokio::test]
async fn cancelling_a_queued_task_is_final_at_once_and_a_later_claim_is_refused() {
    let app = spawn_app().await;
    let id = app.create(json!({})).await;

    let res = app.cancel(&id).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"task_id": id, "status": "CANCELLED"})
    );

    let task = app.task(&id).await;
    assert_eq!(task["status"], "CANCELLED");
    assert_eq!(task["cancel_requested"], true);
    assert!(task["started_at"].is_null());
    assert!(task["finished_at"].is_string());

    // A worker that receives it later is told to skip it.
    let (status, answer) = app
        .status_callback(&id, json!({"status": "PROCESSING", "worker": "w1"}))
        .await;
    assert_eq!(status, 409);
    assert_eq!(answer["error"], "already_finished");
    assert_eq!(answer["status"], "CANCELLED");

    // Cancelling again: 409 with the current status (both routes).
    let res = app
        .http
        .post(app.url(&format!("/tasks/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["error"].as_str(), body["status"].as_str()),
        (Some("already_finished"), Some("CANCELLED"))
    );
    let kinds: Vec<_> = app
        .events(&id)
        .await
        .iter()
        .map(|e| (e["type"].clone(), e["status"].clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (json!("status"), json!("QUEUED")),
            (json!("cancel_requested"), json!("QUEUED")),
            (json!("status"), json!("CANCELLED")),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn cancelling_a_running_task_broadcasts_to_the_workers_and_waits_for_the_holder() {
    let app = spawn_app().await;
    let id = app.create(json!({"stages": 5})).await;
    app.claim(&id, "w1").await;

    // Listen on the control fanout as a worker would.
    let channel = app.amqp().await;
    let q = channel
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            q.name().clone(),
            "tasks.control".into(),
            "".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();

    let res = app.cancel(&id).await;
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "CANCELLING");
    let res = app.cancel(&id).await;
    assert_eq!(res.status(), 202, "CANCELLING → 202 again");

    let message = test_support::eventually(
        "the cancel broadcast",
        std::time::Duration::from_secs(5),
        || async {
            channel
                .basic_get(
                    q.name().clone(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .unwrap()
                .map(|m| serde_json::from_slice::<Value>(&m.delivery.data).unwrap())
        },
    )
    .await;
    assert_eq!(message, json!({"type": "cancel", "task_id": id}));

    // The holder sees the request in any callback answer, then reports CANCELLED.
    let (status, answer) = app.progress_callback(&id, "w1", 1, 5).await;
    assert_eq!(
        (status, answer["cancel_requested"].as_bool()),
        (200, Some(true))
    );
    let (status, _) = app
        .status_callback(&id, json!({"status": "CANCELLED", "worker": "w1"}))
        .await;
    assert_eq!(status, 200);
    let task = app.task(&id).await;
    assert_eq!(task["status"], "CANCELLED");
    assert!(task["started_at"].is_string() && task["finished_at"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn unknown_tasks_are_404_everywhere() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4().to_string();
    assert_eq!(app.get_task(&id).await.status(), 404);
    assert_eq!(app.cancel(&id).await.status(), 404);
    let res = app
        .http
        .get(app.url(&format!("/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let (status, body) = app
        .status_callback(&id, json!({"status": "PROCESSING", "worker": "w"}))
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_replay_returns_the_first_task_and_a_changed_body_conflicts() {
    let app = spawn_app().await;
    let post = |body: Value, key: &'static str| {
        let req = app
            .http
            .post(app.url("/tasks"))
            .header("idempotency-key", key)
            .json(&body);
        async move { req.send().await.unwrap() }
    };
    let first = post(json!({"stages": 2}), "order-17").await;
    assert_eq!(first.status(), 202);
    let id = first.json::<Value>().await.unwrap()["task_id"].clone();

    let replay = post(json!({"stages": 2, "input": null}), "order-17").await;
    assert_eq!(replay.status(), 200);
    assert_eq!(
        replay.json::<Value>().await.unwrap(),
        json!({"task_id": id, "status": "QUEUED"})
    );

    let conflict = post(json!({"stages": 3}), "order-17").await;
    assert_eq!(conflict.status(), 409);
    assert_eq!(
        conflict.json::<Value>().await.unwrap()["error"],
        "idempotency_conflict"
    );

    let other = post(json!({"stages": 2}), "order-18").await;
    assert_eq!(other.status(), 202, "another key is another task");
    app.stop().await;
}

#[tokio::test]
async fn racing_requests_with_one_idempotency_key_create_one_task() {
    let app = spawn_app().await;
    let sends = (0..16).map(|_| {
        let req = app
            .http
            .post(app.url("/tasks"))
            .header("idempotency-key", "race-1")
            .json(&json!({"stages": 1}));
        async move { req.send().await.unwrap() }
    });
    let answers = futures_util::future::join_all(sends).await;
    let mut ids = Vec::new();
    let mut created = 0;
    for res in answers {
        match res.status().as_u16() {
            202 => created += 1,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
        ids.push(
            res.json::<Value>().await.unwrap()["task_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(created, 1, "exactly one request creates");
    ids.dedup();
    assert_eq!(ids.len(), 1, "everyone gets the same task");
    let listed: Value = app.get_json("/tasks").await;
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.env.queue_depth("tasks.algo").await.unwrap(),
        Some(1),
        "one message"
    );
    app.stop().await;
}

#[tokio::test]
async fn api_keys_guard_the_task_endpoints_but_not_health() {
    let app = crate::helpers::spawn_app_with(&["--api-keys", "k1, k2"]).await;
    let res = app
        .http
        .post(app.url("/tasks"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "unauthorized");
    let res = app
        .http
        .get(app.url("/tasks"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .http
        .post(app.url("/tasks"))
        .bearer_auth("k2")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    for open in ["/healthz", "/metrics"] {
        assert_eq!(
            app.http.get(app.url(open)).send().await.unwrap().status(),
            200,
            "{open} stays open"
        );
    }
    app.stop().await;
}
