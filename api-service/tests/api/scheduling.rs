//! Delayed tasks: `run_at` / `delay_ms`, the SCHEDULED state, the due sweep
//! (sharded, every api process taking part, each due task published once),
//! and the validation of the time and retry fields.

use std::{collections::HashMap, sync::Arc, time::Duration};

use api_service::{config::Settings, service, startup::Application, state::AppState};
use chrono::{DateTime, Utc};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use task_model::CreateTaskRequest;
use test_support::{eventually, status_trail};

use crate::helpers::{spawn_app, TestApp, TOKEN};

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str().expect("a time").parse().expect("RFC 3339")
}

#[tokio::test]
async fn bad_time_and_retry_fields_are_400_naming_the_field() {
    let app = spawn_app().await;
    let soon = (Utc::now() + chrono::Duration::seconds(60)).to_rfc3339();
    let far = (Utc::now() + chrono::Duration::days(31)).to_rfc3339();
    for (body, field) in [
        (json!({"run_at": soon, "delay_ms": 10}), "delay_ms"),
        (
            json!({"retry_backoff_ms": 5000, "retry_backoff_max_ms": 4000}),
            "retry_backoff_max_ms",
        ),
        (json!({"max_attempts": 0}), "max_attempts"),
        (json!({"max_attempts": 101}), "max_attempts"),
        (json!({"retry_backoff_ms": 3_600_001}), "retry_backoff_ms"),
        (json!({"delay_ms": 2_592_000_001_i64}), "delay_ms"),
        (json!({"run_at": "next tuesday"}), "run_at"),
        (json!({"run_at": far}), "run_at"),
    ] {
        let res = app.post_task(body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["field"], field, "{body}: {err}");
    }
    let res = app.post_task(json!({"max_attempts": 7})).await;
    let id = res.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let task = app.task(&id).await;
    assert_eq!(
        (task["max_attempts"].as_u64(), task["attempt"].as_u64()),
        (Some(7), Some(1))
    );
    assert_eq!(
        (task["takeovers"].as_u64(), &task["errors"]),
        (Some(0), &json!([]))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_task_due_in_3_s_is_scheduled_then_queued_and_published_within_1_s_of_its_time() {
    let app = spawn_app().await;
    let due = Utc::now() + chrono::Duration::seconds(3);
    let due_text = due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let due: DateTime<Utc> = due_text.parse().unwrap();
    let res = app
        .post_task(json!({"run_at": due_text, "stages": 1}))
        .await;
    assert_eq!(res.status(), 202);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["status"], "SCHEDULED");
    let id = created["task_id"].as_str().unwrap().to_owned();
    let task = app.task(&id).await;
    assert_eq!(task["status"], "SCHEDULED");
    assert_eq!(at(&task["scheduled_for"]), due);
    assert_eq!(
        app.queue_depth("tasks.algo").await,
        0,
        "not published while scheduled"
    );

    let queued = app
        .wait_for(&id, Duration::from_secs(10), |t| t["status"] == "QUEUED")
        .await;
    assert!(queued["scheduled_for"].is_null());
    let events = app.events(&id).await;
    let trail: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(trail, ["SCHEDULED", "QUEUED"]);
    let late = at(&events[1]["at"]) - due;
    // The one timing assertion the issue asks for: QUEUED within 1 s of its time.
    assert!(
        late >= chrono::Duration::zero() && late <= chrono::Duration::seconds(1),
        "QUEUED {late} after its time"
    );
    let channel = app.amqp().await;
    let got = channel
        .basic_get(
            "tasks.algo".into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the due task's message");
    let message: Value = serde_json::from_slice(&got.delivery.data).unwrap();
    assert_eq!(message["task_id"], id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn a_scheduled_task_cancels_at_once_and_is_never_published() {
    let app = spawn_app().await;
    let res = app.post_task(json!({"delay_ms": 1500})).await;
    let id = res.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app.cancel(&id).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "CANCELLED");
    let task = app.task(&id).await;
    assert_eq!(task["status"], "CANCELLED");
    assert!(task["started_at"].is_null() && task["scheduled_for"].is_null());
    // Once its time passed, the sweep drops the stale entry without publishing.
    let state = app.state();
    eventually(
        "the due index to empty",
        Duration::from_secs(10),
        || async { (state.store.due_count().await.unwrap() == 0).then_some(()) },
    )
    .await;
    assert_eq!(app.queue_depth("tasks.algo").await, 0);
    assert_eq!(
        status_trail(&app.events(&id).await),
        ["SCHEDULED", "CANCELLED"]
    );
    app.stop().await;
}

/// A second api process on the same Redis prefix and vhost as `app`.
async fn second_api(app: &TestApp) -> (Arc<AppState>, actix_web::dev::ServerHandle) {
    let args = [
        "api-service",
        "--bind",
        "127.0.0.1:0",
        "--redis-prefix",
        &app.env.redis_prefix,
        "--redis-url",
        &app.env.redis_url,
        "--amqp-url",
        &app.env.amqp_url,
        "--callback-token",
        TOKEN,
        "--workers",
        "1",
    ];
    let built = Application::build(Settings::try_parse_from(args).unwrap())
        .await
        .expect("a second api builds");
    let (state, handle) = (built.state(), built.handle());
    tokio::spawn(built.run_until_stopped());
    tokio::time::timeout(Duration::from_secs(30), state.publisher.wait_connected())
        .await
        .expect("the second api connects");
    (state, handle)
}

#[tokio::test]
async fn tasks_due_at_the_same_second_are_each_published_once_by_two_api_processes() {
    const TASKS: usize = 10_000;
    let app = spawn_app().await;
    let (other, handle) = second_api(&app).await;
    let first = app.state();
    // All due at one instant, far enough ahead for the creates to finish.
    let due = Utc::now() + chrono::Duration::seconds(30);
    let request = CreateTaskRequest {
        run_at: Some(due.to_rfc3339()),
        stages: Some(1),
        ..CreateTaskRequest::default()
    };
    let created = futures_util::stream::iter(0..TASKS)
        .map(|i| {
            let state = if i % 2 == 0 { &first } else { &other };
            service::create::create(state, request.clone(), None)
        })
        .buffer_unordered(32);
    let ids: Vec<String> = created
        .map(|c| c.expect("created").task.task_id.to_string())
        .collect()
        .await;
    assert!(Utc::now() < due, "the creates took too long for this test");
    assert_eq!(first.store.due_count().await.unwrap(), TASKS as u64);

    eventually(
        "every task to be QUEUED",
        Duration::from_secs(60),
        || async { (first.store.due_count().await.unwrap() == 0).then_some(()) },
    )
    .await;
    // Every message was confirmed before its entry left the index: all are
    // in the queue now. Take them all and count each task's.
    let channel = app.amqp().await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    while let Some(got) = channel
        .basic_get(
            "tasks.algo".into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let message: Value = serde_json::from_slice(&got.delivery.data).unwrap();
        *seen
            .entry(message["task_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published more than once: {twice:?}");
    let missing = ids.iter().filter(|id| !seen.contains_key(*id)).count();
    assert_eq!(
        (missing, seen.len()),
        (0, TASKS),
        "each task published exactly once"
    );
    let by_first = first.metrics.due_lateness.get_sample_count();
    let by_other = other.metrics.due_lateness.get_sample_count();
    assert_eq!(by_first + by_other, TASKS as u64, "each fired once");
    assert!(
        by_first > 0 && by_other > 0,
        "both processes took part: {by_first} + {by_other}"
    );
    for id in ids.iter().step_by(97) {
        assert_eq!(app.task(id).await["status"], "QUEUED");
    }
    handle.stop(false).await;
    app.stop().await;
}

/// Creates `count` SCHEDULED tasks due at `due(i)`, 64 at a time, through
/// the create service of `state`; answers their ids and due times.
async fn schedule_many(
    state: &AppState,
    count: usize,
    due: impl Fn(usize) -> DateTime<Utc>,
) -> Vec<(String, DateTime<Utc>)> {
    futures_util::stream::iter(0..count)
        .map(|i| {
            let at = due(i);
            let request = CreateTaskRequest {
                run_at: Some(at.to_rfc3339()),
                stages: Some(1),
                ..CreateTaskRequest::default()
            };
            async move {
                let created = service::create::create(state, request, None)
                    .await
                    .expect("created");
                (created.task.task_id.to_string(), at)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

/// How late due tasks reach the queue with many tasks scheduled:
/// `DUE_BENCH_TASKS` (default 100,000) scheduled an hour ahead, then 2,000
/// due evenly over 20 s; each one's lateness is its message's arrival (a
/// consumer on `tasks.algo`) minus its `run_at`. Prints p50/p99/max.
#[tokio::test]
#[ignore = "a measurement: cargo test -p api-service --test api due_lateness -- --ignored --nocapture"]
async fn due_lateness_with_many_tasks_scheduled() {
    let background: usize = std::env::var("DUE_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    const MEASURED: usize = 2_000;
    let app = spawn_app().await;
    let state = app.state();
    let started = std::time::Instant::now();
    let later = Utc::now() + chrono::Duration::hours(1);
    schedule_many(&state, background, |_| later).await;
    let created_in = started.elapsed();
    let t0 = Utc::now() + chrono::Duration::seconds(5);
    let window_ms = 20_000 / MEASURED as i64;
    let measured = schedule_many(&state, MEASURED, |i| {
        t0 + chrono::Duration::milliseconds(i as i64 * window_ms)
    })
    .await;
    let due: HashMap<String, DateTime<Utc>> = measured.into_iter().collect();

    let channel = app.amqp().await;
    let mut consumer = channel
        .basic_consume(
            "tasks.algo".into(),
            "bench".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let mut late_ms = Vec::with_capacity(MEASURED);
    while late_ms.len() < MEASURED {
        let delivery = tokio::time::timeout(Duration::from_secs(60), consumer.next())
            .await
            .expect("due tasks keep coming")
            .expect("the consumer runs")
            .expect("a delivery");
        let arrived = Utc::now();
        let message: Value = serde_json::from_slice(&delivery.data).unwrap();
        if let Some(at) = due.get(message["task_id"].as_str().unwrap()) {
            late_ms.push((arrived - *at).num_milliseconds());
        }
    }
    late_ms.sort_unstable();
    let pct = |p: usize| late_ms[(late_ms.len() * p / 100).min(late_ms.len() - 1)];
    println!(
        "due lateness with {} scheduled ({background} created in {:.1} s): p50 {} ms, p99 {} ms, max {} ms",
        background + MEASURED,
        created_in.as_secs_f64(),
        pct(50),
        pct(99),
        late_ms[late_ms.len() - 1]
    );
    unlink_prefix(&app.env.redis_url, &app.env.redis_prefix).await;
    assert!(
        pct(99) <= 1000,
        "p99 lateness {} ms is over the contract's 1 s",
        pct(99)
    );
    app.stop().await;
}

/// Removes the bench's keys itself: the harness's cleanup has a deadline
/// that 200,000 keys overrun.
async fn unlink_prefix(url: &str, prefix: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cursor = 0_u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(5000)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// An api process that dies while firing due tasks, at each step of it:
/// after claiming entries, after putting tasks into the outbox, after
/// making them QUEUED (before publishing). The next api loses none of them
/// and publishes each once.
#[tokio::test]
async fn an_api_dying_mid_fire_loses_no_due_task_and_publishes_none_twice() {
    const TASKS: usize = 300;
    // REPUBLISH_AFTER_SECS stays 10 s: the outbox sweep publishes only the
    // tasks the dead process left QUEUED, well after the due sweep settled
    // the others (a shorter one could race it into a duplicate, which the
    // contract allows after a crash but this test counts).
    let mut app = spawn_app().await;
    let store = app.state().store.clone();
    app.stop_api().await;

    let due = Utc::now() + chrono::Duration::milliseconds(300);
    let request = CreateTaskRequest {
        stages: Some(1),
        ..CreateTaskRequest::default()
    };
    let task = task_model::NewTask::parse(request, task_model::TaskDefaults::default()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..TASKS {
        let id = task_model::TaskId::new();
        store
            .create_scheduled(&id, &task, due.timestamp_millis())
            .await
            .unwrap();
        ids.push(id.to_string());
    }
    // The dying process: it claims every due entry (held 2 s), then stops
    // at one of three steps, a third of the tasks each. The entries come due
    // together, but a pass over the shards may straddle that moment: claim
    // until every one is held (what is claimed stays held meanwhile).
    let mut entries = Vec::new();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
    while entries.len() < TASKS {
        assert!(
            tokio::time::Instant::now() < give_up,
            "only {} of {TASKS} entries came due",
            entries.len()
        );
        for shard in 0..api_service::store::DUE_SHARDS {
            let (_, got) = store
                .claim_due(shard, 1000, Duration::from_secs(2))
                .await
                .unwrap();
            entries.extend(got);
        }
        if entries.len() < TASKS {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(entries.len(), TASKS);
    for (i, entry) in entries.iter().enumerate() {
        if i % 3 >= 1 {
            store.enter_outbox(&entry.id).await.unwrap();
        }
        if i % 3 == 2 {
            assert_eq!(
                store.make_due(entry).await.unwrap().code,
                api_service::store::Code::Ok
            );
        }
    }

    app.start_api().await;
    let state = app.state();
    eventually(
        "every task to be QUEUED and published",
        Duration::from_secs(30),
        || async {
            let indexed = state.store.due_count().await.unwrap();
            let outbox = state
                .store
                .unpublished_before(i64::MAX, 10)
                .await
                .unwrap()
                .len();
            (indexed == 0 && outbox == 0).then_some(())
        },
    )
    .await;
    let channel = app.amqp().await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    while let Some(got) = channel
        .basic_get(
            "tasks.algo".into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let message: Value = serde_json::from_slice(&got.delivery.data).unwrap();
        *seen
            .entry(message["task_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "a task published twice");
    assert_eq!(
        ids.iter().filter(|id| seen.contains_key(*id)).count(),
        TASKS,
        "none lost"
    );
    for id in ids.iter().step_by(17) {
        assert_eq!(app.task(id).await["status"], "QUEUED");
    }
    app.stop().await;
}
