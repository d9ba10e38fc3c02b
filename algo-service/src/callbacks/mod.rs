//! The client of the api's callback endpoints, and its retry policy.
//!
//! One `reqwest::Client` (connection pool, per-request timeout) is shared by
//! every task. Each call is classified once ([`Answer`] for answers the
//! caller acts on, [`CallError`] for failures worth retrying) and
//! [`ApiClient::call`] retries the transient ones with exponential backoff
//! (50 ms doubling to 5 s, with jitter), forever, until the caller's stop
//! token fires. A missing or wrong callback token (401) is retried the same way,
//! loudly, because an operator can fix it without losing the task.
//!
//! Every request carries `Authorization: Bearer <CALLBACK_TOKEN>` (never
//! logged) and `X-Task-Id` for log correlation with the api. Each call,
//! retries included, is a `callback` span; while traces are on, its requests
//! carry its `traceparent`, so the api's handling joins the task's trace.
//!
//! Attempts go through [`batch`]: at most [`batch::MAX_REQUESTS_IN_FLIGHT`]
//! requests at a time, and callbacks made meanwhile go together in one
//! `POST /internal/reports`, each still answered (and retried) on its own.

mod batch;
pub use batch::MAX_REQUESTS_IN_FLIGHT;

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use task_model::{CallbackAnswer, ProgressReport, Report, StatusReport, TaskId, TaskStatus};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use crate::backoff::jittered;
use crate::metrics::Metrics;

/// First retry delay.
pub const RETRY_MIN_DELAY: Duration = Duration::from_millis(50);
/// Longest retry delay.
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(5);

/// The retry schedule of callbacks: 50 ms doubling to 5 s, without end.
/// [`ApiClient`] applies [`jittered`] to each delay.
pub fn retry_policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(RETRY_MIN_DELAY)
        .with_max_delay(RETRY_MAX_DELAY)
        .with_factor(2.0)
        .without_max_times()
}

/// The snake_case reason of a 409.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// Another worker holds the task and its lease is live.
    LeaseHeld,
    /// The task already has a terminal state.
    AlreadyFinished,
    /// The task is held by another worker (a takeover happened).
    NotHolder,
    /// `COMPLETED` refused: not every stage's progress is recorded.
    StagesIncomplete,
    /// A reason this worker does not know.
    Other(String),
}

impl Conflict {
    fn from_code(code: Option<&str>) -> Self {
        match code {
            Some("lease_held") => Self::LeaseHeld,
            Some("already_finished") => Self::AlreadyFinished,
            Some("not_holder") => Self::NotHolder,
            Some("stages_incomplete") => Self::StagesIncomplete,
            other => Self::Other(other.unwrap_or_default().to_owned()),
        }
    }
}

/// An answer the caller acts on; everything else is a [`CallError`] and retried.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200: recorded.
    Accepted(CallbackAnswer),
    /// 409: refused by the state machine; the answer still carries the task's state.
    Conflict(Conflict, CallbackAnswer),
    /// 404: the task is unknown or expired.
    NotFound(String),
    /// 400 or another 4xx: the request itself is wrong (a bug on one side).
    Rejected(StatusCode, String),
}

/// A failed call worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: connection refused or reset, timeout.
    #[error("api unreachable: {0}")]
    Transport(#[source] reqwest::Error),
    /// 5xx, 429 and the like.
    #[error("api answered {0}")]
    Unavailable(StatusCode),
    /// 401: the api does not accept our `CALLBACK_TOKEN`.
    #[error("api refused the callback token (401); check CALLBACK_TOKEN matches the api's")]
    Unauthorized,
    /// 200 or 409 with a body that is not a `CallbackAnswer`.
    #[error("api answered {status} with an unreadable body: {reason}")]
    BadBody {
        /// The HTTP status.
        status: StatusCode,
        /// Why it could not be read.
        reason: String,
    },
    /// The batch this call went in got no usable answer.
    #[error("batched callback failed: {0}")]
    Batch(String),
}

/// The caller's stop token fired while the call was still being retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("gave up on the callback: the worker is stopping")]
pub struct Abandoned;

