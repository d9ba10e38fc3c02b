//! Periodic tasks: `/schedules`, and due times firing once each.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use serde_json::{json, Value};
use test_support::eventually;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// The test-only settings: 6-field (seconds) cron expressions, a 100 ms tick.
const FAST: [&str; 3] = ["--schedule-seconds", "--schedule-tick-ms", "100"];

async fn post_schedule(app: &TestApp, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/schedules"))
        .json(body)
        .send()
        .await
        .expect("POST /schedules")
}

async fn schedule(app: &TestApp, id: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/schedules/{id}")))
        .send()
        .await
        .expect("GET /schedules/{id}")
}

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("an RFC 3339 time: {v}"))
        .with_timezone(&Utc)
}

#[tokio::test]
async fn a_schedule_is_created_read_listed_and_deleted() {
    let app = spawn_app().await;
    let body =
        json!({"cron": "*/5 * * * *", "task": {"stages": 2, "stage_ms": 10}, "name": "every five"});

    let res = post_schedule(&app, &body).await;

    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = res.json().await.unwrap();
    let id = created["schedule_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/schedules/{id}"));
    let next = at(&created["next_run_at"]);
    assert!(
        next > Utc::now() && next.minute() / 5 * 5 == next.minute() && next.second() == 0,
        "{next}"
    );
    let got: Value = schedule(&app, &id).await.json().await.unwrap();
    assert_eq!(got["schedule_id"], id.as_str());
    assert_eq!(
        (got["cron"].as_str(), got["name"].as_str()),
        (Some("*/5 * * * *"), Some("every five"))
    );
    assert_eq!(got["task"]["stages"], 2);
    assert_eq!(at(&got["next_run_at"]), next);
    assert!(
        got["last_run_at"].is_null() && got["last_task_id"].is_null(),
        "{got}"
    );
    assert!(at(&got["created_at"]) <= Utc::now());
    let list = app.get_json("/schedules").await;
    assert_eq!(
        list["schedules"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    assert_eq!(list["schedules"][0]["schedule_id"], id.as_str());

    let deleted = app
        .http
        .delete(app.url(&format!("/schedules/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(schedule(&app, &id).await.status(), 404);
    let again = app
        .http
        .delete(app.url(&format!("/schedules/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert_eq!(app.get_json("/schedules").await["schedules"], json!([]));
    assert_eq!(schedule(&app, "not-a-uuid").await.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_cron_expression_or_task_answers_400_naming_it() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"cron": "61 * * * *", "task": {}}), "cron"),
        (json!({"cron": "* * * *", "task": {}}), "cron"),
        (json!({"cron": "* * * * * *", "task": {}}), "cron"),
        (json!({"cron": "0 0 31 2 *", "task": {}}), "cron"),
        (json!({"cron": "every minute", "task": {}}), "cron"),
        (json!({"task": {}}), "cron"),
        (json!({"cron": "* * * * *"}), "task"),
        (
            json!({"cron": "* * * * *", "task": {"stages": 0}}),
            "task.stages",
        ),
        (
            json!({"cron": "* * * * *", "task": {"algorithm": "nope"}}),
            "task.algorithm",
        ),
        (json!({"cron": "* * * * *", "task": {}, "name": 5}), "name"),
        (json!({"cron": "* * * * *", "task": {}, "when": 5}), "when"),
    ] {
        let res = post_schedule(&app, &body).await;
        assert_eq!(res.status(), 400, "{body}");
        let answer: Value = res.json().await.unwrap();
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    assert_eq!(app.get_json("/schedules").await["schedules"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn schedules_need_an_api_key_like_tasks() {
    let app = spawn_app_with(&["--api-keys", "k1"]).await;
    let open = app.http.get(app.url("/schedules")).send().await.unwrap();
    assert_eq!(open.status(), 401);
    let keyed = app
        .http
        .get(app.url("/schedules"))
        .bearer_auth("k1")
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 200);
    app.stop().await;
}

/// `* * * * *` at test speed: with `SCHEDULE_SECONDS`, `*/2 * * * * *`
/// fires every 2 s. Two api processes tick every 100 ms; every due time
/// between the first and the last fired makes exactly one task.
#[tokio::test]
async fn each_due_time_creates_exactly_one_task_with_two_api_processes() {
    let mut a = spawn_app_with(&FAST).await;
    let mut b = TestApp::start_in(a.env.clone(), &FAST).await;
    let state = a.state();
    let res = post_schedule(
        &b,
        &json!({"cron": "*/2 * * * * *", "task": {"stages": 1, "stage_ms": 0}}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let id = created["schedule_id"].as_str().unwrap().to_owned();
    let first = at(&created["next_run_at"]);

    // Both processes tick through at least six due times.
    eventually("six due times fired", Duration::from_secs(30), || async {
        let s: Value = schedule(&a, &id).await.json().await.unwrap();
        let last = s["last_run_at"].as_str().map(|_| at(&s["last_run_at"]));
        last.filter(|l| *l >= first + chrono::Duration::seconds(10))
            .map(|_| ())
    })
    .await;
    b.stop_api().await;
    a.stop_api().await;

    // Nothing fires now: count the tasks against the due times fired.
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    let record = state
        .store
        .schedule(&uuid)
        .await
        .unwrap()
        .expect("the schedule");
    let last = DateTime::from_timestamp_millis(record.last_run_ms.unwrap()).unwrap();
    let due_times = (last - first).num_seconds() / 2 + 1;
    let page = state.store.list(None, 1000, None).await.unwrap();
    assert_eq!(
        page.tasks.len() as i64,
        due_times,
        "one task per due time from {first} to {last}"
    );
    assert!(page.tasks.iter().all(|t| t.status.as_str() == "QUEUED"));
    assert_eq!(
        record.last_task_id,
        Some(page.tasks[0].task_id),
        "the last due time's task"
    );
    a.env.cleanup().await;
}

/// Due times missed while no api ran fire once at start: the schedule's
/// three due times (3 consecutive seconds) all pass while the api is down;
/// at start one task is made, for the first of them, and the schedule moves
/// on to the next minute's.
#[tokio::test]
async fn due_times_missed_while_no_api_ran_fire_once_at_start() {
    let mut app = spawn_app_with(&FAST).await;
    let s0 = Utc::now().second();
    let secs: Vec<String> = (8..11).map(|k| ((s0 + k) % 60).to_string()).collect();
    let cron = format!("{} * * * * *", secs.join(","));
    let res = post_schedule(
        &app,
        &json!({"cron": cron, "task": {"stages": 1, "stage_ms": 0}}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let id = created["schedule_id"].as_str().unwrap().to_owned();
    let first = at(&created["next_run_at"]);

    app.stop_api().await;
    assert!(
        Utc::now() < first,
        "the api stopped before the first due time ({first})"
    );
    // The downtime: until all three due times have passed.
    let downtime = (first + chrono::Duration::milliseconds(2_500) - Utc::now())
        .to_std()
        .unwrap();
    tokio::time::sleep(downtime).await;
    let restarted = Utc::now();
    app.start_api().await;

    let fired = eventually("the catch-up", Duration::from_secs(10), || async {
        let s: Value = schedule(&app, &id).await.json().await.unwrap();
        (!s["last_task_id"].is_null()).then_some(s)
    })
    .await;
    assert_eq!(
        at(&fired["last_run_at"]),
        first,
        "the first missed due time fired"
    );
    let next = at(&fired["next_run_at"]);
    assert!(
        next > restarted + chrono::Duration::seconds(50),
        "moved on to the next minute: {next}"
    );
    let tasks = app.listed().await;
    assert_eq!(
        tasks.len(),
        1,
        "one task for the three missed due times: {tasks:?}"
    );
    assert_eq!(tasks[0]["task_id"], fired["last_task_id"]);
    app.stop().await;
}
