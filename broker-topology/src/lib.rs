//! The contract's RabbitMQ topology, declared idempotently by every api and
//! worker process at start (it is also in `rabbitmq/definitions.json`, and in
//! `rabbitmq/definitions.quorum.json` for `QUEUE_TYPE=quorum`).
//!
//! [`declare_topology`] and [`tasks_queue_arguments`] are v1's: the classic
//! `tasks.algo` only. [`Topology`] is v2's: named queues, classic or quorum.
//!
//! # Priority lanes (quorum)
//!
//! Classic task queues are priority queues (`x-max-priority: 10`): one
//! RabbitMQ queue `tasks.<q>` per named queue, the broker orders by priority.
//! RabbitMQ 3.10's quorum queues have no message priorities, so with
//! `QUEUE_TYPE=quorum` each named queue `q` is [`LANES`] quorum queues, one
//! per priority band:
//!
//! | lane | queue / routing key | task priorities |
//! |------|---------------------|-----------------|
//! | 2    | `tasks.<q>.p2`      | 6..=9           |
//! | 1    | `tasks.<q>.p1`      | 3..=5           |
//! | 0    | `tasks.<q>`         | 0..=2           |
//!
//! Queue names cannot contain a dot, so a lane never collides with another
//! named queue. The publisher routes by [`Topology::lane_for`]. A worker
//! consumes every lane of every queue it serves (prefetch 1 per consumer) and
//! takes its next task through [`LaneConsumer`], which always looks at the
//! highest lane first: a high-priority task waits for at most the lower-lane
//! deliveries already prefetched (one per lower lane), never for a backlog.
//! Within a band, tasks run in FIFO order. Each lane's consumer also carries
//! the consumer priority `x-priority` = its lane ([`LaneQueue::consume_arguments`]),
//! so a broker with several consumers on one lane feeds the ones that
//! declared the lane preferred (RabbitMQ supports consumer priorities on
//! quorum queues).
//!
//! Quorum task queues dead-letter `at-least-once` (`x-dead-letter-strategy`,
//! which needs `x-overflow: reject-publish`; RabbitMQ 3.10+), and `tasks.dead`
//! is a quorum queue too, so a dead letter survives losing a node.
//!
//! RabbitMQ refuses (PRECONDITION_FAILED) a redeclaration whose durability or
//! arguments differ, so there is exactly one place that builds them:
//! `x-max-priority` as a signed 32-bit int, the dead-letter names as long
//! strings — the types the management UI and `definitions.json` produce.

use std::{
    fmt,
    ops::RangeInclusive,
    pin::Pin,
    str::FromStr,
    task::{Context as TaskContext, Poll},
};

mod nodes;

pub use nodes::{redact_url, validate as validate_amqp_urls, NodeUrls};

use anyhow::{bail, Context};
use futures_util::Stream;
use lapin::{
    message::Delivery,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
    Channel, Consumer, ExchangeKind,
};
use task_model::topology::{
    CONTROL_EXCHANGE, DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, DEAD_LETTER_ROUTING_KEY,
    MAX_PRIORITY, TASKS_EXCHANGE,
};

/// The arguments of `tasks.algo`, exactly as the contract lists them.
pub fn tasks_queue_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-max-priority".into(),
        AMQPValue::LongInt(i32::from(MAX_PRIORITY)),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(DEAD_LETTER_EXCHANGE)),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(DEAD_LETTER_ROUTING_KEY)),
    );
    args
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares the shared topology on `channel`, idempotently: exchanges `tasks`
/// (direct), `tasks.dlx` (direct) and `tasks.control` (fanout), queues
/// `tasks.algo` and `tasks.dead`, and their bindings; everything durable.
///
/// # Errors
/// When the broker refuses a declaration (e.g. an existing queue with other
/// arguments), which also closes `channel`.
pub async fn declare_topology(channel: &Channel) -> anyhow::Result<()> {
    Topology::default().declare(channel, &["algo"]).await
}

/// How task queues are declared (`QUEUE_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// One classic priority queue per named queue (v1's, the default).
    #[default]
    Classic,
    /// Replicated quorum queues, one per priority lane (see the crate docs).
    Quorum,
}

