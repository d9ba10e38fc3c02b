//! `api-service`: settings → telemetry → [`Application`] → serve.

use std::process::ExitCode;

use api_service::{telemetry, Application, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => e.exit(),
    };
    telemetry::init(&settings.log_format, std::io::stdout);
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
