//! `/readyz` v2: pending before the first round, a write Redis must accept,
//! and Redis persistence.

use std::time::Duration;

use serde_json::Value;
use test_support::{
    eventually,
    servers::{PrivateRedis, PrivateRedisCluster},
    Stack, TestEnv,
};

/// A "Redis" that accepts connections and never answers: the api's first
/// round of checks lasts the checker's whole timeout (2 s).
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "redis://127.0.0.1:{}/0",
        listener.local_addr().unwrap().port()
    );
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, holding)
}

/// Before the first round of checks has ended, `/readyz` is 503 and every
/// check says `pending`; once it ends, the checks say what they found.
#[tokio::test]
async fn readyz_is_503_pending_before_the_first_round_ends() {
    let (url, silent) = silent_server().await;
    let env = TestEnv::new().await.expect("test environment");
    let amqp = env.amqp_url.clone();
    // Naming `--amqp-url` itself: the stack does not wait for RabbitMQ, so
    // the first request comes while the first round still runs.
    let app = Stack::start_in(env.with_redis(url), &["--amqp-url", &amqp]).await;
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unavailable", "{body}");
    for check in ["redis", "rabbitmq"] {
        assert_eq!(body["checks"][check]["ok"], false, "{body}");
        assert_eq!(body["checks"][check]["error"], "pending", "{body}");
    }
    let after = eventually("the first round ends", Duration::from_secs(20), || async {
        let body: Value = app.get_json("/readyz").await;
        (body["checks"]["redis"]["error"] != "pending").then_some(body)
    })
    .await;
    assert_eq!(after["checks"]["redis"]["ok"], false, "{after}");
    assert_eq!(after["checks"]["rabbitmq"]["ok"], true, "{after}");
    silent.abort();
    let _ = silent.await;
    app.stop().await;
}

/// An api pointed (with a single-node `REDIS_URL`) at a Redis Cluster node
/// that does not own the slot of its write probe gets `MOVED`: PING works,
/// creates would not, so it is not ready.
#[tokio::test]
async fn readyz_is_503_when_redis_answers_moved() {
    let cluster = PrivateRedisCluster::start(3, 0)
        .await
        .expect("a private redis cluster");
    let env = TestEnv::new().await.expect("test environment");
    let probe = format!("{}readyz:probe", env.redis_prefix);
    let slot = cluster.keyslot(&probe).await.unwrap();
    let owner = cluster.primary_of_slot(slot).await.unwrap();
    let other = (0..cluster.nodes()).find(|n| *n != owner).unwrap();
    let url = format!("redis://127.0.0.1:{}/", cluster.port(other));
    let app = Stack::start_in(env.with_redis(url), &[]).await;
    let (status, body) = app.readiness().await;
    assert_eq!(status, 503, "{body}");
    let redis = &body["checks"]["redis"];
    assert_eq!(redis["ok"], false, "{body}");
    let error = redis["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("refused a write") && error.to_lowercase().contains("moved"),
        "{error:?}"
    );
    assert_eq!(body["checks"]["rabbitmq"]["ok"], true, "{body}");
    app.stop().await;
}

/// The Redis check says whether Redis keeps anything on disk.
#[tokio::test]
async fn readyz_reports_redis_persistence() {
    let redis = PrivateRedis::start().await.expect("a private redis");
    // The private Redis starts with `--save "" --appendonly no`.
    let app = Stack::start_on_redis(redis.url(), &[]).await;
    let (status, body) = app.readiness().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["redis"]["persistence"], false, "{body}");
    assert!(
        body["checks"]["rabbitmq"].get("persistence").is_none(),
        "{body}"
    );
    app.stop().await;

    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("yes")
        .query_async(&mut conn)
        .await
        .unwrap();
    let app = Stack::start_on_redis(redis.url(), &[]).await;
    let (status, body) = app.readiness().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["redis"]["persistence"], true, "{body}");
    app.stop().await;
}
