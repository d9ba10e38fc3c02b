//! Schemathesis (PyPI) against a live api: every operation of
//! `/openapi.json`, generated requests, every check. Ignored in a plain
//! `cargo test` (it needs the tool); `scripts/schemathesis.sh` creates the
//! virtualenv and runs this test with `SCHEMATHESIS` pointing at it.

use std::time::Duration;

use crate::helpers::{spawn_app_with, TOKEN};

#[tokio::test]
#[ignore = "needs schemathesis: run scripts/schemathesis.sh"]
async fn schemathesis_finds_nothing_against_the_openapi_document() {
    let tool = std::env::var("SCHEMATHESIS")
        .expect("SCHEMATHESIS names the schemathesis executable (scripts/schemathesis.sh sets it)");
    let examples = std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "15".into());
    // One worker thread unless told otherwise: on CPython before 3.12 (Debian
    // 12 has 3.11.2) hypothesis changing the recursion limit in one thread
    // while another parses source fails a run now and then with "AST
    // constructor recursion depth mismatch" (CPython gh-106905).
    let workers = std::env::var("SCHEMATHESIS_WORKERS").unwrap_or_else(|_| "1".into());
    let config = std::env::var("SCHEMATHESIS_CONFIG").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml").to_owned()
    });
    // One bearer for both schemes: the api key is the callback token, so the
    // tool authenticates on the public and the callback endpoints alike, and
    // `ignored_auth` can check that both refuse a request without it.
    let app = spawn_app_with(&["--api-keys", TOKEN]).await;
    let spec = app.url("/openapi.json");
    let run = tokio::process::Command::new(&tool)
        .args([
            "--config-file",
            &config,
            "run",
            &spec,
            "--checks",
            "all",
            // `--checks all` turns on every check, the config's
            // `use_after_free = false` included (see schemathesis.toml).
            "--exclude-checks",
            "use_after_free",
            "--max-examples",
            &examples,
        ])
        .args(["--workers", &workers, "--seed", "1", "--no-color"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--request-timeout", "10"])
        // Its cache folder (.schemathesis) goes under target/, not the tree.
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("schemathesis finishes within 4 minutes")
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    app.stop().await;
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
