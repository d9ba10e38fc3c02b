//! The stored task is the truth: messages only name it. Forged messages are
//! published straight to `tasks.algo` for real stored tasks, and a real worker
//! must run (or fail, with the reason) the task as it was created.

use std::time::Duration;

use serde_json::{json, Value};
use test_support::{body, publish, status_trail, Stack};

/// Creates a task while no worker runs and takes its real message off the
/// queue, so only what the test publishes names it.
async fn stored_task_without_its_message(sys: &Stack, ch: &lapin::Channel, task: Value) -> String {
    let id = sys.create(task).await;
    let real = sys.next_task_message(ch).await;
    assert_eq!(
        real.properties.message_id().as_ref().map(|m| m.as_str()),
        Some(id.as_str())
    );
    id
}

fn forged(id: &str, fields: Value) -> Vec<u8> {
    let mut message = json!({"task_id": id, "algorithm": "hello", "priority": 0, "input": null});
    for (k, v) in fields.as_object().unwrap() {
        message[k] = v.clone();
    }
    serde_json::to_vec(&message).unwrap()
}

#[tokio::test]
async fn a_forged_stage_count_runs_the_stored_tasks_stages() {
    let mut sys = Stack::start(&[]).await;
    let (conn, ch) = sys.env.channel().await.expect("a channel into the vhost");
    let three = stored_task_without_its_message(&sys, &ch, body(3, 20)).await;
    let two = stored_task_without_its_message(&sys, &ch, body(2, 20)).await;
    let fewer = forged(
        &three,
        json!({"stages": 1, "stage_ms": 0, "timeout_secs": 1}),
    );
    let more = forged(&two, json!({"stages": 4_294_967_295_u64, "stage_ms": 1}));
    publish(&ch, &three, &fewer).await.expect("published");
    publish(&ch, &two, &more).await.expect("published");

    sys.add_worker("w1").await;
    let ids = [three.clone(), two.clone()];
    // Completed once each, every stored stage recorded once, in order.
    sys.assert_all_completed_once(&ids, Duration::from_secs(20))
        .await;
    assert_eq!(
        sys.hellos(),
        3 + 2,
        "the stored stages ran, no more, no fewer"
    );
    for (id, stages) in [(&three, 3), (&two, 2)] {
        let task = sys.task(id).await;
        assert_eq!(task["result"]["stages"], stages, "{task}");
        assert_eq!(task["stage"], stages, "{task}");
    }
    sys.assert_drained().await;
    let _ = conn.close(200, "done".into()).await;
    sys.stop().await;
}

#[tokio::test]
async fn messages_that_name_a_real_task_with_unusable_fields_run_the_stored_task() {
    let mut sys = Stack::start(&[]).await;
    let (conn, ch) = sys.env.channel().await.expect("a channel into the vhost");
    let mut ids = Vec::new();
    // What each message carries beside the task id; `None`: not a task
    // message at all, so its message_id (the task id) names the task.
    let extras = [
        Some(json!({"stages": 0})),
        Some(json!({"algorithm": "sort"})),
        Some(json!({"stages": "many", "stage_ms": -1, "priority": 99})),
        None,
    ];
    for _ in &extras {
        ids.push(stored_task_without_its_message(&sys, &ch, body(2, 0)).await);
    }
    for (extra, id) in extras.iter().zip(&ids) {
        let message = match extra {
            Some(fields) => forged(id, fields.clone()),
            None => b"{\"task_id\": not json".to_vec(),
        };
        publish(&ch, id, &message).await.expect("published");
    }

    sys.add_worker("w1").await;
    sys.assert_all_completed_once(&ids, Duration::from_secs(20))
        .await;
    assert_eq!(sys.hellos(), 2 * ids.len());
    sys.assert_drained().await;
    let _ = conn.close(200, "done".into()).await;
    sys.stop().await;
}

#[tokio::test]
async fn a_stored_task_the_worker_cannot_run_is_failed_with_the_reason_not_left_queued() {
    let mut sys = Stack::start(&[]).await;
    let id = sys.create(body(2, 0)).await;
    // As a newer api might store it: an algorithm this worker does not have.
    let mut redis = sys.env.redis().await.expect("redis");
    let _: i64 = redis::cmd("HSET")
        .arg(format!("{}task:{{{id}}}", sys.env.redis_prefix))
        .arg("algorithm")
        .arg("sort")
        .query_async(&mut redis)
        .await
        .expect("redis answers");

    sys.add_worker("w1").await;
    let task = sys.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(task["status"], "FAILED", "{task}");
    let error = task["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("does not run algorithm \"sort\""),
        "the reason is recorded: {error}"
    );
    assert_eq!(sys.hellos(), 0, "nothing ran");
    let events = sys.events(&id).await;
    assert_eq!(status_trail(&events), ["QUEUED", "PROCESSING", "FAILED"]);
    // The message was consumed, not dead-lettered or requeued.
    sys.assert_drained().await;
    sys.stop().await;
}
