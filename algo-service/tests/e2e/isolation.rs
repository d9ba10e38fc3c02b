//! `WORKER_ISOLATION=process` through real workers: a crash fails only its
//! attempt, cancel and progress cross from the helper, results match
//! `thread`; and `METRICS_BIND`'s fallback to a free port.

use std::{io::Cursor, time::Duration};

use serde_json::{json, Value};
use test_support::{Stack, WorkerOpts};

const WITHIN: Duration = Duration::from_secs(60);
const PROCESS: (&str, &str) = ("WORKER_ISOLATION", "process");

/// The pids of the worker's child processes (its stage helpers).
fn helpers(sys: &Stack, worker: usize) -> Vec<u32> {
    let pid = sys.workers[worker].child.id().expect("the worker runs");
    let mut children = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("procfs") {
        let path = task.unwrap().path().join("children");
        let listed = std::fs::read_to_string(path).unwrap_or_default();
        children.extend(listed.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
    }
    children
}

fn assert_alive(sys: &mut Stack, worker: usize, pid: u32) {
    let w = &mut sys.workers[worker];
    assert_eq!(w.child.id(), Some(pid), "the same worker process");
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "the worker is still running"
    );
    assert_eq!(
        w.log_lines("algo-service starting"),
        1,
        "it never restarted"
    );
}

#[tokio::test]
async fn a_crash_under_process_isolation_fails_only_its_attempt_while_ten_tasks_run_on() {
    let mut sys = Stack::start(&[]).await;
    let opts = WorkerOpts {
        concurrency: 16,
        ..WorkerOpts::default()
    };
    let w = sys
        .add_worker_with_env("iso", opts, &[PROCESS, ("ALLOW_CRASH_INPUT", "1")])
        .await;
    let pid = sys.workers[w].child.id().unwrap();
    let mut others = Vec::new();
    for _ in 0..10 {
        others.push(sys.create(test_support::body(5, 1000)).await);
    }
    sys.wait_all_for(&others, WITHIN, |t| t["status"] == "PROCESSING")
        .await;
    // Crashes in every attempt it may get (retries or not), at its first stage.
    let crash = sys
        .create(json!({"stages": 2, "stage_ms": 0, "input": {"fail": {"at_stage": 1, "attempts": 100, "mode": "crash"}}}))
        .await;
    test_support::eventually("the first crash", WITHIN, || async {
        (sys.workers[w].log_lines("the stage helper process died") > 0).then_some(())
    })
    .await;
    let mut running = 0;
    for id in &others {
        running += usize::from(sys.task(id).await["status"] == "PROCESSING");
    }
    assert!(running > 0, "the crash happened while the others ran");
    // FAILED at once without retries; with them, after its last attempt.
    let task = sys.wait_terminal(&crash, WITHIN).await;
    assert_eq!(task["status"], "FAILED", "{task}");
    assert_eq!(task["error"], "algorithm_crashed: SIGABRT", "{task}");
    sys.assert_all_completed_once(&others, WITHIN).await;
    assert_eq!(
        sys.hellos(),
        10 * 5,
        "every stage of the ten printed, the crash none"
    );
    assert_alive(&mut sys, w, pid);
    sys.stop().await;
}

#[tokio::test]
async fn cancel_and_progress_cross_from_the_helper() {
    let mut sys = Stack::start(&[]).await;
    let w = sys
        .add_worker_with_env("isoc", WorkerOpts::default(), &[PROCESS])
        .await;
    let hello = sys.create(test_support::body(1, 600_000)).await;
    let pi = sys
        .create(json!({"algorithm": "pi", "stages": 1, "timeout_secs": 600, "input": {"samples": 100_000_000_000u64}}))
        .await;
    let seen = test_support::eventually("pi's progress within its stage", WITHIN, || async {
        let p = sys.task(&pi).await["progress"].as_u64().unwrap();
        (p >= 1).then_some(p)
    })
    .await;
    assert!(seen < 100, "{seen}");
    sys.wait_for(&hello, WITHIN, |t| t["status"] == "PROCESSING")
        .await;
    assert_eq!(
        helpers(&sys, w).len(),
        2,
        "each running task has its helper"
    );
    for id in [&hello, &pi] {
        assert_eq!(sys.cancel(id).await.status(), 202);
        let task = sys.wait_terminal(id, Duration::from_secs(10)).await;
        assert_eq!(task["status"], "CANCELLED", "{task}");
        let took = cancel_to_end(&sys, w, id);
        assert!(took < chrono::Duration::milliseconds(100), "{id}: {took}");
    }
    let late = sys
        .create(json!({"stages": 1, "stage_ms": 600_000, "timeout_secs": 1}))
        .await;
    let task = sys.wait_terminal(&late, Duration::from_secs(10)).await;
    assert_eq!(task["status"], "TIMED_OUT", "{task}");
    test_support::eventually("the helpers to exit", Duration::from_secs(10), || async {
        helpers(&sys, w).is_empty().then_some(())
    })
    .await;
    assert_eq!(sys.hellos(), 0, "an interrupted stage prints nothing");
    sys.stop().await;
}

