//! Settings, from the environment (a `.env` file is read as a convenience).
//!
//! Every variable of the contract is also a flag, which is what `--help`
//! documents and what tests use to override one value without touching the
//! process environment.

use std::{net::SocketAddr, time::Duration};

use broker_topology::QueueType;
use clap::Parser;
use task_model::TaskDefaults;

/// Taskforge API: REST endpoints for tasks, worker callbacks, health and metrics.
///
/// Configuration comes from the environment variables named below (flags
/// override them). CALLBACK_TOKEN is required.
#[derive(Clone, Parser)]
#[command(name = "api-service", version, about, long_about)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "API_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Redis holding tasks and events.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,

    /// Redis Cluster seed nodes, comma-separated (`redis://host:port`, any
    /// of its nodes, replicas included). When set it wins over REDIS_URL: the
    /// api then runs on that cluster, each command routed to the primary of
    /// its key's slot, and follows failovers and resharding.
    #[arg(long, env = "REDIS_CLUSTER_URLS", default_value = "")]
    pub redis_cluster_urls: String,

    /// Redis replicas that must acknowledge (WAIT, at most 1 s) a create, a
    /// claim and a terminal state before the api answers success; fewer → 503.
    /// Default: 1 on a Redis Cluster (REDIS_CLUSTER_URLS), 0 on a single Redis.
    #[arg(long, env = "REDIS_MIN_REPLICAS")]
    pub redis_min_replicas: Option<u32>,

    /// Prefix of every Redis key (and the events channel).
    #[arg(long, env = "REDIS_PREFIX", default_value = "taskforge:")]
    pub redis_prefix: String,

    /// RabbitMQ broker: one amqp:// URL, or the nodes of one RabbitMQ cluster
    /// as a comma-separated list (same vhost in each). The api holds one
    /// connection, to one node (chosen by its pid); when that connection is
    /// lost it moves to the next node that answers.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        value_parser = broker_topology::validate_amqp_urls
    )]
    pub amqp_url: String,

    /// Shared secret the workers present on callbacks (required, non-empty).
    #[arg(long, env = "CALLBACK_TOKEN", hide_env_values = true)]
    pub callback_token: Option<String>,

    /// Comma-separated bearer keys for the public endpoints; empty = open.
    #[arg(long, env = "API_KEYS", default_value = "", hide_env_values = true)]
    pub api_keys: String,

    /// Stages of a task that does not say.
    #[arg(long, env = "DEFAULT_STAGES", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub default_stages: u32,

    /// Stage length (ms) of a task that does not say.
    #[arg(long, env = "DEFAULT_STAGE_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub default_stage_ms: u64,

    /// Deadline (s after the first claim) of a task that does not say.
    #[arg(long, env = "DEFAULT_TIMEOUT_SECS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub default_timeout_secs: u64,

    /// Attempts of a task that does not say (`max_attempts`), 1..=100.
    #[arg(long, env = "DEFAULT_MAX_ATTEMPTS", default_value_t = task_model::DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub default_max_attempts: u32,

    /// Takeovers a task may have (its holder lost, another worker takes it
    /// over); the next one ends it FAILED `worker_lost` instead.
    #[arg(long, env = "MAX_TAKEOVERS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub max_takeovers: u32,

    /// How long finished tasks and idempotency keys are kept (s).
    #[arg(long, env = "RESULT_TTL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub result_ttl_secs: u64,

    /// Largest blob `POST /blobs` accepts, in bytes (larger → 413).
    #[arg(long, env = "BLOB_MAX_BYTES", default_value_t = 16 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    pub blob_max_bytes: u64,

    /// How long a worker's claim lives without a callback (s).
    #[arg(long, env = "LEASE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_secs: u64,

    /// Seconds a stored task may wait for its message to be confirmed before
    /// the api publishes it (again): covers an api that died mid-create.
    #[arg(long, env = "REPUBLISH_AFTER_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub republish_after_secs: u64,

    /// HMAC key for webhook signatures.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Comma-separated hosts webhooks may go to; empty = webhooks off.
    #[arg(long, env = "WEBHOOK_ALLOWED_HOSTS", default_value = "")]
    pub webhook_allowed_hosts: String,

    /// Wait (ms) before the first retry of a failed webhook delivery; it
    /// doubles with each attempt, up to 30 s.
    #[arg(long, env = "WEBHOOK_RETRY_BASE_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=30_000))]
    pub webhook_retry_base_ms: u64,

    /// `text` for people, `json` for machines.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Redis connections in the pool (at most). On one Redis without
    /// REDIS_MIN_REPLICAS, requests share the most recently used one.
    #[arg(long, env = "REDIS_POOL_SIZE", default_value_t = 64)]
    pub redis_pool_size: usize,

    /// Accept a Redis whose maxmemory-policy evicts keys. Without it, any
    /// policy but noeviction makes /readyz fail: an evicting Redis that fills
    /// up deletes tasks and idempotency keys silently. The variable takes
    /// 1/0, true/false, yes/no, on/off.
    #[arg(long, env = "REDIS_ALLOW_EVICTION", value_parser = clap::builder::BoolishValueParser::new())]
    pub redis_allow_eviction: bool,

    /// How often (ms) each api process looks for due schedules.
    #[arg(long, env = "SCHEDULE_TICK_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub schedule_tick_ms: u64,

    /// Tests only: also accept 6-field cron expressions (seconds first), so
    /// a test sees many due times in a few seconds. 1/0, true/false.
    #[arg(long, env = "SCHEDULE_SECONDS", value_parser = clap::builder::BoolishValueParser::new())]
    pub schedule_seconds: bool,
    /// Comma-separated named queues a task may name in `queue` (others are
    /// refused with 400 `unknown_queue`); queue `q` is the RabbitMQ queue
    /// `tasks.q`. Names match `[a-z0-9][a-z0-9_-]{0,62}`.
    #[arg(long, env = "QUEUES", default_value = task_model::DEFAULT_QUEUE)]
    pub queues: String,

    /// How task queues are declared: `classic` (one priority queue per named
    /// queue, v1's) or `quorum` (replicated, three priority lanes per named
    /// queue). Workers must be given the same.
    #[arg(long, env = "QUEUE_TYPE", default_value = "classic", value_parser = clap::value_parser!(QueueType))]
    pub queue_type: QueueType,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "API_WORKERS")]
    pub workers: Option<usize>,

    /// Without a command: serve the api.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One-off operator commands; they use the same settings and exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Relist every stored task missing from the `GET /tasks` index (SCANs
    /// the task hashes under REDIS_PREFIX), print what it did, and exit.
    /// Safe while apis serve, and to run again.
    RepairIndex,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("Settings")
            .field("bind", &self.bind)
            .field("redis_prefix", &self.redis_prefix)
            .field("api_keys", &format_args!("{} key(s)", self.keys().len()))
            .field("lease_secs", &self.lease_secs)
            .field("result_ttl_secs", &self.result_ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// The Redis Cluster seed URLs of `REDIS_CLUSTER_URLS`; empty on a single Redis.
    pub fn redis_cluster_seeds(&self) -> Vec<String> {
        self.redis_cluster_urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Where the event hub subscribes: the single Redis, or the cluster's
    /// seeds in turn (a PUBLISH on any cluster node reaches every node's
    /// subscribers, so one subscription on any node hears every event).
    pub fn redis_subscribe_urls(&self) -> Vec<String> {
        let seeds = self.redis_cluster_seeds();
        if seeds.is_empty() {
            vec![self.redis_url.clone()]
        } else {
            seeds
        }
    }

    /// The task store these settings name: a Redis Cluster when
    /// `REDIS_CLUSTER_URLS` is set, else the one Redis of `REDIS_URL`.
    ///
    /// # Errors
    /// A malformed URL.
    pub fn store(&self, max_connections: usize) -> anyhow::Result<crate::store::Store> {
        let seeds = self.redis_cluster_seeds();
        let store = if seeds.is_empty() {
            crate::store::Store::new(&self.redis_url, &self.redis_prefix, max_connections)?
        } else {
            crate::store::Store::new_cluster(&seeds, &self.redis_prefix, max_connections)?
        };
        let default = u32::from(store.is_cluster());
        Ok(store.with_min_replicas(self.redis_min_replicas.unwrap_or(default)))
    }

    /// Settings from the environment (and `.env`), or a clap error to print.
    pub fn from_env() -> Result<Self, clap::Error> {
        let _ = dotenvy::dotenv();
        Self::try_parse()
    }

    /// The callback token, which must be set and non-empty.
    ///
    /// # Errors
    /// It is missing or empty.
    pub fn require_callback_token(&self) -> anyhow::Result<&str> {
        match self.callback_token.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => Ok(t),
            _ => anyhow::bail!(
                "CALLBACK_TOKEN must be set to a non-empty secret shared with the workers"
            ),
        }
    }

    /// The API keys, trimmed, empties dropped.
    pub fn keys(&self) -> Vec<String> {
        split_list(&self.api_keys)
    }

    /// The named queues of `QUEUES`, in order, duplicates dropped.
    ///
    /// # Errors
    /// None at all, or a name that is not `[a-z0-9][a-z0-9_-]{0,62}`.
    pub fn queue_names(&self) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        for name in split_list(&self.queues) {
            if !broker_topology::is_valid_queue_name(&name) {
                anyhow::bail!("QUEUES: {name:?} is not a queue name ([a-z0-9][a-z0-9_-]{{0,62}})");
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.is_empty() {
            anyhow::bail!("QUEUES names no queue");
        }
        Ok(names)
    }

    /// Hosts webhooks may target.
    pub fn webhook_hosts(&self) -> Vec<String> {
        split_list(&self.webhook_allowed_hosts)
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect()
    }

    pub fn defaults(&self) -> TaskDefaults {
        TaskDefaults {
            stages: self.default_stages,
            stage_ms: self.default_stage_ms,
            timeout_secs: self.default_timeout_secs,
            max_attempts: self.default_max_attempts,
        }
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    pub fn result_ttl(&self) -> Duration {
        Duration::from_secs(self.result_ttl_secs)
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    fn parse(args: &[&str]) -> Settings {
        let mut argv = vec!["api-service"];
        argv.extend_from_slice(args);
        Settings::try_parse_from(argv).expect("parses")
    }

    #[test]
    fn queues_default_to_algo_classic_and_are_checked() {
        let s = parse(&[]);
        assert_eq!(s.queue_names().unwrap(), ["algo"]);
        assert_eq!(s.queue_type, QueueType::Classic);
        let s = parse(&["--queues", " gpu,algo, gpu ,", "--queue-type", "quorum"]);
        assert_eq!(s.queue_names().unwrap(), ["gpu", "algo"]);
        assert_eq!(s.queue_type, QueueType::Quorum);
        for bad in ["a.b", " , ", "Gpu"] {
            assert!(parse(&["--queues", bad]).queue_names().is_err(), "{bad}");
        }
        let mut argv = vec!["api-service", "--queue-type", "mirrored"];
        assert!(Settings::try_parse_from(argv.drain(..)).is_err());
        let help = <Settings as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        assert!(
            help.contains("[env: QUEUES=") && help.contains("[env: QUEUE_TYPE="),
            "{help}"
        );
    }
}