/// Client of the callback API. Cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    auth: String,
    worker: String,
    metrics: Metrics,
    policy: ExponentialBuilder,
    /// Where attempts queue for a request (see [`batch`]).
    batcher: std::sync::Arc<batch::Batcher>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client of the api at `base` (no trailing slash), calling itself `worker`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        base: &str,
        token: &str,
        worker: &str,
        timeout: Duration,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("algo-service/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            auth: format!("Bearer {token}"),
            worker: worker.to_owned(),
            metrics,
            policy: retry_policy(),
            batcher: std::sync::Arc::default(),
        })
    }

    /// Replaces the retry schedule (tests use short or jitter-free ones).
    pub fn with_retry_policy(mut self, policy: ExponentialBuilder) -> Self {
        self.policy = policy;
        self
    }

    /// A request to `path` on the api with the callback token (the blob
    /// client in [`crate::blobs`] uses it).
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, &self.auth)
    }

    /// The name this worker reports as.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// `POST /internal/tasks/{id}/status` with `status` (and `result` or
    /// `error`), retried until it gets an [`Answer`] or `stop` fires.
    ///
    /// # Errors
    /// [`Abandoned`] when `stop` fires first.
    pub async fn report_status(
        &self,
        task_id: TaskId,
        status: TaskStatus,
        result: Option<serde_json::Value>,
        (error, stage): (Option<String>, Option<u32>),
        stop: &CancellationToken,
    ) -> Result<Answer, Abandoned> {
        let report = Report::Status(StatusReport {
            status,
            worker: self.worker.clone(),
            result,
            error,
            retryable: false,
            stage,
        });
        self.call(task_id, &report, stop).await
    }

    /// A retryable `FAILED` (`"retryable": true`): the api answers
    /// `SCHEDULED` when another attempt follows, else records `FAILED`.
    /// Retried like [`Self::report_status`].
    ///
    /// # Errors
    /// [`Abandoned`] when `stop` fires first.
    pub async fn report_retryable_failure(
        &self,
        task_id: TaskId,
        error: String,
        stop: &CancellationToken,
    ) -> Result<Answer, Abandoned> {
        let report = Report::Status(StatusReport {
            status: TaskStatus::Failed,
            worker: self.worker.clone(),
            result: None,
            error: Some(error),
            retryable: true,
            stage: None,
        });
        self.call(task_id, &report, stop).await
    }

    /// `POST /internal/tasks/{id}/progress` (also the lease heartbeat),
    /// retried until it gets an [`Answer`] or `stop` fires.
    ///
    /// # Errors
    /// [`Abandoned`] when `stop` fires first.
    pub async fn report_progress(
        &self,
        task_id: TaskId,
        stage: u32,
        stages: u32,
        stop: &CancellationToken,
    ) -> Result<Answer, Abandoned> {
        let report = Report::Progress(ProgressReport {
            progress: task_model::progress_percent(stage, stages),
            stage,
            stages,
            worker: self.worker.clone(),
        });
        self.call(task_id, &report, stop).await
    }

    /// Progress within stage `stage` (the task's `progress` as the worker
    /// computes it: `floor(100 × (stage + f) / stages)`), sent once without
    /// retries: the next one follows within 250 ms, and the api ignores one
    /// that arrives after a later stage's.
    ///
    /// # Errors
    /// A [`CallError`] when the attempt failed.
    pub async fn report_progress_within(
        &self,
        task_id: TaskId,
        stage: u32,
        stages: u32,
        progress: u8,
    ) -> Result<Answer, CallError> {
        let report = Report::Progress(ProgressReport {
            progress,
            stage,
            stages,
            worker: self.worker.clone(),
        });
        self.call_once(task_id, &report).await
    }

    /// One callback with retries: transient failures ([`CallError`]) are
    /// retried on the client's schedule until an [`Answer`] comes or `stop` fires.
    ///
    /// # Errors
    /// [`Abandoned`] when `stop` fires first.
    pub async fn call(
        &self,
        task_id: TaskId,
        report: &Report,
        stop: &CancellationToken,
    ) -> Result<Answer, Abandoned> {
        let endpoint = endpoint(report);
        let failed = std::sync::atomic::AtomicU32::new(0);
        let once = || self.call_once(task_id, report);
        let retried = once
            .retry(self.policy)
            .adjust(|_, delay| delay.map(jittered))
            .notify(|err: &CallError, delay: Duration| {
                self.metrics.callback_retries.inc();
                let attempt = 1 + failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log_retry(endpoint, attempt, err, delay);
            });
        let span = tracing::info_span!("callback", endpoint);
        async {
            tokio::select! {
                biased;
                () = stop.cancelled() => Err(Abandoned),
                // The schedule never ends, so the retry only returns with an answer.
                res = retried => res.map_err(|_| Abandoned),
            }
        }
        .instrument(span)
        .await
    }

    /// One attempt, classified: alone, or in a batch with the other
    /// worker's callbacks made while requests were in flight.
    ///
    /// # Errors
    /// A [`CallError`] when the attempt should be retried.
    pub async fn call_once(&self, task_id: TaskId, report: &Report) -> Result<Answer, CallError> {
        let trace = crate::telemetry::trace_headers(&tracing::Span::current());
        self.submit(task_id, report, trace).await
    }

    /// One attempt as its own request, `trace` its trace headers.
    async fn send_one(
        &self,
        task_id: TaskId,
        report: &Report,
        trace: &[(String, String)],
    ) -> Result<Answer, CallError> {
        let url = format!(
            "{}/internal/tasks/{task_id}/{}",
            self.base,
            endpoint(report)
        );
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .header("X-Task-Id", task_id.to_string());
        for (name, value) in trace {
            request = request.header(name, value);
        }
        let request = match report {
            Report::Status(body) => request.json(body),
            Report::Progress(body) => request.json(body),
        };
        let response = request.send().await.map_err(CallError::Transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(CallError::Transport)?;
        classify(status, &bytes)
    }
}