/// From the worker's "cancel received" line for task `id` to its "run
/// over" line: how long the helper took to end the stage.
fn cancel_to_end(sys: &Stack, worker: usize, id: &str) -> chrono::Duration {
    let logs = sys.workers[worker].logs.lock().unwrap();
    let at = |needle: &str| {
        let line = logs
            .iter()
            .find(|l| l.contains(needle) && l.contains(id))
            .unwrap_or_else(|| panic!("no {needle:?} line for {id}"));
        let stamp = line.split_whitespace().next().unwrap();
        chrono::DateTime::parse_from_rfc3339(stamp).unwrap()
    };
    at("run over") - at("cancel received")
}

#[tokio::test]
async fn a_killed_worker_leaves_no_helper_running() {
    let mut sys = Stack::start(&[]).await;
    let w = sys
        .add_worker_with_env("isok", WorkerOpts::default(), &[PROCESS])
        .await;
    let pi = sys
        .create(json!({"algorithm": "pi", "stages": 1, "timeout_secs": 600, "input": {"samples": 100_000_000_000u64}}))
        .await;
    sys.wait_for(&pi, WITHIN, |t| t["status"] == "PROCESSING")
        .await;
    let helper = test_support::eventually("the helper", WITHIN, || async {
        helpers(&sys, w).first().copied()
    })
    .await;
    sys.workers[w].signal("KILL");
    sys.workers[w].wait_exit(Duration::from_secs(10)).await;
    // Its stdin closed: it raises its own flag and exits (gone, or a zombie
    // where nothing reaps orphans).
    test_support::eventually(
        "the orphaned helper to exit",
        Duration::from_secs(10),
        || async {
            let stat = std::fs::read_to_string(format!("/proc/{helper}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            matches!(state, None | Some("Z" | "X")).then_some(())
        },
    )
    .await;
    sys.stop().await;
}

#[tokio::test]
async fn a_stopping_worker_interrupts_its_helper_and_requeues_the_task() {
    let mut sys = Stack::start(&[]).await;
    let w = sys
        .add_worker_with_env("isot", WorkerOpts::default(), &[PROCESS])
        .await;
    let id = sys.create(test_support::body(1, 600_000)).await;
    sys.wait_for(&id, WITHIN, |t| t["status"] == "PROCESSING")
        .await;
    sys.workers[w].signal("TERM");
    // Grace 2 s, then the flag: the helper ends its stage, the delivery goes back.
    let status = sys.workers[w].wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(sys.task(&id).await["status"], "PROCESSING");
    test_support::eventually("the task back in its queue", WITHIN, || async {
        (sys.queue_depth("tasks.algo").await == 1).then_some(())
    })
    .await;
    assert_eq!(sys.hellos(), 0);
    sys.stop().await;
}

#[tokio::test]
async fn cpu_slots_hold_under_process_isolation() {
    let mut sys = Stack::start(&[]).await;
    let w = sys
        .add_worker_with_env(
            "isos",
            WorkerOpts::default(),
            &[PROCESS, ("WORKER_CPU_SLOTS", "1")],
        )
        .await;
    let body = json!({"algorithm": "pi", "stages": 3, "input": {"samples": 6_000_000, "seed": 1}});
    let ids = vec![sys.create(body.clone()).await, sys.create(body).await];
    sys.assert_all_completed_once(&ids, WITHIN).await;
    let logs = sys.workers[w].logs.lock().unwrap().clone();
    let marks: Vec<bool> = logs
        .iter()
        .filter_map(|l| {
            if l.contains("cpu stage started") {
                Some(true)
            } else if l.contains("cpu stage ended") {
                Some(false)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(marks.len(), 2 * 6, "{marks:?}");
    assert!(
        marks.chunks(2).all(|pair| pair == [true, false]),
        "no stage started before the previous one ended: {marks:?}"
    );
    sys.stop().await;
}

async fn upload(sys: &Stack, bytes: Vec<u8>) -> String {
    let res = sys
        .http
        .post(sys.url("/blobs"))
        .header("content-type", "image/png")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["blob_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn blob_sha(sys: &Stack, id: &str) -> Vec<u8> {
    let res = sys
        .http
        .get(sys.url(&format!("/blobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap().to_vec()
}

/// A grayscale and a pi on the stack's one worker: the pi result and the
/// output PNG's bytes.
async fn grayscale_and_pi(sys: &Stack, image: &str) -> (Value, Vec<u8>) {
    let gray = sys
        .create(json!({"algorithm": "grayscale", "stages": 3, "input": {"image": image}}))
        .await;
    let pi = sys
        .create(json!({"algorithm": "pi", "stages": 4, "input": {"samples": 400_000, "seed": 9}}))
        .await;
    let g = sys.wait_terminal(&gray, WITHIN).await;
    let p = sys.wait_terminal(&pi, WITHIN).await;
    assert_eq!(g["status"], "COMPLETED", "{g}");
    assert_eq!(p["status"], "COMPLETED", "{p}");
    let png = blob_sha(sys, g["result"]["image"].as_str().unwrap()).await;
    (p["result"].clone(), png)
}

#[tokio::test]
async fn grayscale_and_pi_give_the_same_results_under_process_as_under_thread() {
    let mut sys = Stack::start(&[]).await;
    let img = image::RgbImage::from_fn(37, 23, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 11) as u8, ((x ^ y) * 5) as u8])
    });
    let mut png = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut png, image::ImageOutputFormat::Png)
        .unwrap();
    let blob = upload(&sys, png.into_inner()).await;

    let t = sys.add_worker("thread").await;
    let by_thread = grayscale_and_pi(&sys, &blob).await;
    sys.workers[t].signal("TERM");
    sys.workers[t].wait_exit(Duration::from_secs(10)).await;

    sys.add_worker_with_env("process", WorkerOpts::default(), &[PROCESS])
        .await;
    let by_process = grayscale_and_pi(&sys, &blob).await;
    assert_eq!(by_process.0, by_thread.0, "pi");
    assert_eq!(
        by_process.1, by_thread.1,
        "the grayscale PNG, byte for byte"
    );
    sys.stop().await;
}

#[tokio::test]
async fn two_workers_without_metrics_bind_both_come_up_and_a_taken_explicit_one_fails() {
    let mut sys = Stack::start(&[]).await;
    let unset = [("METRICS_BIND", "")];
    // Whoever holds 9091 (the first of these, or anything else on the host),
    // both come up: add_worker waits for /healthz at the logged address.
    let a = sys
        .add_worker_with_env("ma", WorkerOpts::default(), &unset)
        .await;
    let b = sys
        .add_worker_with_env("mb", WorkerOpts::default(), &unset)
        .await;
    assert_ne!(sys.workers[a].metrics, sys.workers[b].metrics);
    assert!(
        sys.workers[b].log_lines("the default METRICS_BIND is taken") == 1,
        "the second fell back to a free port"
    );

    let taken = sys.workers[a].metrics.clone();
    let out = tokio::process::Command::new(test_support::worker_binary())
        .env_clear()
        .env("CALLBACK_TOKEN", test_support::TOKEN)
        .env("AMQP_URL", &sys.env.amqp_url)
        .env("METRICS_BIND", &taken)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("it stops at start")
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("binding METRICS_BIND {taken}")),
        "{stderr}"
    );
    sys.stop().await;
}
