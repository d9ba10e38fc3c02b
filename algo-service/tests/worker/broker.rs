//! The worker and RabbitMQ, without the api.

use std::time::Duration;

use algo_service::broker::declare_topology;
use lapin::options::BasicGetOptions;
use serde_json::json;

use test_support::{eventually, publish, TestEnv};

use crate::helpers::{settings, spawn_worker};

/// Nothing listens on the discard port on loopback: every callback fails fast.
const NO_API: &str = "http://127.0.0.1:9";

#[tokio::test]
async fn topology_declared_by_the_worker_matches_the_definitions_file() {
    // Arrange: the queue as rabbitmq/definitions.json creates it (JSON numbers).
    let env = TestEnv::new().await.unwrap();
    env.put_queue(
        "tasks.algo",
        json!({
            "x-max-priority": 10,
            "x-dead-letter-exchange": "tasks.dlx",
            "x-dead-letter-routing-key": "tasks.dead"
        }),
    )
    .await
    .unwrap();
    let (conn, channel) = env.channel().await.unwrap();

    // Act: the worker's declaration, twice (it is idempotent).
    let first = declare_topology(&channel).await;
    let second = declare_topology(&channel).await;

    // Assert
    let _ = conn.close(200, "bye".into()).await;
    env.cleanup().await;
    first.expect("the worker's arguments are equivalent to the definitions'");
    second.expect("redeclaring is harmless");
}

#[tokio::test]
async fn unusable_messages_are_dead_lettered_without_calling_the_api() {
    // Arrange
    let env = TestEnv::new().await.unwrap();
    let mut worker = spawn_worker(settings(&env.amqp_url, NO_API)).await.unwrap();
    worker.wait_consuming(true, Duration::from_secs(10)).await;
    assert_eq!(worker.healthz().await, Some(200), "healthz while consuming");
    let (conn, channel) = env.channel().await.unwrap();

    // Act
    publish(&channel, "not-json", b"this is not json")
        .await
        .unwrap();
    // An old-style message whose task id is no task id (nor is its message_id).
    let no_task = json!({
        "task_id": "42", "algorithm": "hello",
        "stages": 1, "stage_ms": 0, "timeout_secs": 5, "priority": 0, "input": null
    });
    publish(&channel, "42", &serde_json::to_vec(&no_task).unwrap())
        .await
        .unwrap();

    // Assert: both land in tasks.dead, in order.
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let msg = eventually("a dead letter", Duration::from_secs(10), || async {
            channel
                .basic_get("tasks.dead".into(), BasicGetOptions { no_ack: true })
                .await
                .ok()
                .flatten()
        })
        .await;
        bodies.push(msg.delivery.data.clone());
    }
    assert_eq!(bodies[0], b"this is not json");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&bodies[1]).unwrap(),
        no_task
    );
    assert_eq!(
        worker.metrics.callback_retries.get(),
        0,
        "no callback for a message that names no task"
    );

    let _ = conn.close(200, "bye".into()).await;
    worker.stop(Duration::from_secs(10)).await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn a_held_delivery_is_requeued_at_once_on_shutdown() {
    // Arrange: a valid task whose claim cannot reach the api, so it is held.
    let env = TestEnv::new().await.unwrap();
    let mut worker = spawn_worker(settings(&env.amqp_url, NO_API)).await.unwrap();
    worker.wait_consuming(true, Duration::from_secs(10)).await;
    let (conn, channel) = env.channel().await.unwrap();
    let id = task_model::TaskId::new();
    let task = json!({
        "task_id": id.to_string(), "algorithm": "hello",
        "stages": 1, "stage_ms": 0, "timeout_secs": 5, "priority": 0, "input": null
    });
    publish(
        &channel,
        &id.to_string(),
        &serde_json::to_vec(&task).unwrap(),
    )
    .await
    .unwrap();
    let metrics = worker.metrics.clone();
    eventually("claim retries", Duration::from_secs(10), || async {
        (metrics.callback_retries.get() > 0).then_some(())
    })
    .await;

    // Act
    let started = std::time::Instant::now();
    worker.stop(Duration::from_secs(10)).await.unwrap();

    // Assert: stopped well within the 2 s grace, and the task is back on the queue.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a held delivery does not wait for the grace period ({:?})",
        started.elapsed()
    );
    let back = eventually(
        "the task back on tasks.algo",
        Duration::from_secs(10),
        || async {
            channel
                .basic_get("tasks.algo".into(), BasicGetOptions { no_ack: true })
                .await
                .ok()
                .flatten()
        },
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&back.delivery.data).unwrap(),
        task
    );
    let _ = conn.close(200, "bye".into()).await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_worker_reconnects_after_losing_its_connection() {
    // Arrange
    let env = TestEnv::new().await.unwrap();
    let mut worker = spawn_worker(settings(&env.amqp_url, NO_API)).await.unwrap();
    worker.wait_consuming(true, Duration::from_secs(10)).await;

    // Act: the broker drops the worker's connection (the management API lists
    // connections a few seconds late, so retry until one is found).
    eventually(
        "the worker's connection to be listed",
        Duration::from_secs(15),
        || async { (env.kill_connections().await.unwrap_or(0) > 0).then_some(()) },
    )
    .await;

    // Assert: 503 while reconnecting is too short to observe reliably, but the
    // reconnect is counted and consuming resumes.
    worker.wait_consuming(false, Duration::from_secs(10)).await;
    worker.wait_consuming(true, Duration::from_secs(15)).await;
    assert!(worker.metrics.reconnects.get() >= 1);
    assert_eq!(worker.healthz().await, Some(200));

    worker.stop(Duration::from_secs(10)).await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn healthz_is_503_until_the_broker_answers() {
    // A vhost that does not exist: the worker keeps retrying and is not ready.
    let missing = TestEnv::new().await.unwrap();
    missing.cleanup().await;
    let worker = spawn_worker(settings(&missing.amqp_url, NO_API))
        .await
        .unwrap();
    let metrics = worker.metrics.clone();
    eventually("a reconnect attempt", Duration::from_secs(10), || async {
        (metrics.reconnects.get() >= 1).then_some(())
    })
    .await;
    assert_eq!(worker.healthz().await, Some(503));
    assert!(
        !worker.handle.is_finished(),
        "a broker it cannot reach never ends the worker"
    );
    worker.stop(Duration::from_secs(10)).await.unwrap();
}
