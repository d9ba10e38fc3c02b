//! The api and two workers on a private 3-primary Redis Cluster
//! (`REDIS_CLUSTER_URLS`): the lifecycle, cancel, idempotency, list paging
//! and SSE, with tasks (and so their keys) spread over every primary.

use std::{collections::HashSet, time::Duration};

use serde_json::{json, Value};
use test_support::{servers::PrivateRedisCluster, Stack};

/// The whole SSE stream of a task (it closes after the terminal event).
async fn sse_text(app: &Stack, id: &str) -> String {
    let res = app
        .http
        .get(app.url(&format!("/tasks/{id}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    tokio::time::timeout(Duration::from_secs(30), res.text())
        .await
        .expect("the stream closes after the terminal event")
        .unwrap()
}

/// Every task id `GET /tasks?limit=2` lists, following the cursor.
async fn listed_two_at_a_time(app: &Stack) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/tasks?limit=2&cursor={c}"),
            None => "/tasks?limit=2".to_owned(),
        };
        let page = app.get_json(&path).await;
        for t in page["tasks"].as_array().unwrap() {
            seen.push(t["task_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return seen,
        }
    }
}

/// 3 primaries with a replica each: every create, claim and terminal state
/// waits for its replica (`REDIS_MIN_REPLICAS` defaults to 1 on a cluster).
#[tokio::test]
async fn the_api_and_two_workers_run_tasks_on_a_redis_cluster() {
    let cluster = PrivateRedisCluster::start(3, 1)
        .await
        .expect("a private redis cluster");
    let seeds = cluster.seed_urls();
    let mut app = Stack::start_on_redis_cluster(&seeds, &[]).await;
    let (status, body) = app.readiness().await;
    assert_eq!(status, 200, "ready on the cluster: {body}");

    app.add_worker("w1").await;
    app.add_worker("w2").await;

    // Lifecycle, with SSE read live for each task, wherever its slot lives.
    let mut ids = Vec::new();
    let mut owners = HashSet::new();
    for _ in 0..8 {
        let id = app.create(json!({"stages": 2, "stage_ms": 200})).await;
        let slot = cluster.keyslot(&format!("task:{{{id}}}")).await.unwrap();
        owners.insert(cluster.primary_of_slot(slot).await.unwrap());
        ids.push(id);
    }
    assert!(owners.len() >= 2, "tasks on several primaries: {owners:?}");
    let streams = futures_util::future::join_all(ids.iter().map(|id| sse_text(&app, id))).await;
    for (id, text) in ids.iter().zip(&streams) {
        assert!(text.contains("event: status"), "{id}: {text}");
        assert!(text.contains("COMPLETED"), "{id}: {text}");
        assert_eq!(app.task(id).await["status"], "COMPLETED");
    }

    // Cancel of a running task.
    let long = app.create(json!({"stages": 20, "stage_ms": 500})).await;
    app.wait_for(&long, Duration::from_secs(20), |t| {
        t["status"] == "PROCESSING"
    })
    .await;
    assert_eq!(app.cancel(&long).await.status(), 202);
    let done = app.wait_terminal(&long, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");

    // Idempotency: a replay gets the same task.
    let post = |key: &'static str| {
        app.http
            .post(app.url("/tasks"))
            .header("idempotency-key", key)
            .json(&json!({"stages": 1, "stage_ms": 0}))
            .send()
    };
    let first: Value = post("cluster-1").await.unwrap().json().await.unwrap();
    let replay = post("cluster-1").await.unwrap();
    assert_eq!(replay.status(), 200);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(first["task_id"], replay["task_id"]);
    ids.push(long);
    ids.push(first["task_id"].as_str().unwrap().to_owned());

    // List paging, two at a time, sees every task once.
    let seen = listed_two_at_a_time(&app).await;
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no task listed twice: {seen:?}");
    assert_eq!(unique, ids.iter().collect::<HashSet<_>>());
    app.stop().await;
}

/// A cluster whose primaries have no replica cannot acknowledge a create as
/// replicated: 503, not a 202 that a failover could lose. With
/// `REDIS_MIN_REPLICAS=0` the same cluster takes it.
#[tokio::test]
async fn a_create_that_no_replica_acknowledges_answers_503() {
    let cluster = PrivateRedisCluster::start(3, 0)
        .await
        .expect("a private redis cluster");
    let seeds = cluster.seed_urls();
    let app = Stack::start_on_redis_cluster(&seeds, &[]).await;
    let res = app.post_task(json!({"stages": 1, "stage_ms": 0})).await;
    assert_eq!(res.status(), 503);
    app.stop().await;
    let app = Stack::start_on_redis_cluster(&seeds, &["--redis-min-replicas", "0"]).await;
    let res = app.post_task(json!({"stages": 1, "stage_ms": 0})).await;
    assert_eq!(res.status(), 202);
    app.stop().await;
}

/// The v2 store code whose commands span slots, on a cluster: a batch of 50
/// (on every primary) runs, a delayed task goes through the due index, a
/// failed first attempt is retried, and a schedule is listed, fires and is
/// deleted.
#[tokio::test]
async fn batches_delays_retries_and_schedules_run_on_a_redis_cluster() {
    let cluster = PrivateRedisCluster::start(3, 1)
        .await
        .expect("a private redis cluster");
    let seeds = cluster.seed_urls();
    let fast = ["--schedule-seconds", "--schedule-tick-ms", "100"];
    let mut app = Stack::start_on_redis_cluster(&seeds, &fast).await;
    app.add_worker("w1").await;
    app.add_worker("w2").await;

    // A batch of 50, its tasks on every primary, all run.
    let bodies: Vec<Value> = (0..50)
        .map(|i| json!({"stages": 1, "stage_ms": 0, "input": {"n": i}}))
        .collect();
    let res = app
        .http
        .post(app.url("/tasks/batch"))
        .json(&json!({ "tasks": bodies }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let answer: Value = res.json().await.unwrap();
    let batch: Vec<String> = answer["tasks"]
        .as_array()
        .expect("the batch's tasks")
        .iter()
        .map(|t| t["task_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(batch.len(), 50, "{answer}");
    let mut owners = HashSet::new();
    for id in &batch {
        let slot = cluster.keyslot(&format!("task:{{{id}}}")).await.unwrap();
        owners.insert(cluster.primary_of_slot(slot).await.unwrap());
    }
    assert_eq!(owners.len(), 3, "the batch on every primary");

    // A delayed task, and one whose first attempt fails.
    let delayed = app
        .create(json!({"stages": 1, "stage_ms": 0, "delay_ms": 1500}))
        .await;
    assert_eq!(app.task(&delayed).await["status"], "SCHEDULED");
    let retried = app
        .create(json!({
            "algorithm": "hello", "stages": 2, "stage_ms": 0,
            "max_attempts": 2, "retry_backoff_ms": 100,
            "input": {"fail": {"at_stage": 1, "attempts": 1, "mode": "error"}}
        }))
        .await;

    // A schedule firing every second, until it has made a task.
    let res = app
        .http
        .post(app.url("/schedules"))
        .json(&json!({"cron": "*/1 * * * * *", "task": {"stages": 1, "stage_ms": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let schedule: Value = res.json().await.unwrap();
    let schedule_id = schedule["schedule_id"].as_str().unwrap().to_owned();
    let listed = app.get_json("/schedules").await;
    assert_eq!(listed["schedules"][0]["schedule_id"], schedule_id.as_str());
    let fired = test_support::eventually("the schedule fired", Duration::from_secs(15), || {
        let path = format!("/schedules/{schedule_id}");
        let app = &app;
        async move {
            let s = app.get_json(&path).await;
            s["last_task_id"].as_str().map(str::to_owned)
        }
    })
    .await;

    app.assert_all_completed_once(&batch, Duration::from_secs(30))
        .await;
    let done = app.wait_terminal(&delayed, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let trail = test_support::status_trail(&app.events(&delayed).await);
    assert_eq!(trail[..2], ["SCHEDULED", "QUEUED"], "{trail:?}");
    let done = app.wait_terminal(&retried, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    let done = app.wait_terminal(&fired, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");

    let deleted = app
        .http
        .delete(app.url(&format!("/schedules/{schedule_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get_json("/schedules").await["schedules"], json!([]));
    app.stop().await;
}
