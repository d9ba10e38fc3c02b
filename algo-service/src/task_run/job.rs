//! The task's [`native::Job`]: built from the run parameters and the input
//! blobs (fetched through the api), its CPU slots, and its output (the result,
//! with any output blob stored through the api first).
//!
//! Errors are the task's `error` text (`Err(Some(..))`), or `Err(None)` when
//! the worker is stopping and the task goes back to the queue (the flag is
//! raised with `Shutdown`).

use std::collections::HashMap;

use tokio::{sync::OwnedSemaphorePermit, time::Instant};

use super::{
    isolation::{self, Finished, StageJob},
    RunParams,
};
use crate::{
    blobs::{self, BlobError},
    context::HandlerContext,
    registry::{StopFlag, StopReason},
};

/// A job ready for its stages.
#[derive(Debug)]
pub struct Prepared {
    /// The job, in this process or in its helper.
    pub job: StageJob,
    /// Whether its stages take a CPU slot.
    pub cpu_bound: bool,
}

fn blob_error(flag: &StopFlag, e: BlobError) -> Option<String> {
    match e {
        BlobError::Permanent(message) => Some(message),
        BlobError::Abandoned => {
            flag.raise(StopReason::Shutdown);
            None
        }
    }
}

/// Fetches the input blobs and builds the job (on a blocking thread, or in
/// a helper process under `WORKER_ISOLATION=process`: `grayscale` decodes
/// its image here).
///
/// # Errors
/// An unknown algorithm, a missing blob, an input the algorithm cannot use
/// (e.g. a blob that is not an image), a helper that died
/// (`algorithm_crashed: …`): the task's `error`.
pub async fn prepare(
    ctx: &HandlerContext,
    params: &RunParams,
    flag: &StopFlag,
) -> Result<Prepared, Option<String>> {
    let Some(algorithm) = native::algorithm(&params.algorithm) else {
        return Err(Some(format!("unknown algorithm {:?}", params.algorithm)));
    };
    let mut blobs = HashMap::new();
    for id in algorithm.input_blobs(&params.input) {
        let bytes = blobs::fetch(&ctx.api, &id, &ctx.abandon)
            .await
            .map_err(|e| blob_error(flag, e))?;
        tracing::debug!(blob_id = %id, size = bytes.len(), "input blob fetched");
        blobs.insert(id, bytes);
    }
    match isolation::build(ctx.isolation, algorithm, params, blobs).await {
        Ok(job) => Ok(Prepared {
            job,
            cpu_bound: algorithm.cpu_bound,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "the job could not be prepared");
            Err(Some(e))
        }
    }
}

/// One of the worker's CPU slots, waited for while watching the flag and the
/// deadline; `None` when the task is to stop meanwhile.
pub async fn cpu_slot(
    ctx: &HandlerContext,
    flag: &StopFlag,
    deadline: Instant,
) -> Option<OwnedSemaphorePermit> {
    let acquire = std::sync::Arc::clone(&ctx.cpu_slots).acquire_owned();
    tokio::pin!(acquire);
    loop {
        tokio::select! {
            permit = &mut acquire => return permit.ok(),
            () = tokio::time::sleep(std::time::Duration::from_millis(20)) => {
                if Instant::now() >= deadline {
                    flag.raise(StopReason::Deadline);
                }
                if flag.reason().is_some() {
                    return None;
                }
            }
        }
    }
}

/// Microseconds since the Unix epoch, for the stage start/end log lines.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The finished job's `result`, its output blob stored first (PNG encoding
/// on a blocking thread, or in the helper).
///
/// # Errors
/// The output could not be built or stored: the task's `error`.
pub async fn output(
    ctx: &HandlerContext,
    job: StageJob,
    flag: &StopFlag,
) -> Result<serde_json::Value, Option<String>> {
    let Finished { mut result, blob } = job.finish().await.map_err(Some)?;
    if let Some(blob) = blob {
        let size = blob.bytes.len();
        let id = blobs::store(&ctx.api, blob.bytes, &blob.content_type, &ctx.abandon)
            .await
            .map_err(|e| blob_error(flag, e))?;
        tracing::info!(blob_id = %id, size, "output blob stored");
        result[blob.field.as_str()] = serde_json::Value::String(id);
    }
    Ok(result)
}
