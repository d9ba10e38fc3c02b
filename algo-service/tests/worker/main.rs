//! Integration tests of the worker, running in-process, against the real
//! RabbitMQ.
//!
//! Each test gets a vhost of its own ([`test_support::TestEnv`]), so the contract's exact names are used and tests
//! run in parallel. These tests need no api: they cover what the worker does
//! before (or without) a callback. End-to-end tests with the real api live
//! beside them.

mod broker;
mod helpers;
