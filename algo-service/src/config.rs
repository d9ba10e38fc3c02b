//! Settings: everything the worker can be told, read once at start.
//!
//! The same approach as the api's: one clap-derived [`Settings`], every
//! contract variable also a flag of the same meaning (a flag overrides the
//! variable), so `--help` lists them all. `main` may load a `.env` file from
//! the working directory first (see [`Settings::from_env`]). Tests build
//! settings with [`Settings::from_lookup`], which reads a `name -> value`
//! function instead of the process environment. Empty values count as unset.
//! The callback token is required: a worker that cannot authenticate its
//! callbacks could run tasks but never record them.

use std::{ffi::OsString, fmt, net::SocketAddr, time::Duration};

use broker_topology::QueueType;
use clap::{
    builder::{PossibleValuesParser, TypedValueParser},
    parser::ValueSource,
    ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum,
};

pub use crate::telemetry::LogFormat;

/// Default `WORKER_CPU_SLOTS`: the number of cores.
pub fn default_cpu_slots() -> u16 {
    std::thread::available_parallelism().map_or(1, |n| u16::try_from(n.get()).unwrap_or(u16::MAX))
}

/// `WORKER_ISOLATION`: where a task's stages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Isolation {
    /// On this process's blocking threads (the default, and the cheapest):
    /// a crash in C takes the whole worker down.
    #[default]
    Thread,
    /// In a helper process per task attempt (this binary run again), so a
    /// crash in C fails only that attempt.
    Process,
}

/// Default `AMQP_URL`.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default `API_URL`.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";
/// Default `WORKER_CONCURRENCY` (and so the prefetch).
pub const DEFAULT_CONCURRENCY: u16 = 64;
/// Default `METRICS_BIND`.
pub const DEFAULT_METRICS_BIND: &str = "127.0.0.1:9091";
/// Default `SHUTDOWN_GRACE_SECS` (the flag's default says the same).
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// Default `CALLBACK_TIMEOUT_MS` (the flag's default says the same).
pub const DEFAULT_CALLBACK_TIMEOUT_MS: u64 = 5_000;