impl QueueType {
    /// `QUEUE_TYPE` from the environment; unset or empty is classic.
    ///
    /// # Errors
    /// Any value but `classic` or `quorum`.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("QUEUE_TYPE") {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            _ => Ok(Self::Classic),
        }
    }
}

impl FromStr for QueueType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "classic" => Ok(Self::Classic),
            "quorum" => Ok(Self::Quorum),
            other => bail!("QUEUE_TYPE must be classic or quorum, not {other:?}"),
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        })
    }
}

/// Number of priority lanes per named queue with [`QueueType::Quorum`].
pub const LANES: u8 = 3;

/// Task priorities of quorum lane `lane` (0 = lowest).
fn lane_priorities(lane: u8) -> RangeInclusive<u8> {
    match lane {
        0 => 0..=2,
        1 => 3..=5,
        _ => 6..=9,
    }
}

/// The lane a task of `priority` goes to with [`QueueType::Quorum`].
pub fn lane_of(priority: u8) -> u8 {
    (0..LANES)
        .rev()
        .find(|&lane| priority >= *lane_priorities(lane).start())
        .unwrap_or(0)
}

/// Whether `name` is a valid v2 queue name: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn is_valid_queue_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// One RabbitMQ queue behind a named queue: the whole queue when classic, one
/// priority lane of it when quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneQueue {
    /// RabbitMQ queue name (`tasks.q`, `tasks.q.p1`, `tasks.q.p2`).
    pub name: String,
    /// Routing key binding it to exchange `tasks` (equal to `name`).
    pub routing_key: String,
    /// Lane index, 0 = lowest; always 0 when classic.
    pub lane: u8,
    /// Task priorities published to it.
    pub priorities: RangeInclusive<u8>,
    /// Consumer priority (`x-priority`) for its `basic.consume`: the lane.
    pub consumer_priority: i32,
}

impl LaneQueue {
    /// Arguments for `basic.consume` on this queue: `x-priority` (empty for a
    /// classic queue, where the broker orders by message priority).
    pub fn consume_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.consumer_priority != 0 {
            args.insert(
                "x-priority".into(),
                AMQPValue::LongInt(self.consumer_priority),
            );
        }
        args
    }
}

/// v2's topology: the shared exchanges and `tasks.dead`, plus the task queues
/// of each named queue, classic or quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Topology {
    /// How task queues are declared.
    pub queue_type: QueueType,
}

impl Topology {
    /// A topology of `queue_type`.
    pub fn new(queue_type: QueueType) -> Self {
        Self { queue_type }
    }

    /// The topology `QUEUE_TYPE` asks for.
    ///
    /// # Errors
    /// See [`QueueType::from_env`].
    pub fn from_env() -> anyhow::Result<Self> {
        QueueType::from_env().map(Self::new)
    }

    /// The RabbitMQ queues of named queue `queue`, highest lane first (the
    /// order a worker should prefer them in). Classic: just `tasks.<queue>`.
    pub fn task_queues(&self, queue: &str) -> Vec<LaneQueue> {
        match self.queue_type {
            QueueType::Classic => vec![LaneQueue {
                name: format!("tasks.{queue}"),
                routing_key: format!("tasks.{queue}"),
                lane: 0,
                priorities: 0..=9,
                consumer_priority: 0,
            }],
            QueueType::Quorum => (0..LANES)
                .rev()
                .map(|lane| {
                    let name = lane_queue_name(queue, lane);
                    LaneQueue {
                        routing_key: name.clone(),
                        name,
                        lane,
                        priorities: lane_priorities(lane),
                        consumer_priority: i32::from(lane),
                    }
                })
                .collect(),
        }
    }

    /// The routing key (on exchange `tasks`) a task of `priority` for named
    /// queue `queue` is published with.
    pub fn lane_for(&self, queue: &str, priority: u8) -> String {
        match self.queue_type {
            QueueType::Classic => format!("tasks.{queue}"),
            QueueType::Quorum => lane_queue_name(queue, lane_of(priority)),
        }
    }

