//! RabbitMQ restarted under load, and a broker that closes the channel of a
//! worker holding a delivery longer than `consumer_timeout`: both on a
//! private RabbitMQ node.

use std::time::Duration;

use serde_json::{json, Value};
use test_support::{
    body, eventually,
    servers::{PrivateRabbit, RabbitOptions},
    terminal_events, Stack, WorkerOpts,
};

/// Over 30 s: the private node boots twice (about 7 s each on 2 cores), and
/// the tasks queued before the outage run after it.
#[tokio::test]
async fn rabbitmq_restarted_while_tasks_are_queued_and_running_loses_none_and_runs_none_twice() {
    let mut rabbit = PrivateRabbit::start(RabbitOptions::default())
        .await
        .expect("a private RabbitMQ node boots");
    let mut sys = Stack::start_on_broker(rabbit.amqp_url(), &[]).await;
    let opts = WorkerOpts {
        concurrency: 2,
        grace_secs: 2,
    };
    sys.add_worker_with("w1", opts.clone()).await;
    sys.add_worker_with("w2", opts).await;

    let mut ids = Vec::new();
    // 4 stages of 800 ms: the running ones outlast the broker's shutdown (about 1.5 s).
    for i in 0..12 {
        ids.push(
            sys.create(json!({"stages": 4, "stage_ms": 800, "priority": i % 3}))
                .await,
        );
    }
    // Four run (two workers, prefetch 2), the rest wait in the queue.
    eventually("tasks to run", Duration::from_secs(20), || async {
        (sys.hellos() >= 1).then_some(())
    })
    .await;
    let queued = sys.queue_depth("tasks.algo").await;
    assert!(
        queued >= 6,
        "tasks wait in the queue at the outage: {queued}"
    );

    rabbit.stop().await;
    let printed_at_stop = sys.hellos();

    // While the broker is away: 503 with Retry-After: 5, and no half-made task.
    let unavailable = eventually(
        "POST /tasks to answer 503",
        Duration::from_secs(10),
        || async {
            let res = sys.post_task(json!({"stages": 1, "stage_ms": 0})).await;
            match res.status().as_u16() {
                202 => {
                    // Confirmed before the broker went: it must survive too.
                    let task: Value = res.json().await.unwrap();
                    panic!("a task was accepted with the broker down: {task}");
                }
                503 => Some(res),
                other => panic!("POST /tasks answered {other}"),
            }
        },
    )
    .await;
    assert_eq!(unavailable.headers()["retry-after"], "5");
    let err: Value = unavailable.json().await.unwrap();
    assert_eq!(err["error"], "unavailable");
    // Running tasks go on: their leases and progress go through the api, not the broker.
    eventually(
        "running tasks to go on while the broker is down",
        Duration::from_secs(10),
        || async { (sys.hellos() > printed_at_stop).then_some(()) },
    )
    .await;

    rabbit
        .start_again()
        .await
        .expect("the node boots on its data");

    // The api accepts again by itself, the workers reconnect by themselves.
    let after = eventually(
        "POST /tasks to be accepted again",
        Duration::from_secs(30),
        || async {
            let res = sys.post_task(body(1, 0)).await;
            (res.status() == 202).then_some(res)
        },
    )
    .await;
    let after: Value = after.json().await.unwrap();
    ids.push(after["task_id"].as_str().unwrap().to_owned());
    for w in &sys.workers {
        w.wait_consuming(Duration::from_secs(30)).await;
    }

    sys.assert_all_completed_once(&ids, Duration::from_secs(60))
        .await;
    assert_eq!(
        sys.hellos(),
        12 * 4 + 1,
        "every stage ran exactly once: nothing lost, nothing run twice"
    );
    for w in &sys.workers {
        assert!(
            w.metric("taskforge_worker_reconnects_total").await >= 1.0,
            "{} reconnected",
            w.name
        );
    }
    let listed = sys.listed().await;
    assert_eq!(
        listed.len(),
        ids.len(),
        "the refused creates left nothing behind"
    );
    sys.assert_drained().await;
    sys.stop().await;
}