/// Taskforge worker: consumes its named queues (tasks.algo by default), runs the native algorithms (`hello`,
/// `grayscale`, `pi`) in stages, and reports through the api's callback API.
///
/// Configuration comes from the environment variables named below (flags
/// override them; a .env file in the working directory is read too).
/// CALLBACK_TOKEN is required. Logs go to stderr; stdout carries only the
/// routine's `hello world` lines.
#[derive(Clone, Parser)]
#[command(name = "algo-service", version, about, long_about)]
pub struct Settings {
    /// RabbitMQ broker: one amqp:// URL, or the nodes of one RabbitMQ cluster
    /// as a comma-separated list (same vhost in each). The worker holds one
    /// connection, to one node (chosen by its pid); when that connection is
    /// lost it moves to the next node that answers (unacked deliveries
    /// return to the queue; running tasks go on and report to the api).
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL, value_parser = broker_topology::validate_amqp_urls)]
    pub amqp_url: String,

    /// Base URL of the api's callback endpoints.
    #[arg(long, env = "API_URL", default_value = DEFAULT_API_URL, value_parser = http_url)]
    pub api_url: String,

    /// Bearer token for the callback API (required, non-empty; the api's CALLBACK_TOKEN).
    #[arg(long, env = "CALLBACK_TOKEN", hide_env_values = true, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub callback_token: String,

    /// How this worker names itself in callbacks (default: `<hostname>-<pid>`).
    #[arg(long, env = "WORKER_NAME", default_value_t = default_worker_name(), hide_default_value = true)]
    pub worker_name: String,

    /// Tasks in flight in this process, also the AMQP prefetch.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_concurrency: u16,

    /// Comma-separated named queues this worker consumes (queue `q` is the
    /// RabbitMQ queue `tasks.q`, and its priority lanes under quorum); the
    /// total in flight stays bounded by the concurrency.
    #[arg(long, env = "WORKER_QUEUES", default_value = task_model::DEFAULT_QUEUE, value_parser = queue_list)]
    pub worker_queues: String,

    /// How task queues are declared, as the api's QUEUE_TYPE: `classic` or `quorum`.
    #[arg(long, env = "QUEUE_TYPE", default_value = "classic", value_parser = clap::value_parser!(QueueType))]
    pub queue_type: QueueType,

    /// Address of /metrics and /healthz (port 0 picks a free one). When it
    /// is not given and the default port is taken (another worker on this
    /// host), a free port is taken instead and logged (`metrics_addr`); an
    /// address given explicitly that is taken stops the worker at start.
    #[arg(long, env = "METRICS_BIND", default_value = DEFAULT_METRICS_BIND)]
    pub metrics_bind: SocketAddr,

    /// Whether `metrics_bind` was given (flag or variable) rather than defaulted.
    #[arg(skip)]
    pub metrics_bind_explicit: bool,

    /// Time (s) in-flight tasks get to finish after SIGTERM/SIGINT.
    #[arg(long = "shutdown-grace-secs", env = "SHUTDOWN_GRACE_SECS", value_name = "SECS", default_value = "30", value_parser = clap::value_parser!(u64).map(Duration::from_secs))]
    pub shutdown_grace: Duration,

    /// Timeout (ms) of one callback request; retries come on top.
    #[arg(long = "callback-timeout-ms", env = "CALLBACK_TIMEOUT_MS", value_name = "MS", default_value = "5000", value_parser = clap::value_parser!(u64).range(1..).map(Duration::from_millis))]
    pub callback_timeout: Duration,

    /// CPU-bound stages (`pi`, `grayscale`) running at once in this process,
    /// whatever the concurrency; `hello`'s sleeping stages take no slot
    /// (default: the number of cores).
    #[arg(long, env = "WORKER_CPU_SLOTS", default_value_t = default_cpu_slots(), hide_default_value = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub cpu_slots: u16,

    /// Honour `hello`'s `crash` test input (abort the process); otherwise
    /// such a task fails with `crash_disabled`. For tests only.
    #[arg(long, env = "ALLOW_CRASH_INPUT", default_value = "0", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_crash_input: bool,

    /// Where stages run: `thread` (default) on this process's blocking
    /// threads, where a crash in C (SIGSEGV, abort) takes the whole worker
    /// down; `process` in a helper process per task attempt (this binary,
    /// run again), where such a crash fails only that attempt, retryably,
    /// with the error `algorithm_crashed: <signal>` (e.g. SIGABRT) while the
    /// worker's other tasks run on. Cancel, deadline, progress and output
    /// cross back from the helper; its `hello world` lines go to this
    /// process's stdout. `process` costs a process start per attempt and a
    /// pipe round trip per stage (docs/REFERENCE.md has the figures).
    #[arg(
        long,
        env = "WORKER_ISOLATION",
        default_value = "thread",
        ignore_case = true,
        value_enum
    )]
    pub worker_isolation: Isolation,

    /// `text` for people, `json` for machines.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", ignore_case = true, value_parser = log_format())]
    pub log_format: LogFormat,

    /// Log filter, `RUST_LOG` syntax.
    #[arg(long, env = "RUST_LOG", default_value = ::telemetry::DEFAULT_FILTER)]
    pub log_filter: String,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("api_url", &self.api_url)
            .field("callback_token", &"<redacted>")
            .field("worker_name", &self.worker_name)
            .field("worker_concurrency", &self.worker_concurrency)
            .field("worker_queues", &self.worker_queues)
            .field("queue_type", &self.queue_type)
            .field("metrics_bind", &self.metrics_bind)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("callback_timeout", &self.callback_timeout)
            .field("cpu_slots", &self.cpu_slots)
            .field("allow_crash_input", &self.allow_crash_input)
            .field("worker_isolation", &self.worker_isolation)
            .field("metrics_bind_explicit", &self.metrics_bind_explicit)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .finish()
    }
}

