//! Redis frozen (SIGSTOP) and back (SIGCONT), on a private `redis-server`:
//! a faithful "unreachable, then back with every key", unlike a restart of a
//! server without persistence.

use std::time::{Duration, Instant};

use test_support::{body, eventually, servers::PrivateRedis, Stack, WorkerOpts};

#[tokio::test]
async fn with_redis_frozen_endpoints_answer_503_workers_retry_and_every_outcome_lands_once() {
    let mut redis = PrivateRedis::start().await.expect("a private redis-server");
    // A lease far longer than the outage: the workers keep their tasks.
    let mut sys = Stack::start_on_redis(redis.url(), &["--lease-secs", "30"]).await;
    sys.add_worker_with(
        "w1",
        WorkerOpts {
            concurrency: 8,
            grace_secs: 2,
        },
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(sys.create(body(4, 400)).await);
    }
    sys.wait_all_for(&ids, Duration::from_secs(15), |t| {
        t["status"] == "PROCESSING"
    })
    .await;

    redis.pause().expect("SIGSTOP");

    // The api answers 503 (promptly, Retry-After: 5) and stays alive.
    let asked = Instant::now();
    let res = sys.post_task(body(1, 0)).await;
    assert_eq!(res.status(), 503, "{:?}", res.text().await);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "503 took {:?}",
        asked.elapsed()
    );
    let res = sys.post_task(body(1, 0)).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    assert_eq!(sys.get_task(&ids[0]).await.status(), 503);
    let (status, ready) = sys.readiness().await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "unavailable", "{ready}");
    assert_eq!(ready["checks"]["redis"]["ok"], false, "{ready}");
    assert!(ready["checks"]["redis"]["error"].is_string(), "{ready}");
    assert_eq!(ready["checks"]["rabbitmq"]["ok"], true, "{ready}");

    // The stages run on; the callbacks that report them fail and are retried.
    eventually(
        "every stage to run while redis is frozen",
        Duration::from_secs(15),
        || async { (sys.hellos() == 24).then_some(()) },
    )
    .await;
    let retries = sys.workers[0]
        .metric("taskforge_worker_callback_retries_total")
        .await;
    assert!(retries >= 1.0, "callbacks were retried: {retries}");

    redis.resume().expect("SIGCONT");

    sys.assert_all_completed_once(&ids, Duration::from_secs(40))
        .await;
    assert_eq!(sys.hellos(), 24, "no stage ran twice");
    // And the api serves again.
    let after = sys.create(body(1, 0)).await;
    sys.assert_all_completed_once(&[after], Duration::from_secs(20))
        .await;
    let listed = sys.listed().await;
    assert_eq!(
        listed.len(),
        7,
        "the creates refused with 503 left nothing behind: {listed:?}"
    );
    assert_eq!(sys.queue_depth("tasks.algo").await, 0);
    assert_eq!(sys.queue_depth("tasks.dead").await, 0);
    sys.stop().await;
}

/// Redis frozen for longer than the lease: the workers cannot renew their
/// leases, so they stop their tasks and hand them back to the queue rather
/// than risk running one twice (another worker may take a task over the
/// moment Redis answers again). Once it answers, every task resumes at its
/// recorded stage and ends once.
#[tokio::test]
async fn with_redis_frozen_longer_than_the_lease_tasks_are_handed_back_and_each_ends_once() {
    let mut redis = PrivateRedis::start().await.expect("a private redis-server");
    let mut sys = Stack::start_on_redis(redis.url(), &["--lease-secs", "2"]).await;
    sys.add_worker("w1").await;
    sys.add_worker("w2").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(sys.create(body(4, 500)).await);
    }
    sys.wait_all_for(&ids, Duration::from_secs(15), |t| {
        t["stage"].as_u64().unwrap_or(0) >= 1
    })
    .await;

    redis.pause().expect("SIGSTOP");
    eventually(
        "a worker to hand a task back for want of a lease",
        Duration::from_secs(15),
        || async {
            let handed_back: usize = sys
                .workers
                .iter()
                .map(|w| w.log_lines("could not renew the lease in time"))
                .sum();
            (handed_back >= 1).then_some(())
        },
    )
    .await;
    redis.resume().expect("SIGCONT");

    sys.assert_all_completed_once(&ids, Duration::from_secs(40))
        .await;
    assert!(sys.hellos() >= 16, "every stage ran: {}", sys.hellos());
    sys.assert_drained().await;
    sys.stop().await;
}
