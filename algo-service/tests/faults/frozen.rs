//! A frozen worker (SIGSTOP: a hung host, a paused VM) keeps its broker
//! connection open, so the broker never hands its deliveries to anyone else:
//! the api's lease sweep re-offers the task once the lease lapsed, another
//! worker takes it over, and the frozen one, when it wakes, stops without a
//! further stage or report.

use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::{body, eventually, Stack};

#[tokio::test]
async fn a_frozen_workers_task_is_taken_over_after_its_lease_and_the_woken_worker_adds_nothing() {
    let mut sys = Stack::start(&["--lease-secs", "2"]).await;
    sys.add_worker("w1").await;
    sys.add_worker("w2").await;
    // 6 stages of 700 ms: about 4 s of work, twice the lease.
    let stages = 6;
    let id = sys.create(body(stages, 700)).await;
    let running = sys
        .wait_for(&id, Duration::from_secs(20), |t| {
            t["status"] == "PROCESSING" && t["stage"].as_u64() >= Some(1)
        })
        .await;
    let holder = running["worker"].as_str().unwrap().to_owned();
    let frozen = sys.workers.iter().position(|w| w.name == holder).unwrap();
    let other = 1 - frozen;

    sys.workers[frozen].signal("STOP");
    let frozen_at = Instant::now();
    let printed_before = sys.workers[frozen].hellos();

    // The other worker takes the task over and completes it, although the
    // frozen worker's connection (and its unacked delivery) stays open.
    let task = sys.wait_terminal(&id, Duration::from_secs(60)).await;
    println!(
        "frozen at stage {}; completed by the other worker {:?} after the freeze (lease 2 s)",
        running["stage"],
        frozen_at.elapsed()
    );
    assert_eq!(task["status"], "COMPLETED", "{task}");
    assert_eq!(task["worker"], sys.workers[other].name.as_str(), "{task}");
    let events = sys.events(&id).await;
    let takeover: Vec<&Value> = events
        .iter()
        .filter(|e| e["detail"] == format!("taken over from {holder}").as_str())
        .collect();
    assert_eq!(takeover.len(), 1, "one takeover: {events:?}");
    let resumed_at = takeover[0]["stage"].as_u64().unwrap() as usize;
    assert_eq!(
        sys.workers[other].hellos(),
        stages as usize - resumed_at,
        "the new holder ran only the stages not recorded"
    );

    // Wake the frozen worker: it learns it lost the task and settles its
    // delivery without running another stage or reporting anything.
    let printed_frozen = sys.workers[frozen].hellos();
    assert_eq!(
        printed_frozen, printed_before,
        "a stopped process prints nothing"
    );
    sys.workers[frozen].signal("CONT");
    eventually(
        "the woken worker to give the task up",
        Duration::from_secs(20),
        || async {
            let idle = sys.workers[frozen]
                .metric("taskforge_worker_tasks_in_flight")
                .await
                == 0.0;
            (idle && sys.workers[frozen].log_lines("no longer ours") >= 1).then_some(())
        },
    )
    .await;
    let printed_after = sys.workers[frozen].hellos();
    println!(
        "the frozen worker printed {printed_before} line(s) before the freeze, {} after waking",
        printed_after - printed_before
    );
    assert_eq!(
        printed_after, printed_before,
        "the woken worker ran no stage after another worker took the task"
    );
    assert_eq!(
        sys.workers[frozen].log_lines("terminal state recorded"),
        0,
        "the woken worker reported no terminal state"
    );

    // Exactly once: one terminal event, every stage recorded once and in
    // order, the task as completed, nothing left in the queue.
    sys.assert_all_completed_once(std::slice::from_ref(&id), Duration::from_secs(1))
        .await;
    let after = sys.events(&id).await;
    assert_eq!(
        after.len(),
        events.len(),
        "nothing recorded after the wake: {after:?}"
    );
    let task = sys.task(&id).await;
    assert_eq!(task["status"], "COMPLETED");
    assert_eq!(task["result"]["stages"], stages);
    sys.assert_drained().await;
    sys.stop().await;
}
