//! The worked example of `docs/ALGORITHMS.md` runs like a registered
//! algorithm: validation, stages, progress, cancel, result.

use std::collections::HashMap;
use std::sync::atomic::AtomicI32;

use native::{Job, JobSpec, NativeError, StageCall, StageOutcome};
use serde_json::json;

fn run(n: u64, stages: u32) -> Result<serde_json::Value, NativeError> {
    let input = json!({ "n": n });
    let blobs = HashMap::new();
    let spec = JobSpec {
        input: &input,
        stages,
        stage_ms: 0,
        blobs: &blobs,
    };
    let mut job = Job::new(native::example_sum(), spec)?;
    let (cancel, progress) = (AtomicI32::new(0), AtomicI32::new(0));
    for stage in 0..stages {
        let call = StageCall {
            stage,
            attempt: 1,
            cancel: &cancel,
            progress: &progress,
            allow_crash: false,
        };
        assert_eq!(job.run_stage(&call)?, StageOutcome::Completed);
        assert_eq!(progress.load(std::sync::atomic::Ordering::Relaxed), 1000);
    }
    Ok(job.finish()?.result)
}

#[test]
fn sum_adds_one_to_n_whatever_the_stages() {
    for (n, stages) in [(1, 1), (10, 3), (1_000_000, 7), (5, 10), (4_000_000_000, 4)] {
        let result = run(n, stages).unwrap();
        assert_eq!(
            result,
            json!({"sum": n * (n + 1) / 2, "n": n}),
            "n={n} stages={stages}"
        );
    }
}

#[test]
fn sum_validates_names_the_field_and_is_not_in_the_catalogue() {
    let sum = native::example_sum();
    assert_eq!(sum.name, "sum");
    assert!(sum.cpu_bound);
    assert_eq!(sum.describe()["input_schema"]["required"], json!(["n"]));
    assert_eq!(sum.validate(&json!({"n": 0})).unwrap_err().field, "input.n");
    assert_eq!(sum.validate(&json!({"m": 1})).unwrap_err().field, "input.m");
    assert_eq!(sum.validate(&json!(null)).unwrap_err().field, "input");
    assert!(native::algorithm("sum").is_none());
}

#[test]
fn a_raised_flag_interrupts_sum_and_leaves_the_total_as_it_was() {
    let input = json!({"n": 4_000_000_000u64});
    let blobs = HashMap::new();
    let spec = JobSpec {
        input: &input,
        stages: 1,
        stage_ms: 0,
        blobs: &blobs,
    };
    let mut job = Job::new(native::example_sum(), spec).unwrap();
    let (cancel, progress) = (AtomicI32::new(1), AtomicI32::new(0));
    let call = StageCall {
        stage: 0,
        attempt: 1,
        cancel: &cancel,
        progress: &progress,
        allow_crash: false,
    };
    assert_eq!(job.run_stage(&call).unwrap(), StageOutcome::Interrupted);
    assert_eq!(
        job.finish(),
        Err(NativeError::InvalidArgument),
        "nothing was added"
    );
}