/// About 20 s: the private node boots (about 7 s), then one task outlives the
/// broker's consumer timeout several times over.
///
/// RabbitMQ checks `consumer_timeout` on each channel's tick,
/// `channel_tick_interval` (60 s by default), so the node runs with a 500 ms
/// tick and a 2 s timeout; the production value is 25 h
/// (`rabbitmq/rabbitmq.conf`) and is never reached.
#[tokio::test]
async fn a_task_outliving_the_consumer_timeout_is_neither_killed_nor_run_twice() {
    let rabbit = PrivateRabbit::start(RabbitOptions {
        consumer_timeout_ms: Some(2_000),
        channel_tick_ms: Some(500),
    })
    .await
    .expect("a private RabbitMQ node boots");
    let mut sys = Stack::start_on_broker(rabbit.amqp_url(), &[]).await;
    let opts = WorkerOpts {
        concurrency: 2,
        grace_secs: 2,
    };
    sys.add_worker_with("w1", opts.clone()).await;

    // 4 stages of 1.5 s: 6 s, three times the consumer timeout.
    let id = sys.create(body(4, 1_500)).await;
    sys.wait_for(&id, Duration::from_secs(10), |t| {
        t["status"] == "PROCESSING"
    })
    .await;
    // A second consumer for the copy the broker redelivers.
    sys.add_worker_with("w2", opts).await;

    eventually(
        "the broker to close w1's channel for the consumer timeout",
        Duration::from_secs(15),
        || async { (sys.workers[0].log_lines("lost the AMQP session") >= 1).then_some(()) },
    )
    .await;
    let task = sys.wait_terminal(&id, Duration::from_secs(40)).await;
    assert_eq!(task["status"], "COMPLETED");
    assert_eq!(task["worker"], "w1", "never taken over: w1 held the lease");
    let events = sys.events(&id).await;
    assert_eq!(terminal_events(&events), 1, "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| e["detail"].as_str().unwrap_or("").starts_with("taken over")),
        "{events:?}"
    );
    assert_eq!(
        sys.hellos(),
        4,
        "each stage ran once: the redelivered copy waited, never ran in parallel"
    );
    sys.assert_drained().await;
    sys.stop().await;
}

/// About 15 s (the private node boots, then hangs for a while).
///
/// A broker that hangs (SIGSTOP: its connections stay open, nothing answers)
/// is unreachable too: `POST /tasks` answers 503 in bounded time, not when
/// the client gives up, and leaves nothing behind.
#[tokio::test]
async fn a_hung_broker_makes_creates_answer_503_in_bounded_time() {
    let rabbit = PrivateRabbit::start(RabbitOptions::default())
        .await
        .expect("a private RabbitMQ node boots");
    let sys = Stack::start_on_broker(rabbit.amqp_url(), &[]).await;

    rabbit.pause().expect("SIGSTOP");
    let asked = std::time::Instant::now();
    let res = sys.post_task(body(1, 0)).await;
    let took = asked.elapsed();
    assert_eq!(res.status(), 503, "{:?}", res.text().await);
    assert!(took < Duration::from_secs(10), "503 after {took:?}");
    assert_eq!(res.headers()["retry-after"], "5");
    // The api dropped that connection: the next creates fail fast.
    eventually("a 503 within a second", Duration::from_secs(10), || async {
        let asked = std::time::Instant::now();
        let res = sys.post_task(body(1, 0)).await;
        assert_eq!(res.status(), 503);
        (asked.elapsed() < Duration::from_secs(1)).then_some(())
    })
    .await;
    rabbit.resume().expect("SIGCONT");

    let accepted = eventually(
        "POST /tasks to be accepted again",
        Duration::from_secs(30),
        || async {
            let res = sys.post_task(body(1, 0)).await;
            (res.status() == 202).then_some(())
        },
    )
    .await;
    let () = accepted;
    let listed = sys.listed().await;
    assert_eq!(
        listed.len(),
        1,
        "the refused create left nothing behind: {listed:?}"
    );
    sys.stop().await;
}
