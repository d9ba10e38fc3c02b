//! The event hub: each api process holds one Redis subscription to the
//! events channel ([`EventHub::run`]); the transition script announces every
//! event there as `<task id> <seq>`, and the hub tells whoever watches that
//! task ([`EventHub::watch`]). It forgets a task when its last watcher leaves.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use deadpool_redis::redis;
use futures_util::StreamExt;
use task_model::TaskId;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Fans the process's one Redis subscription out to watchers, per task.
#[derive(Debug, Default)]
pub struct EventHub {
    watchers: Mutex<HashMap<TaskId, broadcast::Sender<u64>>>,
}

/// A client's interest in one task; dropping it unsubscribes.
#[derive(Debug)]
pub struct Watch {
    hub: Arc<EventHub>,
    id: TaskId,
    rx: broadcast::Receiver<u64>,
}

impl Watch {
    /// Waits until something may have happened to the task (a new event, or
    /// a resubscription after which events may have been missed); `false`
    /// once the hub is gone. Cancel-safe.
    pub async fn changed(&mut self) -> bool {
        !matches!(
            self.rx.recv().await,
            Err(broadcast::error::RecvError::Closed)
        )
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watchers = self.hub.watchers.lock().unwrap_or_else(|p| p.into_inner());
        if watchers
            .get(&self.id)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            watchers.remove(&self.id);
        }
    }
}

impl EventHub {
    /// Starts watching a task.
    pub fn watch(self: &Arc<Self>, id: TaskId) -> Watch {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        let rx = watchers
            .entry(id)
            .or_insert_with(|| broadcast::channel(64).0)
            .subscribe();
        Watch {
            hub: Arc::clone(self),
            id,
            rx,
        }
    }

    /// Tasks with at least one watcher (for tests and metrics).
    pub fn watched(&self) -> usize {
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    fn dispatch(&self, id: TaskId, seq: u64) {
        if let Some(tx) = self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            let _ = tx.send(seq);
        }
    }

    /// Tells every watcher to re-read (after a resubscription, events may have been missed).
    fn resync_all(&self) {
        for tx in self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let _ = tx.send(0);
        }
    }

    /// Keeps the subscription to `channel` alive until `stop`, reconnecting
    /// with backoff. `redis_urls`: the one Redis, or the seeds of a Redis
    /// Cluster, where each reconnect tries the next seed (a PUBLISH on any
    /// cluster node reaches the subscribers of every node).
    pub async fn run(
        self: Arc<Self>,
        redis_urls: Vec<String>,
        channel: String,
        stop: CancellationToken,
    ) {
        let mut delay = Duration::from_millis(100);
        for attempt in 0usize.. {
            let Some(redis_url) = redis_urls.get(attempt % redis_urls.len().max(1)) else {
                tracing::error!("no redis to subscribe to task events on");
                return;
            };
            let session = subscribe(redis_url, &channel);
            let stopped = match tokio::select! { _ = stop.cancelled() => return, s = session => s }
            {
                Ok(pubsub) => {
                    delay = Duration::from_millis(100);
                    self.listen(pubsub, &stop).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to task events");
                    false
                }
            };
            if stopped {
                return;
            }
            tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Dispatches announcements until the subscription drops (`false`) or `stop` (`true`).
    async fn listen(&self, mut pubsub: redis::aio::PubSub, stop: &CancellationToken) -> bool {
        tracing::info!("subscribed to task events");
        self.resync_all();
        let mut messages = pubsub.on_message();
        loop {
            let msg =
                tokio::select! { _ = stop.cancelled() => return true, m = messages.next() => m };
            let Some(msg) = msg else { break };
            match msg.get_payload::<String>() {
                Ok(payload) => self.announce(&payload),
                Err(e) => tracing::warn!(error = %e, "unreadable event announcement"),
            }
        }
        tracing::warn!("event subscription lost; resubscribing");
        false
    }

    /// `<task id> <seq>`, as the transition script publishes it.
    fn announce(&self, payload: &str) {
        let Some((id, seq)) = payload.split_once(' ') else {
            return;
        };
        if let (Ok(id), Ok(seq)) = (TaskId::parse(id), seq.parse()) {
            self.dispatch(id, seq);
        }
    }
}

async fn subscribe(
    redis_url: &str,
    channel: &str,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let client = redis::Client::open(redis_url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}
