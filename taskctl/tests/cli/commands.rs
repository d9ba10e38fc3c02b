//! `get`, `list`, `cancel`, `events`, and api keys.

use serde_json::{json, Value};
use test_support::{task_ids, Stack};

use crate::helpers::{run, Taskctl};

#[tokio::test]
async fn get_json_prints_exactly_what_the_api_answers() {
    let api = Stack::start(&[]).await;
    let id = api.create(json!({"stages": 3, "input": {"k": "v"}})).await;
    api.claim(&id, "w1").await;
    api.progress(&id, "w1", 1, 3).await;

    let out = run(api.taskctl(), &["get", &id, "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let printed: Value = serde_json::from_str(&out.stdout).expect("stdout is JSON");
    assert_eq!(printed, api.task(&id).await);
    assert!(
        out.stdout.contains("\n  \"status\""),
        "pretty: {}",
        out.stdout
    );
    api.stop().await;
}

#[tokio::test]
async fn get_shows_a_readable_summary() {
    let api = Stack::start(&[]).await;
    let id = api.create(json!({"stages": 3})).await;
    api.claim(&id, "w7").await;
    api.run_to_completion(&id, "w7", 3).await;

    let out = run(api.taskctl(), &["get", &id]).await;
    assert_eq!(out.code, 0, "{out:?}");
    for expected in [
        format!("id         {id}"),
        "status     COMPLETED".to_owned(),
        "progress   100% (stage 3/3".to_owned(),
        "worker     w7".to_owned(),
        r#"result     {"output":"hello world","stages":3}"#.to_owned(),
    ] {
        assert!(
            out.stdout.contains(&expected),
            "{expected:?} in\n{}",
            out.stdout
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn list_shows_a_table_and_filters_by_status() {
    let api = Stack::start(&[]).await;
    let queued = api.create(json!({})).await;
    let running = api.create(json!({})).await;
    api.claim(&running, "w1").await;

    let all = run(api.taskctl(), &["list"]).await;
    assert_eq!(all.code, 0, "{all:?}");
    let mut lines = all.stdout.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("STATUS") && header.contains("CREATED"),
        "{header}"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{}", all.stdout);
    assert!(rows[0].starts_with(&running), "newest first: {rows:?}");
    assert!(rows[1].starts_with(&queued) && rows[1].contains("QUEUED"));

    let processing = run(api.taskctl(), &["list", "--status", "processing"]).await;
    assert_eq!(processing.code, 0, "{processing:?}");
    assert!(processing.stdout.contains(&running) && !processing.stdout.contains(&queued));

    let json = run(api.taskctl(), &["list", "--status", "QUEUED", "--json"]).await;
    let page: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(task_ids(&page), vec![queued.as_str()]);

    let bad = run(api.taskctl(), &["list", "--status", "DONE"]).await;
    assert_eq!(bad.code, 2, "an unknown status is a usage error: {bad:?}");
    bad.one_error_line();
    api.stop().await;
}

#[tokio::test]
async fn list_all_follows_the_cursor_through_every_page() {
    let api = Stack::start(&[]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(api.create(json!({})).await);
    }
    let one_page = run(api.taskctl(), &["list", "--limit", "2"]).await;
    assert_eq!(one_page.stdout.lines().count(), 3, "{one_page:?}");
    assert!(
        one_page.stderr.contains("--all"),
        "more pages are pointed out"
    );

    let every = run(api.taskctl(), &["list", "--limit", "2", "--all", "--json"]).await;
    assert_eq!(every.code, 0, "{every:?}");
    let page: Value = serde_json::from_str(&every.stdout).unwrap();
    let mut listed = task_ids(&page);
    assert_eq!(page["next_cursor"], Value::Null);
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    api.stop().await;
}

#[tokio::test]
async fn events_prints_the_history_and_json_matches_the_api() {
    let api = Stack::start(&[]).await;
    let id = api.create(json!({"stages": 2})).await;
    api.claim(&id, "w1").await;
    api.run_to_completion(&id, "w1", 2).await;

    let table = run(api.taskctl(), &["events", &id]).await;
    assert_eq!(table.code, 0, "{table:?}");
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert!(rows[0].starts_with("SEQ"), "{rows:?}");
    assert_eq!(
        rows.len(),
        1 + 5,
        "header + QUEUED, PROCESSING, 2 progress, COMPLETED"
    );
    assert!(rows[1].contains("QUEUED") && rows[5].contains("COMPLETED"));

    let json = run(api.taskctl(), &["events", &id, "--json"]).await;
    let printed: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(printed, Value::from(api.events(&id).await));
    api.stop().await;
}

#[tokio::test]
async fn with_api_keys_taskctl_needs_a_key_and_works_with_one() {
    let api = Stack::start(&["--api-keys", "k1,k2"]).await;
    let id = api.create(json!({})).await;

    let without = run(api.taskctl(), &["get", &id]).await;
    assert_eq!(without.code, 5, "{without:?}");
    let line = without.one_error_line();
    assert!(line.contains("401") && line.contains("API_KEY"), "{line}");

    let mut with_env = api.taskctl();
    with_env.env("API_KEY", "k1");
    let out = run(with_env, &["get", &id, "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");

    let out = run(api.taskctl(), &["--api-key", "k2", "submit"]).await;
    assert_eq!(out.code, 0, "{out:?}");

    let wrong = run(api.taskctl(), &["list", "--api-key", "nope"]).await;
    assert_eq!(wrong.code, 5, "{wrong:?}");
    assert!(wrong.one_error_line().contains("unknown API key"));
    api.stop().await;
}
