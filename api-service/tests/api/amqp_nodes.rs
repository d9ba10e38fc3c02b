//! `AMQP_URL` as a list of nodes: the api connects to one, and moves to the
//! next live one when its connection is lost. Two vhosts of the shared
//! broker stand for two nodes (so the test can tell where a message went),
//! beside a dead one (a closed port).

use std::time::Duration;

use serde_json::json;
use test_support::{eventually, Stack, TestEnv};

/// A URL nothing listens on.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

async fn depth(env: &TestEnv) -> u32 {
    env.queue_depth("tasks.algo")
        .await
        .expect("the broker answers")
        .unwrap_or(0)
}

/// Whichever node the api started on, once that connection is closed (as
/// when the node dies) it publishes to another live one, skipping the dead
/// node, and every 202 is a message on the node it was confirmed by.
#[tokio::test]
async fn the_api_moves_to_the_next_live_node_when_its_connection_is_lost() {
    let a = TestEnv::new().await.expect("test environment");
    let b = TestEnv::new().await.expect("a second vhost");
    let list = format!("{},{},{}", dead_url(), a.amqp_url, b.amqp_url);
    let app = Stack::start_in(a, &["--amqp-url", &list]).await;
    let a = &app.env;
    tokio::time::timeout(
        Duration::from_secs(30),
        app.state().publisher.wait_connected(),
    )
    .await
    .expect("the api connects to a live node");
    app.create(json!({"stages": 1, "stage_ms": 0})).await;
    let (on, other) = match (depth(a).await, depth(&b).await) {
        (1, 0) => (a, &b),
        (0, 1) => (&b, a),
        found => panic!("one message on one node, found {found:?}"),
    };

    eventually(
        "the api's connection is closed",
        Duration::from_secs(20),
        || async {
            (on.kill_connections()
                .await
                .expect("the management API answers")
                > 0)
            .then_some(())
        },
    )
    .await;
    let mut accepted = 0;
    eventually(
        "a create goes through again",
        Duration::from_secs(30),
        || async {
            let res = app.post_task(json!({"stages": 1, "stage_ms": 0})).await;
            match res.status().as_u16() {
                202 => Some(()),
                503 => None,
                other => panic!("POST /tasks answered {other}"),
            }
        },
    )
    .await;
    accepted += 1;
    for _ in 0..4 {
        app.create(json!({"stages": 1, "stage_ms": 0})).await;
        accepted += 1;
    }
    assert_eq!(depth(on).await, 1, "nothing more on the lost node");
    assert_eq!(
        depth(other).await,
        accepted,
        "every later task on the next node"
    );
    app.stop().await;
    b.cleanup().await;
}

/// A list without any URL is refused at start, naming the setting.
#[test]
fn an_amqp_url_list_without_urls_is_refused() {
    use clap::Parser;
    let refused = api_service::Settings::try_parse_from(["api-service", "--amqp-url", " , "])
        .expect_err("refused");
    assert!(refused.to_string().contains("lists no URL"), "{refused}");
    let parsed = api_service::Settings::try_parse_from([
        "api-service",
        "--amqp-url",
        "amqp://a/v , amqp://b/v",
    ])
    .unwrap();
    assert_eq!(parsed.amqp_url, "amqp://a/v,amqp://b/v");
}
