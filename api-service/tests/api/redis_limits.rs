//! Redis at its limits, each on a private Redis (never the shared one's
//! config): full under `noeviction`, an evicting policy, a Redis that
//! refuses `CONFIG`; and the list index rebuilt from the tasks.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::Duration,
};

use api_service::store::Set;
use redis::aio::MultiplexedConnection;
use serde_json::json;
use task_model::TaskId;
use test_support::{eventually, servers::PrivateRedis, Stack};

async fn admin(redis: &PrivateRedis) -> MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("a redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("the private redis answers")
}

async fn config_set(conn: &mut MultiplexedConnection, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("CONFIG SET {name} {value}: {e}"));
}

/// `SCRIPT FLUSH`: Redis forgets every loaded script, as after a restart.
async fn flush_scripts(conn: &mut MultiplexedConnection) {
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(conn)
        .await
        .expect("SCRIPT FLUSH");
}

async fn used_memory(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO memory has used_memory")
}

/// Every task id `GET /tasks` lists, following the cursor to the end.
async fn all_listed(app: &Stack) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/tasks?limit=1000".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get_json(&path).await;
        let tasks = page["tasks"].as_array();
        for t in tasks.unwrap_or_else(|| panic!("GET {path}: {page}")) {
            ids.insert(t["task_id"].as_str().expect("a task id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}

/// Creates tasks, `CONCURRENCY` at a time, until Redis is full: answers
/// the ids that got 202 once twenty creates in a row got 503.
async fn fill(app: &Stack) -> Vec<String> {
    const CONCURRENCY: usize = 16;
    let input = "x".repeat(2_000);
    let accepted = Mutex::new(Vec::new());
    let refused_in_a_row = AtomicUsize::new(0);
    let posted = AtomicUsize::new(0);
    let client = || async {
        while refused_in_a_row.load(Ordering::SeqCst) < 20 {
            assert!(
                posted.fetch_add(1, Ordering::SeqCst) < 20_000,
                "redis never filled up"
            );
            let res = app
                .post_task(json!({"stages": 1, "stage_ms": 0, "input": input}))
                .await;
            match res.status().as_u16() {
                202 => {
                    refused_in_a_row.store(0, Ordering::SeqCst);
                    let body: serde_json::Value = res.json().await.expect("a JSON 202");
                    let id = body["task_id"].as_str().expect("a task id").to_owned();
                    accepted.lock().unwrap().push(id);
                }
                503 => {
                    refused_in_a_row.fetch_add(1, Ordering::SeqCst);
                }
                other => panic!("a create on a full redis answered {other}"),
            }
        }
    };
    futures_util::future::join_all((0..CONCURRENCY).map(|_| client())).await;
    accepted.into_inner().unwrap()
}

/// Redis full under `noeviction`: creates answer 503, and every task that got
/// 202 is listed (once there is room again), none lost between the index and
/// the outbox. Three rounds of filling, 16 creates at a time: those between
/// their store and their index write when Redis crosses its limit get the
/// index write refused (`OOM command not allowed`).
#[tokio::test]
async fn a_full_redis_keeps_every_accepted_task_listable() {
    let redis = PrivateRedis::start().await.expect("a private redis");
    let mut conn = admin(&redis).await;
    config_set(&mut conn, "maxmemory-policy", "noeviction").await;
    let app = Stack::start_on_redis(redis.url(), &["--republish-after-secs", "1"]).await;
    let mut accepted = Vec::new();
    for _ in 0..3 {
        let limit = used_memory(&mut conn).await + 1_000_000;
        config_set(&mut conn, "maxmemory", &limit.to_string()).await;
        let round = fill(&app).await;
        assert!(!round.is_empty(), "some creates fit before redis filled");
        accepted.extend(round);
    }
    // The operator makes room; the outbox sweep lists what it could not.
    config_set(&mut conn, "maxmemory", "0").await;
    let accepted: HashSet<String> = accepted.into_iter().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed = all_listed(&app).await;
        let missing: Vec<&String> = accepted.difference(&listed).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} accepted tasks never listed: {missing:?}",
            missing.len(),
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &accepted {
        assert_eq!(app.get_task(id).await.status(), 200, "task {id} exists");
    }
    // Creates refused half-way leave their ids there; the sweep drops them.
    eventually(
        "the sweep empties the outbox",
        Duration::from_secs(30),
        || async {
            let n = app.env.set_size(Set::Outbox).await.unwrap();
            (n == 0).then_some(())
        },
    )
    .await;
    app.stop().await;
}

/// The list index is rebuildable: `api-service repair-index` relists tasks
/// whose index entries are gone, and a second run adds nothing.
#[tokio::test]
async fn repair_index_relists_tasks_missing_from_the_index() {
    let app = Stack::start(&[]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.create(json!({"stages": 1, "stage_ms": 0})).await);
    }
    assert_eq!(app.env.set_size(Set::Index).await.unwrap(), 5);
    let mut conn = app.env.redis().await.expect("the shared redis");
    for id in &ids[..3] {
        let shard = Set::Index.key_for(&app.env.redis_prefix, &TaskId::parse(id).unwrap());
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(&shard)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        let member: Vec<&String> = members
            .iter()
            .filter(|m| m.ends_with(id.as_str()))
            .collect();
        assert_eq!(member.len(), 1, "task {id} is in its shard of the index");
        let _: i64 = redis::cmd("ZREM")
            .arg(&shard)
            .arg(member[0])
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(all_listed(&app).await.len(), 2, "three entries deleted");

    let repair = |expect: &'static str| {
        let app = &app;
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_api-service"))
                .args(["--redis-url", &app.env.redis_url])
                .args(["--redis-prefix", &app.env.redis_prefix])
                .arg("repair-index")
                .env_remove("CALLBACK_TOKEN")
                .output()
                .await
                .expect("api-service runs");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "repair-index failed: {stdout}");
            assert!(
                stdout.contains(expect),
                "repair-index said {stdout:?}, expected {expect:?}"
            );
        }
    };
    repair("5 task(s)").await;
    assert_eq!(
        all_listed(&app).await,
        ids.iter().cloned().collect::<HashSet<_>>(),
        "every task is listed again"
    );
    repair("0 added").await;
    app.stop().await;
}

