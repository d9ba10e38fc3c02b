//! Webhooks: a finished task's GET representation is POSTed to its
//! `webhook_url`, signed, and retried until the receiver accepts. The
//! receiver is a real HTTP server on loopback that checks the signature.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::helpers::{spawn_app_with, TestApp};

const SECRET: &str = "s3cret";

/// One request the receiver got.
#[derive(Debug)]
struct Delivery {
    attempt: u32,
    /// What the receiver answered.
    answered: u16,
    signature_ok: bool,
    task_id_header: Option<String>,
    content_type: Option<String>,
    body: Value,
}

struct Receiver {
    url: String,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    handle: actix_web::dev::ServerHandle,
}

struct ReceiverState {
    attempts: AtomicU32,
    /// Attempts answered 500 before the receiver accepts.
    fail_first: u32,
    tx: mpsc::UnboundedSender<Delivery>,
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Checks `sha256=<hex>` against an HMAC-SHA256 of the raw body, in constant time.
fn signature_ok(header: Option<&str>, body: &[u8]) -> bool {
    let Some(hex_mac) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(given) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let attempt = state.attempts.fetch_add(1, Ordering::SeqCst) + 1;
    let answered = if attempt <= state.fail_first {
        500
    } else {
        204
    };
    let _ = state.tx.send(Delivery {
        attempt,
        answered,
        signature_ok: signature_ok(header(&req, "x-taskforge-signature").as_deref(), &body),
        task_id_header: header(&req, "x-taskforge-task-id"),
        content_type: header(&req, "content-type"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    if answered == 500 {
        HttpResponse::InternalServerError().body("failing on purpose")
    } else {
        HttpResponse::NoContent().finish()
    }
}

/// A webhook receiver on 127.0.0.1 that fails its first `fail_first` requests.
fn spawn_receiver(fail_first: u32) -> Receiver {
    let (tx, deliveries) = mpsc::unbounded_channel();
    let state = web::Data::new(ReceiverState {
        attempts: AtomicU32::new(0),
        fail_first,
        tx,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/hook", web::post().to(receive))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("bind the receiver");
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Receiver {
        url: format!("http://127.0.0.1:{port}/hook"),
        deliveries,
        handle,
    }
}

impl Receiver {
    async fn next(&mut self) -> Delivery {
        tokio::time::timeout(Duration::from_secs(15), self.deliveries.recv())
            .await
            .expect("a webhook delivery within 15 s")
            .expect("receiver alive")
    }

    /// Asserts nothing more arrives for a short while.
    async fn assert_quiet(&mut self) {
        if let Ok(Some(extra)) =
            tokio::time::timeout(Duration::from_millis(300), self.deliveries.recv()).await
        {
            panic!("an unexpected extra delivery: {extra:?}");
        }
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn spawn_app_with_webhooks() -> TestApp {
    spawn_app_with(&[
        "--webhook-secret",
        SECRET,
        "--webhook-allowed-hosts",
        "127.0.0.1",
        // Retries start at 20 ms instead of 500 ms, so the failure cases are quick.
        "--webhook-retry-base-ms",
        "20",
    ])
    .await
}

/// Polls GET until `webhook.state` is `state` (bounded).
async fn webhook_when(app: &TestApp, id: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let task = app.task(id).await;
        if task["webhook"]["state"] == state {
            return task["webhook"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "webhook never became {state}: {}",
            task["webhook"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn without_webhook(mut task: Value) -> Value {
    task.as_object_mut().unwrap().remove("webhook");
    task
}

#[tokio::test]
async fn a_finished_task_is_posted_signed_and_retried_until_the_receiver_accepts() {
    // Arrange
    let mut receiver = spawn_receiver(2);
    let app = spawn_app_with_webhooks().await;
    let id = app
        .create(json!({"stages": 2, "stage_ms": 0, "webhook_url": receiver.url}))
        .await;
    assert_eq!(
        app.task(&id).await["webhook"],
        json!({"state": "pending", "attempts": 0, "last_error": null}),
        "a task with a webhook shows it pending from the start"
    );

    // Act: a worker runs it to the end.
    app.claim(&id, "w1").await;
    app.progress_callback(&id, "w1", 1, 2).await;
    app.progress_callback(&id, "w1", 2, 2).await;
    let result = json!({"stages": 2, "output": "hello world"});
    let (status, _) = app
        .status_callback(
            &id,
            json!({"status": "COMPLETED", "worker": "w1", "result": result}),
        )
        .await;
    assert_eq!(status, 200);

    // Assert: two refused attempts, then one accepted, all signed.
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        deliveries.push(receiver.next().await);
    }
    let answered: Vec<(u32, u16)> = deliveries.iter().map(|d| (d.attempt, d.answered)).collect();
    assert_eq!(answered, [(1, 500), (2, 500), (3, 204)]);
    for d in &deliveries {
        assert!(
            d.signature_ok,
            "attempt {} carries a valid signature",
            d.attempt
        );
        assert_eq!(d.task_id_header.as_deref(), Some(id.as_str()));
        assert_eq!(d.content_type.as_deref(), Some("application/json"));
        assert_eq!(d.body["task_id"], id.as_str());
        assert_eq!(d.body["status"], "COMPLETED");
    }
    let accepted = deliveries.pop().unwrap();
    let webhook = webhook_when(&app, &id, "delivered").await;
    assert_eq!(
        webhook,
        json!({"state": "delivered", "attempts": 3, "last_error": null})
    );
    receiver.assert_quiet().await;

    // The body is the task's GET representation (but for the webhook's own
    // progress, which the third attempt reports as pending after two failures).
    let task = app.task(&id).await;
    assert_eq!(accepted.body["result"], result);
    assert_eq!(
        without_webhook(accepted.body.clone()),
        without_webhook(task)
    );
    assert_eq!(accepted.body["webhook"]["state"], "pending");
    assert_eq!(accepted.body["webhook"]["attempts"], 2);
    assert!(accepted.body["webhook"]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("500")));

    receiver.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_task_cancelled_while_queued_gets_its_webhook() {
    let mut receiver = spawn_receiver(0);
    let app = spawn_app_with_webhooks().await;
    let id = app
        .create(json!({"stages": 3, "webhook_url": receiver.url}))
        .await;

    let res = app.cancel(&id).await;
    assert_eq!(res.status(), 200, "a queued task is cancelled at once");

    let delivery = receiver.next().await;
    assert_eq!((delivery.attempt, delivery.answered), (1, 204));
    assert!(delivery.signature_ok);
    assert_eq!(delivery.body["task_id"], id.as_str());
    assert_eq!(delivery.body["status"], "CANCELLED");
    assert_eq!(delivery.body["started_at"], Value::Null);
    assert_eq!(delivery.body["cancel_requested"], true);
    let webhook = webhook_when(&app, &id, "delivered").await;
    assert_eq!(webhook["attempts"], 1);
    receiver.assert_quiet().await;

    receiver.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_never_accepts_leaves_the_webhook_failed_with_the_last_error() {
    let mut receiver = spawn_receiver(u32::MAX);
    let app = spawn_app_with_webhooks().await;
    let id = app
        .create(json!({"stages": 1, "webhook_url": receiver.url}))
        .await;
    app.claim(&id, "w1").await;
    app.status_callback(
        &id,
        json!({"status": "FAILED", "worker": "w1", "error": "boom"}),
    )
    .await;

    for attempt in 1..=api_service::webhooks::MAX_ATTEMPTS {
        let d = receiver.next().await;
        assert_eq!((d.attempt, d.answered), (attempt, 500));
        assert_eq!(d.body["status"], "FAILED");
    }
    let webhook = webhook_when(&app, &id, "failed").await;
    assert_eq!(webhook["attempts"], api_service::webhooks::MAX_ATTEMPTS);
    assert!(
        webhook["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "the last error names the receiver's answer: {webhook}"
    );
    receiver.assert_quiet().await;

    receiver.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_url_outside_the_allowed_hosts_is_refused_with_400() {
    let app = spawn_app_with_webhooks().await;

    for url in [
        "http://localhost:9/hook",
        "https://example.com/hook",
        "http://127.0.0.2/hook",
    ] {
        let res = app.post_task(json!({"webhook_url": url})).await;
        assert_eq!(res.status(), 400, "{url}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "webhook_host_not_allowed", "{url}");
    }
    let res = app
        .post_task(json!({"webhook_url": "ftp://127.0.0.1/hook"}))
        .await;
    assert_eq!(res.status(), 400, "only http(s) URLs");

    let list: Value = app.get_json("/tasks").await;
    assert_eq!(list["tasks"], json!([]), "no task was created");
    app.stop().await;
}

#[tokio::test]
async fn a_task_that_expires_while_its_webhook_is_retried_stays_gone() {
    // Arrange: finished tasks live 1 s; retries come 0.3, 0.9, 2.1, 4.5 s after the first attempt.
    let mut receiver = spawn_receiver(u32::MAX);
    let app = spawn_app_with(&[
        "--webhook-secret",
        SECRET,
        "--webhook-allowed-hosts",
        "127.0.0.1",
        "--webhook-retry-base-ms",
        "300",
        "--result-ttl-secs",
        "1",
    ])
    .await;
    let id = app
        .create(json!({"stages": 1, "webhook_url": receiver.url}))
        .await;

    // Act
    assert_eq!(app.cancel(&id).await.status(), 200);

    // Assert: the attempts go on while the task exists...
    for attempt in 1..=3 {
        assert_eq!(receiver.next().await.attempt, attempt);
    }
    // ...and stop once it has expired, leaving nothing behind: neither a
    // half task that would read as corrupt (500) nor a key without a TTL.
    let key = format!("{}task:{{{id}}}", app.env.redis_prefix);
    let mut redis = app.env.redis().await.unwrap();
    // The fourth attempt (2.1 s) finds the task gone and gives up without a request.
    if let Ok(Some(d)) =
        tokio::time::timeout(Duration::from_secs(3), receiver.deliveries.recv()).await
    {
        panic!("no request for an expired task: {d:?}");
    }
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!exists, "the expired task's hash was not recreated");
    assert_eq!(app.get_task(&id).await.status(), 404);

    receiver.stop().await;
    app.stop().await;
}
