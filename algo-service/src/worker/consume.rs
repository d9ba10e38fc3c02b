//! The consume loop: one AMQP [`Session`] after another, each delivery handed
//! to [`handler::process_one`] on the worker's task tracker, reconnecting with
//! backoff whenever the session breaks, until shutdown.
//!
//! Each session first learns which queues are paused ([`pause::learn`]),
//! then consumes every queue of `WORKER_QUEUES` that is not ([`Active`]);
//! a pause or resume broadcast cancels or starts that queue's consumers at
//! once. Deliveries a cancelled consumer had already received but this
//! worker had not started go back to the queue (nack with requeue), so a
//! paused queue keeps them for when it resumes. Tasks in flight are bounded
//! by `WORKER_CONCURRENCY` across all queues: a slot is taken before the
//! next delivery is, and the delivery is taken from the highest priority
//! lane that has one ([`LaneConsumer`]).

use std::{future::pending, sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBackoff};
use broker_topology::{LaneConsumer, NodeUrls, Topology};
use futures_util::StreamExt;
use lapin::{message::Delivery, options::BasicNackOptions, Consumer};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    control::consume_control,
    pause::{self, Pauses},
    reconnect_policy,
};
use crate::{
    backoff::jittered,
    broker::{QueueConsumer, Session, SessionConfig},
    config::Settings,
    context::HandlerContext,
    handler,
};

/// How long a session waits for the api's pause state before it consumes
/// anyway (an api that is down cannot have tasks claimed either; its answer,
/// or a broadcast, applies when it comes).
const LEARN_WAIT: Duration = Duration::from_secs(3);

/// Why a session stopped consuming.
enum SessionEnd {
    Shutdown,
    Broken(String),
}

/// What the delivery loop works with.
struct Shared<'a> {
    ctx: &'a Arc<HandlerContext>,
    tracker: &'a TaskTracker,
    pauses: &'a Pauses,
    slots: &'a Arc<Semaphore>,
    shutdown: &'a CancellationToken,
}

/// Consumes until `shutdown` fires, reconnecting as needed. Returns the live
/// session (its consumers cancelled) so cancels keep arriving during the drain.
pub(super) async fn consume(
    settings: &Settings,
    ctx: &Arc<HandlerContext>,
    tracker: &TaskTracker,
    consuming: &watch::Sender<bool>,
    shutdown: &CancellationToken,
) -> Option<Session> {
    let config = SessionConfig {
        url: settings.amqp_url.clone(),
        worker_name: settings.worker_name.clone(),
        prefetch: settings.worker_concurrency,
        topology: Topology::new(settings.queue_type),
        queues: settings.queue_names(),
    };
    let pauses = Pauses::default();
    let slots = Arc::new(Semaphore::new(usize::from(settings.worker_concurrency)));
    let shared = Shared {
        ctx,
        tracker,
        pauses: &pauses,
        slots: &slots,
        shutdown,
    };
    let mut generation: u64 = 0;
    let mut backoff = reconnect_policy().build();
    let mut nodes = NodeUrls::new(&settings.amqp_url);
    loop {
        let session = connect(
            &config,
            ctx,
            &mut nodes,
            &mut generation,
            &mut backoff,
            shutdown,
        )
        .await?;
        let control_ended = CancellationToken::new();
        let control = tokio::spawn(consume_control(
            session.control.clone(),
            ctx.registry.clone(),
            pauses.clone(),
            control_ended.clone(),
        ));
        let mut active = Active::new(&config.queues);
        let end = run_session(&session, &mut active, &shared, consuming, &control_ended).await;
        consuming.send_replace(false);
        match end {
            SessionEnd::Shutdown => return Some(stop_consuming(session, active, tracker).await),
            SessionEnd::Broken(why) => {
                control.abort();
                pause_before_reconnect(&why, ctx, &mut backoff, session, shutdown).await?;
            }
        }
    }
}

