//! Retries: a retryable stage failure schedules another attempt after the
//! contract's jittered backoff, which resumes at the failed stage; fatal
//! errors and the last attempt fail; a task that keeps killing its workers
//! ends `worker_lost` after `MAX_TAKEOVERS`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use test_support::{status_trail, Stack, WorkerOpts};

fn at(event: &Value) -> DateTime<Utc> {
    event["at"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_stage_failing_in_two_attempts_reruns_alone_and_completes_in_the_third() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("w1").await;
    let backoff = 400_i64;
    let id = sys
        .create(json!({
            "stages": 4, "stage_ms": 50, "max_attempts": 3, "retry_backoff_ms": backoff,
            "input": {"fail": {"at_stage": 3, "attempts": 2, "mode": "error"}}
        }))
        .await;
    let task = sys.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(task["status"], "COMPLETED", "{task}");
    assert_eq!(task["attempt"], 3);
    assert_eq!(task["stage"], 4);
    assert_eq!(
        sys.hellos(),
        4,
        "stages 1-2 once, the failed stage prints nothing, then 3 and 4 once"
    );
    let errors = task["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{task}");
    assert_eq!(
        (errors[0]["attempt"].as_u64(), errors[1]["attempt"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(errors
        .iter()
        .all(|e| e["error"].as_str().is_some_and(|e| !e.is_empty())));

    let events = sys.events(&id).await;
    assert_eq!(
        status_trail(&events),
        [
            "QUEUED",
            "PROCESSING",
            "SCHEDULED",
            "QUEUED",
            "PROCESSING",
            "SCHEDULED",
            "QUEUED",
            "PROCESSING",
            "COMPLETED"
        ]
    );
    let status: Vec<&Value> = events.iter().filter(|e| e["type"] == "status").collect();
    for (k, pair) in [(1_u32, 2_usize), (2, 5)] {
        let (scheduled, queued) = (status[pair], status[pair + 1]);
        assert!(
            scheduled["detail"]
                .as_str()
                .unwrap()
                .starts_with(&format!("attempt {k} failed")),
            "{scheduled}"
        );
        // The timing assertion the issue asks for: each wait within [d/2, d]
        // plus the 1 s publishing allowance. The event times are the Redis
        // clock; the due time was drawn by the api just before the SCHEDULED
        // event was written, hence 25 ms of slack below.
        let d = backoff << (k - 1);
        let wait = (at(queued) - at(scheduled)).num_milliseconds();
        assert!(
            wait >= d / 2 - 25 && wait <= d + 1000,
            "wait before attempt {} was {wait} ms, d = {d}",
            k + 1
        );
    }
    // Each attempt resumed at the recorded stage: stages recorded once each.
    let stages: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "progress")
        .map(|e| e["stage"].as_u64().unwrap())
        .collect();
    assert_eq!(stages, [1, 2, 3, 4]);
    sys.stop().await;
}

#[tokio::test]
async fn a_fatal_error_fails_in_the_first_attempt() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("w1").await;
    let id = sys
        .create(json!({
            "stages": 3, "stage_ms": 20, "max_attempts": 3,
            "input": {"fail": {"at_stage": 2, "mode": "fatal"}}
        }))
        .await;
    let task = sys.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(task["status"], "FAILED", "{task}");
    assert_eq!(task["attempt"], 1);
    assert_eq!(task["errors"].as_array().unwrap().len(), 1, "{task}");
    assert_eq!(sys.hellos(), 1);
    assert_eq!(
        status_trail(&sys.events(&id).await),
        ["QUEUED", "PROCESSING", "FAILED"]
    );
    sys.stop().await;
}

#[tokio::test]
async fn a_retryable_error_in_the_last_attempt_fails() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("w1").await;
    let id = sys
        .create(json!({
            "stages": 2, "stage_ms": 10, "max_attempts": 2, "retry_backoff_ms": 100,
            "input": {"fail": {"at_stage": 1, "attempts": 5, "mode": "error"}}
        }))
        .await;
    let task = sys.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(task["status"], "FAILED", "{task}");
    assert_eq!(task["attempt"], 2);
    assert_eq!(task["errors"].as_array().unwrap().len(), 2, "{task}");
    assert!(task["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(sys.hellos(), 0);
    assert_eq!(
        status_trail(&sys.events(&id).await),
        [
            "QUEUED",
            "PROCESSING",
            "SCHEDULED",
            "QUEUED",
            "PROCESSING",
            "FAILED"
        ]
    );
    sys.stop().await;
}

#[tokio::test]
async fn a_task_that_kills_its_workers_fails_worker_lost_after_max_takeovers() {
    let mut sys = Stack::start(&["--lease-secs", "1", "--max-takeovers", "2"]).await;
    let crash = [("ALLOW_CRASH_INPUT", "1")];
    sys.add_worker_with_env("w0", WorkerOpts::default(), &crash)
        .await;
    let id = sys
        .create(json!({"stages": 2, "stage_ms": 10, "input": {"fail": {"at_stage": 1, "mode": "crash"}}}))
        .await;
    let mut deaths = 0;
    let task = loop {
        assert!(deaths <= 3, "more than MAX_TAKEOVERS + 1 worker deaths");
        let last = sys.workers.len() - 1;
        if let Some(task) = death_or_end(&mut sys, last, &id).await {
            break task;
        }
        deaths += 1;
        let name = format!("w{deaths}");
        sys.add_worker_with_env(&name, WorkerOpts::default(), &crash)
            .await;
    };
    assert_eq!(task["error"], "worker_lost", "{task}");
    assert_eq!(task["takeovers"], 2);
    assert_eq!(task["attempt"], 1, "takeovers are not attempts");
    assert_eq!(deaths, 3, "the first holder and two takeovers died");
    sys.stop().await;
}

/// Polls until worker `last` exits (`None`) or the task FAILED (`Some`), 30 s at most.
async fn death_or_end(sys: &mut Stack, last: usize, id: &str) -> Option<Value> {
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < end {
        let task = sys.task(id).await;
        if task["status"] == "FAILED" {
            return Some(task);
        }
        if sys.workers[last].child.try_wait().ok().flatten().is_some() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("neither a worker death nor the end within 30 s");
}
