//! The oldest QUEUED task's age: `taskforge_oldest_queued_age_seconds` and
//! the `/readyz` detail, sampled from the QUEUED set.

use api_service::service::backlog;
use serde_json::json;

use crate::helpers::spawn_app;

async fn oldest(app: &crate::helpers::TestApp) -> Option<String> {
    backlog::sample(&app.state())
        .await
        .expect("redis answers")
        .map(|o| o.task_id.to_string())
}

#[tokio::test]
async fn the_oldest_queued_task_is_tracked_until_it_is_claimed_or_cancelled() {
    let app = spawn_app().await;
    assert_eq!(oldest(&app).await, None, "nothing queued yet");
    let first = app.create(json!({})).await;
    let second = app.create(json!({})).await;
    let third = app.create(json!({})).await;

    assert_eq!(oldest(&app).await.as_deref(), Some(first.as_str()));
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("taskforge_oldest_queued_age_seconds{queue=\"tasks.algo\"}"))
        .unwrap_or_else(|| panic!("no age metric in\n{text}"));
    let age: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((0.0..60.0).contains(&age), "{line}");
    let (_, ready) = app.readiness().await;
    let shown = ready["queues"]["tasks.algo"]["oldest_queued_age_secs"]
        .as_f64()
        .unwrap_or_else(|| panic!("no queue detail in {ready}"));
    assert!((0.0..60.0).contains(&shown), "{ready}");

    app.claim(&first, "w1").await;
    assert_eq!(
        oldest(&app).await.as_deref(),
        Some(second.as_str()),
        "a claim takes it out"
    );
    assert!(app.cancel(&second).await.status().is_success());
    assert_eq!(
        oldest(&app).await.as_deref(),
        Some(third.as_str()),
        "a cancel too"
    );
    app.claim(&third, "w1").await;
    assert_eq!(oldest(&app).await, None);
    let (status, ready) = app.readiness().await;
    assert_eq!(
        status, 200,
        "readiness does not depend on the backlog: {ready}"
    );
    assert_eq!(ready["queues"]["tasks.algo"]["oldest_queued_age_secs"], 0.0);
    app.stop().await;
}
