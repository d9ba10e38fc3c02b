//! `algo-service`: config → telemetry → run → flush traces. See the library for the parts.
//! Started as `algo-service --stage-helper` it is a worker's stage helper
//! process instead (`WORKER_ISOLATION=process`, see `task_run::isolation`).

use std::{process::ExitCode, time::Duration};

use algo_service::{shutdown, telemetry, Settings};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // `WORKER_ISOLATION=process`: this process is a worker's stage helper.
    if algo_service::task_run::isolation::is_helper() {
        return algo_service::task_run::isolation::helper_main();
    }
    let settings = Settings::from_env().unwrap_or_else(|e| e.exit());
    let telemetry = match telemetry::init_with_traces(
        settings.log_format,
        &settings.log_filter,
        std::io::stderr,
    ) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("algo-service: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime(&settings) {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let stop = CancellationToken::new();
        tokio::spawn(shutdown::on_signal(stop.clone()));
        algo_service::run(settings, stop).await
    });
    // Interrupted stages return within milliseconds; do not hang on a stuck one.
    runtime.shutdown_timeout(Duration::from_secs(1));
    // After the runtime: the last spans, the drain's included.
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "algo-service failed");
            ExitCode::FAILURE
        }
    }
}

/// Stages block a thread each (C sleeps), so the blocking pool must hold a
/// full prefetch of them, plus headroom for DNS and the like.
fn runtime(settings: &Settings) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("algo-service")
        .max_blocking_threads(usize::from(settings.worker_concurrency) + 16)
        .build()
}