impl Settings {
    /// Flags and the process environment (after a `.env` file in the working
    /// directory, if there is one; variables already set win), or a clap
    /// error to print (`--help` and `--version` are such "errors" too).
    ///
    /// # Errors
    /// A missing or empty `CALLBACK_TOKEN`, or a value that does not parse.
    pub fn from_env() -> Result<Self, clap::Error> {
        // A missing .env is the normal case; a malformed one is ignored the same way
        // rather than stopping a worker whose real configuration is in its environment.
        let _ = dotenvy::dotenv();
        let command = Self::command().mut_args(|arg| {
            let blank = arg
                .get_env()
                .and_then(std::env::var_os)
                .is_some_and(|v| v.to_string_lossy().trim().is_empty());
            if blank {
                arg.env(None)
            } else {
                arg
            }
        });
        Self::parsed(&command.try_get_matches()?)
    }

    /// Settings from `lookup(name)` alone, never the process environment, with
    /// the same defaults and checks as [`Settings::from_env`].
    ///
    /// # Errors
    /// As [`Settings::from_env`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, clap::Error> {
        let mut argv: Vec<OsString> = vec!["algo-service".into()];
        let command = Self::command().mut_args(|arg| {
            let value = arg
                .get_env()
                .and_then(|name| name.to_str())
                .and_then(&lookup)
                .filter(|v| !v.trim().is_empty());
            if let (Some(value), Some(long)) = (value, arg.get_long()) {
                argv.push(format!("--{long}={value}").into());
            }
            arg.env(None)
        });
        Self::parsed(&command.try_get_matches_from(argv)?)
    }

    /// The settings in `matches`, with what clap alone does not record: whether
    /// `METRICS_BIND` was given or defaulted.
    fn parsed(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut settings = Self::from_arg_matches(matches).map_err(finish_error)?;
        settings.metrics_bind_explicit = matches
            .value_source("metrics_bind")
            .is_some_and(|source| source != ValueSource::DefaultValue);
        Ok(settings)
    }
}

impl Settings {
    /// The named queues of `WORKER_QUEUES`, in order (checked when parsed).
    pub fn queue_names(&self) -> Vec<String> {
        self.worker_queues.split(',').map(str::to_owned).collect()
    }
}

/// A comma-separated list of queue names, normalized (trimmed, no empties
/// or duplicates); at least one.
fn queue_list(value: &str) -> Result<String, String> {
    let mut names: Vec<&str> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !broker_topology::is_valid_queue_name(name) {
            return Err(format!(
                "{name:?} is not a queue name ([a-z0-9][a-z0-9_-]{{0,62}})"
            ));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err("names no queue".to_owned());
    }
    Ok(names.join(","))
}

fn finish_error(e: clap::Error) -> clap::Error {
    e.format(&mut Settings::command())
}

/// An `http://` or `https://` URL, without a trailing slash.
fn http_url(value: &str) -> Result<String, String> {
    let url = value.trim().trim_end_matches('/');
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.to_owned())
    } else {
        Err("must be an http:// or https:// URL".to_owned())
    }
}

fn log_format() -> impl TypedValueParser<Value = LogFormat> {
    PossibleValuesParser::new(LogFormat::NAMES).map(|name| name.parse().unwrap_or_default())
}

/// `<hostname>-<pid>`, the contract's default `WORKER_NAME`.
pub fn default_worker_name() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

