//! `taskctl`: parse the command line, run it, turn the outcome into an exit code.

use std::process::ExitCode;

use clap::{error::ErrorKind, Parser};
use taskctl::{output, Cli};

fn main() -> ExitCode {
    // A bug must still end in one readable line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_owned());
        output::error_line(format!("internal error (a bug in taskctl): {what}"));
    }));

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            output::error_line(format!("cannot start the async runtime: {e}"));
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(taskctl::run(cli)) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            output::error_line(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// `--help` and `--version` print as clap does; a usage error becomes one
/// line (clap's first paragraph, without the usage block), exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            let rendered = e.render().to_string();
            let first_paragraph: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = first_paragraph.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            output::error_line(format!("{message} (see taskctl --help)"));
            ExitCode::from(2)
        }
    }
}
