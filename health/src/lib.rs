//! A reusable background health checker.
//!
//! [`HealthChecker`] holds named checks. [`HealthChecker::run`] runs all of
//! them concurrently once per period until its [`CancellationToken`] fires;
//! each check is bounded by the checker's timeout and runs in a task of its
//! own, so a check that panics or hangs is reported as that check's error and
//! the others go on. Checks may be added while it runs. Readers
//! ([`HealthChecker::report`]) see the last completed round of each check;
//! a check that has not completed a round yet reads as failed with the error
//! [`PENDING`], so a fresh process is not ready before it has looked. A check
//! may also report details of its own ([`HealthChecker::add_check_with_details`]),
//! which the report shows beside `ok`, `latency_ms` and `error`.
//!
//! The api uses it for `/readyz` (Redis, RabbitMQ); the worker may use it for
//! its own `/healthz`.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// What a check may say beside pass or fail (for example Redis's
/// `persistence`); shown flattened beside the result's fields.
pub type Details = BTreeMap<String, serde_json::Value>;

/// What a check returns: `Ok` (with its details) when healthy, otherwise why not.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<Details, String>> + Send>>;

/// The error of a check that has not completed its first round yet.
pub const PENDING: &str = "pending";

/// A named probe; called once per round.
pub type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The last result of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// Whether the check passed.
    pub ok: bool,
    /// How long it took (the timeout, if it timed out).
    pub latency_ms: f64,
    /// Why it failed: its error, `timed out after …`, `panicked: …`, or
    /// [`PENDING`] before its first round has ended.
    pub error: Option<String>,
    /// What a passing check reported beside its result (none when it failed).
    #[serde(flatten)]
    pub details: Details,
}

impl CheckResult {
    /// The result of a check whose first round has not ended.
    pub fn pending() -> Self {
        Self {
            ok: false,
            latency_ms: 0.0,
            error: Some(PENDING.to_owned()),
            details: Details::new(),
        }
    }
}

#[derive(Default)]
struct Inner {
    checks: RwLock<BTreeMap<String, CheckFn>>,
    results: RwLock<BTreeMap<String, CheckResult>>,
}

/// Runs named checks on a period; cheap to clone (all clones share state).
#[derive(Clone)]
pub struct HealthChecker {
    inner: Arc<Inner>,
    period: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker")
            .field("period", &self.period)
            .field("timeout", &self.timeout)
            .field("results", &self.report())
            .finish()
    }
}

impl HealthChecker {
    /// A checker with no checks yet.
    pub fn new(period: Duration, timeout: Duration) -> Self {
        Self {
            inner: Arc::default(),
            period,
            timeout,
        }
    }

    /// Adds (or replaces) a check; safe while [`run`](Self::run) is running,
    /// and it takes part from the next round on.
    pub fn add_check<F, Fut>(&self, name: impl Into<String>, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.add_check_with_details(name, move || {
            let round = check();
            async move { round.await.map(|()| Details::new()) }
        });
    }

