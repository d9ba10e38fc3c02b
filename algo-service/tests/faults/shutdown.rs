//! SIGTERM: a worker stops within its grace period, exits 0, and whatever it
//! could not finish is finished by another worker; a rolling restart of every
//! worker under load loses nothing.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_support::{eventually, Stack, WorkerOpts};

#[tokio::test]
async fn sigterm_mid_task_exits_0_within_the_grace_period_and_another_worker_finishes_the_task() {
    let mut sys = Stack::start(&["--lease-secs", "3"]).await;
    let opts = WorkerOpts {
        concurrency: 4,
        grace_secs: 2,
    };
    sys.add_worker_with("w1", opts.clone()).await;
    // 3 stages of 1.5 s: longer than the grace period.
    let id = sys.create(json!({"stages": 3, "stage_ms": 1_500})).await;
    sys.wait_for(&id, Duration::from_secs(10), |t| t["worker"] == "w1")
        .await;
    sys.add_worker_with("w2", opts).await;

    let signalled = Instant::now();
    sys.workers[0].signal("TERM");
    let status = sys.workers[0].wait_exit(Duration::from_secs(2 + 5)).await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        took >= Duration::from_millis(1_900) && took < Duration::from_secs(2 + 3),
        "exit {took:?} after SIGTERM; grace is 2 s"
    );
    assert!(sys.workers[0].log_lines("grace period over") >= 1);
    let recorded = sys.task(&id).await["stage"].as_u64().unwrap() as usize;
    let printed_by_w1 = sys.workers[0].hellos();
    assert_eq!(printed_by_w1, recorded, "w1 recorded every stage it ran");
    assert!(recorded < 3, "the task outlived the grace period");

    let task = sys.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(task["status"], "COMPLETED");
    assert_eq!(task["worker"], "w2");
    let events = sys.events(&id).await;
    let takeover: Vec<&Value> = events
        .iter()
        .filter(|e| e["detail"] == "taken over from w1")
        .collect();
    assert_eq!(takeover.len(), 1, "{events:?}");
    assert_eq!(
        takeover[0]["stage"].as_u64().unwrap() as usize,
        recorded,
        "resumed at the recorded stage"
    );
    sys.assert_all_completed_once(std::slice::from_ref(&id), Duration::from_secs(1))
        .await;
    assert_eq!(
        sys.workers[1].hellos(),
        3 - recorded,
        "w2 ran only the rest"
    );
    sys.stop().await;
}

#[tokio::test]
async fn a_rolling_restart_of_every_worker_under_load_loses_nothing() {
    let mut sys = Stack::start(&["--lease-secs", "3"]).await;
    let opts = WorkerOpts {
        concurrency: 3,
        grace_secs: 5,
    };
    sys.add_worker_with("w1", opts.clone()).await;
    sys.add_worker_with("w2", opts.clone()).await;
    let mut ids = Vec::new();
    let mut stages = 0;
    for i in 0..30u64 {
        let n = 2 + i % 2;
        stages += n as usize;
        ids.push(
            sys.create(json!({"stages": n, "stage_ms": 300 + (i * 37) % 300}))
                .await,
        );
    }
    eventually("the first stages", Duration::from_secs(10), || async {
        (sys.hellos() >= 4).then_some(())
    })
    .await;

    for (old, new) in [(0, "w1b"), (1, "w2b")] {
        assert!(
            sys.queue_depth("tasks.algo").await > 0,
            "restarting {} under load",
            sys.workers[old].name
        );
        sys.workers[old].signal("TERM");
        let status = sys.workers[old].wait_exit(Duration::from_secs(5 + 5)).await;
        assert_eq!(
            status.code(),
            Some(0),
            "{} exit: {status}",
            sys.workers[old].name
        );
        sys.add_worker_with(new, opts.clone()).await;
    }

    sys.assert_all_completed_once(&ids, Duration::from_secs(60))
        .await;
    assert_eq!(
        sys.hellos(),
        stages,
        "every stage ran exactly once across the restarts"
    );
    sys.assert_drained().await;
    sys.stop().await;
}
