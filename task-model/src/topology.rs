//! Names of the RabbitMQ topology, as in the contract and `rabbitmq/definitions.json`.
//!
//! Tests isolate themselves with a RabbitMQ vhost of their own, so these names
//! never change.

/// Direct, durable exchange tasks are published to.
pub const TASKS_EXCHANGE: &str = "tasks";
/// Durable, priority (max 10) work queue the workers consume.
pub const TASKS_QUEUE: &str = "tasks.algo";
/// Routing key binding [`TASKS_QUEUE`] to [`TASKS_EXCHANGE`].
pub const TASKS_ROUTING_KEY: &str = "tasks.algo";
/// Direct, durable dead-letter exchange.
pub const DEAD_LETTER_EXCHANGE: &str = "tasks.dlx";
/// Durable queue of messages the worker rejected.
pub const DEAD_LETTER_QUEUE: &str = "tasks.dead";
/// Routing key binding [`DEAD_LETTER_QUEUE`] to [`DEAD_LETTER_EXCHANGE`].
pub const DEAD_LETTER_ROUTING_KEY: &str = "tasks.dead";
/// Fanout exchange for cancel broadcasts; each worker binds an exclusive queue.
pub const CONTROL_EXCHANGE: &str = "tasks.control";
/// `x-max-priority` of [`TASKS_QUEUE`].
pub const MAX_PRIORITY: u8 = 10;
