//! A Redis Cluster of the caller's own: `redis-server` processes with
//! `cluster-enabled yes` on free loopback ports, joined by
//! `redis-cli --cluster create`.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use super::{free_port, short_id};

/// How long a primary may be unreachable before its replica takes over
/// (`cluster-node-timeout`; short, so failover tests are quick).
const NODE_TIMEOUT_MS: u64 = 1000;

/// One node of a [`PrivateRedisCluster`].
#[derive(Debug)]
struct Node {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// What `CLUSTER NODES` says of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNodeInfo {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Serves slots (a primary).
    pub primary: bool,
    /// Marked failed (`fail` or `fail?`).
    pub failed: bool,
    /// Slot ranges it serves, inclusive.
    pub slots: Vec<(u16, u16)>,
}

/// A Redis Cluster of `primaries × (1 + replicas_per_primary)` nodes on
/// loopback, each with its own directory (AOF on, `appendfsync everysec`,
/// as the scripts run it). Nodes are addressed by index, `0..nodes()`, in
/// start order. Everything it started is killed and its directory removed
/// on [`Self::stop`] or drop.
#[derive(Debug)]
pub struct PrivateRedisCluster {
    nodes: Vec<Node>,
    root: PathBuf,
    /// Replicas the cluster was created with (all nodes less the primaries).
    replicas: usize,
}

/// A cluster port whose bus port (+10000) is a valid port too.
fn free_cluster_port(taken: &[u16]) -> u16 {
    loop {
        let port = free_port();
        if port < 55_000
            && !taken.contains(&port)
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
}

async fn query(port: u16, args: &[&str]) -> anyhow::Result<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("connecting timed out")??;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let value = tokio::time::timeout(Duration::from_secs(2), cmd.query_async(&mut conn))
        .await
        .context("query timed out")??;
    Ok(value)
}

async fn query_string(port: u16, args: &[&str]) -> anyhow::Result<String> {
    Ok(redis::from_redis_value(query(port, args).await?)?)
}