/// The single callback's endpoint for `report`.
fn endpoint(report: &Report) -> &'static str {
    match report {
        Report::Status(_) => "status",
        Report::Progress(_) => "progress",
    }
}

/// Logs a failed callback attempt (`attempt` counts from 1) before its retry.
fn log_retry(endpoint: &str, attempt: u32, err: &CallError, delay: Duration) {
    let retry_in_ms = delay.as_millis() as u64;
    match err {
        CallError::Unauthorized => tracing::error!(
            endpoint,
            attempt,
            error = %err,
            retry_in_ms,
            "callback refused; retrying"
        ),
        _ => {
            tracing::warn!(endpoint, attempt, error = %err, retry_in_ms, "callback failed; retrying")
        }
    }
}

/// Maps an HTTP answer to what the worker does with it.
///
/// # Errors
/// [`CallError`] for answers to retry: 401, 408, 429, 5xx, unexpected
/// statuses, and 200/409 bodies that are not a `CallbackAnswer`.
pub fn classify(status: StatusCode, body: &[u8]) -> Result<Answer, CallError> {
    let answer = || {
        serde_json::from_slice::<CallbackAnswer>(body).map_err(|e| CallError::BadBody {
            status,
            reason: e.to_string(),
        })
    };
    let message = || {
        let text = String::from_utf8_lossy(body);
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(200).collect())
    };
    match status {
        StatusCode::OK => Ok(Answer::Accepted(answer()?)),
        StatusCode::CONFLICT => {
            let a = answer()?;
            Ok(Answer::Conflict(Conflict::from_code(a.error.as_deref()), a))
        }
        StatusCode::NOT_FOUND => Ok(Answer::NotFound(message())),
        StatusCode::UNAUTHORIZED => Err(CallError::Unauthorized),
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
            Err(CallError::Unavailable(status))
        }
        s if s.is_client_error() => Ok(Answer::Rejected(s, message())),
        s => Err(CallError::Unavailable(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;
    use serde_json::json;
    use wiremock::{
        matchers::{header, method, path},
        Mock, MockServer, ResponseTemplate,
    };

    fn answer_json(status: &str, error: Option<&str>) -> serde_json::Value {
        let mut v = json!({
            "status": status, "stage": 2, "cancel_requested": false,
            "worker": "w", "deadline_in_ms": 1000, "lease_remaining_ms": 700, "lease_ms": 10000
        });
        if let Some(e) = error {
            v["error"] = json!(e);
        }
        v
    }

    fn bytes(v: &serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn answers_are_classified_into_permanent_and_transient() {
        let ok = classify(StatusCode::OK, &bytes(&answer_json("PROCESSING", None))).unwrap();
        assert!(matches!(ok, Answer::Accepted(a) if a.stage == 2 && a.lease_ms == 10_000));

        for (code, want) in [
            ("lease_held", Conflict::LeaseHeld),
            ("already_finished", Conflict::AlreadyFinished),
            ("not_holder", Conflict::NotHolder),
            ("stages_incomplete", Conflict::StagesIncomplete),
            ("something_new", Conflict::Other("something_new".into())),
        ] {
            let got = classify(
                StatusCode::CONFLICT,
                &bytes(&answer_json("PROCESSING", Some(code))),
            )
            .unwrap();
            assert!(
                matches!(got, Answer::Conflict(c, _) if c == want),
                "409 {code}"
            );
        }

        let nf = classify(
            StatusCode::NOT_FOUND,
            br#"{"error":"not_found","message":"no such task"}"#,
        )
        .unwrap();
        assert_eq!(nf, Answer::NotFound("no such task".into()));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, b"{}").unwrap(),
            Answer::Rejected(StatusCode::BAD_REQUEST, _)
        ));

        for transient in [
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            assert!(
                classify(transient, b"").is_err(),
                "{transient} must be retried"
            );
        }
        assert!(
            matches!(
                classify(StatusCode::OK, b"<html>"),
                Err(CallError::BadBody { .. })
            ),
            "an unreadable 200 is retried, not trusted"
        );
    }

    #[test]
    fn the_retry_schedule_doubles_from_50ms_to_5s_and_never_ends() {
        let delays: Vec<_> = retry_policy().build().take(12).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(
            ms,
            [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000, 5000]
        );
        assert!(retry_policy().build().nth(10_000).is_some());
    }

    #[test]
    fn jitter_keeps_each_delay_between_half_and_all_of_it() {
        for d in retry_policy().build().take(12) {
            for _ in 0..50 {
                let j = jittered(d);
                assert!(j >= d / 2 && j <= d, "{j:?} for {d:?}");
            }
        }
    }

    fn client(server: &MockServer, metrics: Metrics) -> ApiClient {
        ApiClient::new(
            &server.uri(),
            "sekrit",
            "w1",
            Duration::from_secs(2),
            metrics,
        )
        .unwrap()
        .with_retry_policy(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(5))
                .with_max_delay(Duration::from_millis(20))
                .without_max_times(),
        )
    }

    #[tokio::test]
    async fn server_errors_and_401_are_retried_until_the_api_answers() {
        // Arrange
        let server = MockServer::start().await;
        let id = TaskId::new();
        let route = format!("/internal/tasks/{id}/status");
        Mock::given(method("POST"))
            .and(path(route.clone()))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(2)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(route.clone()))
            .respond_with(ResponseTemplate::new(401))
            .up_to_n_times(1)
            .with_priority(2)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(route))
            .and(header("authorization", "Bearer sekrit"))
            .and(header("x-task-id", id.to_string().as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer_json("COMPLETED", None)))
            .with_priority(3)
            .mount(&server)
            .await;
        let metrics = Metrics::new().unwrap();
        let api = client(&server, metrics.clone());

        // Act
        let got = api
            .report_status(
                id,
                TaskStatus::Completed,
                Some(json!({"stages": 1, "output": "hello world"})),
                (None, Some(1)),
                &CancellationToken::new(),
            )
            .await
            .unwrap();

        // Assert
        assert!(matches!(got, Answer::Accepted(a) if a.status == TaskStatus::Completed));
        assert_eq!(metrics.callback_retries.get(), 3, "two 503s and one 401");
        let requests = server.received_requests().await.unwrap();
        assert_eq!(requests.len(), 4);
        let body: serde_json::Value = serde_json::from_slice(&requests[3].body).unwrap();
        assert_eq!(
            body,
            json!({"status": "COMPLETED", "worker": "w1", "result": {"stages": 1, "output": "hello world"}, "stage": 1})
        );
    }

    #[tokio::test]
    async fn a_404_or_409_is_an_answer_and_not_retried() {
        let server = MockServer::start().await;
        let id = TaskId::new();
        Mock::given(method("POST"))
            .and(path(format!("/internal/tasks/{id}/progress")))
            .respond_with(
                ResponseTemplate::new(409)
                    .set_body_json(answer_json("PROCESSING", Some("not_holder"))),
            )
            .mount(&server)
            .await;
        let metrics = Metrics::new().unwrap();
        let api = client(&server, metrics.clone());
        let got = api
            .report_progress(id, 1, 3, &CancellationToken::new())
            .await
            .unwrap();
        assert!(matches!(got, Answer::Conflict(Conflict::NotHolder, _)));
        assert_eq!(metrics.callback_retries.get(), 0);
        let sent: serde_json::Value =
            serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
        assert_eq!(
            sent,
            json!({"progress": 33, "stage": 1, "stages": 3, "worker": "w1"})
        );

        let unknown = TaskId::new();
        let got = api
            .report_status(
                unknown,
                TaskStatus::Processing,
                None,
                (None, None),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert!(
            matches!(got, Answer::NotFound(_)),
            "wiremock answers 404 to unmatched routes"
        );
    }

    #[tokio::test]
    async fn retries_stop_when_the_stop_token_fires() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(500))
            .mount(&server)
            .await;
        let api = client(&server, Metrics::new().unwrap());
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stopper.cancel();
        });
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            api.report_progress(TaskId::new(), 0, 1, &stop),
        )
        .await
        .expect("the stop token ends the retries");
        assert_eq!(got, Err(Abandoned));
    }

    #[tokio::test]
    async fn an_unreachable_api_is_retried_not_answered() {
        // Port 9 (discard) on loopback: nothing listens there on these machines.
        let api = ApiClient::new(
            "http://127.0.0.1:9",
            "t",
            "w",
            Duration::from_millis(200),
            Metrics::new().unwrap(),
        )
        .unwrap();
        let report = Report::Progress(ProgressReport {
            progress: 0,
            stage: 0,
            stages: 1,
            worker: "w".into(),
        });
        let err = api.call_once(TaskId::new(), &report).await.unwrap_err();
        assert!(matches!(err, CallError::Transport(_)), "{err:?}");
    }

    /// Answers a batch report by report: 409 `not_holder` to the first, 200 to the rest.
    struct AnswerEach;

    impl wiremock::Respond for AnswerEach {
        fn respond(&self, req: &wiremock::Request) -> ResponseTemplate {
            let batch: task_model::ReportBatch = serde_json::from_slice(&req.body).unwrap();
            let answers: Vec<_> = batch
                .reports
                .iter()
                .enumerate()
                .map(|(i, r)| match i {
                    0 => json!({"task_id": r.task_id, "code": 409, "body": answer_json("PROCESSING", Some("not_holder"))}),
                    _ => json!({"task_id": r.task_id, "code": 200, "body": answer_json("PROCESSING", None)}),
                })
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({ "answers": answers }))
        }
    }

    async fn claim_all(api: &ApiClient, ids: &[TaskId]) -> Vec<Answer> {
        let stop = CancellationToken::new();
        let claims = ids
            .iter()
            .map(|id| api.report_status(*id, TaskStatus::Processing, None, (None, None), &stop));
        futures_util::future::join_all(claims)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    fn requests_to<'a>(requests: &'a [wiremock::Request], to: &str) -> Vec<&'a wiremock::Request> {
        requests
            .iter()
            .filter(|r| r.url.path().ends_with(to))
            .collect()
    }

    #[tokio::test]
    async fn callbacks_made_together_go_in_one_request_and_each_gets_its_answer() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/internal/reports"))
            .and(header("authorization", "Bearer sekrit"))
            .respond_with(AnswerEach)
            .mount(&server)
            .await;
        let api = client(&server, Metrics::new().unwrap());
        let ids: Vec<TaskId> = (0..50).map(|_| TaskId::new()).collect();

        let answers = claim_all(&api, &ids).await;

        let requests = server.received_requests().await.unwrap();
        let batches = requests_to(&requests, "/internal/reports");
        assert_eq!(
            (requests.len(), batches.len()),
            (1, 1),
            "50 claims made at once leave as one request"
        );
        let sent: task_model::ReportBatch = serde_json::from_slice(&batches[0].body).unwrap();
        let sent_ids: Vec<TaskId> = sent.reports.iter().map(|r| r.task_id).collect();
        assert_eq!(sent_ids, ids);
        assert!(matches!(
            &sent.reports[0].report,
            Report::Status(s) if s.status == TaskStatus::Processing && s.worker == "w1"
        ));
        assert!(matches!(
            answers[0],
            Answer::Conflict(Conflict::NotHolder, _)
        ));
        assert!(answers[1..]
            .iter()
            .all(|a| matches!(a, Answer::Accepted(a) if a.status == TaskStatus::Processing)));
    }

    #[tokio::test]
    async fn an_api_without_the_batch_endpoint_gets_callbacks_one_by_one() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(wiremock::matchers::path_regex(
                r"^/internal/tasks/[0-9a-f-]+/status$",
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer_json("PROCESSING", None)))
            .mount(&server)
            .await;
        let api = client(&server, Metrics::new().unwrap());
        let ids: Vec<TaskId> = (0..20).map(|_| TaskId::new()).collect();

        let first = claim_all(&api, &ids).await;
        let again = claim_all(&api, &ids).await;

        assert!(first
            .iter()
            .chain(&again)
            .all(|a| matches!(a, Answer::Accepted(_))));
        let requests = server.received_requests().await.unwrap();
        assert_eq!(
            requests_to(&requests, "/internal/reports").len(),
            1,
            "the batch endpoint is tried once, then no more"
        );
        assert_eq!(requests_to(&requests, "/status").len(), 40);
    }
}
