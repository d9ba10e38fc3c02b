//! The event hub: each api process holds one Redis subscription to the
//! events channel ([`EventHub::run`]); the transition script announces every
//! event there as `<task id> <seq> <event JSON>`, and the hub hands it to
//! whoever watches that task ([`EventHub::watch`]), so a live stream need not
//! read it back. It forgets a task when its last watcher leaves.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use deadpool_redis::redis;
use futures_util::StreamExt;
use task_model::{EventView, TaskId};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Fans the process's one Redis subscription out to watchers, per task.
#[derive(Debug, Default)]
pub struct EventHub {
    watchers: Mutex<HashMap<TaskId, broadcast::Sender<Note>>>,
}

/// What a watcher hears.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// Event `seq` of the task, as announced (`None`: an announcement
    /// without the event, from an older api's script, or unreadable).
    Event(u64, Option<Arc<EventView>>),
    /// Events may have been missed (a resubscription, a watcher too slow
    /// for its backlog): read the log again.
    Resync,
}

/// A client's interest in one task; dropping it unsubscribes.
#[derive(Debug)]
pub struct Watch {
    hub: Arc<EventHub>,
    id: TaskId,
    rx: broadcast::Receiver<Note>,
}

impl Watch {
    /// Waits until something may have happened to the task; `None` once the
    /// hub is gone. Cancel-safe.
    pub async fn next(&mut self) -> Option<Note> {
        match self.rx.recv().await {
            Ok(note) => Some(note),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Note::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
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

    /// Hands event `seq` of task `id` (`json` as logged) to the task's
    /// watchers, parsed once for all of them; nothing when nobody watches.
    fn dispatch(&self, id: TaskId, seq: u64, json: Option<&str>) {
        // Parsed outside the lock, which every stream's open and close takes.
        let Some(tx) = self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
        else {
            return;
        };
        let event = json.and_then(|json| match super::parse_listed_event(seq, json) {
            Ok(event) => Some(Arc::new(event)),
            Err(e) => {
                tracing::warn!(task_id = %id, seq, error = %e, "unreadable announced event; the stream reads it back");
                None
            }
        });
        let _ = tx.send(Note::Event(seq, event));
    }

    /// Tells every watcher to re-read (after a resubscription, events may have been missed).
    fn resync_all(&self) {
        for tx in self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let _ = tx.send(Note::Resync);
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

    /// `<task id> <seq> <event JSON>`, as the transition script publishes
    /// it (`<task id> <seq>` from an older api's script).
    fn announce(&self, payload: &str) {
        let mut parts = payload.splitn(3, ' ');
        let (Some(id), Some(seq)) = (parts.next(), parts.next()) else {
            tracing::warn!(payload, "malformed event announcement");
            return;
        };
        match (TaskId::parse(id), seq.parse()) {
            (Ok(id), Ok(seq)) => self.dispatch(id, seq, parts.next()),
            _ => tracing::warn!(payload, "malformed event announcement"),
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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b6a7c1e-3f7d-4a55-9a4e-2f1c7d9e8b10";

    async fn heard(hub: &Arc<EventHub>, payload: &str) -> Note {
        let mut watch = hub.watch(TaskId::parse(ID).unwrap());
        hub.announce(payload);
        watch.next().await.expect("the hub is there")
    }

    #[tokio::test]
    async fn an_announcement_carries_its_event_parsed() {
        let hub = Arc::new(EventHub::default());
        let json = r#"["type","status","status","PROCESSING","stage","0","stages","2","at","1764770000123","attempt","1","worker","w1"]"#;
        let Note::Event(seq, Some(event)) = heard(&hub, &format!("{ID} 2 {json}")).await else {
            panic!("an event with its body");
        };
        assert_eq!((seq, event.seq), (2, 2));
        assert_eq!(event.status, task_model::TaskStatus::Processing);
        assert_eq!(event.worker.as_deref(), Some("w1"));
    }

    #[tokio::test]
    async fn an_announcement_without_its_event_says_read_it_back() {
        let hub = Arc::new(EventHub::default());
        // An older api's script, and a body that does not parse.
        assert_eq!(heard(&hub, &format!("{ID} 3")).await, Note::Event(3, None));
        assert_eq!(
            heard(&hub, &format!("{ID} 4 [nope")).await,
            Note::Event(4, None)
        );
    }
}
