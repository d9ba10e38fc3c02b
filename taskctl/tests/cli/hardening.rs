//! Issue 10: asking for what already holds is success, negative numbers
//! meet the range check like any other.

use serde_json::json;

use test_support::Stack;

use crate::helpers::{run, taskctl_at, Taskctl};

#[tokio::test]
async fn cancel_of_a_cancelled_task_exits_0_and_of_a_finished_one_exits_5() {
    let api = Stack::start(&[]).await;
    let id = api.create(json!({})).await;

    let out = run(api.taskctl(), &["cancel", &id]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), format!("{id} CANCELLED"));
    assert_eq!(api.task(&id).await["status"], "CANCELLED");

    let again = run(api.taskctl(), &["cancel", &id]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stderr.is_empty(), "{again:?}");
    assert!(
        again.stdout.starts_with(&format!("{id} CANCELLED")) && again.stdout.contains("already"),
        "{again:?}"
    );
    assert_eq!(api.task(&id).await["status"], "CANCELLED");

    // Running: CANCELLING, and asking again still answers CANCELLING.
    let running = api.create(json!({"stages": 2})).await;
    api.claim(&running, "w1").await;
    for _ in 0..2 {
        let out = run(api.taskctl(), &["cancel", &running]).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.starts_with(&format!("{running} CANCELLING")),
            "{out:?}"
        );
    }

    // A task that ended otherwise cannot be cancelled: that stays an error.
    let done = api.create(json!({"stages": 1})).await;
    api.claim(&done, "w1").await;
    api.run_to_completion(&done, "w1", 1).await;
    let late = run(api.taskctl(), &["cancel", &done]).await;
    assert_eq!(late.code, 5, "{late:?}");
    let line = late.one_error_line();
    assert!(
        line.contains("409") && line.contains("already_finished") && line.contains("COMPLETED"),
        "{line}"
    );
    api.stop().await;
}

#[tokio::test]
async fn a_negative_number_is_a_range_error_for_every_numeric_flag() {
    for (args, range) in [
        (&["submit", "--stages", "-1"][..], "1..=1000"),
        (&["submit", "--stage-ms", "-1"], "0..=600000"),
        (&["submit", "--timeout", "-5"], "1..=86400"),
        (&["submit", "--priority", "-1"], "0..=9"),
        (&["list", "--limit", "-3"], "1..=1000"),
    ] {
        // Nothing listens here: the value is refused before any request.
        let out = run(taskctl_at("http://127.0.0.1:1"), args).await;
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        let line = out.one_error_line();
        assert!(
            line.contains(&format!("{} is not in {range}", args[2])) && line.contains(args[1]),
            "{args:?}: {line}"
        );
        assert!(!line.contains("unexpected argument"), "{line}");
    }
}
