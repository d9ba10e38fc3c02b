//! Live task events: Server-Sent Events fed by Redis pub/sub.
//!
//! Each api process holds one Redis subscription to the events channel
//! ([`EventHub::run`]); the transition script announces every event there as
//! `<task id> <seq>`. An SSE client subscribes to its task in the hub, reads
//! the past from the task's stream, then re-reads the stream after the last
//! seq it sent whenever the hub says something new happened. Nothing polls.
//! A client that goes away ends its task (the response channel closes), and
//! the hub forgets a task when its last watcher leaves.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{http::header, HttpResponse};
use bytes::Bytes;
use deadpool_redis::redis;
use futures_util::StreamExt;
use task_model::{EventView, TaskId, TaskStatus};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{error::ApiError, startup::AppState};

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Fans the process's one Redis subscription out to SSE clients, per task.
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

    /// Keeps the subscription to `channel` alive until `stop`, reconnecting with backoff.
    pub async fn run(self: Arc<Self>, redis_url: String, channel: String, stop: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            let session = async {
                let client = redis::Client::open(redis_url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::select! { _ = stop.cancelled() => return, s = session => s } {
                Ok(mut pubsub) => {
                    tracing::info!("subscribed to task events");
                    delay = Duration::from_millis(100);
                    self.resync_all();
                    let mut messages = pubsub.on_message();
                    loop {
                        let msg = tokio::select! { _ = stop.cancelled() => return, m = messages.next() => m };
                        let Some(msg) = msg else { break };
                        let payload: String = match msg.get_payload() {
                            Ok(p) => p,
                            Err(e) => {
                                tracing::warn!(error = %e, "unreadable event announcement");
                                continue;
                            }
                        };
                        if let Some((id, seq)) = payload.split_once(' ') {
                            if let (Ok(id), Ok(seq)) = (TaskId::parse(id), seq.parse()) {
                                self.dispatch(id, seq);
                            }
                        }
                    }
                    tracing::warn!("event subscription lost; resubscribing");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to task events"),
            }
            tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

fn is_final(e: &EventView) -> bool {
    e.kind == "status" && e.status.is_terminal()
}

fn frame(e: &EventView) -> Bytes {
    let data = serde_json::to_string(e).unwrap_or_default();
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        e.seq, e.kind, data
    ))
}

/// Answers an SSE request: past events after `last_seen`, then live ones,
/// closing after the terminal event.
pub async fn event_stream(
    state: Arc<AppState>,
    id: TaskId,
    status: TaskStatus,
    last_seen: u64,
) -> Result<HttpResponse, ApiError> {
    // Watch before reading the past, so nothing falls between the two.
    let mut watch = state.events.watch(id);
    let past = state.store.events(&id, last_seen, 100_000).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let span = tracing::Span::current();
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let mut last = last_seen;
            let mut done = false;
            for e in &past {
                if tx.send(Ok(frame(e))).await.is_err() {
                    return;
                }
                last = e.seq;
                done |= is_final(e);
            }
            // Already over, and the client has seen the end.
            if status.is_terminal() && !done {
                return;
            }
            let mut keep_alive =
                tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
            while !done {
                tokio::select! {
                    news = watch.rx.recv() => {
                        if matches!(news, Err(broadcast::error::RecvError::Closed)) {
                            break;
                        }
                        let events = match state.store.events(&id, last, 10_000).await {
                            Ok(events) => events,
                            Err(e) => {
                                tracing::warn!(task_id = %id, error = %e, "cannot read events for a stream; closing it");
                                break;
                            }
                        };
                        for e in &events {
                            if tx.send(Ok(frame(e))).await.is_err() {
                                return;
                            }
                            last = e.seq;
                            done |= is_final(e);
                        }
                    }
                    _ = keep_alive.tick() => {
                        if tx.send(Ok(Bytes::from_static(b": keep-alive\n\n"))).await.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        },
        span,
    ));
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(tokio_stream::wrappers::ReceiverStream::new(rx)))
}
