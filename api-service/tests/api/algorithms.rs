//! The catalogue: `GET /algorithms`, and creates checked against it.

use serde_json::{json, Value};

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn get_algorithms_is_the_native_catalogue() {
    let app = spawn_app_with(&["--api-keys", "k1"]).await;
    // Open like /openapi.json, even with API keys set.
    let res = app.http.get(app.url("/algorithms")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, native::catalogue());
    let names: Vec<_> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["hello", "grayscale", "pi"]);
    assert_eq!(body[2]["cpu_bound"], true);
    assert_eq!(body[0]["cpu_bound"], false);
    app.stop().await;
}

async fn rejected(app: &crate::helpers::TestApp, body: Value) -> Value {
    let res = app.post_task(body.clone()).await;
    assert_eq!(res.status(), 400, "{body} must be refused");
    res.json().await.unwrap()
}

#[tokio::test]
async fn creates_are_checked_against_the_catalogue_and_name_the_field() {
    let app = spawn_app_with(&["--default-stages", "3"]).await;

    let err = rejected(&app, json!({"algorithm": "sort"})).await;
    assert_eq!(err["error"], "unknown_algorithm");
    assert_eq!(err["field"], "algorithm");
    assert!(err["message"].as_str().unwrap().contains("pi"), "{err}");

    for (body, field) in [
        (json!({"algorithm": "pi"}), "input"),
        (json!({"algorithm": "pi", "input": {}}), "input.samples"),
        (
            json!({"algorithm": "pi", "input": {"samples": 0}}),
            "input.samples",
        ),
        (
            json!({"algorithm": "pi", "input": {"samples": 5, "seed": -1}}),
            "input.seed",
        ),
        (
            json!({"algorithm": "grayscale", "input": {"image": "nope"}}),
            "input.image",
        ),
        (
            json!({"algorithm": "hello", "input": {"fail": {"at_stage": 0, "mode": "error"}}}),
            "input.fail.at_stage",
        ),
    ] {
        let err = rejected(&app, body.clone()).await;
        assert_eq!(err["error"], "invalid_input", "{body}: {err}");
        assert_eq!(err["field"], field, "{body}: {err}");
    }

    // Stages: hello keeps DEFAULT_STAGES, the others their own default,
    // an explicit value wins.
    let hello = app.create(json!({})).await;
    assert_eq!(app.task(&hello).await["stages"], 3);
    let pi = app
        .create(json!({"algorithm": "pi", "input": {"samples": 1000, "seed": 1}}))
        .await;
    let task = app.task(&pi).await;
    assert_eq!(task["algorithm"], "pi");
    assert_eq!(
        task["stages"],
        native::algorithm("pi").unwrap().default_stages
    );
    assert_eq!(task["input"], json!({"samples": 1000, "seed": 1}));
    let pi4 = app
        .create(json!({"algorithm": "pi", "stages": 4, "input": {"samples": 1000}}))
        .await;
    assert_eq!(app.task(&pi4).await["stages"], 4);
    app.stop().await;
}

#[tokio::test]
async fn progress_within_a_stage_is_kept_clamped_to_the_stage_and_never_goes_back() {
    let app = crate::helpers::spawn_app().await;
    let id = app.create(json!({"stages": 4, "stage_ms": 0})).await;
    app.claim(&id, "w").await;
    let report = |progress: u32, stage: u32| {
        let req = app
            .http
            .post(app.url(&format!("/internal/tasks/{id}/progress")))
            .bearer_auth(crate::helpers::TOKEN)
            .json(&json!({"progress": progress, "stage": stage, "stages": 4, "worker": "w"}));
        async move { (req.send().await.unwrap().status().as_u16(),) }
    };
    assert_eq!(report(10, 0).await.0, 200);
    assert_eq!(app.task(&id).await["progress"], 10);
    assert_eq!(app.task(&id).await["stage"], 0);
    // Past the stage: clamped to its last value (24 of 25..), not the next stage's.
    assert_eq!(report(60, 0).await.0, 200);
    assert_eq!(app.task(&id).await["progress"], 24);
    // Lower: ignored.
    assert_eq!(report(5, 0).await.0, 200);
    assert_eq!(app.task(&id).await["progress"], 24);
    // A whole stage, then within the next one.
    assert_eq!(report(25, 1).await.0, 200);
    assert_eq!(app.task(&id).await["progress"], 25);
    assert_eq!(report(40, 1).await.0, 200);
    let task = app.task(&id).await;
    assert_eq!(
        (task["progress"].as_u64(), task["stage"].as_u64()),
        (Some(40), Some(1))
    );
    let progress: Vec<u64> = app
        .events(&id)
        .await
        .iter()
        .filter(|e| e["type"] == "progress")
        .map(|e| e["progress"].as_u64().unwrap())
        .collect();
    assert_eq!(
        progress,
        [10, 24, 25, 40],
        "each stored progress is an event"
    );
    app.stop().await;
}
