//! `api-service`: settings → telemetry → [`Application`] → serve → flush traces.

use std::process::ExitCode;

use api_service::{telemetry, Application, Settings};

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
    let code = serve(settings).await;
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
