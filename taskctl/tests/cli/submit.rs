//! `taskctl submit`, with and without `--wait`.

use serde_json::json;
use test_support::Stack;

use crate::helpers::{assert_in_order, assert_plain, run, Live, Taskctl};

#[tokio::test]
async fn submit_prints_the_id_and_the_task_is_queued_in_the_api() {
    let api = Stack::start(&[]).await;
    let out = run(api.taskctl(), &["submit"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let id = out.stdout.trim();
    assert_eq!(out.stdout.lines().count(), 1, "just the id: {out:?}");
    let task = api.task(id).await;
    assert_eq!(task["task_id"], id);
    assert_eq!(task["status"], "QUEUED");
    api.stop().await;
}

#[tokio::test]
async fn submit_sends_every_option_and_an_idempotency_key_replays_the_first_task() {
    let api = Stack::start(&[]).await;
    let args = [
        "submit",
        "--stages",
        "4",
        "--stage-ms",
        "250",
        "--timeout",
        "77",
        "--priority",
        "7",
        "--input",
        r#"{"name": "x", "n": [1, 2]}"#,
        "--idempotency-key",
        "order-42",
    ];
    let first = run(api.taskctl(), &args).await;
    assert_eq!(first.code, 0, "{first:?}");
    let id = first.stdout.trim();
    let task = api.task(id).await;
    assert_eq!(
        (
            &task["stages"],
            &task["stage_ms"],
            &task["timeout_secs"],
            &task["priority"],
            &task["input"]
        ),
        (
            &json!(4),
            &json!(250),
            &json!(77),
            &json!(7),
            &json!({"name": "x", "n": [1, 2]})
        )
    );

    let replay = run(api.taskctl(), &args).await;
    assert_eq!(replay.code, 0, "{replay:?}");
    assert_eq!(replay.stdout.trim(), id, "the replay names the first task");
    assert!(
        replay.stderr.contains("Idempotency-Key"),
        "the replay is pointed out: {replay:?}"
    );

    // The same key with other options is the api's 409.
    let mut other = args.to_vec();
    other[2] = "5";
    let conflict = run(api.taskctl(), &other).await;
    assert_eq!(conflict.code, 5, "{conflict:?}");
    assert!(conflict.one_error_line().contains("idempotency_conflict"));
    api.stop().await;
}

#[tokio::test]
async fn submit_wait_prints_the_id_then_follows_the_task_to_completed() {
    let api = Stack::start(&[]).await;
    let mut live = Live::start(
        api.taskctl(),
        &["submit", "--stages", "3", "--stage-ms", "0", "--wait"],
    );
    let id = live.next_line().await;
    assert_eq!(api.task(&id).await["status"], "QUEUED");
    // The first event line means the stream is open; now play the worker.
    assert_eq!(
        live.next_line().await,
        format!("{id} QUEUED stage 0/3 (0%)")
    );
    api.claim(&id, "w1").await;
    api.run_to_completion(&id, "w1", 3).await;

    let (out, lines) = live.finish().await;
    assert_eq!(out.code, 0, "COMPLETED exits 0: {out:?}");
    assert_plain(&lines);
    assert_in_order(
        &lines,
        &[
            format!("{id} PROCESSING stage 0/3 (0%)"),
            format!("{id} PROCESSING stage 1/3 (33%)"),
            format!("{id} PROCESSING stage 2/3 (66%)"),
            format!("{id} PROCESSING stage 3/3 (100%)"),
            format!("{id} COMPLETED"),
        ],
    );
    assert_eq!(lines.last().unwrap(), &format!("{id} COMPLETED"));
    api.stop().await;
}

#[tokio::test]
async fn submit_with_a_delay_or_a_time_schedules_the_task_and_get_shows_when() {
    let api = Stack::start(&[]).await;
    let out = run(
        api.taskctl(),
        &["submit", "--delay", "10m", "--max-attempts", "5"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.trim().to_owned();
    let task = api.task(&id).await;
    assert_eq!(task["status"], "SCHEDULED");
    assert_eq!(task["max_attempts"], 5);
    let due: chrono::DateTime<chrono::Utc> =
        task["scheduled_for"].as_str().unwrap().parse().unwrap();
    let ahead = due - chrono::Utc::now();
    assert!(
        ahead > chrono::Duration::minutes(9) && ahead <= chrono::Duration::minutes(10),
        "{ahead}"
    );

    let at = "2099-01-01T00:00:00Z";
    let out = run(api.taskctl(), &["submit", "--at", at]).await;
    assert_ne!(
        out.code, 0,
        "more than 30 days ahead is refused by the api: {out:?}"
    );

    let out = run(api.taskctl(), &["get", &id]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("SCHEDULED"), "{}", out.stdout);
    assert!(out.stdout.contains("1 of 5"), "{}", out.stdout);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("due ")),
        "{}",
        out.stdout
    );
    api.stop().await;
}
