//! RabbitMQ: connecting, the topology, and the consumers of a session.
//!
//! The topology itself is declared by the `broker-topology` crate, shared
//! with the api so both declare it identically (re-exported here): the
//! task queues of every queue in `WORKER_QUEUES`, classic or quorum
//! (`QUEUE_TYPE`).
//!
//! A [`Session`] is one connection with two channels. The tasks channel
//! carries one consumer per RabbitMQ task queue this worker takes from
//! (one per named queue when classic, one per priority lane when quorum),
//! started and cancelled one named queue at a time ([`Session::consume_queue`],
//! [`Session::cancel`]) as queues are paused and resumed; manual acks.
//! Its prefetch is `WORKER_CONCURRENCY`: for the channel as a whole with
//! classic queues (global QoS, so the broker never hands this worker more
//! than that many unacked tasks, whatever the number of queues), per
//! consumer with quorum queues (which refuse global QoS; the worker's own
//! bound on tasks in flight then holds the extra deliveries until a slot
//! frees, see `worker::consume`). The control channel consumes this
//! worker's exclusive queue `tasks.control.<WORKER_NAME>`, bound to the
//! `tasks.control` fanout (no acks: a cancel or a pause is only useful now).

use anyhow::Context;
pub use broker_topology::{declare_topology, tasks_queue_arguments};
use broker_topology::{QueueType, Topology};
use lapin::{
    options::{
        BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{FieldTable, ShortString},
    Channel, Connection, ConnectionProperties, Consumer,
};
use task_model::topology::CONTROL_EXCHANGE;

/// How a session is opened: the worker's settings that concern RabbitMQ.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The node to connect to: one URL of `AMQP_URL`'s list.
    pub url: String,
    /// `WORKER_NAME`.
    pub worker_name: String,
    /// `WORKER_CONCURRENCY`.
    pub prefetch: u16,
    /// `QUEUE_TYPE`.
    pub topology: Topology,
    /// `WORKER_QUEUES`.
    pub queues: Vec<String>,
}

/// One consumer of one RabbitMQ task queue (a named queue, or one lane of it).
#[derive(Debug, Clone)]
pub struct QueueConsumer {
    /// The named queue (`gpu`).
    pub queue: String,
    /// Its lane (0 when classic; higher is preferred).
    pub lane: u8,
    /// The consumer tag, for [`Session::cancel`].
    pub tag: ShortString,
    /// The deliveries.
    pub consumer: Consumer,
}

/// One AMQP connection and the worker's consumers on it.
#[derive(Debug)]
pub struct Session {
    /// The connection; closing it closes both channels.
    pub connection: Connection,
    /// The channel consuming the task queues; deliveries are acked on it.
    pub tasks_channel: Channel,
    /// The channel of the control queue.
    pub control_channel: Channel,
    /// The consumer of this worker's control queue (no ack).
    pub control: Consumer,
    /// The control queue's name (`tasks.control.<WORKER_NAME>`).
    pub control_queue: String,
    topology: Topology,
    tag_prefix: String,
}

