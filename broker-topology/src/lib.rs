//! The contract's RabbitMQ topology, declared idempotently by every api and
//! worker process at start (it is also in `rabbitmq/definitions.json`).
//!
//! RabbitMQ refuses (PRECONDITION_FAILED) a redeclaration whose durability or
//! arguments differ, so there is exactly one place that builds them:
//! `x-max-priority` as a signed 32-bit int, the dead-letter names as long
//! strings — the types the management UI and `definitions.json` produce.

use anyhow::Context;
use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
    Channel, ExchangeKind,
};
use task_model::topology::{
    CONTROL_EXCHANGE, DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, DEAD_LETTER_ROUTING_KEY,
    MAX_PRIORITY, TASKS_EXCHANGE, TASKS_QUEUE, TASKS_ROUTING_KEY,
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
        .queue_declare(
            DEAD_LETTER_QUEUE.into(),
            durable_queue(),
            FieldTable::default(),
        )
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
    channel
        .queue_declare(TASKS_QUEUE.into(), durable_queue(), tasks_queue_arguments())
        .await
        .with_context(|| format!("declaring queue {TASKS_QUEUE}"))?;
    channel
        .queue_bind(
            TASKS_QUEUE.into(),
            TASKS_EXCHANGE.into(),
            TASKS_ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("binding {TASKS_QUEUE} to {TASKS_EXCHANGE}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
