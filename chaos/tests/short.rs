//! A short chaos run in the test suite: 40 tasks, 6 faults (every kind at
//! least once), the debug binaries. About 35 s, most of it RabbitMQ booting
//! twice (a private node; the shared servers are never touched).

use std::{path::PathBuf, process::Command};

#[test]
fn a_short_chaos_run_loses_nothing_and_finishes_nothing_twice() {
    let chaos = PathBuf::from(env!("CARGO_BIN_EXE_chaos"));
    let bin_dir = chaos
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    // Cargo builds only this package's binaries for its tests: build (or
    // refresh) the api's and the worker's, in the same profile.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "api-service", "-p", "algo-service"]);
    if bin_dir.ends_with("release") {
        build.arg("--release");
    }
    let built = build.status().expect("cargo runs");
    assert!(
        built.success(),
        "building api-service and algo-service: {built}"
    );

    let out = Command::new(&chaos)
        .args(["--tasks", "40", "--faults", "6", "--duration-secs", "20"])
        .args(["--settle-secs", "90"])
        .arg("--bin-dir")
        .arg(&bin_dir)
        .output()
        .expect("the chaos driver runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    assert!(out.status.success(), "chaos failed: {last}");
    assert!(last.starts_with("chaos: tasks=40 faults=6 "), "{last}");
    for kind in [
        "worker_sigkill=",
        "worker_sigterm=",
        "api_restart=",
        "rabbitmq_restart=",
    ] {
        assert!(
            !last.contains(&format!("{kind}0 ")) && !last.contains(&format!("{kind}0)")),
            "every kind of fault happened: {last}"
        );
    }
    assert!(
        last.contains(" lost=0 stuck=0 duplicated=0 unsubmitted=0 bad_exits=0 "),
        "{last}"
    );
    // Completed, or cancelled (a tenth are); never failed or timed out.
    assert!(
        !last.contains(" failed=") && !last.contains("timed_out="),
        "{last}"
    );
}
