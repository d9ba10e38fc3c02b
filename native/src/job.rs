//! [`Job`]: one task's run of an algorithm, stage by stage.

use std::collections::HashMap;

use serde_json::Value;

use crate::ffi;
use crate::grayscale::GrayscaleJob;
use crate::pi::PiJob;
use crate::registry::Algorithm;
use crate::stage::{NativeError, StageCall, StageOutcome};
use crate::{grayscale, hello, pi};

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

#[derive(Debug)]
enum Kind {
    Hello(ffi::HelloInput),
    Pi(PiJob),
    Grayscale(GrayscaleJob),
}

/// One task's run of an algorithm: its parsed input and the state its stages
/// build up. See the crate docs for the protocol.
#[derive(Debug)]
pub struct Job {
    stages: u32,
    kind: Kind,
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
        let invalid = |e: crate::InputError| NativeError::Fatal(format!("invalid input: {e}"));
        let kind = match algorithm.name {
            "hello" => Kind::Hello(hello::parse(spec.input, spec.stage_ms).map_err(invalid)?),
            "pi" => Kind::Pi(PiJob::new(pi::parse(spec.input).map_err(invalid)?)),
            "grayscale" => {
                let id = grayscale::parse(spec.input).map_err(invalid)?;
                let bytes = spec.blobs.get(id).ok_or_else(|| {
                    NativeError::Fatal(format!("input.image: blob {id} was not provided"))
                })?;
                Kind::Grayscale(GrayscaleJob::decode(bytes)?)
            }
            other => return Err(NativeError::Fatal(format!("unknown algorithm {other}"))),
        };
        Ok(Self {
            stages: spec.stages,
            kind,
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
        match &mut self.kind {
            Kind::Hello(input) => hello::run(input, self.stages, call),
            Kind::Pi(job) => job.run(self.stages, call),
            Kind::Grayscale(job) => job.run(self.stages, call),
        }
    }

    /// State worth saving after a completed stage, so that a resume on
    /// another worker need not recompute earlier stages (`pi`:
    /// `{"stage", "hits", "samples"}`). `None` for algorithms that have none
    /// or recompute cheaply (`hello`, `grayscale`).
    pub fn checkpoint(&self) -> Option<Value> {
        match &self.kind {
            Kind::Pi(job) => Some(job.checkpoint()),
            Kind::Hello(_) | Kind::Grayscale(_) => None,
        }
    }

    /// Restores a [`Job::checkpoint`] of an earlier run of the same task
    /// (same input and stages). Ignored by algorithms without checkpoints.
    ///
    /// # Errors
    ///
    /// [`NativeError::Fatal`] when the checkpoint is malformed.
    pub fn restore(&mut self, checkpoint: &Value) -> Result<(), NativeError> {
        match &mut self.kind {
            Kind::Pi(job) => job.restore(checkpoint, self.stages),
            Kind::Hello(_) | Kind::Grayscale(_) => Ok(()),
        }
    }

    /// The task's `result`, once every stage has completed.
    ///
    /// # Errors
    ///
    /// [`NativeError::InvalidArgument`] when a stage is still missing from a
    /// stateful job; [`NativeError::Fatal`] when the output cannot be encoded.
    pub fn finish(&self) -> Result<JobOutput, NativeError> {
        match &self.kind {
            Kind::Hello(_) => Ok(JobOutput {
                result: hello::result(self.stages),
                blob: None,
            }),
            Kind::Pi(job) if job.done == self.stages => Ok(JobOutput {
                result: job.result(),
                blob: None,
            }),
            Kind::Grayscale(job) if job.done() == self.stages => {
                let (width, height) = job.dimensions();
                Ok(JobOutput {
                    result: serde_json::json!({"width": width, "height": height}),
                    blob: Some(OutputBlob {
                        field: "image",
                        content_type: "image/png",
                        bytes: job.encode()?,
                    }),
                })
            }
            Kind::Pi(_) | Kind::Grayscale(_) => Err(NativeError::InvalidArgument),
        }
    }

    /// `grayscale`: the luma buffer so far (width × height bytes, row by
    /// row); `None` for other algorithms.
    pub fn gray_pixels(&self) -> Option<&[u8]> {
        match &self.kind {
            Kind::Grayscale(job) => Some(job.gray()),
            Kind::Hello(_) | Kind::Pi(_) => None,
        }
    }
}