impl Session {
    /// Connects, declares the topology, sets the prefetch and starts the
    /// control consumer; no task consumer yet ([`Session::consume_queue`]).
    ///
    /// # Errors
    /// When any step fails; the half-made connection is closed.
    pub async fn open(config: &SessionConfig, generation: u64) -> anyhow::Result<Self> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("algo-service {}", config.worker_name).into());
        let connection = Connection::connect(&config.url, props)
            .await
            .context("connecting to RabbitMQ")?;
        match Self::start(&connection, config, generation).await {
            Ok((tasks_channel, control_channel, control, control_queue)) => Ok(Self {
                connection,
                tasks_channel,
                control_channel,
                control,
                control_queue,
                topology: config.topology,
                tag_prefix: format!("{}-{generation}", config.worker_name),
            }),
            Err(e) => {
                let _ = connection.close(200, "setup failed".into()).await;
                Err(e)
            }
        }
    }

    async fn start(
        connection: &Connection,
        config: &SessionConfig,
        generation: u64,
    ) -> anyhow::Result<(Channel, Channel, Consumer, String)> {
        let tasks_channel = connection
            .create_channel()
            .await
            .context("opening the tasks channel")?;
        let queues: Vec<&str> = config.queues.iter().map(String::as_str).collect();
        config.topology.declare(&tasks_channel, &queues).await?;
        let qos = BasicQosOptions {
            global: config.topology.queue_type == QueueType::Classic,
        };
        tasks_channel
            .basic_qos(config.prefetch, qos)
            .await
            .context("setting the prefetch")?;
        let (control_channel, control, control_queue) =
            consume_control_queue(connection, &config.worker_name, generation).await?;
        Ok((tasks_channel, control_channel, control, control_queue))
    }

    /// Starts consuming named queue `queue`: one consumer per RabbitMQ queue
    /// of it, highest lane first, each with its consumer priority.
    ///
    /// # Errors
    /// When the broker refuses a consume (the channel is then closed).
    pub async fn consume_queue(&self, queue: &str) -> anyhow::Result<Vec<QueueConsumer>> {
        let mut consumers = Vec::new();
        for lane in self.topology.task_queues(queue) {
            let tag: ShortString = format!("{}-{}", self.tag_prefix, lane.name).into();
            let consumer = self
                .tasks_channel
                .basic_consume(
                    lane.name.as_str().into(),
                    tag.clone(),
                    BasicConsumeOptions::default(),
                    lane.consume_arguments(),
                )
                .await
                .with_context(|| format!("consuming {}", lane.name))?;
            consumers.push(QueueConsumer {
                queue: queue.to_owned(),
                lane: lane.lane,
                tag,
                consumer,
            });
        }
        Ok(consumers)
    }

    /// Cancels one task consumer so no new deliveries arrive on it; unacked
    /// ones stay with this worker until acked, nacked, or the channel closes.
    ///
    /// # Errors
    /// When the channel is already gone.
    pub async fn cancel(&self, consumer: &QueueConsumer) -> anyhow::Result<()> {
        self.tasks_channel
            .basic_cancel(consumer.tag.clone(), BasicCancelOptions::default())
            .await
            .with_context(|| format!("cancelling the consumer {}", consumer.tag))
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

/// This worker's exclusive queue `tasks.control.<worker_name>` bound to the
/// `tasks.control` fanout, and its consumer. When that name is taken (the
/// broker has not yet dropped this worker's previous connection, or another
/// worker runs under the same name), a suffixed name is used instead, with
/// a warning, rather than not consuming at all.
async fn consume_control_queue(
    connection: &Connection,
    worker_name: &str,
    generation: u64,
) -> anyhow::Result<(Channel, Consumer, String)> {
    let name = format!("{CONTROL_EXCHANGE}.{worker_name}");
    match bind_control_queue(connection, &name, worker_name, generation).await {
        Ok((channel, consumer)) => Ok((channel, consumer, name)),
        Err(e) => {
            let fallback = format!("{name}.{}-{generation}", std::process::id());
            tracing::warn!(
                error = format!("{e:#}"),
                queue = %name,
                instead = %fallback,
                "the control queue's name is taken (a previous connection not yet gone, or two workers named alike); using another"
            );
            let (channel, consumer) =
                bind_control_queue(connection, &fallback, worker_name, generation).await?;
            Ok((channel, consumer, fallback))
        }
    }
}

async fn bind_control_queue(
    connection: &Connection,
    queue: &str,
    worker_name: &str,
    generation: u64,
) -> anyhow::Result<(Channel, Consumer)> {
    let channel = connection
        .create_channel()
        .await
        .context("opening the control channel")?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), exclusive, FieldTable::default())
        .await
        .with_context(|| format!("declaring this worker's control queue {queue}"))?;
    channel
        .queue_bind(
            queue.into(),
            CONTROL_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("binding {queue} to {CONTROL_EXCHANGE}"))?;
    let consumer = channel
        .basic_consume(
            queue.into(),
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
    Ok((channel, consumer))
}
