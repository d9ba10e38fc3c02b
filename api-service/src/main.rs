//! `api-service`: settings → telemetry → [`Application`] → serve → flush
//! traces; or, with a command (`repair-index`), that command.

use std::process::ExitCode;

use api_service::{config::Command, telemetry, Application, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => e.exit(),
    };
    let telemetry = match telemetry::init_with_traces(&settings.log_format, std::io::stdout) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("api-service: {e}");
            return ExitCode::from(2);
        }
    };
    let code = if matches!(settings.command, Some(Command::RepairIndex)) {
        repair_index(&settings).await
    } else {
        serve(settings).await
    };
    // The last spans go out from a blocking thread, off the runtime's.
    if let Err(e) = tokio::task::spawn_blocking(move || telemetry.shutdown()).await {
        eprintln!("api-service: flushing the traces: {e}");
    }
    code
}

async fn serve(settings: Settings) -> ExitCode {
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "api-service cannot start");
            eprintln!("api-service: {e:#}");
            return ExitCode::from(2);
        }
    };
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "api-service failed");
            ExitCode::FAILURE
        }
    }
}

/// `api-service repair-index`: one pass of [`api_service::store::Store::repair_index`].
async fn repair_index(settings: &Settings) -> ExitCode {
    let repaired = match settings.store(2) {
        Ok(store) => store.repair_index().await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    match repaired {
        Ok(r) => {
            tracing::info!(
                tasks = r.tasks,
                added = r.added,
                skipped = r.skipped,
                "index repaired"
            );
            println!(
                "repair-index: {} task(s) under {:?}, {} added to the list index, {} left to the outbox sweep or unreadable",
                r.tasks, settings.redis_prefix, r.added, r.skipped
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "repair-index failed");
            eprintln!("api-service repair-index: {e:#}");
            ExitCode::FAILURE
        }
    }
}
