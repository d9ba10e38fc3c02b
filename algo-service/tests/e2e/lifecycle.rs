//! The happy paths and cancels, on real workers.

use std::time::Duration;

use serde_json::json;

use test_support::{body, status_trail, terminal_events, Stack};

#[tokio::test]
async fn a_task_runs_queued_processing_completed_printing_once_per_stage() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("w1").await;

    let id = sys.create(body(3, 50)).await;
    let task = sys.wait_terminal(&id, Duration::from_secs(20)).await;

    assert_eq!(task["status"], "COMPLETED");
    assert_eq!(task["progress"], 100);
    assert_eq!(task["stage"], 3);
    assert_eq!(
        task["result"],
        json!({"stages": 3, "output": "hello world"})
    );
    assert_eq!(task["worker"], "w1");
    let events = sys.events(&id).await;
    assert_eq!(status_trail(&events), ["QUEUED", "PROCESSING", "COMPLETED"]);
    let progress: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "progress")
        .map(|e| e["progress"].as_u64().unwrap())
        .collect();
    assert_eq!(progress, [33, 66, 100]);
    assert_eq!(sys.hellos(), 3, "one hello world per stage");
    assert_eq!(sys.env.queue_depth("tasks.algo").await.unwrap(), Some(0));

    // The worker's own metrics moved with it.
    let metrics = reqwest::get(format!("http://{}/metrics", sys.workers[0].metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "taskforge_worker_ffi_calls_total{outcome=\"completed\"} 3",
        "taskforge_worker_tasks_finished_total{status=\"COMPLETED\"} 1",
        "taskforge_worker_stage_duration_seconds_count 3",
        "taskforge_worker_tasks_in_flight 0",
    ] {
        assert!(
            metrics.contains(line),
            "worker metrics lack {line:?}:\n{metrics}"
        );
    }
    sys.stop().await;
}

#[tokio::test]
async fn many_tasks_across_two_workers_each_complete_exactly_once() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("w1").await;
    sys.add_worker("w2").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            sys.create(json!({"stages": 2, "stage_ms": 20, "priority": i % 10}))
                .await,
        );
    }
    let mut by_worker = std::collections::HashMap::new();
    for id in &ids {
        let task = sys.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(task["status"], "COMPLETED", "{id}");
        assert_eq!(terminal_events(&sys.events(id).await), 1, "{id}");
        *by_worker
            .entry(task["worker"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(sys.hellos(), 40);
    assert_eq!(by_worker.values().sum::<i32>(), 20);
    sys.stop().await;
}

#[tokio::test]
async fn a_task_cancelled_while_queued_is_never_executed() {
    let mut sys = Stack::start(&[]).await;
    // No worker yet: the task waits in the queue.
    let id = sys.create(body(2, 10)).await;
    let res = sys.cancel(&id).await;
    assert_eq!(res.status(), 200);

    sys.add_worker("w1").await;
    // A task created after it runs on the same worker, so once it has
    // completed the cancelled one has been received and skipped.
    let after = sys.create(body(1, 0)).await;
    assert_eq!(
        sys.wait_terminal(&after, Duration::from_secs(20)).await["status"],
        "COMPLETED"
    );
    test_support::eventually("the queue to drain", Duration::from_secs(10), || async {
        (sys.env.queue_depth("tasks.algo").await.unwrap() == Some(0)).then_some(())
    })
    .await;

    let task = sys.task(&id).await;
    assert_eq!(task["status"], "CANCELLED");
    assert!(task["started_at"].is_null());
    assert!(
        !status_trail(&sys.events(&id).await).contains(&"PROCESSING".to_owned()),
        "never claimed"
    );
    assert_eq!(sys.hellos(), 1, "only the later task printed");
    sys.stop().await;
}

#[tokio::test]
async fn cancel_reaches_whichever_of_two_workers_holds_a_running_task() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("w1").await;
    sys.add_worker("w2").await;
    // Stages far longer than the test's patience: only an interrupt can end them.
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(sys.create(body(1, 600_000)).await);
        }
        ids
    };
    let mut holders = std::collections::HashSet::new();
    for id in &ids {
        let task = sys
            .wait_for(id, Duration::from_secs(15), |t| t["status"] == "PROCESSING")
            .await;
        holders.insert(task["worker"].as_str().unwrap().to_owned());
        let res = sys.cancel(id).await;
        assert_eq!(res.status(), 202);
        let task = sys.wait_terminal(id, Duration::from_secs(5)).await;
        assert_eq!(task["status"], "CANCELLED", "{id}");
        assert_eq!(task["stage"], 0);
    }
    assert!(!holders.is_empty());
    assert_eq!(sys.hellos(), 0, "an interrupted stage prints nothing");
    sys.stop().await;
}

#[tokio::test]
async fn a_task_past_its_deadline_times_out_mid_stage() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("w1").await;
    let id = sys
        .create(json!({"stages": 1, "stage_ms": 600_000, "timeout_secs": 1}))
        .await;
    let task = sys.wait_terminal(&id, Duration::from_secs(15)).await;
    assert_eq!(task["status"], "TIMED_OUT");
    assert!(task["error"].is_string());
    assert!(task["finished_at"].is_string());
    assert_eq!(sys.hellos(), 0);
    sys.stop().await;
}
