//! Faults: RabbitMQ restarted, Redis frozen, the api restarted, workers
//! stopped (SIGTERM) and killed, poison and duplicate messages, and a broker
//! that closes channels under running tasks. The shared Redis and RabbitMQ
//! are never touched: tests that restart or freeze a server start a private
//! one ([`test_support::servers`]).
//!
//! Every test runs on [`test_support::Stack`] and asserts that no task is lost, none ends twice, and none runs
//! a stage in parallel or again (counting the C routine's `hello world` lines).
#![allow(unreachable_pub)]

mod alarm;
mod api;
mod broker;
mod frozen;
mod messages;
mod nodes;
mod redis_down;
mod shutdown;
