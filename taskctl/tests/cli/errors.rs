//! Failures end in one line on stderr and the documented exit code.

use test_support::Stack;

use crate::helpers::{run, taskctl_at, Taskctl, UNKNOWN_ID};

#[tokio::test]
async fn an_unknown_task_exits_4_with_one_line_for_every_command() {
    let api = Stack::start(&[]).await;
    for args in [
        &["get", UNKNOWN_ID][..],
        &["get", UNKNOWN_ID, "--json"],
        &["watch", UNKNOWN_ID],
        &["cancel", UNKNOWN_ID],
        &["events", UNKNOWN_ID],
    ] {
        let out = run(api.taskctl(), args).await;
        assert_eq!(out.code, 4, "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        let line = out.one_error_line();
        assert!(
            line.contains(UNKNOWN_ID) && line.contains("no task"),
            "{line}"
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn a_malformed_id_is_a_usage_error_before_any_request() {
    // Nothing listens here: the id is refused locally.
    for args in [
        &["get", "not-a-uuid"][..],
        &["watch", "00000000-0000-4000-8000-00000000000"],
        &["cancel", "{00000000-0000-4000-8000-000000000000}"],
        &["events", "000000000000400080000000000000000"],
    ] {
        let out = run(taskctl_at("http://127.0.0.1:1"), args).await;
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        let line = out.one_error_line();
        assert!(line.contains("UUID"), "{line}");
    }
}

#[tokio::test]
async fn bad_arguments_exit_2_with_one_line() {
    for args in [
        &["submit", "--stages", "0"][..],
        &["submit", "--priority", "10"],
        &["submit", "--input", "{not json"],
        &["submit", "--bogus"],
        &["get"],
        &["list", "--limit", "5000"],
        &["--api-url", "nonsense", "list"],
        &["frobnicate"],
    ] {
        let out = run(taskctl_at("http://127.0.0.1:1"), args).await;
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        out.one_error_line();
    }
}

#[tokio::test]
async fn an_unreachable_api_exits_3_with_one_line() {
    for args in [
        &["submit"][..],
        &["get", UNKNOWN_ID],
        &["watch", UNKNOWN_ID],
        &["list"],
        &["submit", "--wait"],
    ] {
        let out = run(taskctl_at("http://127.0.0.1:1"), args).await;
        assert_eq!(out.code, 3, "{args:?}: {out:?}");
        let line = out.one_error_line();
        assert!(
            line.contains("cannot reach the api at http://127.0.0.1:1"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn help_and_version_exit_0() {
    let help = run(taskctl_at("http://127.0.0.1:1"), &["--help"]).await;
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("Examples:") && help.stdout.contains("Exit codes:"));
    let sub = run(taskctl_at("http://127.0.0.1:1"), &["watch", "--help"]).await;
    assert_eq!(sub.code, 0);
    assert!(sub.stdout.contains("taskctl watch"));
    let version = run(taskctl_at("http://127.0.0.1:1"), &["--version"]).await;
    assert_eq!(version.code, 0);
    assert!(version.stdout.starts_with("taskctl "));
}