    /// The declaration arguments of every task queue of this type. Classic:
    /// exactly [`tasks_queue_arguments`]. Quorum: `x-queue-type: quorum`,
    /// the dead-letter exchange and routing key, `x-dead-letter-strategy:
    /// at-least-once` and `x-overflow: reject-publish`.
    pub fn queue_arguments(&self) -> FieldTable {
        match self.queue_type {
            QueueType::Classic => tasks_queue_arguments(),
            QueueType::Quorum => {
                let mut args = FieldTable::default();
                for (key, value) in [
                    ("x-queue-type", "quorum"),
                    ("x-dead-letter-exchange", DEAD_LETTER_EXCHANGE),
                    ("x-dead-letter-routing-key", DEAD_LETTER_ROUTING_KEY),
                    ("x-dead-letter-strategy", "at-least-once"),
                    ("x-overflow", "reject-publish"),
                ] {
                    args.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
                }
                args
            }
        }
    }

    fn dead_queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from("quorum")),
            );
        }
        args
    }

    /// Declares, idempotently, the exchanges `tasks`, `tasks.dlx` and
    /// `tasks.control`, the queue `tasks.dead` and its binding, and every
    /// [`Self::task_queues`] of each of `queues` with its binding. With
    /// [`QueueType::Classic`] and `["algo"]` this is exactly
    /// [`declare_topology`].
    ///
    /// # Errors
    /// An invalid queue name, or the broker refusing a declaration (e.g. a
    /// classic `tasks.algo` already there when declaring quorum), which also
    /// closes `channel`.
    pub async fn declare(&self, channel: &Channel, queues: &[&str]) -> anyhow::Result<()> {
        if let Some(bad) = queues.iter().find(|q| !is_valid_queue_name(q)) {
            bail!("invalid queue name {bad:?}: must match [a-z0-9][a-z0-9_-]{{0,62}}");
        }
        declare_exchanges_and_dead(channel, self.dead_queue_arguments()).await?;
        for queue in queues {
            for lane in self.task_queues(queue) {
                declare_bound(
                    channel,
                    &lane.name,
                    &lane.routing_key,
                    self.queue_arguments(),
                )
                .await?;
            }
        }
        Ok(())
    }
}

fn lane_queue_name(queue: &str, lane: u8) -> String {
    if lane == 0 {
        format!("tasks.{queue}")
    } else {
        format!("tasks.{queue}.p{lane}")
    }
}

async fn declare_exchanges_and_dead(
    channel: &Channel,
    dead_args: FieldTable,
) -> anyhow::Result<()> {
    for (name, kind) in [
        (DEAD_LETTER_EXCHANGE, ExchangeKind::Direct),
        (TASKS_EXCHANGE, ExchangeKind::Direct),
        (CONTROL_EXCHANGE, ExchangeKind::Fanout),
    ] {
        channel
            .exchange_declare(name.into(), kind, durable_exchange(), FieldTable::default())
            .await
            .with_context(|| format!("declaring exchange {name}"))?;
    }
    channel
        .queue_declare(DEAD_LETTER_QUEUE.into(), durable_queue(), dead_args)
        .await
        .with_context(|| format!("declaring queue {DEAD_LETTER_QUEUE}"))?;
    channel
        .queue_bind(
            DEAD_LETTER_QUEUE.into(),
            DEAD_LETTER_EXCHANGE.into(),
            DEAD_LETTER_ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("binding {DEAD_LETTER_QUEUE} to {DEAD_LETTER_EXCHANGE}"))?;
    Ok(())
}

async fn declare_bound(
    channel: &Channel,
    queue: &str,
    routing_key: &str,
    args: FieldTable,
) -> anyhow::Result<()> {
    channel
        .queue_declare(queue.into(), durable_queue(), args)
        .await
        .with_context(|| format!("declaring queue {queue}"))?;
    channel
        .queue_bind(
            queue.into(),
            TASKS_EXCHANGE.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("binding {queue} to {TASKS_EXCHANGE}"))?;
    Ok(())
}

/// Consumers of several lanes, read with a preference for the first: each
/// [`LaneConsumer::next`] returns a delivery of the earliest consumer in the
/// list that has one ready, waiting on all of them otherwise. Build it from
/// consumers in [`Topology::task_queues`] order (highest lane first).
pub struct LaneConsumer {
    consumers: Vec<Consumer>,
}

impl LaneConsumer {
    /// Over `consumers`, most preferred first.
    pub fn new(consumers: Vec<Consumer>) -> Self {
        Self { consumers }
    }

