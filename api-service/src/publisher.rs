//! RabbitMQ: publishing tasks and cancel broadcasts, with confirms.
//!
//! One long-lived connection and one confirm-mode channel shared by every
//! request (lapin channels are thread-safe and confirms pipeline). A
//! supervisor task keeps it connected: the api starts without RabbitMQ and
//! connects when it comes; while it is away, publishes fail fast and the
//! request answers 503. With several nodes in `AMQP_URL` the connection
//! goes to one of them and, once lost, to the next that answers: a publish
//! in flight on the lost connection gets no confirm and fails (the create
//! answers 503 or the outbox sweep publishes it again), so a task is never
//! answered 202 without a confirm.
//!
//! A broker that hangs (its connection open, nothing answering) is away too:
//! a publish that is not confirmed within [`PUBLISH_TIMEOUT`] fails, and the
//! supervisor drops that connection and reconnects, so the requests after it
//! fail fast instead of each waiting for the timeout.
//!
//! A broker under a resource alarm (memory or disk) is not hung: it blocks
//! every publishing connection and says so (`connection.blocked`, then
//! `connection.unblocked`). While the connection is blocked, publishes fail
//! at once with [`PublishError::Blocked`] instead of waiting for a confirm
//! that cannot come, and the supervisor keeps the connection (a new one would
//! be blocked just the same). A publish already waiting when the notice comes
//! fails at once too; its frames may already sit in the broker's buffer, so
//! that one message can still be routed once the alarm clears (a worker then
//! finds no task and dead-letters it).

use std::{sync::Arc, time::Duration};

use broker_topology::{NodeUrls, Topology};
use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::{FieldTable, ShortString},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ConnectionStatus,
};
use task_model::{topology, ControlMessage, TaskMessage};
use tokio::sync::{Notify, RwLock};

/// Longest wait for a publish and its confirm; past it the broker counts as unreachable.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a batch publish may take in all ([`Publisher::publish_tasks`]).
pub const BATCH_PUBLISH_LIMIT: Duration = Duration::from_secs(60);

/// `step`, or [`PublishError::Timeout`] when it does not finish within
/// [`PUBLISH_TIMEOUT`].
async fn stalls<T>(step: impl std::future::Future<Output = T>) -> Result<T, PublishError> {
    tokio::time::timeout(PUBLISH_TIMEOUT, step)
        .await
        .map_err(|_| PublishError::Timeout)
}
use tokio_util::sync::CancellationToken;

/// Why a publish did not go through.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No connection to the broker right now.
    #[error("rabbitmq is not connected")]
    NotConnected,
    /// The broker failed the publish or nacked it.
    #[error("rabbitmq refused the message: {0}")]
    Refused(String),
    /// No queue is bound where the message went (e.g. a broadcast while no
    /// worker runs).
    #[error("rabbitmq refused the message: unroutable: {0}")]
    Unroutable(String),
    /// The channel failed under the publish.
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    /// No confirm within [`PUBLISH_TIMEOUT`]: the broker hangs.
    #[error("rabbitmq did not confirm within {} s", PUBLISH_TIMEOUT.as_secs())]
    Timeout,
    /// The broker blocked the connection (`connection.blocked`: a memory or
    /// disk alarm); nothing is published until it unblocks it.
    #[error("rabbitmq has blocked publishing (a resource alarm)")]
    Blocked,
}

/// How often a publish waiting for its confirm looks whether the broker
/// blocked the connection meanwhile.
const BLOCKED_POLL: Duration = Duration::from_millis(20);

/// Mandatory: an unroutable task message is an error, not a silent drop.
const PUBLISH_OPTIONS: BasicPublishOptions = BasicPublishOptions {
    mandatory: true,
    immediate: false,
};

/// A broker's confirm as a result.
fn confirmed(confirmation: Confirmation) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => {
            Err(PublishError::Unroutable(returned.reply_text.to_string()))
        }
        Confirmation::Nack(_) => Err(PublishError::Refused("nacked".into())),
        Confirmation::NotRequested => Err(PublishError::Refused("confirms are off".into())),
    }
}

