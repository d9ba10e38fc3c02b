//! The machine's own ceilings, measured with the brokers' clients alone, in
//! the same run as the scenarios, so every Taskforge figure can be read as a
//! fraction of what the infrastructure underneath allows.
//!
//! - RabbitMQ: persistent messages (the size of a real task message) published
//!   to the contract's durable priority queue through the contract's exchange,
//!   mandatory, with publisher confirms, pipelined on one channel with a
//!   window of outstanding confirms (64 = what the api has in flight at 64
//!   clients; 1024 = the broker's ceiling); then the same messages consumed
//!   with manual acks by two consumers (prefetch 64, like two workers); then
//!   sequential round trips: publish → confirm, and publish → delivery.
//! - Redis: the commands the api issues per create (a pipeline of ZADD to
//!   the outbox, ZADD to the QUEUED set and EVALSHA of the very
//!   `transition.lua` the api runs, `create`; then a MULTI/EXEC of ZADD to
//!   the index and ZREM from the outbox), from 64 connections at once (the
//!   api's pool), then each task's claim and finish transitions (what a
//!   drain asks of Redis per one-stage task; the finish carries the stage's
//!   progress); then sequential round trips of a create and of one transition.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use futures_util::{stream::FuturesUnordered, StreamExt};
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueuePurgeOptions,
    },
    types::{FieldTable, ShortString},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
};
use task_model::{topology, TaskId, TaskMessage};

use crate::{
    infra::{CpuProbe, Sandbox},
    stats,
};

/// The api's transition script, byte for byte.
const TRANSITION_LUA: &str = include_str!("../../api-service/src/store/transition.lua");

/// How much work one limit run does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitPlan {
    pub(crate) publishes: usize,
    pub(crate) redis_tasks: usize,
    pub(crate) round_trips: usize,
}

/// One limit run's figures (rates per second, latencies in ms).
#[derive(Debug, Clone, Default)]
pub(crate) struct Limits {
    pub(crate) publish_w64: f64,
    pub(crate) publish_w1024: f64,
    pub(crate) consume_ack: f64,
    pub(crate) confirm_rtt_ms: f64,
    pub(crate) deliver_ms: f64,
    pub(crate) redis_create: f64,
    pub(crate) redis_lifecycle: f64,
    pub(crate) redis_create_rtt_ms: f64,
    pub(crate) redis_transition_rtt_ms: f64,
    pub(crate) message_bytes: usize,
    /// RabbitMQ's CPU per message while publishing with window 64 (µs).
    pub(crate) rabbitmq_us_per_publish: f64,
    /// Redis's CPU per create while creating from 64 connections (µs).
    pub(crate) redis_us_per_create: f64,
}

/// A task message of a one-stage 0 ms task, as the api publishes it.
fn task_message() -> Vec<u8> {
    serde_json::to_vec(&TaskMessage {
        task_id: TaskId::new(),
        priority: 0,
    })
    .expect("a task message serializes")
}

pub(crate) async fn run(sb: &Sandbox, redis_url: &str, plan: LimitPlan) -> anyhow::Result<Limits> {
    let mut l = Limits {
        message_bytes: task_message().len(),
        ..Limits::default()
    };
    let conn = connect(&sb.amqp_url).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    broker_topology::declare_topology(&channel).await?;

    let probe = CpuProbe::shared();
    let before = probe.read();
    l.publish_w64 = publish(&channel, plan.publishes, 64).await?;
    l.rabbitmq_us_per_publish = group_us(&probe, &before, "rabbitmq", plan.publishes);
    l.consume_ack = consume(&sb.amqp_url, plan.publishes, 2, 64).await?;
    l.publish_w1024 = publish(&channel, plan.publishes, 1024).await?;
    channel
        .queue_purge(topology::TASKS_QUEUE.into(), QueuePurgeOptions::default())
        .await?;
    (l.confirm_rtt_ms, l.deliver_ms) =
        round_trips(&sb.amqp_url, &channel, plan.round_trips).await?;
    let _ = conn.close(200, "done".into()).await;

    let redis = RedisLimit::new(redis_url, &sb.prefix)?;
    let ids: Vec<TaskId> = (0..plan.redis_tasks).map(|_| TaskId::new()).collect();
    let before = probe.read();
    l.redis_create = redis.create_rate(&ids, 64).await?;
    l.redis_us_per_create = group_us(&probe, &before, "redis", ids.len());
    l.redis_lifecycle = redis.lifecycle_rate(&ids, 64).await?;
    (l.redis_create_rtt_ms, l.redis_transition_rtt_ms) =
        redis.round_trips(plan.round_trips).await?;
    Ok(l)
}

/// CPU µs per operation a process group spent since `before`.
fn group_us(probe: &CpuProbe, before: &[(String, f64)], group: &str, ops: usize) -> f64 {
    crate::infra::cpu_delta(before, &probe.read())
        .into_iter()
        .find(|(g, _)| g == group)
        .map_or(f64::NAN, |(_, secs)| secs * 1e6 / ops as f64)
}

