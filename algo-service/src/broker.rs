//! RabbitMQ: connecting, the topology, and the two consumers of a session.
//!
//! The topology itself is declared by the `broker-topology` crate, shared
//! with the api so both declare it identically (re-exported here).
//!
//! A [`Session`] is one connection with two channels: one consuming
//! `tasks.algo` with manual acks and `prefetch = WORKER_CONCURRENCY`, one
//! consuming this worker's exclusive, server-named queue bound to the
//! `tasks.control` fanout (no acks: a cancel is only useful now).

use anyhow::Context;
pub use broker_topology::{declare_topology, tasks_queue_arguments};
use lapin::{
    options::{
        BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{FieldTable, ShortString},
    Channel, Connection, ConnectionProperties, Consumer,
};
use task_model::topology::{CONTROL_EXCHANGE, TASKS_QUEUE};

/// One AMQP connection and the worker's two consumers on it.
#[derive(Debug)]
pub struct Session {
    /// The connection; closing it closes both channels.
    pub connection: Connection,
    /// The channel consuming `tasks.algo`; deliveries are acked on it.
    pub tasks_channel: Channel,
    /// The `tasks.algo` consumer (manual ack).
    pub tasks: Consumer,
    /// The consumer tag of [`Session::tasks`], for `basic_cancel`.
    pub tasks_tag: ShortString,
    /// The channel of the control queue.
    pub control_channel: Channel,
    /// The consumer of this worker's control queue (no ack).
    pub control: Consumer,
}

impl Session {
    /// Connects to `url`, declares the topology, and starts both consumers.
    ///
    /// # Errors
    /// When any step fails; the half-made connection is closed.
    pub async fn open(
        url: &str,
        worker_name: &str,
        prefetch: u16,
        generation: u64,
    ) -> anyhow::Result<Self> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("algo-service {worker_name}").into());
        let connection = Connection::connect(url, props)
            .await
            .context("connecting to RabbitMQ")?;
        match Self::start(&connection, worker_name, prefetch, generation).await {
            Ok((tasks_channel, tasks, tasks_tag, control_channel, control)) => Ok(Self {
                connection,
                tasks_channel,
                tasks,
                tasks_tag,
                control_channel,
                control,
            }),
            Err(e) => {
                let _ = connection.close(200, "setup failed".into()).await;
                Err(e)
            }
        }
    }

    async fn start(
        connection: &Connection,
        worker_name: &str,
        prefetch: u16,
        generation: u64,
    ) -> anyhow::Result<(Channel, Consumer, ShortString, Channel, Consumer)> {
        let tasks_channel = connection
            .create_channel()
            .await
            .context("opening the tasks channel")?;
        declare_topology(&tasks_channel).await?;

        let (control_channel, control) =
            consume_control_queue(connection, worker_name, generation).await?;

        tasks_channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .context("setting the prefetch")?;
        let tasks_tag: ShortString = format!("{worker_name}-tasks-{generation}").into();
        let tasks = tasks_channel
            .basic_consume(
                TASKS_QUEUE.into(),
                tasks_tag.clone(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consuming {TASKS_QUEUE}"))?;

        Ok((tasks_channel, tasks, tasks_tag, control_channel, control))
    }

    /// Stops the `tasks.algo` consumer so no new deliveries arrive; unacked
    /// ones stay with this worker until acked, nacked, or the channel closes.
    ///
    /// # Errors
    /// When the channel is already gone.
    pub async fn cancel_tasks_consumer(&self) -> anyhow::Result<()> {
        self.tasks_channel
            .basic_cancel(self.tasks_tag.clone(), BasicCancelOptions::default())
            .await
            .context("cancelling the tasks.algo consumer")
    }

    /// Closes both channels and the connection, ignoring ones already gone.
    pub async fn close(&self) {
        if self.connection.status().connected() {
            let _ = self.control_channel.close(200, "bye".into()).await;
            let _ = self.tasks_channel.close(200, "bye".into()).await;
            if let Err(e) = self.connection.close(200, "bye".into()).await {
                tracing::debug!(error = %e, "closing the AMQP connection");
            }
        }
    }
}

/// This worker's exclusive, server-named queue bound to the `tasks.control`
/// fanout, and its consumer (no acks: a cancel is only useful now).
async fn consume_control_queue(
    connection: &Connection,
    worker_name: &str,
    generation: u64,
) -> anyhow::Result<(Channel, Consumer)> {
    let control_channel = connection
        .create_channel()
        .await
        .context("opening the control channel")?;
    let control_queue = control_channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("declaring this worker's control queue")?;
    control_channel
        .queue_bind(
            control_queue.name().clone(),
            CONTROL_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("binding the control queue to {CONTROL_EXCHANGE}"))?;
    let control = control_channel
        .basic_consume(
            control_queue.name().clone(),
            format!("{worker_name}-control-{generation}").into(),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("consuming the control queue")?;
    Ok((control_channel, control))
}
