//! `hello`: each stage sleeps `stage_ms`, then prints `hello world` (C:
//! `c/hello.c`).

use std::sync::atomic::AtomicU64;

use serde_json::{json, Value};

use crate::ffi;
use crate::job::{JobOutput, JobSpec, Stages};
use crate::registry::{integer, object, only_fields, present, Algorithm, InputError};
use crate::stage::{call, NativeError, StageCall, StageOutcome};

pub(crate) const ALGORITHM: Algorithm = Algorithm {
    name: "hello",
    description: "Sleeps stage_ms per stage, then prints `hello world` to the worker's stdout.",
    default_stages: 10,
    cpu_bound: false,
    schema,
    validate,
    blobs: |_| Vec::new(),
    prepare,
};

const MODES: [&str; 3] = ["error", "fatal", "crash"];

fn schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "Any JSON value; only `fail`, a test input, changes what hello does.",
        "properties": {
            "fail": {
                "description": "Stage `at_stage` (1-based) fails in each of the task's first `attempts` attempts: `error` retryable, `fatal` not, `crash` aborts the worker (only with ALLOW_CRASH_INPUT=1, else a fatal `crash_disabled`).",
                "type": ["object", "null"],
                "properties": {
                    "at_stage": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "attempts": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1},
                    "mode": {"enum": MODES}
                },
                "required": ["at_stage", "mode"],
                "additionalProperties": false
            }
        }
    })
}

fn validate(input: &Value) -> Result<(), InputError> {
    parse(input, 0).map(|_| ())
}

/// The C input for `input`; `stage_ms` comes from the task.
pub(crate) fn parse(input: &Value, stage_ms: u64) -> Result<ffi::HelloInput, InputError> {
    let mut c = ffi::HelloInput {
        stage_ms,
        fail_mode: ffi::HELLO_FAIL_NONE,
        ..ffi::HelloInput::default()
    };
    let Some(fail) = input.as_object().and_then(|o| present(o, "fail")) else {
        return Ok(c);
    };
    let fail = object(fail, "input.fail")?;
    only_fields(fail, "input.fail", &["at_stage", "attempts", "mode"])?;
    let at_stage = present(fail, "at_stage")
        .ok_or_else(|| InputError::new("input.fail.at_stage", "is required"))?;
    c.fail_at_stage = to_u32(integer(at_stage, "input.fail.at_stage", 1, 1000)?);
    c.fail_attempts = match present(fail, "attempts") {
        Some(n) => to_u32(integer(n, "input.fail.attempts", 1, 100)?),
        None => 1,
    };
    let mode = present(fail, "mode").and_then(Value::as_str);
    c.fail_mode = match mode {
        Some("error") => ffi::HELLO_FAIL_ERROR,
        Some("fatal") => ffi::HELLO_FAIL_FATAL,
        Some("crash") => ffi::HELLO_FAIL_CRASH,
        _ => {
            return Err(InputError::new(
                "input.fail.mode",
                "must be one of: error, fatal, crash",
            ))
        }
    };
    Ok(c)
}

/// Ranges checked above are far below `u32::MAX`.
fn to_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn prepare(spec: &JobSpec<'_>) -> Result<Box<dyn Stages>, NativeError> {
    let input = parse(spec.input, spec.stage_ms)
        .map_err(|e| NativeError::Fatal(format!("invalid input: {e}")))?;
    Ok(Box::new(HelloJob(input)))
}

/// `hello` keeps no state: any stage may run at any time.
#[derive(Debug)]
struct HelloJob(ffi::HelloInput);

impl Stages for HelloJob {
    fn run(&mut self, stages: u32, call: &StageCall<'_>) -> Result<StageOutcome, NativeError> {
        run(&self.0, stages, call, None)
    }

    fn run_until(
        &mut self,
        stages: u32,
        call: &StageCall<'_>,
        valid_until: &AtomicU64,
    ) -> Result<StageOutcome, NativeError> {
        run(&self.0, stages, call, Some(valid_until))
    }

    fn finish(&self, stages: u32) -> Result<JobOutput, NativeError> {
        Ok(JobOutput {
            result: json!({"stages": stages, "output": "hello world"}),
            blob: None,
        })
    }
}

/// Runs one `hello` stage (`stage` of `stages`); with `valid_until`, a stage
/// that ends past that [`crate::monotonic_ms`] time (0: no limit) prints
/// nothing and returns [`StageOutcome::Expired`].
pub(crate) fn run(
    input: &ffi::HelloInput,
    stages: u32,
    args: &StageCall<'_>,
    valid_until: Option<&AtomicU64>,
) -> Result<StageOutcome, NativeError> {
    let input = ffi::HelloInput {
        valid_until_ms: valid_until.map_or(std::ptr::null(), |v| v.as_ptr().cast_const()),
        ..*input
    };
    let mut no_output: [u8; 0] = [];
    #[allow(unsafe_code)]
    // SAFETY: `algo_hello_stage` takes a `HelloInput` and no output (size 0).
    // Its one pointer, `valid_until_ms`, is NULL or comes from the live
    // `&AtomicU64` above, which outlives the call, has the layout of a C
    // `uint64_t`, and which C only reads with an atomic load.
    unsafe {
        call(
            ffi::algo_hello_stage,
            stages,
            &input,
            &mut no_output[..],
            args,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_input_maps_onto_the_c_struct() {
        let c = parse(&json!({"fail": {"at_stage": 3, "mode": "crash"}}), 25).unwrap();
        assert_eq!(
            c,
            ffi::HelloInput {
                stage_ms: 25,
                fail_at_stage: 3,
                fail_attempts: 1,
                fail_mode: ffi::HELLO_FAIL_CRASH,
                reserved: 0,
                valid_until_ms: std::ptr::null(),
            }
        );
        let c = parse(
            &json!({"fail": {"at_stage": 1, "attempts": 4, "mode": "error"}}),
            0,
        )
        .unwrap();
        assert_eq!((c.fail_attempts, c.fail_mode), (4, ffi::HELLO_FAIL_ERROR));
        assert_eq!(
            parse(&json!([1, 2]), 7).unwrap().fail_mode,
            ffi::HELLO_FAIL_NONE
        );
    }
}