/// Drops every message of the contract's task queue in the vhost of `url`.
pub(crate) async fn purge_tasks_queue(url: &str) -> anyhow::Result<u32> {
    let conn = connect(url).await?;
    let channel = conn.create_channel().await?;
    let purged = channel
        .queue_purge(
            task_model::topology::TASKS_QUEUE.into(),
            lapin::options::QueuePurgeOptions::default(),
        )
        .await
        .context("purging the task queue")?;
    conn.close(200, "purged".into()).await?;
    Ok(purged)
}

async fn connect(url: &str) -> anyhow::Result<Connection> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .context("connecting to rabbitmq")
}

async fn publish_one(channel: &Channel, body: &[u8]) -> anyhow::Result<lapin::PublisherConfirm> {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_priority(0)
        .with_message_id(ShortString::from(TaskId::new().to_string()))
        .with_content_type("application/json".into());
    Ok(channel
        .basic_publish(
            topology::TASKS_EXCHANGE.into(),
            topology::TASKS_ROUTING_KEY.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            properties,
        )
        .await?)
}

fn check_confirm(c: Result<Confirmation, lapin::Error>) -> anyhow::Result<()> {
    match c? {
        Confirmation::Ack(None) => Ok(()),
        other => bail!("the broker did not confirm a publish: {other:?}"),
    }
}

