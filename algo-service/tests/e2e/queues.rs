//! Named queues on real workers: routing by `queue`, pause and resume
//! (also across a worker restart), and the quorum topology.

use std::time::Duration;

use serde_json::{json, Value};
use test_support::{eventually, Stack, WorkerOpts};

fn task(queue: &str, stages: u32, stage_ms: u64) -> Value {
    json!({"stages": stages, "stage_ms": stage_ms, "queue": queue})
}

/// The `GET /queues` entry of `name`.
async fn queue(sys: &Stack, name: &str) -> Value {
    sys.queues()
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no queue {name} in GET /queues"))
}

async fn management_queue(sys: &Stack, queue: &str) -> Value {
    let mgmt =
        std::env::var("TEST_RABBITMQ_MGMT").unwrap_or_else(|_| "http://127.0.0.1:15672".into());
    reqwest::Client::new()
        .get(format!("{mgmt}/api/queues/{}/{queue}", sys.env.vhost))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap_or_else(|e| panic!("{queue}: {e}"))
        .json()
        .await
        .unwrap()
}

async fn add_worker_on(sys: &mut Stack, name: &str, queues: &str, queue_type: &str) -> usize {
    sys.add_worker_with_env(
        name,
        WorkerOpts::default(),
        &[("WORKER_QUEUES", queues), ("QUEUE_TYPE", queue_type)],
    )
    .await
}

