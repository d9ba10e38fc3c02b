//! Blobs: upload, download, limits, keys in Redis, and a create's input blob.

use deadpool_redis::redis;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{spawn_app_with, TestApp, TOKEN};

async fn upload(app: &TestApp, bytes: Vec<u8>, content_type: Option<&str>) -> reqwest::Response {
    let mut req = app.http.post(app.url("/blobs")).body(bytes);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().await.unwrap()
}

async fn redis_ttl(app: &TestApp, key: &str) -> i64 {
    let client = redis::Client::open(app.env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("TTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_blob_round_trips_with_its_type_and_etag_under_its_hash_tag() {
    let app = spawn_app_with(&["--result-ttl-secs", "600"]).await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let res = upload(&app, bytes.clone(), Some("image/png")).await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let blob: Value = res.json().await.unwrap();
    let id = blob["blob_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/blobs/{id}"));
    assert_eq!(blob["size"], 70_000);
    assert_eq!(blob["content_type"], "image/png");
    let sha = hex::encode(Sha256::digest(&bytes));
    assert_eq!(blob["sha256"], sha);

    let res = app.http.get(app.url(&location)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(
        res.headers()["etag"].to_str().unwrap(),
        format!("\"{sha}\"")
    );
    assert_eq!(res.bytes().await.unwrap().as_ref(), bytes.as_slice());
    // Case-insensitive id; If-None-Match.
    let res = app
        .http
        .get(app.url(&format!("/blobs/{}", id.to_uppercase())))
        .header("if-none-match", format!("\"{sha}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);

    // One key, the blob id as its hash tag, expiring after RESULT_TTL_SECS.
    let key = format!("{}blob:{{{id}}}", app.env.redis_prefix);
    let ttl = redis_ttl(&app, &key).await;
    assert!((1..=600).contains(&ttl), "ttl {ttl}");

    // No content type: octet-stream; empty bodies are blobs too.
    let res = upload(&app, Vec::new(), None).await;
    assert_eq!(res.status(), 201);
    let blob: Value = res.json().await.unwrap();
    assert_eq!(blob["content_type"], "application/octet-stream");
    assert_eq!(blob["size"], 0);
    app.stop().await;
}

#[tokio::test]
async fn bad_blob_requests_get_json_errors() {
    let app = spawn_app_with(&["--blob-max-bytes", "1000"]).await;
    let res = upload(&app, vec![7; 1001], None).await;
    assert_eq!(res.status(), 413);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"], "payload_too_large");
    assert!(err["message"].as_str().unwrap().contains("1000"), "{err}");
    // Chunked (no Content-Length) is counted as it arrives.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..3).map(|_| Ok(vec![1u8; 400])).collect();
    let res = app
        .http
        .post(app.url("/blobs"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(upload(&app, vec![7; 1000], None).await.status(), 201);

    let res = app.http.get(app.url("/blobs/nope")).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_id");
    let unknown = uuid::Uuid::new_v4();
    let res = app
        .http
        .get(app.url(&format!("/blobs/{unknown}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn blobs_follow_the_api_key_rules_and_workers_use_the_callback_token() {
    let app = spawn_app_with(&["--api-keys", "k1"]).await;
    let res = upload(&app, b"x".to_vec(), None).await;
    assert_eq!(res.status(), 401);
    let res = app
        .http
        .post(app.url("/blobs"))
        .bearer_auth("k1")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["blob_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .http
        .get(app.url(&format!("/blobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Workers: the callback token, not an API key.
    let get = |token: &'static str| {
        app.http
            .get(app.url(&format!("/internal/blobs/{id}")))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(get("k1").await.unwrap().status(), 401);
    let res = get(TOKEN).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"abc");
    let res = app
        .http
        .post(app.url("/internal/blobs"))
        .bearer_auth(TOKEN)
        .header("content-type", "image/png")
        .body("png")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let out = res.json::<Value>().await.unwrap();
    let res = app
        .http
        .get(app.url(&format!("/blobs/{}", out["blob_id"].as_str().unwrap())))
        .bearer_auth("k1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"png");
    app.stop().await;
}

#[tokio::test]
async fn a_task_input_blob_must_exist_and_is_kept_longer_than_the_task() {
    let app = spawn_app_with(&["--result-ttl-secs", "600"]).await;
    let missing = uuid::Uuid::new_v4();
    let res = app
        .post_task(json!({"algorithm": "grayscale", "input": {"image": missing}}))
        .await;
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"], "invalid_input");
    assert_eq!(err["field"], "input.image");

    let res = upload(&app, b"not checked at create".to_vec(), None).await;
    let id = res.json::<Value>().await.unwrap()["blob_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = format!("{}blob:{{{id}}}", app.env.redis_prefix);
    assert!(redis_ttl(&app, &key).await <= 600);
    let task = app
        .create(json!({"algorithm": "grayscale", "input": {"image": id}}))
        .await;
    assert_eq!(app.task(&task).await["input"]["image"], id.as_str());
    // Kept a day past RESULT_TTL_SECS.
    assert!(redis_ttl(&app, &key).await > 86_400, "extended at create");
    app.stop().await;
}
