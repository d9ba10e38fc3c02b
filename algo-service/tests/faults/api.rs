//! The api stopped while workers run, and started again on the same port.

use std::time::Duration;

use test_support::eventually;

use crate::harness::{body, Backends, Stack, WorkerOpts};

#[tokio::test]
async fn the_api_restarted_on_its_port_while_workers_run_loses_nothing() {
    let mut sys = Stack::start(Backends::shared().await, &["--lease-secs", "10"]).await;
    sys.wait_api_connected(Duration::from_secs(10)).await;
    sys.add_worker("w1", WorkerOpts::default()).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(sys.create(body(4, 300)).await);
    }
    for id in &ids {
        sys.wait_for(id, Duration::from_secs(15), |t| {
            t["stage"].as_u64().unwrap_or(0) >= 1
        })
        .await;
    }

    sys.stop_api().await;
    // The stages go on; every report (progress, then COMPLETED) is retried.
    eventually(
        "every stage to run while the api is down",
        Duration::from_secs(10),
        || async { (sys.hellos() == 16).then_some(()) },
    )
    .await;
    eventually(
        "callbacks to be retried",
        Duration::from_secs(10),
        || async {
            let retries = sys.workers[0]
                .metric("taskforge_worker_callback_retries_total")
                .await;
            (retries >= 4.0).then_some(())
        },
    )
    .await;

    sys.start_api().await;
    sys.wait_api_connected(Duration::from_secs(10)).await;
    sys.assert_all_completed_once(&ids, Duration::from_secs(30))
        .await;
    assert_eq!(sys.hellos(), 16, "no stage ran twice");
    for id in &ids {
        assert_eq!(sys.task(id).await["worker"], "w1");
    }
    eventually("tasks.algo to drain", Duration::from_secs(10), || async {
        (sys.queue_depth("tasks.algo").await == 0).then_some(())
    })
    .await;
    sys.stop().await;
}

/// A worker that ran every stage while the api was down, then died: had it
/// acked any delivery before the api recorded the outcome, that task would
/// stay PROCESSING forever. Instead another worker takes each one over.
#[tokio::test]
async fn a_worker_killed_while_the_api_was_down_had_acked_nothing() {
    let mut sys = Stack::start(Backends::shared().await, &["--lease-secs", "4"]).await;
    sys.wait_api_connected(Duration::from_secs(10)).await;
    sys.add_worker("w1", WorkerOpts::default()).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(sys.create(body(3, 200)).await);
    }
    for id in &ids {
        sys.wait_for(id, Duration::from_secs(15), |t| t["status"] == "PROCESSING")
            .await;
    }

    sys.stop_api().await;
    eventually(
        "w1 to run every stage while the api is down",
        Duration::from_secs(10),
        || async { (sys.hellos() == 9).then_some(()) },
    )
    .await;
    sys.workers[0].signal("KILL");
    sys.workers[0].wait_exit(Duration::from_secs(5)).await;

    sys.start_api().await;
    sys.wait_api_connected(Duration::from_secs(10)).await;
    sys.add_worker("w2", WorkerOpts::default()).await;
    sys.assert_all_completed_once(&ids, Duration::from_secs(40))
        .await;
    for id in &ids {
        assert_eq!(
            sys.task(id).await["worker"],
            "w2",
            "taken over once w1's lease ran out"
        );
    }
    eventually("tasks.algo to drain", Duration::from_secs(10), || async {
        (sys.queue_depth("tasks.algo").await == 0).then_some(())
    })
    .await;
    sys.stop().await;
}
