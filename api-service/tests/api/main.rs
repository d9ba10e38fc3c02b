//! Integration tests of the api against the real Redis and RabbitMQ.
//! Workers are played by the test through the real callback endpoints.
#![allow(unreachable_pub)]

mod algorithms;
mod amqp_nodes;
mod backlog;
mod batch;
mod blobs;
mod callbacks;
mod dashboard;
mod errors;
mod events;
mod faults;
mod helpers;
mod hostile;
mod http;
mod leases;
mod listing;
mod openapi;
mod queues;
mod readiness;
mod redis_cluster;
mod redis_limits;
mod schedules;
mod scheduling;
mod schemathesis;
mod state_machine;
mod tasks;
mod webhooks;