/// A task message's body and properties: persistent, its priority, its
/// `message_id`, and the current span's `traceparent` when traces are on.
fn task_envelope(message: &TaskMessage) -> (Vec<u8>, BasicProperties) {
    let body = serde_json::to_vec(message).expect("a TaskMessage always serializes");
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_priority(message.priority)
        .with_message_id(ShortString::from(message.task_id.to_string()))
        .with_content_type("application/json".into());
    if let Some(headers) = crate::telemetry::amqp_trace_headers() {
        properties = properties.with_headers(headers);
    }
    (body, properties)
}

/// Where tasks go: the task queues to declare (`QUEUES`) and how
/// (`QUEUE_TYPE`), and so which routing key a task is published with.
#[derive(Debug, Clone)]
pub struct Routing {
    pub topology: Topology,
    /// The named queues (`QUEUES`).
    pub queues: Vec<String>,
}

impl Default for Routing {
    /// v1's: the classic `tasks.algo` alone.
    fn default() -> Self {
        Self {
            topology: Topology::default(),
            queues: vec![task_model::DEFAULT_QUEUE.to_owned()],
        }
    }
}

struct Link {
    connection: Connection,
    channel: Channel,
}

/// Publishes to RabbitMQ; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    link: Arc<RwLock<Option<Link>>>,
    broken: Arc<Notify>,
    /// Set when a publish timed out: the supervisor replaces the connection.
    hung: Arc<std::sync::atomic::AtomicBool>,
    connected: tokio::sync::watch::Sender<bool>,
    routing: Arc<Routing>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher and the supervisor future that connects it (and reconnects
    /// with backoff) until `stop`; spawn the future.
    pub fn new(
        url: String,
        routing: Routing,
        stop: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let publisher = Self {
            link: Arc::default(),
            broken: Arc::default(),
            hung: Arc::default(),
            connected: tokio::sync::watch::Sender::new(false),
            routing: Arc::new(routing),
        };
        let supervisor = publisher.clone().supervise(url, stop);
        (publisher, supervisor)
    }

    /// `url`: one URL or a comma-separated list of a cluster's nodes
    /// ([`NodeUrls`]): each connection goes to one node; once it is lost the
    /// next attempt starts with the next node.
    async fn supervise(self, url: String, stop: CancellationToken) {
        let mut nodes = NodeUrls::new(&url);
        let mut delay = Duration::from_millis(100);
        loop {
            let routing = &self.routing;
            let stopped = match nodes
                .connect(|url| async move { connect(&url, routing).await })
                .await
            {
                Ok(link) => {
                    delay = Duration::from_millis(100);
                    tracing::info!(node = %broker_topology::redact_url(nodes.current()), "rabbitmq node");
                    let stopped = self.hold(link, &stop).await;
                    nodes.advance();
                    stopped
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot connect to rabbitmq");
                    false
                }
            };
            if stopped {
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Publishes over `link` until it breaks (`false`) or `stop` (`true`,
    /// after closing it).
    async fn hold(&self, link: Link, stop: &CancellationToken) -> bool {
        tracing::info!("connected to rabbitmq");
        *self.link.write().await = Some(link);
        self.connected.send_replace(true);
        if self.until_broken(stop).await {
            if let Some(link) = self.link.write().await.take() {
                let _ = link.channel.close(200, "api shutting down".into()).await;
                let _ = link.connection.close(200, "api shutting down".into()).await;
            }
            return true;
        }
        tracing::warn!("lost the rabbitmq connection; reconnecting");
        self.connected.send_replace(false);
        if let Some(old) = self.link.write().await.take() {
            // A hung broker's connection is still open: close it (in the
            // background, bounded) rather than leak it.
            tokio::spawn(async move {
                let closing = old.connection.close(200, "replaced".into());
                let _ = tokio::time::timeout(Duration::from_secs(30), closing).await;
            });
        }
        false
    }

    /// Waits until a publish finds the link broken or hung, or a periodic
    /// check does (`false`), or `stop` (`true`).
    async fn until_broken(&self, stop: &CancellationToken) -> bool {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return true,
                _ = self.broken.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let hung = self.hung.swap(false, std::sync::atomic::Ordering::AcqRel);
            if hung && self.is_blocked().await {
                // Blocked by an alarm, not hung: a new connection would be blocked too.
                continue;
            }
            if hung {
                tracing::warn!("rabbitmq did not confirm in time; replacing the connection");
            }
            if hung || !self.is_connected().await {
                return false;
            }
        }
    }

    /// Resolves once the publisher has connected (at once if it is).
    pub async fn wait_connected(&self) {
        let mut rx = self.connected.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|up| *up).await;
    }

    /// Whether the connection and channel are up.
    pub async fn is_connected(&self) -> bool {
        self.link
            .read()
            .await
            .as_ref()
            .is_some_and(|l| l.connection.status().connected() && l.channel.status().connected())
    }

    /// Whether the broker has blocked the connection (`connection.blocked`,
    /// a resource alarm) and not unblocked it yet.
    pub async fn is_blocked(&self) -> bool {
        self.link
            .read()
            .await
            .as_ref()
            .is_some_and(|l| l.connection.status().blocked())
    }

    async fn channel(&self) -> Result<(Channel, ConnectionStatus), PublishError> {
        let guard = self.link.read().await;
        match guard.as_ref() {
            Some(l) if l.connection.status().blocked() => Err(PublishError::Blocked),
            Some(l) if l.channel.status().connected() => {
                Ok((l.channel.clone(), l.connection.status().clone()))
            }
            _ => {
                self.broken.notify_one();
                Err(PublishError::NotConnected)
            }
        }
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let (channel, status) = self.channel().await?;
        let publishing = async {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    PUBLISH_OPTIONS,
                    body,
                    properties,
                )
                .await?;
            confirmed(confirm.await?)
        };
        self.guarded(&status, PUBLISH_TIMEOUT, publishing).await
    }

    /// Runs `publishing` within `timeout`, failing at once when the broker
    /// blocks the connection meanwhile (the confirm will not come before the
    /// alarm clears); a timeout or a channel error tells the supervisor.
    async fn guarded(
        &self,
        status: &ConnectionStatus,
        timeout: Duration,
        publishing: impl std::future::Future<Output = Result<(), PublishError>>,
    ) -> Result<(), PublishError> {
        let blocked = async {
            while !status.blocked() {
                tokio::time::sleep(BLOCKED_POLL).await;
            }
        };
        let result = tokio::select! {
            result = tokio::time::timeout(timeout, publishing) => {
                result.unwrap_or(Err(PublishError::Timeout))
            }
            () = blocked => Err(PublishError::Blocked),
        };
        match result {
            Err(PublishError::Timeout) => {
                self.hung.store(true, std::sync::atomic::Ordering::Release);
                self.broken.notify_one();
            }
            Err(PublishError::Amqp(_)) => self.broken.notify_one(),
            _ => {}
        }
        result
    }

    /// Publishes a task to its named queue `queue` (`tasks.<queue>`, or its
    /// priority lane under `QUEUE_TYPE=quorum`): persistent, with its
    /// priority and `message_id`, confirmed by the broker before this
    /// returns. When traces are on, the headers carry the current span's
    /// `traceparent`.
    pub async fn publish_task(
        &self,
        message: &TaskMessage,
        queue: &str,
    ) -> Result<(), PublishError> {
        let routing_key = self.routing.topology.lane_for(queue, message.priority);
        let (body, properties) = task_envelope(message);
        self.publish(topology::TASKS_EXCHANGE, &routing_key, &body, properties)
            .await
    }

    /// How queues are declared and tasks routed.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// Messages ready and consumers of named queue `queue`, summed over its
    /// RabbitMQ queues (its lanes under quorum): passive declares on a
    /// channel of their own.
    pub async fn queue_counts(&self, queue: &str) -> Result<(u32, u32), PublishError> {
        let channel = {
            let guard = self.link.read().await;
            let link = guard.as_ref().ok_or(PublishError::NotConnected)?;
            link.connection.create_channel().await?
        };
        let mut totals = (0, 0);
        let mut result = Ok(());
        for lane in self.routing.topology.task_queues(queue) {
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let declared = channel
                .queue_declare(lane.name.as_str().into(), passive, FieldTable::default())
                .await;
            match declared {
                Ok(q) => {
                    totals.0 += q.message_count();
                    totals.1 += q.consumer_count();
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if channel.status().connected() {
            let _ = channel.close(200, "done".into()).await;
        }
        result.map(|()| totals).map_err(Into::into)
    }

    /// Publishes many tasks, each to its named queue, as
    /// [`Publisher::publish_task`] publishes one, but
    /// pipelined: every message is sent first, then every confirm awaited.
    /// The deadline is on progress, not on the whole batch: it fails when
    /// no send or confirm completes for [`PUBLISH_TIMEOUT`] (a broker that
    /// confirms slowly but steadily, e.g. on a loaded machine, is not dead),
    /// and in any case after [`BATCH_PUBLISH_LIMIT`]. `Ok` only when the
    /// broker confirmed them all; after an error some may have been routed.
    pub async fn publish_tasks(
        &self,
        messages: &[(TaskMessage, &str)],
    ) -> Result<(), PublishError> {
        let (channel, status) = self.channel().await?;
        let publishing = async {
            let mut confirms = Vec::with_capacity(messages.len());
            for (message, queue) in messages {
                let routing_key = self.routing.topology.lane_for(queue, message.priority);
                let (body, properties) = task_envelope(message);
                let confirm = stalls(channel.basic_publish(
                    topology::TASKS_EXCHANGE.into(),
                    routing_key.as_str().into(),
                    PUBLISH_OPTIONS,
                    &body,
                    properties,
                ))
                .await??;
                confirms.push(confirm);
            }
            for confirm in confirms {
                confirmed(stalls(confirm).await??)?;
            }
            Ok(())
        };
        self.guarded(&status, BATCH_PUBLISH_LIMIT, publishing).await
    }

    /// Broadcasts a cancel to every worker.
    pub async fn publish_control(&self, message: &ControlMessage) -> Result<(), PublishError> {
        let body = serde_json::to_vec(message).expect("a ControlMessage always serializes");
        let properties = BasicProperties::default().with_content_type("application/json".into());
        self.publish(topology::CONTROL_EXCHANGE, "", &body, properties)
            .await
    }

    /// Messages waiting in a queue (a passive declare on a channel of its
    /// own, so a missing queue cannot close the publishing channel).
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, PublishError> {
        let channel = {
            let guard = self.link.read().await;
            let link = guard.as_ref().ok_or(PublishError::NotConnected)?;
            link.connection.create_channel().await?
        };
        let depth = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count());
        if channel.status().connected() {
            let _ = channel.close(200, "done".into()).await;
        }
        Ok(depth?)
    }
}

async fn connect(url: &str, routing: &Routing) -> anyhow::Result<Link> {
    use anyhow::Context;
    let props = ConnectionProperties::default().with_connection_name("taskforge-api".into());
    let connection = tokio::time::timeout(Duration::from_secs(5), Connection::connect(url, props))
        .await
        .context("timed out connecting to rabbitmq")?
        .context("connecting to rabbitmq")?;
    let channel = connection
        .create_channel()
        .await
        .context("opening a channel")?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("enabling publisher confirms")?;
    let queues: Vec<&str> = routing.queues.iter().map(String::as_str).collect();
    routing.topology.declare(&channel, &queues).await?;
    Ok(Link {
        connection,
        channel,
    })
}