fn redis_check(body: &serde_json::Value) -> (bool, String) {
    let check = &body["checks"]["redis"];
    (
        check["ok"].as_bool().expect("the redis check has ok"),
        check["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// An evicting Redis (`allkeys-lru`) is not ready, with why and how to fix
/// it; with `--redis-allow-eviction` it is; and the check follows a fix.
#[tokio::test]
async fn an_evicting_redis_is_not_ready_unless_allowed() {
    let redis = PrivateRedis::start().await.expect("a private redis");
    let mut conn = admin(&redis).await;
    config_set(&mut conn, "maxmemory-policy", "allkeys-lru").await;

    let app = Stack::start_on_redis(redis.url(), &[]).await;
    let (status, body) = app.readiness().await;
    assert_eq!(status, 503, "{body}");
    let (ok, error) = redis_check(&body);
    assert!(!ok, "{body}");
    for needle in [
        "maxmemory-policy is allkeys-lru",
        "must be noeviction",
        "CONFIG SET maxmemory-policy noeviction",
        "REDIS_ALLOW_EVICTION",
    ] {
        assert!(error.contains(needle), "{error:?} lacks {needle:?}");
    }
    config_set(&mut conn, "maxmemory-policy", "noeviction").await;
    let (status, body) = app.readiness().await;
    assert_eq!(status, 200, "fixed: {body}");
    app.stop().await;

    config_set(&mut conn, "maxmemory-policy", "allkeys-lru").await;
    let app = Stack::start_on_redis(redis.url(), &["--redis-allow-eviction"]).await;
    let (status, body) = app.readiness().await;
    assert_eq!(status, 200, "eviction allowed: {body}");
    assert_eq!(redis_check(&body), (true, String::new()));
    app.stop().await;
}

/// A Redis that refuses `CONFIG GET` (here an ACL user without `CONFIG`, as
/// on managed services) does not fail readiness: the policy is unknown.
#[tokio::test]
async fn a_redis_refusing_config_is_ready() {
    let redis = PrivateRedis::start().await.expect("a private redis");
    let mut conn = admin(&redis).await;
    config_set(&mut conn, "maxmemory-policy", "allkeys-lru").await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("api")
        .arg("on")
        .arg(">api-password")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-config")
        .query_async(&mut conn)
        .await
        .expect("ACL SETUSER");
    let url = format!("redis://api:api-password@127.0.0.1:{}/0", redis.port);
    let app = Stack::start_on_redis(url, &[]).await;
    let (status, body) = app.readiness().await;
    assert_eq!(status, 200, "policy unknown is not a failure: {body}");
    // Without CONFIG and without AOF, persistence is unknown.
    assert_eq!(
        body["checks"]["redis"]["persistence"],
        serde_json::Value::Null,
        "{body}"
    );
    assert!(
        body["checks"]["redis"].get("persistence").is_some(),
        "{body}"
    );
    // The api works as that user.
    let id = app.create(json!({"stages": 1, "stage_ms": 0})).await;
    assert_eq!(app.get_task(&id).await.status(), 200);
    app.stop().await;
}

/// A Redis that lost its scripts (a restart, a failover to a replica that
/// never ran them, `SCRIPT FLUSH`) answers the pipelined `EVALSHA` of a
/// create with `NOSCRIPT`: the create loads the script and goes through,
/// once, and so does a batch.
#[tokio::test]
async fn creates_survive_a_redis_that_forgot_the_transition_script() {
    let redis = PrivateRedis::start().await.expect("a private redis");
    let mut conn = admin(&redis).await;
    let app = Stack::start_on_redis(redis.url(), &[]).await;
    let first = app.create(json!({"stages": 1, "stage_ms": 0})).await;

    flush_scripts(&mut conn).await;
    let second = app.create(json!({"stages": 1, "stage_ms": 0})).await;
    flush_scripts(&mut conn).await;
    let batch = app
        .http
        .post(app.url("/tasks/batch"))
        .json(&json!({"tasks": [{"stages": 1}, {"stages": 1}]}))
        .send()
        .await
        .expect("POST /tasks/batch");
    assert_eq!(batch.status(), 202);
    let batch: serde_json::Value = batch.json().await.expect("a JSON answer");

    let mut ids = vec![first, second];
    ids.extend(
        batch["tasks"]
            .as_array()
            .expect("the batch lists its tasks")
            .iter()
            .map(|t| t["task_id"].as_str().expect("an id").to_owned()),
    );
    assert_eq!(ids.len(), 4);
    for id in &ids {
        let task = app.task(id).await;
        assert_eq!(task["status"], "QUEUED", "{task}");
        let events = app.events(id).await;
        assert_eq!(events.len(), 1, "created once: {events:?}");
    }
    let listed = all_listed(&app).await;
    assert!(ids.iter().all(|id| listed.contains(id)), "{listed:?}");
    app.stop().await;
}

/// A claim on a single Redis is one pipeline of two scripts (the lease
/// index's and the transition's) and two commands: on `NOSCRIPT` it loads
/// both and goes through once, the task in the lease index and out of the
/// QUEUED set.
#[tokio::test]
async fn claims_survive_a_redis_that_forgot_their_scripts() {
    let redis = PrivateRedis::start().await.expect("a private redis");
    let mut conn = admin(&redis).await;
    let app = Stack::start_on_redis(redis.url(), &[]).await;
    let id = app.create(json!({"stages": 2, "stage_ms": 0})).await;
    let task_id = TaskId::parse(&id).unwrap();
    let score = |set: Set| {
        let key = set.key_for(&app.env.redis_prefix, &task_id);
        redis::cmd("ZSCORE").arg(key).arg(&id).to_owned()
    };
    let queued: Option<f64> = score(Set::Queued).query_async(&mut conn).await.unwrap();
    assert!(queued.is_some(), "a new task is in the QUEUED set");

    flush_scripts(&mut conn).await;
    let (status, answer) = app
        .status_callback(&id, json!({"status": "PROCESSING", "worker": "w1"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "PROCESSING", "{answer}");
    assert_eq!(
        answer["run"]["stages"], 2,
        "the claim answers what to run: {answer}"
    );

    let leased: Option<f64> = score(Set::Leases).query_async(&mut conn).await.unwrap();
    let queued: Option<f64> = score(Set::Queued).query_async(&mut conn).await.unwrap();
    assert!(leased.is_some(), "a claimed task is in the lease index");
    assert_eq!(queued, None, "a claimed task left the QUEUED set");
    let kinds: Vec<String> = app
        .events(&id)
        .await
        .iter()
        .map(|e| format!("{} {}", e["type"], e["status"]))
        .collect();
    assert_eq!(
        kinds,
        [r#""status" "QUEUED""#, r#""status" "PROCESSING""#],
        "claimed once"
    );
    app.stop().await;
}

/// Pooled connections are handed out without a round trip of checks while
/// in use; when Redis drops them all (a restart, `CLIENT KILL`), the
/// first command on a dead one fails (503), that connection leaves the pool
/// and every other is checked before its next use: one failure at most,
/// then creates go through.
#[tokio::test]
async fn after_redis_drops_every_connection_at_most_one_create_fails() {
    let redis = PrivateRedis::start().await.expect("a private redis");
    let mut conn = admin(&redis).await;
    let app = Stack::start_on_redis(redis.url(), &[]).await;
    app.create(json!({"stages": 1, "stage_ms": 0})).await;

    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL");
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(
            app.post_task(json!({"stages": 1, "stage_ms": 0}))
                .await
                .status()
                .as_u16(),
        );
    }
    let failed = statuses.iter().filter(|s| **s != 202).count();
    assert!(failed <= 1, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 202 || *s == 503),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&202), "{statuses:?}");
    app.stop().await;
}

/// On one Redis without `REDIS_MIN_REPLICAS`, concurrent requests share the
/// pool's most recently used connection instead of holding one each: 64
/// creates at once leave a few connections open, not 64.
#[tokio::test]
async fn concurrent_requests_share_a_few_connections() {
    let redis = PrivateRedis::start().await.expect("a private redis");
    let mut conn = admin(&redis).await;
    let app = Stack::start_on_redis(redis.url(), &[]).await;
    app.create(json!({"stages": 1, "stage_ms": 0})).await;
    let creates = (0..64).map(|_| app.create(json!({"stages": 1, "stage_ms": 0})));
    let ids = futures_util::future::join_all(creates).await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 64);

    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut conn)
        .await
        .expect("CLIENT LIST");
    // Less this test's own connection.
    let api_connections = clients.lines().count() - 1;
    assert!(
        (1..16).contains(&api_connections),
        "{api_connections} connections for 64 concurrent creates:\n{clients}"
    );
    app.stop().await;
}

/// The api's connections outlive its (actix) runtimes in the state other
/// tasks hold. redis-rs drives a connection from the runtime that made it,
/// so the pool makes them on a runtime of its own: after the api's
/// runtimes end, its connections, all made from them, still work (made
/// there, 11 of 64 failed with a broken pipe in CI, racing the runtimes'
/// ends, which a check at checkout could not close).
#[tokio::test]
async fn connections_outlive_the_runtimes_that_asked_for_them() {
    let mut app = Stack::start(&[]).await;
    // Requests in parallel: the pool fills with connections of the api's
    // worker runtimes, all used just now.
    let creates = (0..64).map(|_| app.create(json!({"stages": 1, "stage_ms": 0})));
    let ids: Vec<TaskId> = futures_util::future::join_all(creates)
        .await
        .iter()
        .map(|id| id.parse().unwrap())
        .collect();
    let state = app.state();
    app.stop_api().await;

    let loads = ids.iter().map(|id| state.store.load(id));
    let loaded = futures_util::future::join_all(loads).await;
    let failed: Vec<_> = loaded
        .iter()
        .filter(|l| !matches!(l, Ok(Some(_))))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 64 loads failed: {:?}",
        failed.len(),
        failed.first()
    );
    app.env.cleanup().await;
}
