//! The topology on the real RabbitMQ, in a vhost of the test's own (deleted
//! afterwards, so no quorum queue stays behind on the shared broker).

use std::time::Duration;

use broker_topology::{LaneConsumer, QueueType, Topology};
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions},
    BasicProperties,
};
use test_support::TestEnv;

async fn queue_info(env: &TestEnv, queue: &str) -> serde_json::Value {
    let mgmt =
        std::env::var("TEST_RABBITMQ_MGMT").unwrap_or_else(|_| "http://127.0.0.1:15672".into());
    reqwest::Client::new()
        .get(format!("{mgmt}/api/queues/{}/{queue}", env.vhost))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn classic_declaration_is_v1s_and_idempotent() {
    let env = TestEnv::new().await.unwrap();
    let (conn, channel) = env.channel().await.unwrap();
    broker_topology::declare_topology(&channel).await.unwrap();
    Topology::new(QueueType::Classic)
        .declare(&channel, &["algo", "gpu"])
        .await
        .unwrap();
    for queue in ["tasks.algo", "tasks.gpu"] {
        let info = queue_info(&env, queue).await;
        assert_eq!(info["type"], "classic", "{queue}");
        assert_eq!(
            info["arguments"],
            serde_json::json!({
                "x-max-priority": 10,
                "x-dead-letter-exchange": "tasks.dlx",
                "x-dead-letter-routing-key": "tasks.dead"
            }),
            "{queue}"
        );
    }
    assert!(Topology::default()
        .declare(&channel, &["Bad.Name"])
        .await
        .is_err());
    let _ = conn.close(200, "done".into()).await;
    env.cleanup().await;
}

#[tokio::test]
async fn quorum_high_lane_overtakes_a_backlog() {
    let env = TestEnv::new().await.unwrap();
    let topology = Topology::new(QueueType::Quorum);
    let (conn, channel) = env.channel().await.unwrap();
    topology.declare(&channel, &["algo"]).await.unwrap();
    // Idempotent.
    topology.declare(&channel, &["algo"]).await.unwrap();
    let lanes = topology.task_queues("algo");
    for lane in &lanes {
        let info = queue_info(&env, &lane.name).await;
        assert_eq!(info["type"], "quorum", "{}", lane.name);
        assert_eq!(info["arguments"]["x-dead-letter-strategy"], "at-least-once");
        assert_eq!(info["arguments"]["x-overflow"], "reject-publish");
    }
    assert_eq!(queue_info(&env, "tasks.dead").await["type"], "quorum");

    let confirm = env.channel().await.unwrap();
    confirm
        .1
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let publish = |body: String, priority: u8| {
        let ch = confirm.1.clone();
        let key = topology.lane_for("algo", priority);
        async move {
            ch.basic_publish(
                "tasks".into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    for i in 0..20 {
        publish(format!("low-{i}"), 0).await;
    }
    publish("high".into(), 9).await;
    assert_eq!(env.queue_depth("tasks.algo").await.unwrap(), Some(20));
    assert_eq!(env.queue_depth("tasks.algo.p2").await.unwrap(), Some(1));

    channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumers = Vec::new();
    for lane in &lanes {
        consumers.push(
            channel
                .basic_consume(
                    lane.name.as_str().into(),
                    format!("test-{}", lane.name).as_str().into(),
                    BasicConsumeOptions::default(),
                    lane.consume_arguments(),
                )
                .await
                .unwrap(),
        );
    }
    let mut lane_consumer = LaneConsumer::new(consumers);
    let mut order = Vec::new();
    while order.len() < 21 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), lane_consumer.next())
            .await
            .expect("a delivery within 10 s")
            .expect("consumer open")
            .unwrap();
        order.push(String::from_utf8(delivery.data.clone()).unwrap());
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let high_at = order.iter().position(|b| b == "high").unwrap();
    // With prefetch 1 per lane, at most the one prefetched low delivery can
    // come before it; a FIFO queue would put it 21st.
    assert!(high_at <= 1, "high came at {high_at}: {order:?}");
    let lows: Vec<_> = order.iter().filter(|b| *b != "high").cloned().collect();
    let expected: Vec<_> = (0..20).map(|i| format!("low-{i}")).collect();
    assert_eq!(lows, expected, "a lane stays FIFO");

    let _ = confirm.0.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    env.cleanup().await;
}

/// `rabbitmq/definitions.quorum.json` makes the very queues `Topology` declares
/// (a redeclaration with other arguments would be refused).
#[tokio::test]
async fn quorum_definitions_file_matches_the_declaration() {
    let env = TestEnv::new().await.unwrap();
    let mgmt =
        std::env::var("TEST_RABBITMQ_MGMT").unwrap_or_else(|_| "http://127.0.0.1:15672".into());
    let defs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rabbitmq/definitions.quorum.json"
    ))
    .unwrap();
    let mut defs: serde_json::Value = serde_json::from_str(&defs).unwrap();
    defs.as_object_mut().unwrap().remove("vhosts");
    reqwest::Client::new()
        .post(format!("{mgmt}/api/definitions/{}", env.vhost))
        .basic_auth("guest", Some("guest"))
        .json(&defs)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let topology = Topology::new(QueueType::Quorum);
    for lane in topology.task_queues("algo") {
        assert_eq!(queue_info(&env, &lane.name).await["type"], "quorum");
    }
    let (conn, channel) = env.channel().await.unwrap();
    topology.declare(&channel, &["algo"]).await.unwrap();
    let _ = conn.close(200, "done".into()).await;
    env.cleanup().await;
}
