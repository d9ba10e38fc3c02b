//! End to end: the real api (in-process), real `algo-service` processes,
//! real Redis and RabbitMQ, through [`test_support::Stack`]. Each test has
//! its own vhost and key prefix.
#![allow(unreachable_pub)]

mod algorithms;
mod failures;
mod integrity;
mod isolation;
mod lifecycle;
mod queues;
mod retries;
