//! `algo-service`: telemetry → config → run. See the library for the parts.

use std::{process::ExitCode, time::Duration};

use algo_service::{config::ENV_HELP, shutdown, telemetry, Settings};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// The Taskforge worker: consumes tasks.algo, runs the native `hello`
/// routine in stages, and reports through the api's callback API.
#[derive(Debug, Parser)]
#[command(name = "algo-service", version, after_long_help = ENV_HELP, after_help = ENV_HELP)]
struct Cli {}

fn main() -> ExitCode {
    Cli::parse();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("algo-service: {e}");
            return ExitCode::from(2);
        }
    };
    let subscriber =
        telemetry::get_subscriber(settings.log_format, &settings.log_filter, std::io::stderr);
    if let Err(e) = telemetry::init_subscriber(subscriber) {
        eprintln!("algo-service: {e:#}");
        return ExitCode::FAILURE;
    }

    // Stages block a thread each (C sleeps), so the blocking pool must hold a
    // full prefetch of them, plus headroom for DNS and the like.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("algo-service")
        .max_blocking_threads(usize::from(settings.worker_concurrency) + 16)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error.message = %e, "cannot start the async runtime");
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
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.message = %e, error.cause_chain = ?e, "algo-service failed");
            ExitCode::FAILURE
        }
    }
}
