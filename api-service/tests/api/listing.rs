//! `GET /tasks`: newest first, filtered, paged with opaque cursors.

use std::collections::HashSet;

use serde_json::{json, Value};

use test_support::task_ids;

use crate::helpers::spawn_app;

#[tokio::test]
async fn listing_pages_newest_first_and_filters_by_status() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(app.create(json!({"stages": 1})).await);
    }
    for id in &created[..3] {
        assert_eq!(app.cancel(id).await.status(), 200);
    }

    // Page through everything, 3 at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = app.url("/tasks?limit=3");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tasks = page["tasks"].as_array().unwrap();
        assert!(tasks.len() <= 3);
        seen.extend(
            tasks
                .iter()
                .map(|t| t["task_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let page: Value = app.get_json("/tasks?status=CANCELLED").await;
    let ids: HashSet<&str> = task_ids(&page).into_iter().collect();
    assert_eq!(ids, created[..3].iter().map(String::as_str).collect());
    assert!(page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] == "CANCELLED"));
    app.stop().await;
}

#[tokio::test]
async fn an_expired_task_in_the_index_is_skipped() {
    let app = spawn_app().await;
    let keep = app.create(json!({})).await;
    let gone = app.create(json!({})).await;
    // Expire one task as Redis would.
    let mut redis = app.env.redis().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{}task:{{{gone}}}", app.env.redis_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    let page: Value = app.get_json("/tasks").await;
    assert_eq!(task_ids(&page), vec![keep.as_str()]);
    app.stop().await;
}