impl PrivateRedisCluster {
    /// Starts the nodes, creates the cluster (each primary gets
    /// `replicas_per_primary` replicas) and waits (at most 30 s) until every
    /// node reports `cluster_state:ok`.
    ///
    /// # Errors
    /// `redis-server`/`redis-cli` missing, fewer than 3 primaries (Redis
    /// refuses), or the cluster not forming in time.
    pub async fn start(primaries: usize, replicas_per_primary: usize) -> anyhow::Result<Self> {
        if primaries < 3 {
            bail!("a Redis Cluster needs at least 3 primaries, not {primaries}");
        }
        let root = std::env::temp_dir().join(format!("taskforge-rediscluster-{}", short_id()));
        let mut cluster = Self {
            nodes: Vec::new(),
            root,
            replicas: primaries * replicas_per_primary,
        };
        let mut ports = Vec::new();
        for _ in 0..primaries * (1 + replicas_per_primary) {
            let port = free_cluster_port(&ports);
            ports.push(port);
            let dir = cluster.root.join(port.to_string());
            std::fs::create_dir_all(&dir)?;
            cluster.nodes.push(Node {
                port,
                dir,
                child: None,
            });
        }
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_ping(i, Duration::from_secs(10)).await?;
        }
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", &replicas_per_primary.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .await
            .context("running redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.wait_ok(Duration::from_secs(30)).await?;
        cluster
            .wait_replicas_linked(Duration::from_secs(30))
            .await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let child = Command::new("redis-server")
            .args(["--port", &node.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .args(["--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(&node.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        node.child = Some(child);
        Ok(())
    }

    async fn wait_ping(&self, i: usize, within: Duration) -> anyhow::Result<()> {
        let port = self.nodes[i].port;
        let deadline = tokio::time::Instant::now() + within;
        while query_string(port, &["PING"]).await.is_err() {
            if tokio::time::Instant::now() >= deadline {
                bail!("redis-server on port {port} did not answer PING in {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Number of nodes (running or not).
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Port of node `node`.
    pub fn port(&self, node: usize) -> u16 {
        self.nodes[node].port
    }

    /// Whether node `node`'s process runs.
    pub fn is_running(&self, node: usize) -> bool {
        self.nodes[node].child.is_some()
    }

    /// `redis://127.0.0.1:<port>` of every running node: seeds for a cluster
    /// client (`REDIS_CLUSTER_URLS` is these, comma-separated).
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    fn any_running(&self) -> anyhow::Result<u16> {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .map(|n| n.port)
            .context("no node of the cluster is running")
    }

    /// `CLUSTER NODES` as seen by the first running node.
    ///
    /// # Errors
    /// No node answers.
    pub async fn cluster_nodes(&self) -> anyhow::Result<Vec<ClusterNodeInfo>> {
        let text = query_string(self.any_running()?, &["CLUSTER", "NODES"]).await?;
        Ok(parse_cluster_nodes(&text))
    }

    /// `cluster_state` of `CLUSTER INFO` on node `node` (`ok` or `fail`).
    ///
    /// # Errors
    /// The node does not answer.
    pub async fn cluster_state(&self, node: usize) -> anyhow::Result<String> {
        let info = query_string(self.nodes[node].port, &["CLUSTER", "INFO"]).await?;
        info.lines()
            .find_map(|l| l.strip_prefix("cluster_state:"))
            .map(|s| s.trim().to_owned())
            .context("CLUSTER INFO without cluster_state")
    }

    /// Waits until every running node says `cluster_state:ok` and every slot
    /// is served by a running primary (after a kill: until its replica took
    /// over).
    ///
    /// # Errors
    /// Not so within `within`.
    pub async fn wait_ok(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut ok = true;
            for (i, node) in self.nodes.iter().enumerate() {
                if node.child.is_some()
                    && !matches!(self.cluster_state(i).await.as_deref(), Ok("ok"))
                {
                    ok = false;
                    break;
                }
            }
            if ok {
                if let Ok(nodes) = self.cluster_nodes().await {
                    let running: Vec<u16> = self
                        .nodes
                        .iter()
                        .filter(|n| n.child.is_some())
                        .map(|n| n.port)
                        .collect();
                    let served: u32 = nodes
                        .iter()
                        .filter(|n| n.primary && !n.failed && running.contains(&n.port))
                        .flat_map(|n| &n.slots)
                        .map(|(a, b)| u32::from(b - a) + 1)
                        .sum();
                    if served == 16_384 {
                        return Ok(());
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the Redis Cluster did not become ok within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running replica reports `master_link_status:up`
    /// (its initial sync done, so writes reach it).
    ///
    /// # Errors
    /// Not so within `within`.
    pub async fn wait_replicas_linked(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Every running replica linked, and (right after `--cluster
            // create`, before each replica has switched roles) as many
            // linked replicas as the cluster was made with.
            let mut linked = true;
            let mut up = 0;
            let mut running: usize = 0;
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                running += 1;
                let info = query_string(node.port, &["INFO", "replication"])
                    .await
                    .unwrap_or_default();
                if info.contains("role:slave") {
                    if info.contains("master_link_status:up") {
                        up += 1;
                    } else {
                        linked = false;
                    }
                }
            }
            let expected = self
                .replicas
                .min(running.saturating_sub(self.nodes.len() - self.replicas));
            if linked && up >= expected {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the Redis Cluster's replicas did not link within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    ///
    /// # Errors
    /// No node answers.
    pub async fn keyslot(&self, key: &str) -> anyhow::Result<u16> {
        let v = query(self.any_running()?, &["CLUSTER", "KEYSLOT", key]).await?;
        Ok(redis::from_redis_value(v)?)
    }

    /// Index of the node serving `slot` as primary (not marked failed).
    ///
    /// # Errors
    /// No node answers, or no live primary serves the slot.
    pub async fn primary_of_slot(&self, slot: u16) -> anyhow::Result<usize> {
        let port = self
            .cluster_nodes()
            .await?
            .into_iter()
            .find(|n| {
                n.primary && !n.failed && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
            })
            .map(|n| n.port)
            .with_context(|| format!("no live primary serves slot {slot}"))?;
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .with_context(|| format!("port {port} is not one of this cluster's"))
    }

    /// SIGKILLs the primary of `slot` (a crash) and returns its index; its
    /// replica takes over after about `cluster-node-timeout` (1 s) — wait
    /// with [`Self::wait_ok`].
    ///
    /// # Errors
    /// See [`Self::primary_of_slot`].
    pub async fn kill_primary_of_slot(&mut self, slot: u16) -> anyhow::Result<usize> {
        let node = self.primary_of_slot(slot).await?;
        self.kill(node).await?;
        Ok(node)
    }

    /// SIGKILLs node `node` (a crash).
    ///
    /// # Errors
    /// It was not running.
    pub async fn kill(&mut self, node: usize) -> anyhow::Result<()> {
        let mut child = self.nodes[node]
            .child
            .take()
            .with_context(|| format!("node {node} is not running"))?;
        child.kill().await.context("killing redis-server")?;
        Ok(())
    }

    /// Starts node `node` again on its directory (`nodes.conf`, AOF): it
    /// rejoins the cluster, as a replica when its slots failed over while it
    /// was down. Waits until it answers PING (not for the cluster: use
    /// [`Self::wait_ok`]).
    ///
    /// # Errors
    /// It is running, or does not come up within 10 s.
    pub async fn restart(&mut self, node: usize) -> anyhow::Result<()> {
        if self.nodes[node].child.is_some() {
            bail!("node {node} is already running");
        }
        self.spawn(node)?;
        self.wait_ping(node, Duration::from_secs(10)).await
    }

    /// Kills every node and removes the cluster's directory.
    pub async fn stop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill().await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Parses `CLUSTER NODES`.
fn parse_cluster_nodes(text: &str) -> Vec<ClusterNodeInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let addr = fields.get(1)?;
            let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = fields.get(2)?;
            let slots = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(ClusterNodeInfo {
                port,
                primary: flags.split(',').any(|f| f == "master"),
                failed: flags.split(',').any(|f| f == "fail" || f == "fail?"),
                slots,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected\n\
                    67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922\n\
                    e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed]\n\
                    6ec2 127.0.0.1:30003@40003 master,fail - 0 0 3 connected 10923-16383 16000\n";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 4);
        assert!(!nodes[0].primary && nodes[0].slots.is_empty());
        assert_eq!(nodes[1].slots, vec![(5461, 10922)]);
        assert!(nodes[2].primary && nodes[2].slots == vec![(0, 5460)]);
        assert!(nodes[3].failed);
        assert_eq!(nodes[3].slots, vec![(10923, 16383), (16000, 16000)]);
    }
}
