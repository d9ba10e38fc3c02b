//! `submit --batch FILE` and `schedules list|create|get|delete`.

use serde_json::{json, Value};
use test_support::Stack;

use crate::helpers::{run, Taskctl, UNKNOWN_ID};

fn batch_file(content: &Value) -> tempfile_path::Path {
    tempfile_path::Path::with(content)
}

/// A JSON file in the temp dir, removed when dropped.
mod tempfile_path {
    pub struct Path(pub std::path::PathBuf);

    impl Path {
        pub fn with(content: &serde_json::Value) -> Self {
            let path = std::env::temp_dir().join(format!("taskctl-batch-{}.json", uuid_like()));
            std::fs::write(&path, content.to_string()).expect("the batch file is written");
            Self(path)
        }

        pub fn as_str(&self) -> &str {
            self.0.to_str().expect("a UTF-8 temp path")
        }
    }

    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn uuid_like() -> String {
        format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )
    }
}

#[tokio::test]
async fn submit_batch_prints_one_id_per_task_in_the_files_order() {
    let api = Stack::start(&[]).await;
    let list =
        batch_file(&json!([{"stages": 1, "input": {"n": 0}}, {"stages": 2, "input": {"n": 1}}]));
    let wrapped = batch_file(&json!({"tasks": [{"stages": 3}]}));

    let out = run(api.taskctl(), &["submit", "--batch", list.as_str()]).await;
    let again = run(api.taskctl(), &["submit", "--batch", wrapped.as_str()]).await;

    assert_eq!(out.code, 0, "{out:?}");
    let ids: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(ids.len(), 2, "{out:?}");
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(
            api.task(id).await["input"],
            json!({"n": n}),
            "line {n} is task {n}"
        );
    }
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(api.task(again.stdout.trim()).await["stages"], 3);
    api.stop().await;
}

#[tokio::test]
async fn a_bad_batch_names_the_task_and_a_bad_file_is_a_usage_error() {
    let api = Stack::start(&[]).await;
    let bad = batch_file(&json!([{}, {"stages": 0}]));
    let not_batch = batch_file(&json!({"stages": 1}));

    let out = run(api.taskctl(), &["submit", "--batch", bad.as_str()]).await;
    assert_eq!(out.code, 5, "{out:?}");
    assert!(out.one_error_line().contains("tasks[1]: stages"), "{out:?}");
    let out = run(api.taskctl(), &["submit", "--batch", not_batch.as_str()]).await;
    assert_eq!(out.code, 2, "{out:?}");
    let out = run(
        api.taskctl(),
        &["submit", "--batch", "/nonexistent/tasks.json"],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(api.listed().await.is_empty());
    api.stop().await;
}

#[tokio::test]
async fn schedules_are_created_listed_shown_and_deleted() {
    let api = Stack::start(&[]).await;

    let created = run(
        api.taskctl(),
        &[
            "schedules",
            "create",
            "--cron",
            "0 6 * * MON-FRI",
            "--task",
            r#"{"stages": 2}"#,
            "--name",
            "morning",
        ],
    )
    .await;
    assert_eq!(created.code, 0, "{created:?}");
    let id = created.stdout.trim().to_owned();
    assert!(created.stderr.contains("next run at"), "{created:?}");

    let list = run(api.taskctl(), &["schedules", "list"]).await;
    assert_eq!(list.code, 0, "{list:?}");
    assert!(
        list.stdout.contains(&id) && list.stdout.contains("morning"),
        "{list:?}"
    );
    let get = run(api.taskctl(), &["schedules", "get", &id, "--json"]).await;
    let shown: Value = serde_json::from_str(&get.stdout).expect("JSON");
    assert_eq!(
        (shown["cron"].as_str(), shown["task"]["stages"].as_u64()),
        (Some("0 6 * * MON-FRI"), Some(2))
    );
    let summary = run(api.taskctl(), &["schedules", "get", &id]).await;
    assert!(
        summary.stdout.contains("cron      0 6 * * MON-FRI (UTC)"),
        "{summary:?}"
    );

    let bad = run(api.taskctl(), &["schedules", "create", "--cron", "nope"]).await;
    assert_eq!(bad.code, 5, "{bad:?}");
    assert!(bad.one_error_line().contains("cron"), "{bad:?}");
    let deleted = run(api.taskctl(), &["schedules", "delete", &id]).await;
    assert_eq!(deleted.code, 0, "{deleted:?}");
    let gone = run(api.taskctl(), &["schedules", "get", &id]).await;
    assert_eq!(gone.code, 4, "{gone:?}");
    let unknown = run(api.taskctl(), &["schedules", "delete", UNKNOWN_ID]).await;
    assert_eq!(unknown.code, 4, "{unknown:?}");
    api.stop().await;
}