/// Publishes `n` messages keeping up to `window` confirms outstanding; msgs/s.
async fn publish(channel: &Channel, n: usize, window: usize) -> anyhow::Result<f64> {
    let body = task_message();
    let started = Instant::now();
    let mut outstanding = FuturesUnordered::new();
    for _ in 0..n {
        while outstanding.len() >= window {
            check_confirm(outstanding.next().await.expect("not empty"))?;
        }
        outstanding.push(publish_one(channel, &body).await?);
    }
    while let Some(c) = outstanding.next().await {
        check_confirm(c)?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Consumes `n` messages from `tasks.algo` with `consumers` consumers (a
/// connection each, prefetch `prefetch`, one ack per message); msgs/s.
async fn consume(url: &str, n: usize, consumers: usize, prefetch: u16) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    let mut channels = Vec::new();
    for _ in 0..consumers {
        let conn = connect(url).await?;
        let channel = conn.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        channels.push(channel);
        conns.push(conn);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, channel) in channels.iter().enumerate() {
        let mut consumer = channel
            .basic_consume(
                topology::TASKS_QUEUE.into(),
                format!("bench-{i}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < n {
                let next = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
                let Ok(Some(delivery)) = next else { continue };
                delivery?.ack(BasicAckOptions::default()).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for t in tasks {
        tokio::time::timeout_at(deadline.into(), t)
            .await
            .context("consuming the published messages took over 120 s")???;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    for c in conns {
        let _ = c.close(200, "done".into()).await;
    }
    Ok(rate)
}

/// Sequential publishes: p50 of publish → confirm and of publish → delivery, ms.
async fn round_trips(url: &str, channel: &Channel, n: usize) -> anyhow::Result<(f64, f64)> {
    let conn = connect(url).await?;
    let rx_channel = conn.create_channel().await?;
    rx_channel.basic_qos(64, BasicQosOptions::default()).await?;
    let mut consumer = rx_channel
        .basic_consume(
            topology::TASKS_QUEUE.into(),
            "bench-rtt".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let body = task_message();
    let mut confirms = Vec::with_capacity(n);
    let mut deliveries = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let confirm = publish_one(channel, &body).await?;
        let delivered = async {
            let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
                .await
                .context("no delivery within 10 s")?
                .context("the consumer ended")??;
            let at = started.elapsed();
            d.ack(BasicAckOptions::default()).await?;
            anyhow::Ok(at)
        };
        let confirmed = async {
            check_confirm(confirm.await)?;
            anyhow::Ok(started.elapsed())
        };
        let (c, d) = tokio::try_join!(confirmed, delivered)?;
        confirms.push(c.as_secs_f64() * 1e3);
        deliveries.push(d.as_secs_f64() * 1e3);
    }
    let _ = conn.close(200, "done".into()).await;
    Ok((
        stats::percentile(&confirms, 50.0),
        stats::percentile(&deliveries, 50.0),
    ))
}

/// The api's Redis calls, without the api.
struct RedisLimit {
    client: redis::Client,
    prefix: String,
    script: redis::Script,
}

impl RedisLimit {
    fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            prefix: prefix.to_owned(),
            script: redis::Script::new(TRANSITION_LUA),
        })
    }

    fn invocation(&self, id: &TaskId, op: &str) -> redis::ScriptInvocation<'_> {
        let mut call = self.script.key(format!("{}task:{{{id}}}", self.prefix));
        call.key(format!("{}events:{{{id}}}", self.prefix))
            .arg(op)
            .arg(format!("{}events", self.prefix))
            .arg(id.to_string());
        call
    }

    /// What the api's `Store::create` and the create handler send: one
    /// pipeline of ZADD to the outbox of unpublished tasks, ZADD to the
    /// QUEUED set and the `create` transition; then (once the message is
    /// confirmed) one MULTI/EXEC of ZADD to the index and ZREM from the
    /// outbox. Two round trips.
    async fn create(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        id: &TaskId,
    ) -> anyhow::Result<()> {
        // The api's sharded cross-task sets (api-service's store::shards):
        // shard = the high half of the id's bits mod 8, each its own hash tag.
        let shard = (id.as_uuid().as_u128() >> 64) % 8;
        let outbox = format!("{}tasks:unpublished:{{outbox-{shard}}}", self.prefix);
        let queued = format!("{}tasks:queued:algo:{{queued-{shard}}}", self.prefix);
        let now = chrono::Utc::now().timestamp_millis();
        let member = id.to_string();
        let mut call = self.invocation(id, "create");
        // The status it is stored in, then its fields.
        call.arg("QUEUED");
        for (k, v) in [
            ("algorithm", "hello"),
            ("stages", "1"),
            ("stage_ms", "0"),
            ("timeout_secs", "50"),
            ("priority", "0"),
            ("input", "null"),
        ] {
            call.arg(k).arg(v);
        }
        let mut pipe = redis::pipe();
        pipe.zadd(&outbox, &member, now)
            .ignore()
            .zadd(&queued, &member, now)
            .ignore()
            .invoke_script(&call);
        let (out,): (Vec<String>,) = match pipe.query_async(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let _: String = call.load_async(conn).await?;
                pipe.query_async(conn).await?
            }
            answer => answer?,
        };
        if out.first().map(String::as_str) != Some("ok") {
            bail!("create transition answered {out:?}");
        }
        let now_ms: i64 = out.get(9).and_then(|s| s.parse().ok()).unwrap_or(0);
        let _: (i64, i64) = redis::pipe()
            .atomic()
            .zadd(
                format!("{}tasks:index:{{index-{shard}}}", self.prefix),
                format!("{now_ms:015}:{id}"),
                0,
            )
            .zrem(&outbox, &member)
            .query_async(conn)
            .await?;
        Ok(())
    }

    async fn transition(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        id: &TaskId,
        op: &str,
        args: &[&str],
    ) -> anyhow::Result<()> {
        let mut call = self.invocation(id, op);
        for a in args {
            call.arg(*a);
        }
        let out: Vec<String> = call.invoke_async(conn).await?;
        if out.first().map(String::as_str) != Some("ok") {
            bail!("{op} transition answered {out:?}");
        }
        Ok(())
    }

    /// claim, then finish carrying the one stage's progress: one task's life
    /// on a worker, as Redis sees it.
    async fn lifecycle(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        id: &TaskId,
    ) -> anyhow::Result<()> {
        self.transition(conn, id, "claim", &["bench", "10000"])
            .await?;
        let result = r#"{"stages":1,"output":"hello world"}"#;
        self.transition(
            conn,
            id,
            "finish",
            &["bench", "COMPLETED", "600", result, "", "1"],
        )
        .await
    }

    /// Creates `ids` from `conns` connections at once; creates/s.
    async fn create_rate(&self, ids: &[TaskId], conns: usize) -> anyhow::Result<f64> {
        self.rate(ids, conns, false).await
    }

    /// Runs the lifecycle of every (created) task in `ids` from `conns`
    /// connections at once; tasks/s.
    async fn lifecycle_rate(&self, ids: &[TaskId], conns: usize) -> anyhow::Result<f64> {
        self.rate(ids, conns, true).await
    }

    async fn rate(&self, ids: &[TaskId], conns: usize, lifecycle: bool) -> anyhow::Result<f64> {
        let mut pool = Vec::with_capacity(conns);
        for _ in 0..conns {
            pool.push(self.client.get_multiplexed_async_connection().await?);
        }
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        let workers = pool.into_iter().map(|mut conn| {
            let next = &next;
            async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(i) else {
                        return anyhow::Ok(());
                    };
                    if lifecycle {
                        self.lifecycle(&mut conn, id).await?;
                    } else {
                        self.create(&mut conn, id).await?;
                    }
                }
            }
        });
        futures_util::future::try_join_all(workers).await?;
        Ok(ids.len() as f64 / started.elapsed().as_secs_f64())
    }

    /// Sequential round trips on one connection: p50 of a create (both
    /// commands) and of one transition (a claim), ms.
    async fn round_trips(&self, n: usize) -> anyhow::Result<(f64, f64)> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        let mut creates = Vec::with_capacity(n);
        let mut claims = Vec::with_capacity(n);
        for _ in 0..n {
            let id = TaskId::new();
            let t = Instant::now();
            self.create(&mut conn, &id).await?;
            creates.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            self.transition(&mut conn, &id, "claim", &["bench", "10000"])
                .await?;
            claims.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok((
            stats::percentile(&creates, 50.0),
            stats::percentile(&claims, 50.0),
        ))
    }
}
