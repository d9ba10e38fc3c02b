//! `POST /tasks/batch`: up to 1,000 creates as one, all or nothing.
//!
//! The steps are [`super::create`]'s, each done for every task at once:
//! validate every body (the first invalid one answers 400 with its `index`,
//! and nothing is made), reserve the `Idempotency-Key` for the whole batch,
//! store the tasks due later SCHEDULED (as a single create does), store
//! every other task in one Redis pipeline, publish their messages and only
//! then await the confirms, list them all. A store or publish that fails
//! discards every task of the batch and answers 503, as a single create
//! does; an api that dies midway leaves the stored tasks in the outbox,
//! which [`super::republish`] publishes and lists.
//!
//! The key's record names the batch's first task; the ids of all of them,
//! in order, are kept beside it (written before any task is stored), so a
//! replay answers 200 with the same ids and their current statuses.

use std::time::Duration;

use task_model::{BatchRequest, NewTask, TaskId, TaskMessage, TaskRef, TaskStatus};
use tracing::Instrument;

use crate::{
    error::ApiError,
    publisher::PublishError,
    service::{
        blobs,
        create::{self, Idempotency},
    },
    state::AppState,
    store::{reservation_secs, Code, IdempotencyKey},
};

/// What a batch create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCreated {
    /// One per task of the request, in its order.
    pub tasks: Vec<TaskRef>,
    /// An earlier request with the same key and body made the tasks.
    pub replayed: bool,
}

/// Creates every task of `batch`, or none.
///
/// # Errors
/// A task that is invalid (400, with its index), the key reused with another
/// body (409), Redis or RabbitMQ unavailable (503), RabbitMQ blocking
/// publishes (503 `broker_blocked`).
pub async fn create_batch(
    state: &AppState,
    batch: BatchRequest,
    idempotency: Option<Idempotency<'_>>,
) -> Result<BatchCreated, ApiError> {
    // The normalized bodies identify a replay (an object with `tasks`, so
    // never the fingerprint of a single create).
    let fingerprint = serde_json::to_value(&batch).map_err(|e| ApiError::Unexpected(e.into()))?;
    let tasks = validate_all(state, batch)?;
    if state.publisher.is_blocked().await {
        tracing::warn!("rabbitmq blocks publishing (a resource alarm); refusing a batch");
        return Err(ApiError::BrokerBlocked);
    }
    keep_inputs(state, &tasks).await?;
    let ids: Vec<TaskId> = tasks.iter().map(|_| TaskId::new()).collect();
    tracing::Span::current().record("task_id", tracing::field::display(&ids[0]));
    let key = idempotency.map(|i| IdempotencyKey::new(&state.store, i.scope, i.key, &fingerprint));
    if let Some(key) = &key {
        if let Some(tasks) = reserve(state, key, &ids).await? {
            return Ok(BatchCreated {
                tasks,
                replayed: true,
            });
        }
    }
    let statuses = match store_and_publish(state, &ids, &tasks, key.as_ref()).await {
        Ok(statuses) => statuses,
        Err(e) => {
            if let Some(key) = &key {
                forget(state, key, &ids[0]).await;
            }
            return Err(e);
        }
    };
    state.metrics.tasks_created.inc_by(ids.len() as u64);
    tracing::info!(task_id = %ids[0], tasks = ids.len(), "batch created");
    let tasks = ids
        .into_iter()
        .zip(statuses)
        .map(|(task_id, status)| TaskRef { task_id, status })
        .collect();
    Ok(BatchCreated {
        tasks,
        replayed: false,
    })
}

/// Every body through [`create::validate`], in order; the first error
/// carries its index.
fn validate_all(state: &AppState, batch: BatchRequest) -> Result<Vec<NewTask>, ApiError> {
    batch
        .tasks
        .into_iter()
        .enumerate()
        .map(|(i, request)| create::validate(state, request).map_err(|e| e.at_index(i)))
        .collect()
}

/// Each task's input blobs kept alive (400 with the index of a task naming a
/// missing blob).
async fn keep_inputs(state: &AppState, tasks: &[NewTask]) -> Result<(), ApiError> {
    for (i, task) in tasks.iter().enumerate() {
        if let Some(algorithm) = native::algorithm(&task.algorithm) {
            blobs::keep_inputs(state, algorithm, &task.input)
                .await
                .map_err(|e| match e {
                    e @ ApiError::Invalid { .. } => e.at_index(i),
                    e => e,
                })?;
        }
    }
    Ok(())
}

/// Reserves `key` for the batch (keeping its ids), or answers with the
/// tasks of the batch that holds it.
async fn reserve(
    state: &AppState,
    key: &IdempotencyKey,
    ids: &[TaskId],
) -> Result<Option<Vec<TaskRef>>, ApiError> {
    let Some(first) = create::reserve(state, key, &ids[0]).await? else {
        // Ours. The ids go in before any task is stored: whoever sees the
        // first task finds them.
        let ttl = reservation_secs(state.result_ttl);
        if let Err(e) = state.store.put_batch_ids(ids, ttl).await {
            create::release(state, key, ids[0]).await;
            return Err(e.into());
        }
        return Ok(None);
    };
    replay(state, &first.task_id).await.map(Some)
}

