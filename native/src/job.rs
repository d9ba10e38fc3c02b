//! [`Job`]: one task's run of an algorithm, stage by stage.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use serde_json::Value;

use crate::registry::Algorithm;
use crate::stage::{NativeError, StageCall, StageOutcome};

/// What [`Job::new`] needs besides the algorithm.
#[derive(Debug, Clone, Copy)]
pub struct JobSpec<'a> {
    /// The task's `input` (`Value::Null` when absent).
    pub input: &'a Value,
    /// The task's `stages` (≥ 1).
    pub stages: u32,
    /// The task's `stage_ms` (only `hello` uses it).
    pub stage_ms: u64,
    /// The bytes of every blob [`Algorithm::input_blobs`] named, by id.
    pub blobs: &'a HashMap<String, Vec<u8>>,
}

/// A blob the worker stores before reporting the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputBlob {
    /// The `result` field that gets the new blob's id (`grayscale`: `image`).
    pub field: &'static str,
    /// Its content type (`image/png`).
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A finished job's `result`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutput {
    /// The task's `result`, without the ids of `blob`'s field.
    pub result: Value,
    /// A blob to store; put its id into `result[blob.field]`.
    pub blob: Option<OutputBlob>,
}

/// The state of one algorithm's job; each algorithm module implements it and
/// registers a `prepare` function building it in its [`Algorithm`].
pub(crate) trait Stages: Send + std::fmt::Debug {
    /// Runs stage `call.stage` (< `stages`, checked by [`Job::run_stage`]).
    fn run(&mut self, stages: u32, call: &StageCall<'_>) -> Result<StageOutcome, NativeError>;
    /// [`Stages::run`] with a time limit on what the stage writes (see
    /// [`Job::run_stage_until`]); algorithms that write nothing outside their
    /// job's state ignore it.
    fn run_until(
        &mut self,
        stages: u32,
        call: &StageCall<'_>,
        _valid_until: &AtomicU64,
    ) -> Result<StageOutcome, NativeError> {
        self.run(stages, call)
    }
    /// See [`Job::checkpoint`].
    fn checkpoint(&self) -> Option<Value> {
        None
    }
    /// See [`Job::restore`].
    fn restore(&mut self, _checkpoint: &Value, _stages: u32) -> Result<(), NativeError> {
        Ok(())
    }
    /// See [`Job::finish`].
    fn finish(&self, stages: u32) -> Result<JobOutput, NativeError>;
}

/// One task's run of an algorithm: its parsed input and the state its stages
/// build up. See the crate docs for the protocol.
#[derive(Debug)]
pub struct Job {
    stages: u32,
    state: Box<dyn Stages>,
}

impl Job {
    /// Prepares `algorithm` for a task: validates the input, and decodes its
    /// blobs (`grayscale`: the image).
    ///
    /// # Errors
    ///
    /// [`NativeError::Fatal`] for an input the algorithm rejects (the
    /// message names the field), a missing blob, or a blob that is not what
    /// the algorithm needs (e.g. not a PNG or JPEG image);
    /// [`NativeError::InvalidArgument`] for `stages == 0`.
    pub fn new(algorithm: &Algorithm, spec: JobSpec<'_>) -> Result<Self, NativeError> {
        if spec.stages == 0 {
            return Err(NativeError::InvalidArgument);
        }
        algorithm
            .validate(spec.input)
            .map_err(|e| NativeError::Fatal(format!("invalid input: {e}")))?;
        Ok(Self {
            stages: spec.stages,
            state: (algorithm.prepare)(&spec)?,
        })
    }

    /// The task's stage count.
    pub fn stages(&self) -> u32 {
        self.stages
    }

    /// Runs stage `call.stage` (0-based) in C. Blocks the thread: call it
    /// from a blocking thread, never on an async runtime's.
    ///
    /// Stateful algorithms (`pi`, `grayscale`) first run, in the same call,
    /// any earlier stage whose contribution this job lacks (a resume at stage
    /// k on a fresh `Job` without [`Job::restore`]); `hello` has no state and
    /// never repeats a stage.
    ///
    /// # Errors
    ///
    /// [`NativeError::Retryable`] / [`NativeError::Fatal`] as the stage
    /// reports them (message = the task's `error`),
    /// [`NativeError::InvalidArgument`] for `call.stage >= stages()` or for
    /// running a completed `pi` stage again, [`NativeError::Io`] when `hello`
    /// could not write to stdout, [`NativeError::Unknown`] for a code this
    /// crate does not know. Never panics.
    pub fn run_stage(&mut self, call: &StageCall<'_>) -> Result<StageOutcome, NativeError> {
        if call.stage >= self.stages {
            return Err(NativeError::InvalidArgument);
        }
        self.state.run(self.stages, call)
    }

    /// [`Job::run_stage`] bound to a lease: `valid_until` holds a
    /// [`crate::monotonic_ms`] time (0: no limit), as for
    /// [`crate::run_stage_until`]. A `hello` stage that ends past it prints
    /// nothing and returns [`StageOutcome::Expired`]; the other algorithms
    /// write nothing outside the job and ignore it.
    ///
    /// # Errors
    ///
    /// As [`Job::run_stage`].
    pub fn run_stage_until(
        &mut self,
        call: &StageCall<'_>,
        valid_until: &AtomicU64,
    ) -> Result<StageOutcome, NativeError> {
        if call.stage >= self.stages {
            return Err(NativeError::InvalidArgument);
        }
        self.state.run_until(self.stages, call, valid_until)
    }

    /// State worth saving after a completed stage, so that a resume on
    /// another worker need not recompute earlier stages (`pi`:
    /// `{"stage", "hits", "samples"}`). `None` for algorithms that have none
    /// or recompute cheaply (`hello`, `grayscale`).
    pub fn checkpoint(&self) -> Option<Value> {
        self.state.checkpoint()
    }

    /// Restores a [`Job::checkpoint`] of an earlier run of the same task
    /// (same input and stages). Ignored by algorithms without checkpoints.
    ///
    /// # Errors
    ///
    /// [`NativeError::Fatal`] when the checkpoint is malformed.
    pub fn restore(&mut self, checkpoint: &Value) -> Result<(), NativeError> {
        self.state.restore(checkpoint, self.stages)
    }

    /// The task's `result`, once every stage has completed.
    ///
    /// # Errors
    ///
    /// [`NativeError::InvalidArgument`] when a stage is still missing from a
    /// stateful job; [`NativeError::Fatal`] when the output cannot be encoded.
    pub fn finish(&self) -> Result<JobOutput, NativeError> {
        self.state.finish(self.stages)
    }
}
