//! The shared Redis and RabbitMQ, and a private corner of each per run.
//!
//! Every scenario run gets a [`Sandbox`]: a RabbitMQ vhost of its own
//! (created through the management API, deleted afterwards) and a Redis key
//! prefix of its own (its keys are deleted afterwards), so a benchmark never
//! touches vhost `/` or anybody else's keys, and runs do not see each other's
//! queues.

use std::time::Duration;

use anyhow::{bail, Context};

/// Where the brokers are.
#[derive(Debug, Clone)]
pub(crate) struct Infra {
    pub(crate) redis_url: String,
    pub(crate) amqp_host: String,
    pub(crate) mgmt_url: String,
    http: reqwest::Client,
}

/// One run's vhost and key prefix.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    pub(crate) vhost: String,
    pub(crate) amqp_url: String,
    pub(crate) prefix: String,
    infra: Infra,
}

/// Versions of what the figures depend on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Versions {
    pub(crate) rabbitmq: String,
    pub(crate) erlang: String,
    pub(crate) redis: String,
}

impl Infra {
    pub(crate) fn new(redis_url: String, amqp_host: String, mgmt_url: String) -> Self {
        // CPU accounting watches the servers this bench uses, not every
        // redis-server or beam.smp on the machine (tests may run their own).
        let _ = SERVERS.set((
            server_pids(port_of(&redis_url, 6379), "redis-server"),
            server_pids(port_of(&amqp_host, 5672), "beam.smp"),
        ));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("a plain reqwest client builds");
        Self {
            redis_url,
            amqp_host,
            mgmt_url: mgmt_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    fn mgmt(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api{path}", self.mgmt_url))
            .basic_auth("guest", Some("guest"))
    }

    pub(crate) async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    /// Fails with advice when Redis or the RabbitMQ management API does not answer.
    pub(crate) async fn check(&self) -> anyhow::Result<()> {
        let mut conn = tokio::time::timeout(Duration::from_secs(5), self.redis())
            .await
            .context("redis did not answer within 5 s")?
            .with_context(|| {
                format!(
                    "cannot reach redis at {} (run scripts/infra.sh)",
                    self.redis_url
                )
            })?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        self.mgmt(reqwest::Method::GET, "/overview")
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| {
                format!(
                    "cannot reach the RabbitMQ management API at {} as guest (run scripts/infra.sh)",
                    self.mgmt_url
                )
            })?;
        Ok(())
    }

    /// A fresh vhost (guest may do anything in it) and key prefix.
    pub(crate) async fn sandbox(&self) -> anyhow::Result<Sandbox> {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let vhost = format!("taskforge-bench-{id}");
        self.mgmt(reqwest::Method::PUT, &format!("/vhosts/{vhost}"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("creating a vhost through the RabbitMQ management API")?;
        self.mgmt(reqwest::Method::PUT, &format!("/permissions/{vhost}/guest"))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("granting guest the new vhost")?;
        Ok(Sandbox {
            amqp_url: format!("amqp://guest:guest@{}/{vhost}", self.amqp_host),
            prefix: format!("bench:{id}:"),
            vhost,
            infra: self.clone(),
        })
    }

    /// RabbitMQ's and Erlang's versions (management API) and Redis's (`INFO server`).
    pub(crate) async fn versions(&self) -> Versions {
        let mut v = Versions::default();
        if let Ok(resp) = self.mgmt(reqwest::Method::GET, "/overview").send().await {
            if let Ok(o) = resp.json::<serde_json::Value>().await {
                v.rabbitmq = o["rabbitmq_version"].as_str().unwrap_or("?").to_owned();
                v.erlang = o["erlang_version"].as_str().unwrap_or("?").to_owned();
            }
        }
        if let Ok(mut conn) = self.redis().await {
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            v.redis = info
                .lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .unwrap_or("?")
                .trim()
                .to_owned();
        }
        v
    }
}

impl Sandbox {
    /// A connection to the Redis the sandbox's keys are on.
    pub(crate) async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        self.infra.redis().await
    }

    /// Deletes the vhost (with its queues) and every key under the prefix.
    pub(crate) async fn cleanup(&self) -> anyhow::Result<()> {
        let vhost = self
            .infra
            .mgmt(reqwest::Method::DELETE, &format!("/vhosts/{}", self.vhost))
            .send()
            .await;
        let keys = self.delete_keys().await;
        match vhost {
            Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND => {}
            Ok(r) => bail!("deleting vhost {} answered {}", self.vhost, r.status()),
            Err(e) => bail!("deleting vhost {}: {e}", self.vhost),
        }
        keys.with_context(|| format!("deleting the keys under {}", self.prefix))
    }

    async fn delete_keys(&self) -> anyhow::Result<()> {
        let mut conn = self.infra.redis().await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(2000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

/// The machine, as the report describes it.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) memory_gib: f64,
    pub(crate) kernel: String,
}

pub(crate) fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model,
        memory_gib: mem_kb / 1024.0 / 1024.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// The 1-minute load average.
pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// CPU seconds the whole machine has been busy (all CPUs; not idle, not iowait).
pub(crate) fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle) / clock_ticks()
}

/// CPU seconds of this process and its reaped children (the api and worker
/// processes it started and stopped).
pub(crate) fn own_and_children_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(close) = stat.rfind(')') else {
        return f64::NAN;
    };
    let f: Vec<f64> = stat[close + 1..]
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // After the state field (not a number, so skipped by the parse):
    // fields 4.. ; utime, stime, cutime, cstime are fields 14–17.
    f.get(10..14)
        .map_or(f64::NAN, |t| t.iter().sum::<f64>() / clock_ticks())
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds a process has used.
pub(crate) fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// A `/proc/<pid>/status` field in kB (e.g. `VmHWM`, `VmRSS`) as MiB, or a count (`Threads`).
pub(crate) fn status_field(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(if field.starts_with("Vm") {
        value / 1024.0
    } else {
        value
    })
}

/// Context switches (voluntary + involuntary) of every thread of a process so far.
pub(crate) fn context_switches(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return f64::NAN;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Pids of processes whose command name (`/proc/<pid>/comm`) is `comm`.
pub(crate) fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .collect()
}

/// The process listening on TCP `port` (found through `/proc/net/tcp*` and
/// the processes' sockets; needs the right to read their `fd` directories).
pub(crate) fn pid_listening_on(port: u16) -> Option<u32> {
    let want = format!(":{port:04X}");
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    // local_address, st (0A = LISTEN), inode
                    (f.get(1)?.ends_with(&want) && *f.get(3)? == "0A")
                        .then(|| f.get(9).map(|i| format!("socket:[{i}]")))?
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.filter_map(Result::ok).any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| inodes.iter().any(|i| l.to_str() == Some(i.as_str())))
                })
            })
        })
}

