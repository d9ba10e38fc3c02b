//! Settings: everything the worker can be told, read once from the environment.
//!
//! The contract makes configuration environment-only; `main` may load a `.env`
//! file from the working directory first (see [`Settings::from_env`]).
//! Parsing goes through [`Settings::from_lookup`], which takes any
//! `name -> value` function, so it is tested without touching the process
//! environment. The callback token is required: a worker that cannot
//! authenticate its callbacks could run tasks but never record them.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

/// Default `AMQP_URL`.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default `API_URL`.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";
/// Default `WORKER_CONCURRENCY` (and so the prefetch).
pub const DEFAULT_CONCURRENCY: u16 = 64;
/// Default `METRICS_BIND`.
pub const DEFAULT_METRICS_BIND: &str = "127.0.0.1:9091";
/// Default `SHUTDOWN_GRACE_SECS`.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// Default `CALLBACK_TIMEOUT_MS`.
pub const DEFAULT_CALLBACK_TIMEOUT_MS: u64 = 5_000;

/// The environment variables the worker reads, with defaults, for `--help`.
pub const ENV_HELP: &str = "\
Configuration is environment only (a .env file in the working directory is read too):

  AMQP_URL             RabbitMQ URL [default: amqp://guest:guest@127.0.0.1:5672/%2f]
  API_URL              base URL of the api's callback endpoints [default: http://127.0.0.1:8080]
  CALLBACK_TOKEN       bearer token for the callback API; required, non-empty (exit code 2 otherwise)
  WORKER_NAME          how this worker names itself in callbacks [default: <hostname>-<pid>]
  WORKER_CONCURRENCY   tasks in flight in this process, also the AMQP prefetch [default: 64]
  METRICS_BIND         address of /metrics and /healthz [default: 127.0.0.1:9091]
  SHUTDOWN_GRACE_SECS  time in-flight tasks get to finish after SIGTERM/SIGINT [default: 30]
  CALLBACK_TIMEOUT_MS  timeout of one callback request [default: 5000]
  LOG_FORMAT           text or json [default: text]
  RUST_LOG             log filter [default: info]

Logs go to stderr; stdout carries only the routine's `hello world` lines.";

pub use crate::telemetry::LogFormat;

/// Why the worker refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `CALLBACK_TOKEN` is unset or empty.
    #[error("CALLBACK_TOKEN is not set or empty: the worker refuses to start without a callback token (it must equal the api's)")]
    MissingCallbackToken,
    /// A variable is set to something unusable.
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value (never a secret's).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The worker's configuration. Built by [`Settings::from_env`] in `main`, or
/// by hand in tests (every field is public).
#[derive(Clone)]
pub struct Settings {
    /// `AMQP_URL`; may carry a password, so `Debug` hides it.
    pub amqp_url: String,
    /// `API_URL`, without a trailing slash.
    pub api_url: String,
    /// `CALLBACK_TOKEN`; never logged.
    pub callback_token: String,
    /// `WORKER_NAME`; the api records it as the task's holder.
    pub worker_name: String,
    /// `WORKER_CONCURRENCY`: the prefetch, and so the number of tasks in flight.
    pub worker_concurrency: u16,
    /// `METRICS_BIND`; port 0 picks a free port ([`crate::Worker::metrics_addr`] tells which).
    pub metrics_bind: SocketAddr,
    /// `SHUTDOWN_GRACE_SECS`, counted from the shutdown signal.
    pub shutdown_grace: Duration,
    /// `CALLBACK_TIMEOUT_MS`: the timeout of one callback request (retries come on top).
    pub callback_timeout: Duration,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `RUST_LOG`.
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
            .field("metrics_bind", &self.metrics_bind)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("callback_timeout", &self.callback_timeout)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .finish()
    }
}

impl Settings {
    /// Reads the process environment (after a `.env` file in the working
    /// directory, if there is one; variables already set win).
    ///
    /// # Errors
    /// See [`Settings::from_lookup`].
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is the normal case; a malformed one is ignored the same way
        // rather than stopping a worker whose real configuration is in its environment.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from `lookup(name)`, applying the contract's defaults.
    /// Empty values count as unset.
    ///
    /// # Errors
    /// [`ConfigError::MissingCallbackToken`] without a non-empty
    /// `CALLBACK_TOKEN`; [`ConfigError::Invalid`] for a value that does not parse.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let callback_token = get("CALLBACK_TOKEN").ok_or(ConfigError::MissingCallbackToken)?;
        let amqp_url = get("AMQP_URL").unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned());
        let api_url = get("API_URL")
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned())
            .trim_end_matches('/')
            .to_owned();
        if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                name: "API_URL",
                value: api_url,
                reason: "must be an http:// or https:// URL".to_owned(),
            });
        }
        let worker_name = get("WORKER_NAME").unwrap_or_else(default_worker_name);
        let worker_concurrency = parse_var(&get, "WORKER_CONCURRENCY", DEFAULT_CONCURRENCY)?;
        if worker_concurrency == 0 {
            return Err(ConfigError::Invalid {
                name: "WORKER_CONCURRENCY",
                value: "0".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        let metrics_bind = parse_var(&get, "METRICS_BIND", default_metrics_bind())?;
        let grace_secs = parse_var(&get, "SHUTDOWN_GRACE_SECS", DEFAULT_SHUTDOWN_GRACE_SECS)?;
        let timeout_ms = parse_var(&get, "CALLBACK_TIMEOUT_MS", DEFAULT_CALLBACK_TIMEOUT_MS)?;
        if timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                name: "CALLBACK_TIMEOUT_MS",
                value: "0".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        let log_format = parse_var(&get, "LOG_FORMAT", LogFormat::Text)?;
        let log_filter = get("RUST_LOG").unwrap_or_else(|| "info".to_owned());

        Ok(Self {
            amqp_url,
            api_url,
            callback_token,
            worker_name,
            worker_concurrency,
            metrics_bind,
            shutdown_grace: Duration::from_secs(grace_secs),
            callback_timeout: Duration::from_millis(timeout_ms),
            log_format,
            log_filter,
        })
    }
}

fn parse_var<T>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match get(name) {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
                value,
            }),
    }
}

/// [`DEFAULT_METRICS_BIND`] as an address.
fn default_metrics_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9091))
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

/// `amqp://user:secret@host/vhost` → `amqp://user:***@host/vhost`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
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
        assert_eq!(s.shutdown_grace, Duration::from_secs(30));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.log_filter, "info");
        assert!(
            s.worker_name.ends_with(&format!("-{}", std::process::id())),
            "default worker name is <hostname>-<pid>, got {}",
            s.worker_name
        );
    }

    #[test]
    fn a_missing_or_empty_token_is_refused() {
        assert_eq!(
            settings(&[]).unwrap_err(),
            ConfigError::MissingCallbackToken
        );
        assert_eq!(
            settings(&[("CALLBACK_TOKEN", "  ")]).unwrap_err(),
            ConfigError::MissingCallbackToken
        );
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

        for (name, bad) in [
            ("WORKER_CONCURRENCY", "0"),
            ("WORKER_CONCURRENCY", "many"),
            ("WORKER_CONCURRENCY", "70000"),
            ("METRICS_BIND", "nowhere"),
            ("SHUTDOWN_GRACE_SECS", "-1"),
            ("LOG_FORMAT", "xml"),
            ("API_URL", "127.0.0.1:8080"),
        ] {
            match settings(&[("CALLBACK_TOKEN", "t"), (name, bad)]) {
                Err(ConfigError::Invalid { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name}={bad} must be refused, got {other:?}"),
            }
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
