//! `api-service`: settings → telemetry → [`Application`] → serve; or, with
//! a command (`repair-index`), that command.

use std::process::ExitCode;

use api_service::{config::Command, store::Store, telemetry, Application, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => e.exit(),
    };
    telemetry::init(&settings.log_format, std::io::stdout);
    if let Some(Command::RepairIndex) = settings.command {
        return repair_index(&settings).await;
    }
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

/// `api-service repair-index`: one pass of [`Store::repair_index`].
async fn repair_index(settings: &Settings) -> ExitCode {
    let repaired = match Store::new(&settings.redis_url, &settings.redis_prefix, 2) {
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
