//! `taskctl watch`: following the SSE stream to the end, as plain lines.

use serde_json::json;
use test_support::Stack;

use crate::helpers::{assert_in_order, assert_plain, run, Live, Taskctl};

#[tokio::test]
async fn watch_follows_every_stage_in_order_and_exits_0_when_completed() {
    let api = Stack::start(&[]).await;
    let id = api.create(json!({"stages": 3, "stage_ms": 0})).await;
    let mut live = Live::start(api.taskctl(), &["watch", &id]);
    assert_eq!(
        live.next_line().await,
        format!("{id} QUEUED stage 0/3 (0%)")
    );

    api.claim(&id, "w1").await;
    api.run_to_completion(&id, "w1", 3).await;

    let (out, lines) = live.finish().await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_plain(&lines);
    assert_eq!(
        lines,
        vec![
            format!("{id} QUEUED stage 0/3 (0%)"),
            format!("{id} PROCESSING stage 0/3 (0%)"),
            format!("{id} PROCESSING stage 1/3 (33%)"),
            format!("{id} PROCESSING stage 2/3 (66%)"),
            format!("{id} PROCESSING stage 3/3 (100%)"),
            format!("{id} COMPLETED"),
        ],
        "one line per event, then the final status"
    );
    api.stop().await;
}

#[tokio::test]
async fn watch_exits_1_when_the_running_task_is_cancelled() {
    let api = Stack::start(&[]).await;
    let id = api.create(json!({"stages": 3})).await;
    let mut live = Live::start(api.taskctl(), &["watch", &id]);
    live.next_line().await;
    api.claim(&id, "w1").await;
    api.progress(&id, "w1", 1, 3).await;

    // A running task: 202, its worker is asked to stop.
    let cancel = run(api.taskctl(), &["cancel", &id]).await;
    assert_eq!(cancel.code, 0, "{cancel:?}");
    assert!(
        cancel.stdout.starts_with(&format!("{id} CANCELLING")),
        "{cancel:?}"
    );
    // The worker stops and says so.
    api.report(&id, json!({"status": "CANCELLED", "worker": "w1"}))
        .await;

    let (out, lines) = live.finish().await;
    assert_eq!(out.code, 1, "a cancelled task exits 1: {out:?}");
    assert_plain(&lines);
    assert_in_order(
        &lines,
        &[
            format!("{id} PROCESSING stage 1/3 (33%)"),
            format!("{id} PROCESSING stage 1/3 (33%) cancel requested"),
            format!("{id} CANCELLING stage 1/3 (33%)"),
        ],
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with(&format!("{id} CANCELLED")),
        "{lines:?}"
    );
    api.stop().await;
}

#[tokio::test]
async fn watch_of_several_tasks_follows_each_and_exits_1_when_one_fails() {
    let api = Stack::start(&[]).await;
    let good = api.create(json!({"stages": 2})).await;
    let bad = api.create(json!({"stages": 2})).await;
    let mut live = Live::start(api.taskctl(), &["watch", &good, &bad]);
    // Both streams are open once both have shown their first event.
    live.next_line().await;
    live.next_line().await;

    api.claim(&good, "w1").await;
    api.claim(&bad, "w2").await;
    api.run_to_completion(&good, "w1", 2).await;
    api.progress(&bad, "w2", 1, 2).await;
    api.report(
        &bad,
        json!({"status": "FAILED", "worker": "w2", "error": "the routine broke"}),
    )
    .await;

    let (out, lines) = live.finish().await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_plain(&lines);
    assert_in_order(
        &lines,
        &[
            format!("{good} PROCESSING stage 1/2 (50%)"),
            format!("{good} COMPLETED"),
        ],
    );
    assert_in_order(
        &lines,
        &[
            format!("{bad} PROCESSING stage 1/2 (50%)"),
            format!("{bad} FAILED: the routine broke"),
        ],
    );
    api.stop().await;
}

#[tokio::test]
async fn watch_of_a_finished_task_replays_its_history_and_exits_at_once() {
    let api = Stack::start(&[]).await;
    let id = api.create(json!({"stages": 2})).await;
    api.claim(&id, "w1").await;
    api.run_to_completion(&id, "w1", 2).await;

    let out = run(api.taskctl(), &["watch", &id]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    assert_plain(&lines);
    assert_eq!(
        lines.first().unwrap(),
        &format!("{id} QUEUED stage 0/2 (0%)")
    );
    assert_eq!(lines.last().unwrap(), &format!("{id} COMPLETED"));
    assert_eq!(lines.len(), 5, "{lines:?}");
    api.stop().await;
}

#[tokio::test]
async fn watch_shows_progress_within_a_stage() {
    let api = Stack::start(&[]).await;
    let id = api
        .create(json!({"algorithm": "pi", "stages": 2, "input": {"samples": 1000}}))
        .await;
    let mut live = Live::start(api.taskctl(), &["watch", &id]);
    assert_eq!(
        live.next_line().await,
        format!("{id} QUEUED stage 0/2 (0%)")
    );
    api.claim(&id, "w1").await;
    // Half of stage 1 done, as a worker running pi reports it:
    // floor(100 × 0.5 / 2) = 25.
    let res = reqwest::Client::new()
        .post(api.url(&format!("/internal/tasks/{id}/progress")))
        .bearer_auth(test_support::TOKEN)
        .json(&json!({"progress": 25, "stage": 0, "stages": 2, "worker": "w1"}))
        .send()
        .await
        .expect("progress callback");
    assert_eq!(res.status(), 200);
    api.run_to_completion(&id, "w1", 2).await;

    let (out, lines) = live.finish().await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_in_order(
        &lines,
        &[
            format!("{id} PROCESSING stage 0/2 (0%)"),
            format!("{id} PROCESSING stage 0/2 (25%)"),
            format!("{id} PROCESSING stage 1/2 (50%)"),
            format!("{id} COMPLETED"),
        ],
    );
    api.stop().await;
}
