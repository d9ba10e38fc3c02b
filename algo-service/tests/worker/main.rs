//! Integration tests of the worker against the real RabbitMQ on 127.0.0.1:5672.
//!
//! Each test gets a vhost of its own (created and deleted through the
//! management API on 15672), so the contract's exact names are used and tests
//! run in parallel. These tests need no api: they cover what the worker does
//! before (or without) a callback. End-to-end tests with the real api live
//! beside them.

mod broker;
mod helpers;