/// The tasks of the stored batch whose first task is `first`, with their
/// current statuses, once all are stored (bounded wait).
async fn replay(state: &AppState, first: &TaskId) -> Result<Vec<TaskRef>, ApiError> {
    let Some(ids) = state.store.batch_ids(first).await? else {
        return Err(ApiError::Unexpected(anyhow::anyhow!(
            "the Idempotency-Key names batch {first}, whose ids are gone"
        )));
    };
    for _ in 0..100 {
        let statuses = state.store.statuses(&ids).await?;
        let refs: Option<Vec<TaskRef>> = ids
            .iter()
            .zip(statuses)
            .map(|(id, status)| {
                status.map(|status| TaskRef {
                    task_id: *id,
                    status,
                })
            })
            .collect();
        if let Some(refs) = refs {
            return Ok(refs);
        }
        // The first task is stored, some others not yet.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(ApiError::Unavailable(anyhow::anyhow!(
        "the first request with this Idempotency-Key is still storing its batch"
    )))
}

/// Stores every task, keeps the key, publishes every message of a task that
/// runs now (confirmed) and lists them; discards them all when a step before
/// the listing fails. Tasks due later (`run_at`/`delay_ms` in the future)
/// are stored SCHEDULED first, one by one (concurrently), as a single
/// create stores them; the due sweep publishes them. Answers each task's status.
async fn store_and_publish(
    state: &AppState,
    ids: &[TaskId],
    tasks: &[NewTask],
    key: Option<&IdempotencyKey>,
) -> Result<Vec<TaskStatus>, ApiError> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let due: Vec<Option<i64>> = tasks.iter().map(|t| create::due_later(t, now_ms)).collect();
    if let Err(e) = store_scheduled(state, ids, tasks, &due).await {
        discard(state, ids, "a delayed task could not be stored").await;
        return Err(e);
    }
    let pairs: Vec<(TaskId, &NewTask)> = ids
        .iter()
        .copied()
        .zip(tasks)
        .zip(&due)
        .filter(|(_, due)| due.is_none())
        .map(|(pair, _)| pair)
        .collect();
    let stored = match state.store.create_many(&pairs).await {
        Ok(stored) => stored,
        Err(e) => {
            discard(state, ids, "it could not be stored whole").await;
            return Err(e.into());
        }
    };
    if let Some(key) = key {
        let ttl = state.result_ttl.as_secs();
        let kept = async {
            state.store.keep_batch_ids(&ids[0], ttl).await?;
            state.store.keep_idempotency_key(key, &ids[0], ttl).await
        };
        if let Err(e) = kept.await {
            discard(state, ids, "its key could not be kept").await;
            return Err(e.into());
        }
    }
    let statuses = due
        .iter()
        .map(|due| match due {
            Some(_) => TaskStatus::Scheduled,
            None => TaskStatus::Queued,
        })
        .collect();
    if pairs.is_empty() {
        return Ok(statuses);
    }
    let messages: Vec<(TaskMessage, &str)> = pairs
        .iter()
        .map(|(id, task)| (TaskMessage::new(*id, task), task.queue.as_str()))
        .collect();
    let publish = tracing::info_span!("publish_batch", task_id = %ids[0], tasks = ids.len());
    if let Err(e) = state
        .publisher
        .publish_tasks(&messages)
        .instrument(publish)
        .await
    {
        tracing::error!(task_id = %ids[0], tasks = ids.len(), error = %e, "batch publish failed; discarding its tasks");
        discard(state, ids, "it could not be published whole").await;
        return Err(match e {
            PublishError::Blocked => ApiError::BrokerBlocked,
            e => ApiError::Unavailable(e.into()),
        });
    }
    if let Err(e) = state.store.mark_published_many(&stored).await {
        // As for a single create: whole and published, not all listed yet;
        // the outbox sweep lists them once Redis takes writes.
        tracing::warn!(task_id = %ids[0], tasks = ids.len(), error = %e, "a published batch is not listed yet; the outbox sweep lists it");
    }
    Ok(statuses)
}

/// Stores the batch's tasks that are due later (`due[i]` set) SCHEDULED,
/// each with its due-index entry and listed, concurrently.
async fn store_scheduled(
    state: &AppState,
    ids: &[TaskId],
    tasks: &[NewTask],
    due: &[Option<i64>],
) -> Result<(), ApiError> {
    let stores = ids
        .iter()
        .zip(tasks)
        .zip(due)
        .filter_map(|((id, task), due)| due.map(|ms| (id, task, ms)))
        .map(|(id, task, due_ms)| async move {
            let outcome = state.store.create_scheduled(id, task, due_ms).await?;
            if outcome.code != Code::Ok {
                return Err(ApiError::Unexpected(anyhow::anyhow!(
                    "a fresh task id {id} answered {:?}",
                    outcome.code
                )));
            }
            Ok::<(), ApiError>(())
        });
    futures_util::future::try_join_all(stores).await?;
    Ok(())
}

async fn discard(state: &AppState, ids: &[TaskId], why: &str) {
    if let Err(e) = state.store.discard_many(ids).await {
        tracing::error!(task_id = %ids[0], tasks = ids.len(), error = %e,
            "could not discard a batch whose create failed ({why}); the outbox sweep publishes what is left");
    }
}

async fn forget(state: &AppState, key: &IdempotencyKey, first: &TaskId) {
    if let Err(e) = state.store.drop_batch_ids(first).await {
        tracing::error!(task_id = %first, error = %e, "could not drop a failed batch's ids");
    }
    create::release(state, key, *first).await;
}
