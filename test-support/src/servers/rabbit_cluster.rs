//! A RabbitMQ cluster of the caller's own: [`PrivateRabbit`] nodes that share
//! one Erlang cookie, joined with `rabbitmqctl join_cluster`.

use std::{process::Stdio, time::Duration};

use anyhow::{bail, Context};

use super::{short_id, PrivateRabbit, RabbitOptions};

/// `rabbitmqctl` itself: the `/usr/sbin` wrapper switches to the rabbitmq
/// user, whose home holds another cookie.
const RABBITMQCTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

/// A cluster of `n` RabbitMQ nodes on loopback (names `tf-<random>@localhost`,
/// each its own ports and directories). Nodes are addressed by index in
/// start order; node 0 is the one the others joined. Killed, and the
/// directories removed, on drop.
#[derive(Debug)]
pub struct PrivateRabbitCluster {
    /// The nodes, public for their names, ports and [`PrivateRabbit::amqp_url`].
    pub nodes: Vec<PrivateRabbit>,
}

impl PrivateRabbitCluster {
    /// Boots `n` nodes (in parallel) and joins nodes 1.. to node 0; waits
    /// until node 0 lists all of them as running.
    ///
    /// # Errors
    /// `rabbitmq-server` missing, a node not booting (90 s each), or a join
    /// failing.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        if n == 0 {
            bail!("a cluster needs at least one node");
        }
        let cookie = format!("taskforge{}{}", short_id(), short_id());
        let mut nodes = Vec::new();
        for _ in 0..n {
            let node = PrivateRabbit::prepare(&RabbitOptions::default())?;
            let path = node.dir.join(".erlang.cookie");
            std::fs::write(&path, &cookie)?;
            set_owner_only(&path)?;
            nodes.push(node);
        }
        let mut cluster = Self { nodes };
        let boots = cluster.nodes.iter_mut().map(PrivateRabbit::start_again);
        for booted in futures_util::future::join_all(boots).await {
            booted?;
        }
        let seed = cluster.nodes[0].node.clone();
        for i in 1..n {
            cluster.ctl(i, &["stop_app"]).await?;
            cluster.ctl(i, &["join_cluster", &seed]).await?;
            cluster.ctl(i, &["start_app"]).await?;
        }
        cluster.wait_running(n, Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// Runs `rabbitmqctl -n <node i> args…`, returning its output.
    ///
    /// # Errors
    /// It fails or takes over 60 s.
    pub async fn ctl(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let node = &self.nodes[i];
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(RABBITMQCTL)
                .env("HOME", &node.dir)
                .args(["-q", "-n", &node.node])
                .args(args)
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .with_context(|| format!("rabbitmqctl {args:?} on {} timed out", node.node))?
        .context("running rabbitmqctl")?;
        if !out.status.success() {
            bail!(
                "rabbitmqctl {args:?} on {} failed: {}{}",
                node.node,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The running nodes, as a running node `i` sees them
    /// (`cluster_status`).
    ///
    /// # Errors
    /// `rabbitmqctl` fails.
    pub async fn running_nodes(&self, i: usize) -> anyhow::Result<Vec<String>> {
        let json = self
            .ctl(i, &["cluster_status", "--formatter", "json"])
            .await?;
        let status: serde_json::Value =
            serde_json::from_str(&json).context("parsing cluster_status")?;
        let mut running: Vec<String> = status["running_nodes"]
            .as_array()
            .context("cluster_status without running_nodes")?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        running.sort();
        Ok(running)
    }

    /// Waits until some running node lists `count` running nodes.
    ///
    /// # Errors
    /// Not within `within`.
    pub async fn wait_running(&self, count: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let asker = self
            .nodes
            .iter()
            .position(PrivateRabbit::is_running)
            .context("no node is running")?;
        loop {
            if matches!(self.running_nodes(asker).await, Ok(r) if r.len() == count) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the cluster did not show {count} running nodes within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every node's AMQP URL, comma-separated (what `AMQP_URL` takes).
    pub fn amqp_url_list(&self) -> String {
        self.nodes
            .iter()
            .map(PrivateRabbit::amqp_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills node `i` (SIGKILL to its process group), as a crash would.
    pub async fn kill(&mut self, i: usize) {
        self.nodes[i].kill().await;
    }

    /// Boots node `i` again on its data; it rejoins the cluster by itself.
    ///
    /// # Errors
    /// It is running, or does not come up within 90 s.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].start_again().await
    }

    /// Stops every node cleanly, the joined ones first.
    pub async fn stop(&mut self) {
        for node in self.nodes.iter_mut().rev() {
            node.stop().await;
        }
    }
}

#[cfg(unix)]
fn set_owner_only(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400))?;
    Ok(())
}