/// Learns the pause state, starts the consumers of the queues not paused,
/// and consumes until the session ends.
async fn run_session(
    session: &Session,
    active: &mut Active,
    shared: &Shared<'_>,
    consuming: &watch::Sender<bool>,
    control_ended: &CancellationToken,
) -> SessionEnd {
    let mut changes = shared.pauses.subscribe();
    let mut learning = Box::pin(pause::learn(
        shared.ctx.api.clone(),
        shared.pauses.clone(),
        shared.shutdown.clone(),
    ));
    match tokio::time::timeout(LEARN_WAIT, &mut learning).await {
        Ok(false) => return SessionEnd::Shutdown,
        Ok(true) => {}
        Err(_) => {
            tracing::warn!(
                "consuming before the api said which queues are paused; its answer applies when it comes"
            );
            tokio::spawn(learning);
        }
    }
    changes.mark_unchanged();
    if let Err(e) = active.sync(session, shared.pauses, shared.tracker).await {
        return SessionEnd::Broken(format!("{e:#}"));
    }
    consuming.send_replace(true);
    tracing::info!(
        queues = %active.queues.join(","),
        paused = %active.paused(shared.pauses).join(","),
        control_queue = %session.control_queue,
        in_flight = shared.ctx.registry.len(),
        "consuming"
    );
    deliveries(session, active, shared, &mut changes, control_ended).await
}

/// Spawns a handler for each delivery, a slot taken for each, until
/// shutdown or a broken session; follows pauses and resumes meanwhile.
async fn deliveries(
    session: &Session,
    active: &mut Active,
    shared: &Shared<'_>,
    changes: &mut watch::Receiver<std::collections::HashMap<String, (bool, u64)>>,
    control_ended: &CancellationToken,
) -> SessionEnd {
    loop {
        let step = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return SessionEnd::Shutdown,
            () = control_ended.cancelled() => {
                return SessionEnd::Broken("the control consumer ended".to_owned());
            }
            _ = changes.changed() => None,
            step = next_with_slot(active, shared.slots) => Some(step),
        };
        match step {
            None => {
                if let Err(e) = active.sync(session, shared.pauses, shared.tracker).await {
                    return SessionEnd::Broken(format!("{e:#}"));
                }
            }
            Some((permit, Some(Ok(delivery)))) => {
                let ctx = Arc::clone(shared.ctx);
                shared.tracker.spawn(async move {
                    handler::process_one(ctx, delivery).await;
                    drop(permit);
                });
            }
            Some((_, Some(Err(e)))) => return SessionEnd::Broken(e.to_string()),
            Some((_, None)) => {
                return SessionEnd::Broken("the broker cancelled the consumers".to_owned())
            }
        }
    }
}

/// A slot for one more task in flight, then the next delivery. Dropped
/// half-way (a pause), it has taken no delivery.
async fn next_with_slot(
    active: &mut Active,
    slots: &Arc<Semaphore>,
) -> (OwnedSemaphorePermit, Option<lapin::Result<Delivery>>) {
    let permit = Arc::clone(slots)
        .acquire_owned()
        .await
        .expect("the slots semaphore is never closed");
    (permit, active.next().await)
}

/// The task consumers of one session: those of every queue of
/// `WORKER_QUEUES` that is not paused.
struct Active {
    queues: Vec<String>,
    consumers: Vec<QueueConsumer>,
    lanes: LaneConsumer,
}

impl Active {
    fn new(queues: &[String]) -> Self {
        Self {
            queues: queues.to_vec(),
            consumers: Vec::new(),
            lanes: LaneConsumer::new(Vec::new()),
        }
    }

    fn paused(&self, pauses: &Pauses) -> Vec<String> {
        let mut paused = self.queues.clone();
        paused.retain(|q| pauses.is_paused(q));
        paused
    }

    /// Cancels the consumers of queues now paused (their unstarted
    /// deliveries go back) and starts those of queues now resumed.
    async fn sync(
        &mut self,
        session: &Session,
        pauses: &Pauses,
        tracker: &TaskTracker,
    ) -> anyhow::Result<()> {
        for queue in self.queues.clone() {
            let running = self.consumers.iter().any(|c| c.queue == queue);
            if pauses.is_paused(&queue) && running {
                let (stopped, kept) = self.consumers.drain(..).partition(|c| c.queue == queue);
                self.consumers = kept;
                for consumer in stopped {
                    session.cancel(&consumer).await?;
                    tracker.spawn(requeue_buffered(consumer.consumer));
                }
                tracing::info!(queue, "queue paused: taking no new deliveries from it");
            } else if !pauses.is_paused(&queue) && !running {
                self.consumers.extend(session.consume_queue(&queue).await?);
                tracing::info!(queue, "consuming the queue");
            }
        }
        // Highest lane first; within a lane, in WORKER_QUEUES order (a stable sort).
        let mut ordered = self.consumers.clone();
        ordered.sort_by_key(|c| std::cmp::Reverse(c.lane));
        self.lanes = LaneConsumer::new(ordered.into_iter().map(|c| c.consumer).collect());
        Ok(())
    }

