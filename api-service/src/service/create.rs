//! `POST /tasks`: validate, reserve the `Idempotency-Key`, store, publish,
//! list. The task is QUEUED once its message is confirmed by the broker; a
//! create that fails on the way leaves nothing behind (or, if the process
//! dies, an outbox entry that [`super::republish`] finishes). A task with a
//! `run_at` (or `delay_ms`) in the future is stored SCHEDULED instead, in
//! the due index, and [`super::due`] publishes it when due
//! ([`store_and_start`] makes that choice).

use std::time::Duration;

use task_model::{topology, CreateTaskRequest, NewTask, TaskId, TaskMessage, TaskRef, TaskStatus};
use tracing::Instrument;

use crate::{
    error::ApiError,
    publisher::PublishError,
    service::{blobs, webhooks},
    state::AppState,
    store::{reservation_secs, Code, IdemReservation, IdempotencyKey},
};

/// An `Idempotency-Key` sent with a create.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    /// The caller's scope (which API key), so callers cannot collide.
    pub scope: &'a str,
    /// The header's value, already checked with [`is_valid_key`].
    pub key: &'a str,
}

/// Whether an `Idempotency-Key` header value is acceptable: 1 to 200
/// visible ASCII characters.
pub fn is_valid_key(value: &str) -> bool {
    IdempotencyKey::is_valid(value)
}

/// What a create did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created {
    pub task: TaskRef,
    /// An earlier request with the same key and body made the task.
    pub replayed: bool,
}

/// Creates a task from `request`.
///
/// # Errors
/// An invalid request (400), the key reused with another body (409), Redis
/// or RabbitMQ unavailable (503), RabbitMQ blocking publishes under a
/// resource alarm (503 `broker_blocked`, at once).
pub async fn create(
    state: &AppState,
    request: CreateTaskRequest,
    idempotency: Option<Idempotency<'_>>,
) -> Result<Created, ApiError> {
    // The normalized request (nulls and absent fields alike) identifies a replay.
    let fingerprint = serde_json::to_value(&request).map_err(|e| ApiError::Unexpected(e.into()))?;
    let task = validate(state, request)?;
    if state.publisher.is_blocked().await {
        // Nothing could be queued: say so at once instead of storing a task
        // whose publish would wait for a confirm that cannot come.
        tracing::warn!("rabbitmq blocks publishing (a resource alarm); refusing a create");
        return Err(ApiError::BrokerBlocked);
    }
    if let Some(algorithm) = native::algorithm(&task.algorithm) {
        blobs::keep_inputs(state, algorithm, &task.input).await?;
    }
    let id = TaskId::new();
    tracing::Span::current().record("task_id", tracing::field::display(&id));
    let key = idempotency.map(|i| IdempotencyKey::new(&state.store, i.scope, i.key, &fingerprint));
    if let Some(key) = &key {
        if let Some(first) = reserve(state, key, &id).await? {
            return Ok(Created {
                task: first,
                replayed: true,
            });
        }
    }
    let status = match store_and_start(state, id, &task, key.as_ref()).await {
        Ok(status) => status,
        Err(e) => {
            if let Some(key) = &key {
                release(state, key, id).await;
            }
            return Err(e);
        }
    };
    state.metrics.tasks_created.inc();
    tracing::info!(task_id = %id, stages = task.stages, stage_ms = task.stage_ms, %status, "task created");
    let task = TaskRef {
        task_id: id,
        status,
    };
    Ok(Created {
        task,
        replayed: false,
    })
}

/// The catalogue's checks first (`unknown_algorithm`, `invalid_input`, both
/// naming the field), then the generic ones. A task that names no `stages`
/// gets `DEFAULT_STAGES` when it is `hello` (v1's default, an operator
/// setting) and its algorithm's `default_stages` otherwise.
pub(crate) fn validate(
    state: &AppState,
    mut request: CreateTaskRequest,
) -> Result<NewTask, ApiError> {
    let name = request.algorithm.as_deref().unwrap_or("hello");
    let Some(algorithm) = native::algorithm(name) else {
        let known: Vec<_> = native::algorithms().iter().map(|a| a.name).collect();
        return Err(ApiError::invalid_field(
            "unknown_algorithm",
            "algorithm",
            format!(
                "unknown algorithm {name:?}; available: {} (GET /algorithms)",
                known.join(", ")
            ),
        ));
    };
    let input = request.input.as_ref().unwrap_or(&serde_json::Value::Null);
    algorithm
        .validate(input)
        .map_err(|e| ApiError::invalid_field("invalid_input", e.field, e.message))?;
    if request.stages.is_none() && algorithm.name != "hello" {
        request.stages = Some(i64::from(algorithm.default_stages));
    }
    let task = NewTask::parse(request, state.defaults)
        .map_err(|e| ApiError::invalid(e.field.clone(), e.to_string()))?;
    if let Some(url) = &task.webhook_url {
        webhooks::check_url(url, &state.webhook_hosts)?;
    }
    super::queues::check_known(state, &task.queue)?;
    Ok(task)
}

