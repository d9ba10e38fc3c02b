//! The benchmark's smoke run, so `scripts/bench.sh` keeps working: tiny
//! counts of every scenario against real api and worker processes (the
//! binaries next to the bench's own), a report and a plot written to a
//! temporary directory. Needs Redis and RabbitMQ with the management API
//! (`scripts/infra.sh`), like the other integration tests.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// Builds api-service and algo-service into `bin_dir` (a no-op when fresh:
/// `cargo test --workspace` has built them already, as both have tests).
fn build_services(bin_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "api-service", "-p", "algo-service"]);
    if bin_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .expect("cargo runs to build api-service and algo-service");
    assert!(status.success(), "building the services failed");
    for bin in ["api-service", "algo-service"] {
        assert!(
            bin_dir.join(bin).is_file(),
            "{} missing after the build",
            bin_dir.join(bin).display()
        );
    }
}

#[test]
fn the_benchmark_runs_every_scenario_on_tiny_counts() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_bench"));
    let bin_dir = bench.parent().expect("the bench binary has a directory");
    build_services(bin_dir);

    let out = std::env::temp_dir().join(format!("taskforge-bench-smoke-{}", std::process::id()));
    let started = Instant::now();
    let result = Command::new(&bench)
        .arg("--smoke")
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out-dir")
        .arg(&out)
        .arg("--log-dir")
        .arg(out.join("logs"))
        .output()
        .expect("the bench binary runs");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "bench --smoke failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        result.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the smoke run took {:?}",
        started.elapsed()
    );

    // Every scenario produced its figures, and the table shows them.
    for figure in [
        "create, 64 clients",
        "dispatch overhead p99",
        "drain, 2 workers",
        "makespan",
        "cancel → CANCELLED p99",
        "RabbitMQ publish+confirm",
        "Redis create",
    ] {
        assert!(stdout.contains(figure), "no {figure:?} in:\n{stdout}");
    }
    let md = std::fs::read_to_string(out.join("BENCHMARKS.md")).expect("BENCHMARKS.md written");
    assert!(md.contains("Smoke run"), "{md}");
    assert!(md.contains("| dispatch overhead p99 |"), "{md}");
    let png = std::fs::read(out.join("bench.png")).expect("bench.png written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "bench.png is not a drawn PNG ({} bytes)",
        png.len()
    );
    let _ = std::fs::remove_dir_all(&out);
}
