//! `WORKER_ISOLATION`: where a task's stages run.
//!
//! - `thread` (the default): the [`native::Job`] lives in the worker and
//!   each stage runs on a blocking thread ([`super::ffi`]). Cheapest; a crash
//!   in C (SIGSEGV, `abort()`) takes the whole worker down, and its tasks
//!   come back by takeover.
//! - `process`: each task *attempt* gets a helper process, this very binary
//!   run again as `algo-service --stage-helper` (`/proc/self/exe`, so a
//!   rebuilt file on disk cannot mismatch the protocol). The job is built,
//!   its stages run and its result is made there (`child.rs`); the worker
//!   (`parent.rs`, `Helper`) keeps everything else as under `thread`: blobs in
//!   and out through the api, CPU slots, the lease and its reporting,
//!   progress callbacks. A helper that dies (a signal, or an exit without
//!   an answer) ends only that attempt, with the retryable error
//!   `algorithm_crashed: <signal>` (`SIGABRT` for `hello`'s `crash`
//!   input), through the same path as a stage's own retryable error; the
//!   worker and its other tasks run on.
//!
//! The protocol (`wire.rs`) is one JSON object a line: commands on the
//! helper's stdin (`init` with the algorithm, input, stages and the input
//! blobs in base64; `stage` k; `finish`; and at any time `cancel` and
//! `valid_until`), events on its stderr (`ready`, `progress`, `stage` with
//! the outcome, `output` with the result and its blob, `error`). The helper's
//! stdout *is* the worker's (inherited), so `hello world` lines reach it
//! directly, one `write(2)` each, bound to the lease as under `thread`: the
//! lease's time is [`native::monotonic_ms`], the system's monotonic clock,
//! the same in both processes, and renewals are forwarded. Anything else the
//! helper writes to stderr (a Rust panic message, C's own diagnostics) is
//! logged by the worker under the task's span.
//!
//! Stopping: the worker looks at the task's flag every 20 ms while a stage
//! runs and sends `cancel` when it is raised (a cancel, the deadline, a
//! lost lease, the end of the shutdown grace), so the C routine sees its
//! flag within ~20 ms more than under `thread`; a helper that has not ended
//! the stage 2 s later is killed and the stage counts as interrupted. A
//! helper whose stdin closes (the worker ended, even by SIGKILL) raises its
//! own flag and exits. Helpers run in their own process group, so a
//! terminal's Ctrl-C reaches the worker (which drains) and not them.
//!
//! Costs (docs/REFERENCE.md has the measured figures): one process start
//! and `init` per attempt, one pipe round trip per stage, the input and
//! output blobs copied through the pipe as base64. The worker must be the
//! `algo-service` binary itself (an in-process test worker cannot use
//! `process`: the test executable would be re-run as the helper).

mod child;
mod parent;
mod wire;

use std::{
    collections::HashMap,
    sync::{atomic::AtomicI32, Arc},
};

use native::{JobOutput, JobSpec, NativeError, StageOutcome};
use tokio::time::Instant;

pub use self::{child::main as helper_main, wire::HELPER_ARG};
use super::{ffi, RunParams};
use crate::{config::Isolation, registry::StopFlag};

/// Whether this process was started as a stage helper (its first argument
/// is [`HELPER_ARG`]); `main` then runs [`helper_main`] and nothing else.
pub fn is_helper() -> bool {
    std::env::args_os().nth(1).is_some_and(|a| a == HELPER_ARG)
}

/// A task attempt's job, wherever its stages run.
#[derive(Debug)]
pub enum StageJob {
    /// In this process, a stage at a time on a blocking thread.
    Thread(native::Job),
    /// In a helper process.
    Process(Box<parent::Helper>),
}

/// A finished job's result, with its blob (owned, whichever side made it).
#[derive(Debug)]
pub struct Finished {
    /// The task's `result`, without the blob's id.
    pub result: serde_json::Value,
    /// A blob to store; its id goes into `result[blob.field]`.
    pub blob: Option<FinishedBlob>,
}

/// See [`Finished::blob`].
#[derive(Debug)]
pub struct FinishedBlob {
    /// The `result` field that gets the blob's id.
    pub field: String,
    /// Its content type.
    pub content_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl From<JobOutput> for Finished {
    fn from(out: JobOutput) -> Self {
        Self {
            result: out.result,
            blob: out.blob.map(|b| FinishedBlob {
                field: b.field.to_owned(),
                content_type: b.content_type.to_owned(),
                bytes: b.bytes,
            }),
        }
    }
}

/// Builds the job of `params` as `isolation` says: on a blocking thread
/// (`grayscale` decodes its image here), or in a new helper process.
///
/// # Errors
/// The algorithm's error (e.g. a blob that is not an image), a helper that
/// could not start or died, or a build thread that panicked.
pub async fn build(
    isolation: Isolation,
    algorithm: &'static native::Algorithm,
    params: &RunParams,
    blobs: HashMap<String, Vec<u8>>,
) -> Result<StageJob, String> {
    match isolation {
        Isolation::Process => parent::Helper::start(params, blobs)
            .await
            .map(|helper| StageJob::Process(Box::new(helper)))
            .map_err(|e| e.to_string()),
        Isolation::Thread => {
            let (input, stages, stage_ms) = (params.input.clone(), params.stages, params.stage_ms);
            let built = tokio::task::spawn_blocking(move || {
                native::Job::new(
                    algorithm,
                    JobSpec {
                        input: &input,
                        stages,
                        stage_ms,
                        blobs: &blobs,
                    },
                )
            })
            .await;
            match built {
                Ok(job) => job.map(StageJob::Thread).map_err(|e| e.to_string()),
                Err(e) => Err(format!("preparing the job crashed: {e}")),
            }
        }
    }
}

impl StageJob {
    /// One stage, raising `flag` when `deadline` passes meanwhile;
    /// `progress` gets the stage's per-mille progress. Gives the job back
    /// with the outcome.
    ///
    /// # Errors
    /// The stage thread panicked (the job is lost; `thread` only).
    pub async fn run_stage(
        self,
        args: ffi::StageArgs,
        flag: &StopFlag,
        deadline: Instant,
        valid_until: &ffi::ValidUntil,
        progress: Arc<AtomicI32>,
    ) -> Result<(Self, Result<StageOutcome, NativeError>), String> {
        match self {
            Self::Thread(job) => ffi::run_stage(job, args, flag, deadline, valid_until, progress)
                .await
                .map(|(job, outcome)| (Self::Thread(job), outcome)),
            Self::Process(mut helper) => {
                let outcome = helper
                    .run_stage(args, flag, deadline, valid_until, &progress)
                    .await;
                Ok((Self::Process(helper), outcome))
            }
        }
    }

    /// The finished job's result ([`native::Job::finish`]: `grayscale`
    /// encodes its PNG, so on a blocking thread or in the helper).
    ///
    /// # Errors
    /// The job's error, as the task's `error`.
    pub async fn finish(self) -> Result<Finished, String> {
        match self {
            Self::Thread(job) => tokio::task::spawn_blocking(move || job.finish())
                .await
                .map_err(|e| format!("finishing the job crashed: {e}"))?
                .map(Finished::from)
                .map_err(|e| e.to_string()),
            Self::Process(helper) => helper.finish().await.map_err(|e| e.to_string()),
        }
    }
}