    /// Like [`add_check`](Self::add_check), for a check that reports details
    /// when it passes.
    pub fn add_check_with_details<F, Fut>(&self, name: impl Into<String>, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Details, String>> + Send + 'static,
    {
        let check: CheckFn = Arc::new(move || Box::pin(check()));
        self.inner
            .checks
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(name.into(), check);
    }

    /// The last result of every registered check; [`CheckResult::pending`]
    /// for one that has not completed a round yet.
    pub fn report(&self) -> BTreeMap<String, CheckResult> {
        let mut report = self
            .inner
            .results
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        let checks = self
            .inner
            .checks
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        for name in checks.keys() {
            report
                .entry(name.clone())
                .or_insert_with(CheckResult::pending);
        }
        report
    }

    /// True when every registered check has a result and all passed.
    pub fn is_healthy(&self) -> bool {
        let names: Vec<String> = self
            .inner
            .checks
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .keys()
            .cloned()
            .collect();
        let results = self.report();
        names.iter().all(|n| results.get(n).is_some_and(|r| r.ok))
    }

    /// Runs every check once, concurrently, and records the results.
    pub async fn check_now(&self) {
        let checks: Vec<(String, CheckFn)> = self
            .inner
            .checks
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .iter()
            .map(|(n, c)| (n.clone(), Arc::clone(c)))
            .collect();
        let timeout = self.timeout;
        let rounds = checks.into_iter().map(|(name, check)| async move {
            let started = Instant::now();
            // A task of its own: a panic becomes a JoinError instead of
            // unwinding through the checker, and a timeout drops (aborts) it.
            let task = tokio::spawn(async move { check().await });
            let abort = task.abort_handle();
            let outcome = match tokio::time::timeout(timeout, task).await {
                Ok(Ok(Ok(details))) => Ok(details),
                Ok(Ok(Err(e))) => Err(e),
                Ok(Err(join)) if join.is_panic() => {
                    Err(format!("panicked: {}", panic_message(join)))
                }
                Ok(Err(join)) => Err(format!("check task ended: {join}")),
                Err(_) => {
                    abort.abort();
                    Err(format!("timed out after {} ms", timeout.as_millis()))
                }
            };
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            if let Err(e) = &outcome {
                tracing::warn!(check = %name, error = %e, "health check failed");
            }
            let result = match outcome {
                Ok(details) => CheckResult {
                    ok: true,
                    latency_ms,
                    error: None,
                    details,
                },
                Err(error) => CheckResult {
                    ok: false,
                    latency_ms,
                    error: Some(error),
                    details: Details::new(),
                },
            };
            (name, result)
        });
        let results = join_all(rounds).await;
        let mut stored = self
            .inner
            .results
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        for (name, result) in results {
            stored.insert(name, result);
        }
    }

    /// Runs a round at once, then one every period, until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(self.period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = self.check_now() => {}
                    }
                }
            }
        }
        tracing::info!("health checks stopped");
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    let payload = join.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn checker() -> HealthChecker {
        HealthChecker::new(Duration::from_secs(5), Duration::from_secs(2))
    }

    #[tokio::test]
    async fn a_panicking_check_is_reported_and_the_others_still_run() {
        let hc = checker();
        hc.add_check("boom", || async { panic!("kaput") });
        hc.add_check("fine", || async { Ok(()) });
        hc.check_now().await;
        let report = hc.report();
        assert!(!report["boom"].ok);
        assert!(report["boom"].error.as_deref().unwrap().contains("kaput"));
        assert!(report["fine"].ok);
        assert!(!hc.is_healthy());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_check_times_out() {
        let hc = checker();
        hc.add_check("hangs", std::future::pending::<Result<(), String>>);
        hc.check_now().await;
        let report = hc.report();
        assert_eq!(
            report["hangs"].error.as_deref(),
            Some("timed out after 2000 ms")
        );
    }

    #[tokio::test]
    async fn a_check_reads_as_pending_until_its_first_round_ends() {
        let hc = checker();
        hc.add_check("redis", || async { Ok(()) });
        assert_eq!(hc.report()["redis"], CheckResult::pending());
        assert!(!hc.is_healthy());
        hc.check_now().await;
        assert!(hc.report()["redis"].ok);
        assert!(hc.is_healthy());
    }

    #[tokio::test]
    async fn a_passing_check_reports_its_details_flattened() {
        let hc = checker();
        hc.add_check_with_details("redis", || async {
            Ok(Details::from([(
                "persistence".to_owned(),
                serde_json::Value::Bool(false),
            )]))
        });
        hc.check_now().await;
        let json = serde_json::to_value(&hc.report()["redis"]).unwrap();
        assert_eq!(json["persistence"], false);
        assert_eq!(json["ok"], true);
    }

    #[tokio::test]
    async fn a_failing_check_reports_its_error() {
        let hc = checker();
        hc.add_check("redis", || async { Err("connection refused".to_owned()) });
        hc.check_now().await;
        assert_eq!(
            hc.report()["redis"].error.as_deref(),
            Some("connection refused")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn checks_added_while_running_join_the_next_round_and_stop_ends_the_loop() {
        let hc = checker();
        let first = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&first);
        hc.add_check("first", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        });
        let stop = CancellationToken::new();
        let running = tokio::spawn(hc.clone().run(stop.clone()));

        // Let the first round run, then add a check while the loop is live.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(first.load(Ordering::SeqCst), 1);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        hc.add_check("late", move || {
            let _ = tx.send(());
            async { Ok(()) }
        });
        rx.recv()
            .await
            .expect("the late check runs in a later round");
        assert!(first.load(Ordering::SeqCst) >= 2);
        assert!(hc.report()["late"].ok);

        stop.cancel();
        running.await.expect("run ends cleanly when stopped");
    }
}
