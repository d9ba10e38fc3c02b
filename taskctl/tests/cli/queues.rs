//! `queues`, `pause`, `resume`, and `submit --queue`.

use serde_json::Value;
use test_support::Stack;

use crate::helpers::{run, Taskctl};

#[tokio::test]
async fn queues_pause_resume_and_submit_to_a_queue() {
    let api = Stack::start(&["--queues", "algo,gpu"]).await;

    let out = run(
        api.taskctl(),
        &["submit", "--queue", "gpu", "--stages", "1"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.trim().to_owned();
    assert_eq!(api.task(&id).await["queue"], "gpu");

    let out = run(api.taskctl(), &["pause", "gpu"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = run(api.taskctl(), &["queues"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["QUEUE", "DEPTH", "CONSUMERS", "PAUSED"],
            vec!["algo", "0", "0", "no"],
            vec!["gpu", "1", "0", "yes"],
        ],
        "{}",
        out.stdout
    );
    let out = run(api.taskctl(), &["resume", "gpu"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = run(api.taskctl(), &["queues", "--json"]).await;
    let printed: Value = serde_json::from_str(&out.stdout).expect("stdout is JSON");
    assert_eq!(printed[1]["paused"], false);

    let out = run(api.taskctl(), &["pause", "nope"]).await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.one_error_line().contains("nope"), "{out:?}");
    let out = run(api.taskctl(), &["submit", "--queue", "nope"]).await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.one_error_line().contains("queue"), "{out:?}");
    api.stop().await;
}