/// Asserts `id` is still QUEUED throughout `hold` (the one bounded wait
/// the issue allows: a paused queue must not hand the task out).
async fn assert_stays_queued(sys: &Stack, id: &str, hold: Duration) {
    let until = tokio::time::Instant::now() + hold;
    while tokio::time::Instant::now() < until {
        assert_eq!(
            sys.task(id).await["status"],
            "QUEUED",
            "task {id} was taken from a paused queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn set_paused(sys: &Stack, queue: &str, paused: bool) {
    let verb = if paused { "pause" } else { "resume" };
    let res = sys.post_empty(&format!("/queues/{queue}/{verb}")).await;
    assert_eq!(res.status(), 204, "{verb} {queue}");
}

#[tokio::test]
async fn tasks_land_only_on_the_workers_of_their_queue() {
    let mut sys = Stack::start(&["--queues", "algo,gpu"]).await;
    add_worker_on(&mut sys, "w-algo", "algo", "classic").await;
    add_worker_on(&mut sys, "w-gpu", "gpu", "classic").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let q = if i % 2 == 0 { "algo" } else { "gpu" };
        ids.push((q, sys.create(task(q, 1, 20)).await));
    }
    // The default queue is algo.
    ids.push((
        "algo",
        sys.create(json!({"stages": 1, "stage_ms": 20})).await,
    ));
    for (q, id) in &ids {
        let done = sys.wait_terminal(id, Duration::from_secs(20)).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(done["queue"], *q);
        assert_eq!(
            done["worker"],
            format!("w-{q}"),
            "task of {q} ran elsewhere: {done}"
        );
    }
    let queues = sys.queues().await;
    assert_eq!(
        queues,
        json!([
            {"name": "algo", "depth": 0, "consumers": 1, "paused": false},
            {"name": "gpu", "depth": 0, "consumers": 1, "paused": false},
        ])
    );
    // Each worker's control queue carries its name (exclusive: asked of
    // the management API, a passive declare would be refused).
    for name in ["w-algo", "w-gpu"] {
        let info = management_queue(&sys, &format!("tasks.control.{name}")).await;
        assert_eq!(info["exclusive"], true, "{info}");
        assert_eq!(info["auto_delete"], true, "{info}");
    }
    sys.stop().await;
}

#[tokio::test]
async fn pause_holds_new_work_resume_releases_it_also_across_a_worker_restart() {
    let mut sys = Stack::start(&[]).await;
    let w = add_worker_on(&mut sys, "w1", "algo", "classic").await;
    let running = sys.create(task("algo", 4, 400)).await;
    sys.wait_for(&running, Duration::from_secs(10), |t| {
        t["status"] == "PROCESSING"
    })
    .await;

    let asked = tokio::time::Instant::now();
    set_paused(&sys, "algo", true).await;
    // Within 1 s the worker has let go of the queue.
    eventually(
        "the worker to stop consuming within 1 s",
        Duration::from_secs(1),
        || async { (queue(&sys, "algo").await["consumers"] == 0).then_some(()) },
    )
    .await;
    eprintln!("the pause reached the broker after {:?}", asked.elapsed());
    let held = sys.create(task("algo", 1, 20)).await;
    assert_stays_queued(&sys, &held, Duration::from_millis(1500)).await;
    // The task in flight ran on.
    let done = sys.wait_terminal(&running, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(
        queue(&sys, "algo").await,
        json!({"name": "algo", "depth": 1, "consumers": 0, "paused": true})
    );
    // Still healthy while every queue it serves is paused.
    let health = reqwest::get(format!("http://{}/healthz", sys.workers[w].metrics))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // A restarted worker learns the pause before it consumes.
    sys.workers[w].signal("TERM");
    sys.workers[w].wait_exit(Duration::from_secs(15)).await;
    let w = add_worker_on(&mut sys, "w1", "algo", "classic").await;
    assert_stays_queued(&sys, &held, Duration::from_millis(1500)).await;

    set_paused(&sys, "algo", false).await;
    let done = sys.wait_terminal(&held, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["worker"], "w1");
    assert!(sys.workers[w].log_lines("queue state broadcast received") >= 1);
    sys.stop().await;
}

#[tokio::test]
async fn a_pause_survives_an_api_restart_and_holds_only_its_queue() {
    let mut sys = Stack::start(&["--queues", "algo,gpu"]).await;
    set_paused(&sys, "gpu", true).await;
    sys.stop_api().await;
    sys.start_api().await;
    assert_eq!(queue(&sys, "gpu").await["paused"], true);
    add_worker_on(&mut sys, "w1", "algo,gpu", "classic").await;
    let gpu = sys.create(task("gpu", 1, 20)).await;
    let algo = sys.create(task("algo", 1, 20)).await;
    let done = sys.wait_terminal(&algo, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "COMPLETED");
    assert_stays_queued(&sys, &gpu, Duration::from_millis(1500)).await;
    set_paused(&sys, "gpu", false).await;
    let done = sys.wait_terminal(&gpu, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "COMPLETED");
    sys.stop().await;
}

#[tokio::test]
async fn quorum_queues_run_the_lifecycle_with_priority_lanes() {
    let mut sys = Stack::start(&["--queue-type", "quorum"]).await;
    add_worker_on(&mut sys, "wq", "algo", "quorum").await;
    let mut ids = Vec::new();
    for priority in [0, 4, 9] {
        ids.push(
            sys.create(json!({"stages": 2, "stage_ms": 20, "priority": priority}))
                .await,
        );
    }
    for id in &ids {
        let done = sys.wait_terminal(id, Duration::from_secs(20)).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
    }
    // One consumer per lane.
    assert_eq!(
        queue(&sys, "algo").await,
        json!({"name": "algo", "depth": 0, "consumers": 3, "paused": false})
    );
    set_paused(&sys, "algo", true).await;
    eventually(
        "the lanes to lose their consumer",
        Duration::from_secs(1),
        || async { (queue(&sys, "algo").await["consumers"] == 0).then_some(()) },
    )
    .await;
    let held = sys
        .create(json!({"stages": 1, "stage_ms": 20, "priority": 9}))
        .await;
    assert_stays_queued(&sys, &held, Duration::from_millis(1500)).await;
    assert_eq!(queue(&sys, "algo").await["depth"], 1);
    set_paused(&sys, "algo", false).await;
    let done = sys.wait_terminal(&held, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "COMPLETED");
    sys.stop().await;
}

/// Most tasks running at once, from their `started_at` and `finished_at`.
fn max_overlap(tasks: &[Value]) -> usize {
    let span =
        |t: &Value, k: &str| chrono::DateTime::parse_from_rfc3339(t[k].as_str().unwrap()).unwrap();
    tasks
        .iter()
        .map(|t| {
            let at = span(t, "started_at");
            tasks
                .iter()
                .filter(|o| span(o, "started_at") <= at && at < span(o, "finished_at"))
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn in_flight_stays_bounded_across_queues(queue_type: &str) {
    let mut sys = Stack::start(&["--queues", "algo,gpu", "--queue-type", queue_type]).await;
    sys.add_worker_with_env(
        "w1",
        WorkerOpts {
            concurrency: 2,
            ..WorkerOpts::default()
        },
        &[("WORKER_QUEUES", "algo,gpu"), ("QUEUE_TYPE", queue_type)],
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let q = if i % 2 == 0 { "algo" } else { "gpu" };
        ids.push(
            sys.create(json!({"stages": 1, "stage_ms": 300, "queue": q, "priority": i}))
                .await,
        );
    }
    let mut done = Vec::new();
    for id in &ids {
        let task = sys.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(task["status"], "COMPLETED", "{task}");
        done.push(task);
    }
    let most = max_overlap(&done);
    assert!(
        most <= 2,
        "{most} tasks ran at once with WORKER_CONCURRENCY=2"
    );
    assert_eq!(most, 2, "both slots were used");
    sys.stop().await;
}

#[tokio::test]
async fn tasks_in_flight_stay_bounded_across_queues_classic() {
    in_flight_stays_bounded_across_queues("classic").await;
}

#[tokio::test]
async fn tasks_in_flight_stay_bounded_across_queues_quorum() {
    in_flight_stays_bounded_across_queues("quorum").await;
}
