//! `sum`: 1 + 2 + … + n, the worked example of `docs/ALGORITHMS.md`
//! (C: `c/sum.c`). It is built and tested like every algorithm but kept out
//! of the public catalogue: [`crate::example_sum`] hands it out.

use serde_json::{json, Value};

use crate::ffi;
use crate::job::{JobOutput, JobSpec, Stages};
use crate::registry::{integer, object, only_fields, present, Algorithm, InputError};
use crate::stage::{call, NativeError, StageCall, StageOutcome};

pub(crate) const ALGORITHM: Algorithm = Algorithm {
    name: "sum",
    description: "The sum 1 + 2 + ... + n, split evenly over the stages.",
    default_stages: 10,
    cpu_bound: true,
    schema,
    validate,
    blobs: |_| Vec::new(),
    prepare,
};

/// Largest `n` (the sum stays below 2^64).
const MAX_N: u64 = 4_000_000_000;

fn schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": MAX_N}},
        "required": ["n"],
        "additionalProperties": false
    })
}

fn validate(input: &Value) -> Result<(), InputError> {
    parse(input).map(|_| ())
}

fn parse(input: &Value) -> Result<ffi::SumInput, InputError> {
    let o = object(input, "input")?;
    only_fields(o, "input", &["n"])?;
    let n = present(o, "n").ok_or_else(|| InputError::new("input.n", "is required"))?;
    Ok(ffi::SumInput {
        n: integer(n, "input.n", 1, MAX_N)?,
    })
}

fn prepare(spec: &JobSpec<'_>) -> Result<Box<dyn Stages>, NativeError> {
    let input = parse(spec.input).map_err(|e| NativeError::Fatal(format!("invalid input: {e}")))?;
    Ok(Box::new(SumJob {
        input,
        done: 0,
        total: ffi::SumOutput::default(),
    }))
}

/// The job's state: the partial sums of stages `0..done`, added up.
#[derive(Debug)]
struct SumJob {
    input: ffi::SumInput,
    done: u32,
    total: ffi::SumOutput,
}

impl Stages for SumJob {
    fn run(&mut self, stages: u32, args: &StageCall<'_>) -> Result<StageOutcome, NativeError> {
        // A fresh job asked for stage k first runs the stages it lacks.
        while self.done <= args.stage {
            let one = StageCall {
                stage: self.done,
                ..*args
            };
            let mut total = self.total;
            #[allow(unsafe_code)]
            // SAFETY: `algo_sum_stage` takes a `SumInput` (no pointers) and a
            // `SumOutput` accumulator.
            let outcome =
                unsafe { call(ffi::algo_sum_stage, stages, &self.input, &mut total, &one) }?;
            if outcome == StageOutcome::Interrupted {
                return Ok(outcome);
            }
            self.total = total;
            self.done += 1;
        }
        Ok(StageOutcome::Completed)
    }

    fn finish(&self, stages: u32) -> Result<JobOutput, NativeError> {
        if self.done != stages {
            return Err(NativeError::InvalidArgument);
        }
        Ok(JobOutput {
            result: json!({"sum": self.total.sum, "n": self.total.count}),
            blob: None,
        })
    }
}
