//! Callbacks that go together.
//!
//! Every attempt of [`ApiClient::call_once`] queues here. One task per
//! client sends them: at most [`MAX_REQUESTS_IN_FLIGHT`] requests at a
//! time, each carrying what queued since the last one left. A callback
//! alone goes to its own endpoint as before, so a quiet worker's latency is
//! unchanged; under load (a thousand claims when a worker starts, a
//! thousand finishes two seconds later) up to [`MAX_BATCHED_REPORTS`] go in
//! one `POST /internal/reports`, and the api answers each as if it had come
//! alone. Each caller gets its own answer, and retries on its own schedule.
//!
//! An api without the batch endpoint (404 or 405: an older version during a
//! rolling upgrade) gets single callbacks from then on; a batch refused as a
//! whole (400) is sent again one by one, so each report gets its own answer.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, OnceLock,
};

use reqwest::StatusCode;
use task_model::{
    BatchedAnswer, BatchedReport, Report, ReportAnswers, ReportBatch, TaskId, MAX_BATCHED_REPORTS,
};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{classify, Answer, ApiClient, CallError};

/// Callback requests one worker has in flight at most. With a thousand tasks
/// ending together, an unbounded burst made every callback wait behind all
/// the others (api threads, connections); the callbacks made meanwhile now
/// wait here and leave together.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 8;

/// An attempt waiting for a request.
struct Pending {
    task_id: TaskId,
    report: Report,
    trace: Vec<(String, String)>,
    reply: oneshot::Sender<Result<Answer, CallError>>,
}

/// The queue of a client's attempts (started with its first attempt).
#[derive(Default)]
pub(super) struct Batcher {
    queue: OnceLock<mpsc::UnboundedSender<Pending>>,
    /// The api answered the batch endpoint 404 or 405 (shared with the
    /// sending task's client).
    unsupported: Arc<AtomicBool>,
}

/// Why a batch got no answers to hand out.
enum BatchFailed {
    /// Send the batch's reports one by one instead.
    OneByOne,
    /// A failure each report shares, retried by each caller.
    Retry(CallError),
}

impl ApiClient {
    /// Queues one attempt and waits for its answer.
    pub(super) async fn submit(
        &self,
        task_id: TaskId,
        report: &Report,
        trace: Vec<(String, String)>,
    ) -> Result<Answer, CallError> {
        let queue = self.batcher.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            // A client of its own, without the queue: the task ends when the
            // last of this client's clones is dropped.
            let sender = ApiClient {
                batcher: Arc::new(Batcher {
                    queue: OnceLock::new(),
                    unsupported: self.batcher.unsupported.clone(),
                }),
                ..self.clone()
            };
            tokio::spawn(send_loop(sender, rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            task_id,
            report: report.clone(),
            trace,
            reply,
        };
        if let Err(mpsc::error::SendError(p)) = queue.send(pending) {
            // The sending task is gone (its runtime ended): send it here.
            return self.send_one(p.task_id, &p.report, &p.trace).await;
        }
        answer.await.unwrap_or_else(|_| {
            Err(CallError::Batch(
                "the callback sender stopped before answering".into(),
            ))
        })
    }

    /// Sends `batch`, and hands each attempt its answer.
    async fn send(&self, batch: Vec<Pending>) {
        if batch.len() > 1 && !self.batcher.unsupported.load(Ordering::Relaxed) {
            match self.send_batch(&batch).await {
                Ok(answers) => {
                    for (p, answer) in batch.into_iter().zip(answers) {
                        // The caller may have stopped waiting (its stop token fired).
                        let _ = p.reply.send(answer);
                    }
                    return;
                }
                Err(BatchFailed::Retry(e)) => {
                    let why = e.to_string();
                    for p in batch {
                        let e = match &e {
                            CallError::Unauthorized => CallError::Unauthorized,
                            CallError::Unavailable(s) => CallError::Unavailable(*s),
                            _ => CallError::Batch(why.clone()),
                        };
                        let _ = p.reply.send(Err(e));
                    }
                    return;
                }
                Err(BatchFailed::OneByOne) => {}
            }
        }
        let each = batch.into_iter().map(|p| async move {
            let answer = self.send_one(p.task_id, &p.report, &p.trace).await;
            let _ = p.reply.send(answer);
        });
        futures_util::future::join_all(each).await;
    }

    /// One `POST /internal/reports` for `batch`: an answer per report, in order.
    async fn send_batch(
        &self,
        batch: &[Pending],
    ) -> Result<Vec<Result<Answer, CallError>>, BatchFailed> {
        let body = ReportBatch {
            reports: batch
                .iter()
                .map(|p| BatchedReport {
                    task_id: p.task_id,
                    report: p.report.clone(),
                    traceparent: p
                        .trace
                        .iter()
                        .find(|(name, _)| name == "traceparent")
                        .map(|(_, value)| value.clone()),
                })
                .collect(),
        };
        let response = self
            .request(reqwest::Method::POST, "/internal/reports")
            .json(&body)
            .send()
            .await
            .map_err(|e| BatchFailed::Retry(CallError::Transport(e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| BatchFailed::Retry(CallError::Transport(e)))?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                tracing::warn!(
                    http.status = status.as_u16(),
                    "the api has no POST /internal/reports (an older version?); sending callbacks one by one"
                );
                self.batcher.unsupported.store(true, Ordering::Relaxed);
                return Err(BatchFailed::OneByOne);
            }
            StatusCode::BAD_REQUEST => {
                tracing::warn!(
                    reports = batch.len(),
                    api.message = %String::from_utf8_lossy(&bytes),
                    "the api refused a batch of callbacks; sending them one by one"
                );
                return Err(BatchFailed::OneByOne);
            }
            StatusCode::UNAUTHORIZED => return Err(BatchFailed::Retry(CallError::Unauthorized)),
            s => return Err(BatchFailed::Retry(CallError::Unavailable(s))),
        }
        let answers: ReportAnswers = serde_json::from_slice(&bytes).map_err(|e| {
            BatchFailed::Retry(CallError::BadBody {
                status,
                reason: e.to_string(),
            })
        })?;
        let in_order = answers.answers.len() == batch.len()
            && answers
                .answers
                .iter()
                .zip(batch)
                .all(|(a, p)| a.task_id == p.task_id);
        if !in_order {
            return Err(BatchFailed::Retry(CallError::BadBody {
                status,
                reason: "the answers do not match the reports one to one".into(),
            }));
        }
        Ok(answers.answers.iter().map(one_answer).collect())
    }
}

/// A batched answer as the single callback's answer.
fn one_answer(a: &BatchedAnswer) -> Result<Answer, CallError> {
    let status = StatusCode::from_u16(a.code).map_err(|e| CallError::BadBody {
        status: StatusCode::OK,
        reason: format!("answer code {}: {e}", a.code),
    })?;
    let body = serde_json::to_vec(&a.body).map_err(|e| CallError::Batch(e.to_string()))?;
    classify(status, &body)
}

/// Sends what queues on `rx`, [`MAX_REQUESTS_IN_FLIGHT`] requests at most,
/// until every sender is gone.
async fn send_loop(api: ApiClient, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_REQUESTS_IN_FLIGHT));
    loop {
        // Never closed, so acquiring cannot fail.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::new();
        if rx.recv_many(&mut batch, MAX_BATCHED_REPORTS).await == 0 {
            return;
        }
        let api = api.clone();
        tokio::spawn(async move {
            api.send(batch).await;
            drop(slot);
        });
    }
}
