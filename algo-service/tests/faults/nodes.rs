//! `AMQP_URL` as a list of nodes, for the worker: when its connection is
//! lost it reconnects to the next node that answers, past a dead one.

use std::time::Duration;

use serde_json::json;
use test_support::{eventually, Stack, WorkerOpts};

/// A URL nothing listens on.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

/// The worker's list is a dead node and the live one: it consumes from the
/// live one, and after its connection there is closed it tries the dead
/// node next (logged), moves on, and runs the next task.
#[tokio::test]
async fn a_worker_reconnects_past_a_dead_node_in_its_amqp_url_list() {
    let mut sys = Stack::start(&[]).await;
    let list = format!("{},{}", dead_url(), sys.env.amqp_url);
    sys.add_worker_with_env("w1", WorkerOpts::default(), &[("AMQP_URL", &list)])
        .await;
    let first = sys.create(json!({"stages": 1, "stage_ms": 0})).await;
    let done = sys.wait_terminal(&first, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");

    let skipped_before = sys.workers[0].log_lines("trying the next");
    eventually(
        "the connections are closed",
        Duration::from_secs(20),
        || async {
            (sys.env
                .kill_connections()
                .await
                .expect("the management API answers")
                > 0)
            .then_some(())
        },
    )
    .await;
    eventually(
        "the worker skips the dead node",
        Duration::from_secs(20),
        || async { (sys.workers[0].log_lines("trying the next") > skipped_before).then_some(()) },
    )
    .await;
    sys.workers[0].wait_consuming(Duration::from_secs(20)).await;
    // The api's own connection was closed too; it reconnects by itself.
    let second = eventually(
        "a create goes through again",
        Duration::from_secs(30),
        || async {
            let res = sys.post_task(json!({"stages": 1, "stage_ms": 0})).await;
            (res.status() == 202).then_some(res)
        },
    )
    .await;
    let second: serde_json::Value = second.json().await.unwrap();
    let id = second["task_id"].as_str().unwrap();
    let done = sys.wait_terminal(id, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    sys.stop().await;
}