    /// The next delivery, from the most preferred lane that has one; `None`
    /// once every consumer has ended.
    pub async fn next(&mut self) -> Option<lapin::Result<Delivery>> {
        std::future::poll_fn(|cx| self.poll_preferred(cx)).await
    }

    fn poll_preferred(
        &mut self,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<lapin::Result<Delivery>>> {
        let mut open = false;
        for consumer in &mut self.consumers {
            match Pin::new(consumer).poll_next(cx) {
                Poll::Ready(Some(item)) => return Poll::Ready(Some(item)),
                Poll::Ready(None) => {}
                Poll::Pending => open = true,
            }
        }
        if open {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }
}

impl fmt::Debug for LaneConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaneConsumer")
            .field("consumers", &self.consumers.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use task_model::topology::{TASKS_QUEUE, TASKS_ROUTING_KEY};

    #[test]
    fn tasks_queue_arguments_are_the_contracts() {
        let args = tasks_queue_arguments();
        let inner = args.inner();
        assert_eq!(inner.len(), 3);
        assert_eq!(inner.get("x-max-priority"), Some(&AMQPValue::LongInt(10)));
        assert_eq!(
            inner.get("x-dead-letter-exchange"),
            Some(&AMQPValue::LongString("tasks.dlx".into()))
        );
        assert_eq!(
            inner.get("x-dead-letter-routing-key"),
            Some(&AMQPValue::LongString("tasks.dead".into()))
        );
    }

    #[test]
    fn classic_topology_is_v1() {
        let t = Topology::default();
        assert_eq!(t.queue_type, QueueType::Classic);
        assert_eq!(t.queue_arguments(), tasks_queue_arguments());
        let lanes = t.task_queues("algo");
        assert_eq!(lanes.len(), 1);
        assert_eq!(lanes[0].name, TASKS_QUEUE);
        assert_eq!(lanes[0].routing_key, TASKS_ROUTING_KEY);
        assert!(lanes[0].consume_arguments().inner().is_empty());
        for p in 0..=9 {
            assert_eq!(t.lane_for("algo", p), "tasks.algo");
        }
    }

    #[test]
    fn quorum_lanes_cover_every_priority_once() {
        let t = Topology::new(QueueType::Quorum);
        let lanes = t.task_queues("gpu");
        let names: Vec<_> = lanes.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["tasks.gpu.p2", "tasks.gpu.p1", "tasks.gpu"]);
        for p in 0..=9u8 {
            let holders: Vec<_> = lanes.iter().filter(|l| l.priorities.contains(&p)).collect();
            assert_eq!(holders.len(), 1, "priority {p}");
            assert_eq!(t.lane_for("gpu", p), holders[0].routing_key);
        }
        assert_eq!(t.lane_for("gpu", 0), "tasks.gpu");
        assert_eq!(t.lane_for("gpu", 9), "tasks.gpu.p2");
        assert_eq!(
            lanes[0].consume_arguments().inner().get("x-priority"),
            Some(&AMQPValue::LongInt(2))
        );
        let args = t.queue_arguments();
        let inner = args.inner();
        assert_eq!(
            inner.get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            inner.get("x-dead-letter-strategy"),
            Some(&AMQPValue::LongString("at-least-once".into()))
        );
        assert_eq!(
            inner.get("x-overflow"),
            Some(&AMQPValue::LongString("reject-publish".into()))
        );
        assert!(!inner.contains_key("x-max-priority"));
    }

    #[test]
    fn queue_type_parses_and_names() {
        assert_eq!("quorum".parse::<QueueType>().unwrap(), QueueType::Quorum);
        assert_eq!("classic".parse::<QueueType>().unwrap(), QueueType::Classic);
        assert!("mirrored".parse::<QueueType>().is_err());
        assert_eq!(QueueType::Quorum.to_string(), "quorum");
    }

    #[test]
    fn queue_names() {
        assert!(is_valid_queue_name("algo"));
        assert!(is_valid_queue_name("gpu_2-x"));
        assert!(is_valid_queue_name(&"a".repeat(63)));
        assert!(!is_valid_queue_name(&"a".repeat(64)));
        assert!(!is_valid_queue_name(""));
        assert!(!is_valid_queue_name("-a"));
        assert!(!is_valid_queue_name("a.b"));
        assert!(!is_valid_queue_name("A"));
    }
}