pub(crate) use broker_topology::redact_url;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, clap::Error> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn a_token_alone_gives_the_contract_defaults() {
        let s = settings(&[("CALLBACK_TOKEN", "t0k")]).unwrap();
        assert_eq!(s.amqp_url, DEFAULT_AMQP_URL);
        assert_eq!(s.api_url, DEFAULT_API_URL);
        assert_eq!(s.worker_concurrency, 64);
        assert_eq!(s.metrics_bind.to_string(), "127.0.0.1:9091");
        assert!(!s.metrics_bind_explicit, "the default is not explicit");
        assert_eq!(s.worker_isolation, Isolation::Thread);
        assert_eq!(s.shutdown_grace, Duration::from_secs(30));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.log_filter, "info");
        assert_eq!(s.callback_timeout, Duration::from_millis(5_000));
        assert!(
            s.worker_name.ends_with(&format!("-{}", std::process::id())),
            "default worker name is <hostname>-<pid>, got {}",
            s.worker_name
        );
    }

    #[test]
    fn a_missing_or_empty_token_is_refused() {
        for vars in [&[][..], &[("CALLBACK_TOKEN", "  ")]] {
            let err = settings(vars).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
            assert!(err.to_string().contains("--callback-token"), "{err}");
        }
    }

    #[test]
    fn values_are_parsed_and_bad_ones_named() {
        let s = settings(&[
            ("CALLBACK_TOKEN", "t"),
            ("WORKER_NAME", "w1"),
            ("WORKER_CONCURRENCY", "3"),
            ("METRICS_BIND", "127.0.0.1:0"),
            ("SHUTDOWN_GRACE_SECS", "2"),
            ("LOG_FORMAT", "JSON"),
            ("API_URL", "http://127.0.0.1:1/"),
        ])
        .unwrap();
        assert_eq!(
            (
                s.worker_name.as_str(),
                s.worker_concurrency,
                s.api_url.as_str()
            ),
            ("w1", 3, "http://127.0.0.1:1")
        );
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(s.metrics_bind_explicit, "METRICS_BIND was given");
        assert_eq!(s.queue_names(), ["algo"]);
        assert_eq!(s.queue_type, QueueType::Classic);
        let s = settings(&[
            ("CALLBACK_TOKEN", "t"),
            ("WORKER_QUEUES", " gpu, algo ,gpu"),
            ("QUEUE_TYPE", "quorum"),
        ])
        .unwrap();
        assert_eq!(s.queue_names(), ["gpu", "algo"]);
        assert_eq!(s.queue_type, QueueType::Quorum);
        let s = settings(&[("CALLBACK_TOKEN", "t"), ("WORKER_ISOLATION", "Process")]).unwrap();
        assert_eq!(s.worker_isolation, Isolation::Process);

        for (name, bad) in [
            ("WORKER_CONCURRENCY", "0"),
            ("WORKER_CONCURRENCY", "many"),
            ("WORKER_CONCURRENCY", "70000"),
            ("METRICS_BIND", "nowhere"),
            ("SHUTDOWN_GRACE_SECS", "-1"),
            ("LOG_FORMAT", "xml"),
            ("API_URL", "127.0.0.1:8080"),
            ("WORKER_QUEUES", "a.b"),
            ("WORKER_QUEUES", " , "),
            ("QUEUE_TYPE", "mirrored"),
            ("WORKER_ISOLATION", "fork"),
        ] {
            let flag = format!("--{}", name.to_ascii_lowercase().replace('_', "-"));
            match settings(&[("CALLBACK_TOKEN", "t"), (name, bad)]) {
                Err(e) => assert!(e.to_string().contains(&flag), "{name}={bad}: {e}"),
                Ok(s) => panic!("{name}={bad} must be refused, got {s:?}"),
            }
        }
    }

    #[test]
    fn help_lists_every_variable() {
        let help = Settings::command().render_long_help().to_string();
        for name in [
            "AMQP_URL",
            "API_URL",
            "CALLBACK_TOKEN",
            "WORKER_NAME",
            "WORKER_CONCURRENCY",
            "METRICS_BIND",
            "SHUTDOWN_GRACE_SECS",
            "CALLBACK_TIMEOUT_MS",
            "WORKER_QUEUES",
            "QUEUE_TYPE",
            "WORKER_ISOLATION",
            "LOG_FORMAT",
            "RUST_LOG",
        ] {
            assert!(
                help.contains(&format!("[env: {name}")),
                "{name} missing:\n{help}"
            );
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = settings(&[
            ("CALLBACK_TOKEN", "sekrit-token"),
            ("AMQP_URL", "amqp://bob:hunter2@mq:5672/%2f"),
        ])
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("sekrit-token") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("amqp://bob:***@mq:5672/%2f"), "{shown}");
    }
}
