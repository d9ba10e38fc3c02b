//! `pi`: a CPU-bound Monte Carlo estimate of π (C: `c/pi.c`).

use serde_json::{json, Value};

use crate::ffi;
use crate::job::{JobOutput, JobSpec, Stages};
use crate::registry::{integer, object, only_fields, present, Algorithm, InputError};
use crate::stage::{call, NativeError, StageCall, StageOutcome};

pub(crate) const ALGORITHM: Algorithm = Algorithm {
    name: "pi",
    description: "Monte Carlo estimate of pi; the samples are split evenly over the stages.",
    default_stages: 10,
    cpu_bound: true,
    schema,
    validate,
    blobs: |_| Vec::new(),
    prepare,
};

/// Largest `samples`.
pub(crate) const MAX_SAMPLES: u64 = 100_000_000_000;

fn schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "samples": {"type": "integer", "minimum": 1, "maximum": MAX_SAMPLES},
            "seed": {
                "type": ["integer", "null"], "minimum": 0, "maximum": u64::MAX,
                "description": "PRNG seed (default 0): the same seed and stages give the same result."
            }
        },
        "required": ["samples"],
        "additionalProperties": false
    })
}

fn validate(input: &Value) -> Result<(), InputError> {
    parse(input).map(|_| ())
}

pub(crate) fn parse(input: &Value) -> Result<ffi::PiInput, InputError> {
    let o = object(input, "input")?;
    only_fields(o, "input", &["samples", "seed"])?;
    let samples =
        present(o, "samples").ok_or_else(|| InputError::new("input.samples", "is required"))?;
    let samples = integer(samples, "input.samples", 1, MAX_SAMPLES)?;
    let seed = match present(o, "seed") {
        Some(s) => integer(s, "input.seed", 0, u64::MAX)?,
        None => 0,
    };
    Ok(ffi::PiInput { samples, seed })
}

fn prepare(spec: &JobSpec<'_>) -> Result<Box<dyn Stages>, NativeError> {
    let input = parse(spec.input).map_err(|e| NativeError::Fatal(format!("invalid input: {e}")))?;
    Ok(Box::new(PiJob {
        input,
        done: 0,
        total: ffi::PiOutput::default(),
    }))
}

/// The `pi` job's state: the counts of stages `0..done`, combined.
#[derive(Debug)]
struct PiJob {
    input: ffi::PiInput,
    done: u32,
    total: ffi::PiOutput,
}

impl Stages for PiJob {
    /// Runs stages `done..=args.stage` (the earlier ones only when this job
    /// lacks them, e.g. after a resume without checkpoint).
    fn run(&mut self, stages: u32, args: &StageCall<'_>) -> Result<StageOutcome, NativeError> {
        if args.stage < self.done {
            return Err(NativeError::InvalidArgument);
        }
        while self.done <= args.stage {
            let one = StageCall {
                stage: self.done,
                ..*args
            };
            let mut total = self.total;
            #[allow(unsafe_code)]
            // SAFETY: `algo_pi_stage` takes a `PiInput` (no inner pointers)
            // and a `PiOutput` accumulator.
            let outcome =
                unsafe { call(ffi::algo_pi_stage, stages, &self.input, &mut total, &one) }?;
            if outcome == StageOutcome::Interrupted {
                return Ok(outcome);
            }
            self.total = total;
            self.done += 1;
        }
        Ok(StageOutcome::Completed)
    }

    fn checkpoint(&self) -> Option<Value> {
        Some(json!({"stage": self.done, "hits": self.total.hits, "samples": self.total.samples}))
    }

    fn restore(&mut self, checkpoint: &Value, stages: u32) -> Result<(), NativeError> {
        let field = |name: &str| checkpoint.get(name).and_then(Value::as_u64);
        let bad = || NativeError::Fatal(format!("pi: unusable checkpoint {checkpoint}"));
        let (Some(stage), Some(hits), Some(samples)) =
            (field("stage"), field("hits"), field("samples"))
        else {
            return Err(bad());
        };
        let stage = u32::try_from(stage).map_err(|_| bad())?;
        if stage > stages || hits > samples {
            return Err(bad());
        }
        self.done = stage;
        self.total = ffi::PiOutput { hits, samples };
        Ok(())
    }

    fn finish(&self, stages: u32) -> Result<JobOutput, NativeError> {
        if self.done != stages {
            return Err(NativeError::InvalidArgument);
        }
        // u64 -> f64 loses nothing that matters below 2^53 samples.
        #[allow(clippy::cast_precision_loss)]
        let pi = 4.0 * self.total.hits as f64 / self.total.samples as f64;
        Ok(JobOutput {
            result: json!({"pi": pi, "samples": self.total.samples}),
            blob: None,
        })
    }
}
