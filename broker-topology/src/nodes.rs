//! `AMQP_URL` as a list: the nodes of one RabbitMQ cluster, comma-separated,
//! each an `amqp://` URL with the same vhost.
//!
//! A process holds one connection, to one node. [`NodeUrls::connect`] tries
//! the nodes in turn, starting with the current one, and stays on the first
//! that accepts; when that connection is lost the caller
//! [`advance`](NodeUrls::advance)s, so the next attempt starts with the next
//! node and the lost one is tried last. The first node a process tries is
//! chosen by its pid, so the processes of one deployment spread their
//! connections over the nodes.

use std::future::Future;

/// The node URLs of `AMQP_URL` and which one is current.
#[derive(Clone)]
pub struct NodeUrls {
    urls: Vec<String>,
    current: usize,
}

impl std::fmt::Debug for NodeUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeUrls")
            .field("nodes", &self.urls.len())
            .field("current", &redact_url(self.current()))
            .finish()
    }
}

impl NodeUrls {
    /// The comma-separated list `list` (spaces around each URL ignored),
    /// starting at a node chosen by this process's pid. A list without any
    /// URL (which [`validate`] refuses) is kept as the one URL it is, so
    /// connecting fails with the client's own error.
    pub fn new(list: &str) -> Self {
        let mut urls: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            urls.push(list.to_owned());
        }
        let current = std::process::id() as usize % urls.len();
        Self { urls, current }
    }

    /// The same list, starting at its first URL.
    #[must_use]
    pub fn from_first(mut self) -> Self {
        self.current = 0;
        self
    }

    /// How many nodes are listed.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Always false: a list holds at least one URL.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The node the next attempt starts with (or the one connected to).
    pub fn current(&self) -> &str {
        &self.urls[self.current]
    }

    /// The connection to the current node was lost: start with the next.
    pub fn advance(&mut self) {
        self.current = (self.current + 1) % self.urls.len();
    }

    /// Tries `open` on each node once, the current one first, and stays on
    /// the first that succeeds. Each failure is logged (the URL without its
    /// password); when every node failed, answers the last error.
    ///
    /// # Errors
    /// Every node failed.
    pub async fn connect<T, F, Fut>(&mut self, mut open: F) -> anyhow::Result<T>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let mut last = None;
        for _ in 0..self.urls.len() {
            match open(self.current().to_owned()).await {
                Ok(connected) => return Ok(connected),
                Err(e) => {
                    if self.urls.len() > 1 {
                        tracing::warn!(node = %redact_url(self.current()), error = format!("{e:#}"), "cannot connect to this rabbitmq node; trying the next");
                    }
                    last = Some(e);
                    self.advance();
                }
            }
        }
        Err(last.expect("a list holds at least one URL"))
    }
}

/// A clap value parser for `AMQP_URL`: one `amqp://` or `amqps://` URL or
/// several, comma-separated; answers the list without spaces.
///
/// # Errors
/// No URL, or one that is not `amqp://`/`amqps://`.
pub fn validate(list: &str) -> Result<String, String> {
    let urls: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Err("lists no URL".to_owned());
    }
    if let Some(bad) = urls
        .iter()
        .find(|u| !u.starts_with("amqp://") && !u.starts_with("amqps://"))
    {
        return Err(format!(
            "{} is not an amqp:// or amqps:// URL",
            redact_one(bad)
        ));
    }
    Ok(urls.join(","))
}

/// `amqp://user:secret@host/vhost` → `amqp://user:***@host/vhost`; each URL
/// of a comma-separated list alike.
pub fn redact_url(list: &str) -> String {
    list.split(',')
        .map(redact_one)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one(url: &str) -> String {
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

    #[test]
    fn a_list_is_split_trimmed_and_every_password_redacted() {
        let urls = NodeUrls::new(" amqp://u:p1@a/v , amqp://u:p2@b/v,");
        assert_eq!(urls.len(), 2);
        let urls = urls.from_first();
        assert_eq!(urls.current(), "amqp://u:p1@a/v");
        assert_eq!(
            redact_url("amqp://u:p1@a/v,amqp://u:p2@b/v"),
            "amqp://u:***@a/v,amqp://u:***@b/v"
        );
        assert_eq!(
            validate(" amqp://a/v , amqps://b/v").as_deref(),
            Ok("amqp://a/v,amqps://b/v")
        );
        assert!(validate(" , ").is_err());
        assert!(validate("amqp://a/v,http://u:secret@b/")
            .unwrap_err()
            .contains("u:***@b"));
    }

    #[tokio::test]
    async fn connect_moves_past_dead_nodes_and_advance_starts_with_the_next() {
        let mut urls = NodeUrls::new("dead,live,other").from_first();
        let tried = std::sync::Mutex::new(Vec::new());
        let got = urls
            .connect(|u| {
                tried.lock().unwrap().push(u.clone());
                async move {
                    if u == "dead" {
                        anyhow::bail!("refused")
                    }
                    Ok(u)
                }
            })
            .await
            .unwrap();
        assert_eq!(got, "live");
        assert_eq!(*tried.lock().unwrap(), ["dead", "live"]);
        urls.advance();
        assert_eq!(urls.current(), "other");
        let all_dead = urls
            .connect(|_| async { anyhow::bail!("refused") as anyhow::Result<()> })
            .await;
        assert!(all_dead.is_err());
    }
}
