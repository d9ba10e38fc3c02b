//! End-to-end tests of the real `taskctl` binary against the real api (in
//! process, on real Redis and RabbitMQ, isolated per test); the test plays
//! the worker through the callback endpoints.
#![allow(unreachable_pub)]

mod bulk;
mod commands;
mod errors;
mod files;
mod hardening;
mod helpers;
mod queues;
mod reconnect;
mod submit;
mod watch;
