//! The consume loop: one AMQP [`Session`] after another, each delivery handed
//! to [`handler::process_one`] on the worker's task tracker, reconnecting with
//! backoff whenever the session breaks, until shutdown.

use std::{sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBackoff};
use broker_topology::NodeUrls;
use futures_util::StreamExt;
use lapin::{options::BasicNackOptions, Consumer};
use task_model::topology::TASKS_QUEUE;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{control::consume_control, reconnect_policy};
use crate::{
    backoff::jittered, broker::Session, config::Settings, context::HandlerContext, handler,
};

/// Why a session stopped consuming.
enum SessionEnd {
    Shutdown,
    Broken(String),
}

/// Consumes until `shutdown` fires, reconnecting as needed. Returns the live
/// session (its consumer cancelled) so cancels keep arriving during the drain.
pub(super) async fn consume(
    settings: &Settings,
    ctx: &Arc<HandlerContext>,
    tracker: &TaskTracker,
    consuming: &watch::Sender<bool>,
    shutdown: &CancellationToken,
) -> Option<Session> {
    let mut generation: u64 = 0;
    let mut backoff = reconnect_policy().build();
    let mut nodes = NodeUrls::new(&settings.amqp_url);
    loop {
        let session = connect(
            settings,
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
            control_ended.clone(),
        ));
        consuming.send_replace(true);
        tracing::info!(
            generation,
            queue = TASKS_QUEUE,
            in_flight = ctx.registry.len(),
            "consuming tasks.algo"
        );
        let end = deliveries(
            session.tasks.clone(),
            ctx,
            tracker,
            &control_ended,
            shutdown,
        )
        .await;
        consuming.send_replace(false);
        match end {
            SessionEnd::Shutdown => return Some(stop_consuming(session, tracker).await),
            SessionEnd::Broken(why) => {
                control.abort();
                pause_before_reconnect(&why, ctx, &mut backoff, session, shutdown).await?;
            }
        }
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
    settings: &Settings,
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
        let opening = nodes.connect(|url| async move {
            Session::open(
                &url,
                &settings.worker_name,
                settings.worker_concurrency,
                this_generation,
            )
            .await
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

/// Spawns a handler for each delivery until shutdown or a broken session.
async fn deliveries(
    mut tasks: Consumer,
    ctx: &Arc<HandlerContext>,
    tracker: &TaskTracker,
    control_ended: &CancellationToken,
    shutdown: &CancellationToken,
) -> SessionEnd {
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => return SessionEnd::Shutdown,
            () = control_ended.cancelled() => {
                return SessionEnd::Broken("the control consumer ended".to_owned());
            }
            next = tasks.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                tracker.spawn(handler::process_one(Arc::clone(ctx), delivery));
            }
            Some(Err(e)) => return SessionEnd::Broken(e.to_string()),
            None => return SessionEnd::Broken("the broker cancelled the consumer".to_owned()),
        }
    }
}

/// Cancels the `tasks.algo` consumer and hands back what it buffered.
async fn stop_consuming(session: Session, tracker: &TaskTracker) -> Session {
    tracing::info!("shutdown requested; cancelling the tasks.algo consumer");
    if let Err(e) = session.cancel_tasks_consumer().await {
        tracing::warn!(error = format!("{e:#}"), "could not cancel the consumer");
    }
    tracker.spawn(requeue_buffered(session.tasks.clone()));
    session
}

/// Hands back deliveries that reached the consumer's buffer but were not
/// taken yet, so other workers get them now rather than when this one closes
/// its channel at the end of the drain.
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