/// Reserves `key` for `id`, or answers with the task that holds it (a
/// batch's key names its first task).
pub(crate) async fn reserve(
    state: &AppState,
    key: &IdempotencyKey,
    id: &TaskId,
) -> Result<Option<TaskRef>, ApiError> {
    // The first request may still be storing and publishing its task; wait
    // for it (bounded), or take the key over if it gave up.
    let ttl = reservation_secs(state.result_ttl);
    for _ in 0..100 {
        let task_id = match state.store.reserve_idempotency_key(key, id, ttl).await? {
            IdemReservation::Reserved => return Ok(None),
            IdemReservation::Existing {
                same_body: false, ..
            } => return Err(key_conflict()),
            IdemReservation::Existing { task_id, .. } => task_id,
        };
        if let Some(task) = state.store.load(&task_id).await? {
            let status = task.view.status;
            return Ok(Some(TaskRef { task_id, status }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(ApiError::Unavailable(anyhow::anyhow!(
        "the first request with this Idempotency-Key is still in flight"
    )))
}

fn key_conflict() -> ApiError {
    ApiError::Conflict {
        code: "idempotency_conflict",
        message: "this Idempotency-Key was used with a different body".into(),
        status: None,
    }
}

/// When `task` is due (ms), if that is after `now_ms`: then it starts
/// SCHEDULED; `None` means it runs now.
pub fn due_later(task: &NewTask, now_ms: i64) -> Option<i64> {
    task.run_at
        .map(|at| at.timestamp_millis())
        .filter(|&due_ms| due_ms > now_ms)
}

/// Stores a validated task and starts it: published now (QUEUED), or, with
/// a `run_at` in the future, SCHEDULED for the due sweep to publish then.
/// Answers the status it has. A failure leaves nothing behind (the key, if
/// any, is the caller's to release). A batch makes the same decision with
/// [`due_later`], then stores its QUEUED tasks in one pipeline.
///
/// # Errors
/// Redis or RabbitMQ unavailable (503), RabbitMQ blocking (503 `broker_blocked`).
pub async fn store_and_start(
    state: &AppState,
    id: TaskId,
    task: &NewTask,
    key: Option<&IdempotencyKey>,
) -> Result<TaskStatus, ApiError> {
    match due_later(task, chrono::Utc::now().timestamp_millis()) {
        Some(due_ms) => {
            store_scheduled(state, id, task, key, due_ms).await?;
            Ok(TaskStatus::Scheduled)
        }
        _ => {
            store_and_publish(state, id, task, key).await?;
            Ok(TaskStatus::Queued)
        }
    }
}

/// Stores the task SCHEDULED (due at `due_ms`) and keeps its key; undoes
/// the store when keeping the key fails.
async fn store_scheduled(
    state: &AppState,
    id: TaskId,
    task: &NewTask,
    key: Option<&IdempotencyKey>,
    due_ms: i64,
) -> Result<(), ApiError> {
    let outcome = state.store.create_scheduled(&id, task, due_ms).await?;
    if outcome.code != Code::Ok {
        return Err(ApiError::Unexpected(anyhow::anyhow!(
            "a fresh task id already existed: {:?}",
            outcome.code
        )));
    }
    if let Some(key) = key {
        let kept = state
            .store
            .keep_idempotency_key(key, &id, state.result_ttl.as_secs())
            .await;
        if let Err(e) = kept {
            let created_ms = outcome.snapshot.now_ms;
            if let Err(e) = state.store.discard_scheduled(&id, created_ms, due_ms).await {
                tracing::error!(task_id = %id, error = %e, "could not discard a scheduled task whose key could not be kept");
            }
            return Err(e.into());
        }
    }
    Ok(())
}

/// Stores the task, keeps its key, publishes its message and lists it;
/// undoes the store when a later step fails.
async fn store_and_publish(
    state: &AppState,
    id: TaskId,
    task: &NewTask,
    key: Option<&IdempotencyKey>,
) -> Result<(), ApiError> {
    let outcome = state.store.create(&id, task).await?;
    if outcome.code != Code::Ok {
        return Err(ApiError::Unexpected(anyhow::anyhow!(
            "a fresh task id already existed: {:?}",
            outcome.code
        )));
    }
    let created_ms = outcome.snapshot.now_ms;
    if let Some(key) = key {
        // Stored: the key now answers for this task for RESULT_TTL_SECS.
        let kept = state
            .store
            .keep_idempotency_key(key, &id, state.result_ttl.as_secs())
            .await;
        if let Err(e) = kept {
            discard(state, id, created_ms, "its key could not be kept").await;
            return Err(e.into());
        }
    }
    // The message carries this span's trace context to the worker.
    let publish =
        tracing::info_span!("publish", task_id = %id, exchange = topology::TASKS_EXCHANGE);
    if let Err(e) = state
        .publisher
        .publish_task(&TaskMessage::new(id, task), &task.queue)
        .instrument(publish)
        .await
    {
        tracing::error!(task_id = %id, error = %e, "publish failed; discarding the task");
        discard(state, id, created_ms, "it could not be published").await;
        return Err(match e {
            PublishError::Blocked => ApiError::BrokerBlocked,
            e => ApiError::Unavailable(e.into()),
        });
    }
    if let Err(e) = state.store.mark_published(&id, created_ms).await {
        // The task is whole and its message out, but not listed yet (e.g. a
        // full Redis refused the index write): it stays in the outbox, whose
        // sweep lists it (after a harmless duplicate message) once Redis takes writes.
        tracing::warn!(task_id = %id, error = %e, "a published task is not listed yet; the outbox sweep lists it");
    }
    Ok(())
}

async fn discard(state: &AppState, id: TaskId, created_ms: i64, why: &str) {
    if let Err(e) = state.store.discard(&id, created_ms).await {
        tracing::error!(task_id = %id, error = %e, "could not discard a task whose create failed ({why})");
    }
}

pub(crate) async fn release(state: &AppState, key: &IdempotencyKey, id: TaskId) {
    if let Err(e) = state.store.release_idempotency_key(key, &id).await {
        tracing::error!(task_id = %id, error = %e, "could not release the idempotency key");
    }
}