    /// The next delivery of the most preferred lane; never, while every
    /// queue is paused.
    async fn next(&mut self) -> Option<lapin::Result<Delivery>> {
        if self.consumers.is_empty() {
            return pending().await;
        }
        self.lanes.next().await
    }
}

/// Closes a broken session and waits out the backoff; `None` if `shutdown`
/// fires first.
async fn pause_before_reconnect(
    why: &str,
    ctx: &HandlerContext,
    backoff: &mut ExponentialBackoff,
    session: Session,
    shutdown: &CancellationToken,
) -> Option<()> {
    let delay = next_delay(backoff);
    tracing::warn!(
        reason = %why,
        in_flight = ctx.registry.len(),
        retry_in_ms = delay.as_millis() as u64,
        "lost the AMQP session; running tasks go on; reconnecting"
    );
    session.close().await;
    if sleep_or_shutdown(delay, shutdown).await {
        return None;
    }
    Some(())
}

/// Opens a session, retrying on `backoff` (reset once open); `None` if
/// `shutdown` fires first. Each attempt tries every node of `nodes` once;
/// after a session (the generation before was live) it starts with the node
/// after the one that session was on.
async fn connect(
    config: &SessionConfig,
    ctx: &HandlerContext,
    nodes: &mut NodeUrls,
    generation: &mut u64,
    backoff: &mut ExponentialBackoff,
    shutdown: &CancellationToken,
) -> Option<Session> {
    if *generation > 0 {
        nodes.advance();
    }
    for attempt in 1u64.. {
        if *generation > 0 {
            ctx.metrics.reconnects.inc();
        }
        *generation += 1;
        let this_generation = *generation;
        let opening = nodes.connect(|url| {
            let config = SessionConfig {
                url,
                ..config.clone()
            };
            async move { Session::open(&config, this_generation).await }
        });
        let opened = tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            opened = opening => opened,
        };
        let e = match opened {
            Ok(session) => {
                *backoff = reconnect_policy().build();
                tracing::info!(node = %broker_topology::redact_url(nodes.current()), "connected to rabbitmq");
                return Some(session);
            }
            Err(e) => e,
        };
        let delay = next_delay(backoff);
        tracing::warn!(
            error = format!("{e:#}"),
            attempt,
            retry_in_ms = delay.as_millis() as u64,
            "cannot consume from RabbitMQ; retrying"
        );
        if sleep_or_shutdown(delay, shutdown).await {
            return None;
        }
    }
    None
}

/// Cancels every task consumer and hands back what they buffered.
async fn stop_consuming(session: Session, active: Active, tracker: &TaskTracker) -> Session {
    tracing::info!("shutdown requested; cancelling the task consumers");
    for consumer in active.consumers {
        if let Err(e) = session.cancel(&consumer).await {
            tracing::warn!(error = format!("{e:#}"), "could not cancel a consumer");
        }
        tracker.spawn(requeue_buffered(consumer.consumer));
    }
    session
}

/// Hands back deliveries that reached a cancelled consumer's buffer but were
/// not taken yet, so other workers (or this one, after a resume) get them now
/// rather than when this one closes its channel.
async fn requeue_buffered(mut tasks: Consumer) {
    let requeue = async {
        let mut returned = 0u32;
        while let Some(Ok(delivery)) = tasks.next().await {
            let nack = delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await;
            if matches!(nack, Ok(true)) {
                returned += 1;
            }
        }
        returned
    };
    match tokio::time::timeout(Duration::from_secs(2), requeue).await {
        Ok(0) => {}
        Ok(returned) => tracing::info!(returned, "requeued deliveries not yet started"),
        Err(_) => tracing::debug!(
            "the cancelled consumer did not end; its deliveries return when the channel closes"
        ),
    }
}

fn next_delay(backoff: &mut impl Iterator<Item = Duration>) -> Duration {
    jittered(backoff.next().unwrap_or(Duration::from_secs(5)))
}

/// Sleeps `delay`; returns `true` if `shutdown` fired first.
async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = shutdown.cancelled() => true,
    }
}
