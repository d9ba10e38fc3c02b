//! This suite's names for the shared harness: [`test_support::Stack`] is the
//! api in-process on a random port, with its own RabbitMQ vhost and Redis
//! prefix; the tests play the workers through its callback calls.

pub use test_support::{Stack as TestApp, TOKEN};

pub async fn spawn_app() -> TestApp {
    TestApp::start(&[]).await
}

/// The api with extra flags, e.g. `["--api-keys", "k1"]`.
pub async fn spawn_app_with(flags: &[&str]) -> TestApp {
    TestApp::start(flags).await
}