/// The servers the bench uses: the process on `port`, or every process named
/// `comm` when that cannot be told (another user's process without root).
fn server_pids(port: u16, comm: &str) -> Vec<u32> {
    match pid_listening_on(port) {
        Some(pid) => vec![pid],
        None => pids_named(comm),
    }
}

static SERVERS: std::sync::OnceLock<(Vec<u32>, Vec<u32>)> = std::sync::OnceLock::new();

/// The port in `redis://host:port/db` or `host:port`.
fn port_of(url: &str, default: u16) -> u16 {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    hostport
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(default)
}

/// Pids of the Redis and RabbitMQ servers (found once).
pub(crate) fn servers() -> &'static (Vec<u32>, Vec<u32>) {
    SERVERS.get_or_init(|| (pids_named("redis-server"), pids_named("beam.smp")))
}

/// CPU seconds of named process groups, read twice to get what a phase cost.
#[derive(Debug, Clone, Default)]
pub(crate) struct CpuProbe {
    groups: Vec<(String, Vec<u32>)>,
}

impl CpuProbe {
    /// Adds a group of processes (their CPU seconds are summed).
    pub(crate) fn add(&mut self, name: &str, pids: Vec<u32>) {
        self.groups.push((name.to_owned(), pids));
    }

    /// Redis, RabbitMQ and this process, the processes every scenario shares.
    pub(crate) fn shared() -> Self {
        let mut probe = Self::shared_servers();
        probe.add("bench", vec![std::process::id()]);
        probe
    }

    /// Redis and RabbitMQ only.
    pub(crate) fn shared_servers() -> Self {
        let (redis, rabbitmq) = servers();
        let mut probe = Self::default();
        probe.add("redis", redis.clone());
        probe.add("rabbitmq", rabbitmq.clone());
        probe
    }

    /// CPU seconds of each group now.
    pub(crate) fn read(&self) -> Vec<(String, f64)> {
        self.groups
            .iter()
            .map(|(name, pids)| {
                let secs = pids.iter().filter_map(|&p| cpu_secs(p)).sum();
                (name.clone(), secs)
            })
            .collect()
    }
}

/// `after - before` per group (groups missing before count from zero: fresh processes).
pub(crate) fn cpu_delta(before: &[(String, f64)], after: &[(String, f64)]) -> Vec<(String, f64)> {
    after
        .iter()
        .map(|(name, a)| {
            let b = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0.0, |(_, b)| *b);
            (name.clone(), (a - b).max(0.0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_secs(me).is_some());
        assert!(status_field(me, "VmRSS").is_some_and(|mb| mb > 0.0));
        assert!(status_field(me, "Threads").is_some_and(|n| n >= 1.0));
        let m = machine();
        assert!(m.cpus >= 1);
    }

    #[test]
    fn ports_come_from_urls() {
        assert_eq!(port_of("redis://127.0.0.1:6380/0", 6379), 6380);
        assert_eq!(port_of("redis://:pw@localhost:7000", 6379), 7000);
        assert_eq!(port_of("redis://localhost/0", 6379), 6379);
        assert_eq!(port_of("127.0.0.1:5673", 5672), 5673);
    }

    #[test]
    fn deltas_count_new_groups_from_zero() {
        let before = vec![("a".to_owned(), 1.0)];
        let after = vec![("a".to_owned(), 3.0), ("b".to_owned(), 2.0)];
        assert_eq!(
            cpu_delta(&before, &after),
            vec![("a".to_owned(), 2.0), ("b".to_owned(), 2.0)]
        );
    }
}
