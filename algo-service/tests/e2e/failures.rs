//! Workers dying, and cancels racing completion.

use std::time::Duration;

use serde_json::{json, Value};

use test_support::{body, terminal_events, Stack};

#[tokio::test]
async fn a_worker_killed_mid_task_is_replaced_and_the_task_resumes_at_its_recorded_stage() {
    let mut sys = Stack::start(&["--lease-secs", "2"]).await;
    let a = sys.add_worker("wa").await;
    let id = sys.create(body(4, 600)).await;

    // Let worker A record at least one stage, then kill it without warning.
    test_support::eventually(
        "a first recorded stage",
        Duration::from_secs(20),
        || async { (sys.task(&id).await["stage"].as_u64().unwrap() >= 1).then_some(()) },
    )
    .await;
    sys.workers[a].child.start_kill().unwrap();
    sys.workers[a].child.wait().await.unwrap();
    let recorded_by_a = sys.task(&id).await["stage"].as_u64().unwrap() as usize;
    let printed_by_a = sys.hellos();

    sys.add_worker("wb").await;
    let task = sys.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(task["status"], "COMPLETED");
    assert_eq!(task["worker"], "wb");

    let events = sys.events(&id).await;
    assert_eq!(terminal_events(&events), 1, "completed once");
    let takeover: Vec<&Value> = events
        .iter()
        .filter(|e| e["detail"] == "taken over from wa")
        .collect();
    assert_eq!(takeover.len(), 1, "{events:?}");
    assert_eq!(
        takeover[0]["stage"].as_u64().unwrap() as usize,
        recorded_by_a,
        "resumed at the recorded stage"
    );
    let stages: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "progress")
        .map(|e| e["stage"].as_u64().unwrap())
        .collect();
    assert_eq!(stages, [1, 2, 3, 4], "every stage recorded once, in order");
    // B ran exactly the stages A had not recorded.
    let printed_by_b = sys.hellos() - printed_by_a;
    assert_eq!(printed_by_b, 4 - recorded_by_a);
    sys.stop().await;
}

#[tokio::test]
async fn completion_racing_cancel_ends_in_exactly_one_terminal_state_every_time() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("w1").await;
    sys.add_worker("w2").await;
    let mut ids = Vec::new();
    for round in 0..30u64 {
        let id = sys
            .create(json!({"stages": 1, "stage_ms": (round * 7) % 60}))
            .await;
        ids.push((round, id));
    }
    // Cancel each at a different moment relative to its completion.
    for (round, id) in &ids {
        if round % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(round % 20)).await;
        }
        let res = sys.cancel(id).await;
        assert!(
            [200, 202, 409].contains(&res.status().as_u16()),
            "cancel answered {}",
            res.status()
        );
    }
    for (round, id) in &ids {
        let task = sys.wait_terminal(id, Duration::from_secs(20)).await;
        let status = task["status"].as_str().unwrap();
        assert!(
            ["COMPLETED", "CANCELLED"].contains(&status),
            "round {round}: {status}"
        );
        let events = sys.events(id).await;
        assert_eq!(terminal_events(&events), 1, "round {round}: {events:?}");
    }
    sys.stop().await;
}
