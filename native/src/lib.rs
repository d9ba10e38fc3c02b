//! The catalogue of native algorithms: C kernels behind one stage interface,
//! and the safe Rust API the worker (and the api's validation) use.
//!
//! # The catalogue
//!
//! [`algorithms()`] lists every [`Algorithm`] (`hello`, `grayscale`, `pi`);
//! [`algorithm(name)`](algorithm) finds one; [`catalogue()`] is the whole
//! `GET /algorithms` body. A descriptor has the
//! `GET /algorithms` fields ([`Algorithm::describe`] builds the entry:
//! `name`, `description`, `input_schema`, `default_stages`, `cpu_bound`) and
//! [`Algorithm::validate`], which checks a task's `input` (`Value::Null` when
//! absent) and names the offending field, dotted, in [`InputError::field`]
//! (`input.samples`), for the api's 400 `invalid_input`.
//!
//! | algorithm   | input | result | cpu_bound |
//! |-------------|-------|--------|-----------|
//! | `hello`     | any JSON; `{"fail": {"at_stage", "attempts", "mode"}}` injects failures | `{"stages", "output": "hello world"}` | no |
//! | `grayscale` | `{"image": "<blob id>"}` (PNG or JPEG) | `{"image": "<blob id of a PNG>", "width", "height"}` | yes |
//! | `pi`        | `{"samples": 1..=10^11, "seed": u64 (default 0)}` | `{"pi", "samples"}` | yes |
//!
//! # Running a task: the worker's protocol
//!
//! ```text
//! let alg = native::algorithm(&task.algorithm)?;
//! let blobs = fetch every id in alg.input_blobs(&task.input);   // HashMap<id, bytes>
//! let mut job = native::Job::new(alg, JobSpec { input, stages, stage_ms, blobs: &blobs })?;
//! if let Some(saved) = checkpoint stored with the task { job.restore(&saved)?; }
//! for stage in recorded_stage..stages {                     // on a blocking thread
//!     match job.run_stage(&StageCall { stage, attempt, cancel, progress, allow_crash })? {
//!         Completed   => report progress stage + 1 (and store job.checkpoint(), if any),
//!         Interrupted => cancelled / timed out / shutting down: stop,
//!     }
//! }
//! let JobOutput { mut result, blob } = job.finish()?;
//! if let Some(b) = blob { result[b.field] = store b.bytes as a blob (b.content_type) }
//! ```
//!
//! - **Errors** are [`NativeError`]s: [`NativeError::is_retryable`] splits
//!   them into retryable (another attempt, after backoff) and fatal (FAILED);
//!   the `Display` text is the task's `error` (`hello`'s disabled crash is
//!   exactly `crash_disabled`). [`Job::new`] fails fatally on an input the
//!   algorithm cannot use, e.g. `grayscale` on a blob that is not an image.
//! - **What the worker keeps between stages** is the [`Job`] itself (it is
//!   `Send`: move it into each `spawn_blocking`, or keep it on one thread).
//!   `grayscale`'s job holds the decoded RGB image and the partly converted
//!   luma buffer; `pi`'s the hit and sample counts of its completed stages.
//! - **Resuming at stage k** (a retry, or a takeover on another worker) needs
//!   nothing but the task: a fresh `Job` asked to run stage k first runs any
//!   earlier stage it lacks, in the same call (cancellable). That costs
//!   little for `grayscale` (earlier bands are re-converted from the input)
//!   but repeats `pi`'s earlier sampling, so the worker may store
//!   [`Job::checkpoint`] (`pi`: `{"stage", "hits", "samples"}`, small JSON)
//!   after each completed stage and hand it to [`Job::restore`] on resume.
//!   `hello` keeps no state and never repeats a stage (no extra output).
//! - **Accumulation** happens inside the job: `pi`'s stage k draws its share
//!   of the samples (`samples / n`, plus one for k < `samples % n`) from a
//!   splitmix64 stream seeded with `seed + k`, and adds its hits and samples
//!   to the job's totals; `pi = 4 × hits / samples`. Same seed and stages →
//!   the same result, whichever workers ran which stages.
//! - **Progress within a stage** crosses as an [`AtomicI32`] per mille that C
//!   stores into (relaxed atomic stores; C never calls back into Rust).
//!   [`Job::run_stage`] resets it to 0; the worker polls it from another
//!   thread (every 250 ms at most) and reports
//!   `floor(100 × (stage + min(p, 999)/1000) / stages)`. `pi` updates it every
//!   65,536 samples, `grayscale` every row, `hello` never (stays 0).
//! - **Cancellation crosses as a flag, not a drop.** The caller owns an
//!   [`AtomicI32`]; C reads it with acquire atomic loads (`hello`: between
//!   ≤5 ms sleeps; `pi`: every 65,536 samples; `grayscale`: between rows) and
//!   never writes it. Storing any non-zero value (preferably with
//!   `Ordering::Release`) makes the running stage return
//!   [`StageOutcome::Interrupted`] within milliseconds; an interrupted stage
//!   leaves the job as it was before the stage and may be run again.
//! - **Crashes**: `hello`'s `crash` input calls `abort()` in C when
//!   [`StageCall::allow_crash`] is set: it takes the whole process down, so
//!   under `WORKER_ISOLATION=process` run stages in a helper process.
//! - **Nothing is owned across the boundary.** Rust allocates every buffer
//!   (input structs, the image, the luma buffer, a 512-byte error buffer) and
//!   lends it for one call; no C state outlives a call, so any number of
//!   threads may run stages at once.
//!
//! # The C side
//!
//! `c/stage.h` declares the one stage interface, `int algo_<name>_stage(const
//! struct algo_stage *call)`: input struct and size, in/out output and size,
//! stage (0-based) and stage count, attempt (1-based), flags (allow crash),
//! the cancel flag (`const int *`), the progress per mille (`int *`) and an
//! error message buffer; it returns `ALGO_OK`, `ALGO_INTERRUPTED`,
//! `ALGO_RETRYABLE`, `ALGO_FATAL`, `ALGO_EXPIRED` (`hello`'s `valid_until_ms`,
//! see [`run_stage_until`]), or `ALGO_EINVAL`/`ALGO_EIO`, and any other
//! value maps to [`NativeError::Unknown`]. `build.rs` compiles every file in
//! `c/` with `cc`.
//!
//! # Adding an algorithm
//!
//! 1. `c/<name>.c` with `int algo_<name>_stage(const struct algo_stage *)`,
//!    its input/output structs and the declaration in `c/stage.h`
//!    (`algo_check` the sizes first, `algo_cancelled` often, `algo_progress`
//!    as it goes, `algo_fail` for errors); `build.rs` picks the file up.
//! 2. The same structs (`#[repr(C)]`) and declaration in `src/ffi.rs`.
//! 3. `src/<name>.rs`: a `pub(crate) const ALGORITHM: Algorithm` (name,
//!    description, default stages, cpu_bound, and the `schema`, `validate`,
//!    `blobs` and `prepare` functions) and a job state implementing the
//!    crate's `Stages` trait (`run` one stage through `stage::call`,
//!    optional `checkpoint`/`restore`, `finish` building the result).
//! 4. One entry in the `ALGORITHMS` array of `src/registry.rs`.
//!
//! `src/pi.rs` with `c/pi.c` is the smallest stateful example.
//!
//! `grayscale` converts with ITU-R BT.601 in integers, see [`luma`]:
//! `Y = (299 R + 587 G + 114 B + 500) / 1000`; stage k of n converts rows
//! `[k·h/n, (k+1)·h/n)`. Alpha is dropped; the output is an 8-bit gray PNG.
//! Decoding uses the `image` crate (PNG and JPEG only) with its default
//! limits: an image that would take more than 512 MiB decoded is refused
//! (fatal, `input.image is too large to decode ...`) before it is allocated.
//! A job then holds its RGB pixels (3 bytes a pixel) and the luma buffer
//! (1 byte a pixel).
//!
//! # `hello` in one call
//!
//! [`run_stage`] keeps v1's call: one `hello` stage without failure input.
//! [`run_stage_until`] also binds the line to a time: it takes an
//! [`AtomicU64`] holding a [`monotonic_ms`] time, read just after the sleep,
//! before the line is written; past it, the stage returns
//! [`StageOutcome::Expired`] and prints nothing. The worker keeps its lease
//! there, so a stage that overran the lease (the process was frozen) leaves
//! no line.
//!
//! ```
//! use std::sync::atomic::{AtomicI32, Ordering};
//! use std::sync::Arc;
//!
//! let cancel = Arc::new(AtomicI32::new(0));
//! let flag = Arc::clone(&cancel);
//! let stage = std::thread::spawn(move || native::run_stage(60_000, &flag));
//!
//! cancel.store(1, Ordering::Release); // e.g. the task was cancelled
//! native::wake(&cancel); // the stage sees it now, not at its next slice
//! let outcome = stage.join().unwrap()?;
//! assert_eq!(outcome, native::StageOutcome::Interrupted);
//! # Ok::<(), native::NativeError>(())
//! ```
//!
//! # A `pi` task
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::atomic::AtomicI32;
//! use native::{Job, JobSpec, StageCall};
//!
//! let input = serde_json::json!({"samples": 100_000, "seed": 7});
//! let pi = native::algorithm("pi").unwrap();
//! pi.validate(&input).unwrap();
//! let blobs = HashMap::new();
//! let spec = JobSpec { input: &input, stages: 4, stage_ms: 0, blobs: &blobs };
//! let mut job = Job::new(pi, spec)?;
//! let (cancel, progress) = (AtomicI32::new(0), AtomicI32::new(0));
//! for stage in 0..4 {
//!     let call = StageCall { stage, attempt: 1, cancel: &cancel, progress: &progress, allow_crash: false };
//!     assert_eq!(job.run_stage(&call)?, native::StageOutcome::Completed);
//! }
//! let out = job.finish()?;
//! assert_eq!(out.result["samples"], 100_000);
//! assert!((out.result["pi"].as_f64().unwrap() - std::f64::consts::PI).abs() < 0.05);
//! # Ok::<(), native::NativeError>(())
//! ```

use std::sync::atomic::{AtomicI32, AtomicU64};

mod ffi;
mod grayscale;
mod hello;
mod job;
mod pi;
mod registry;
mod stage;
mod sum;

pub use grayscale::luma;
pub use job::{Job, JobOutput, JobSpec, OutputBlob};
pub use registry::{algorithm, algorithms, catalogue, Algorithm, InputError};
pub use stage::{NativeError, StageCall, StageOutcome};

/// The worked example of `docs/ALGORITHMS.md`, `sum` (1 + … + n; input
/// `{"n"}`, result `{"sum", "n"}`): a complete algorithm, built and tested
/// like the others, but not in [`algorithms()`] — registering it is the
/// guide's last step, left out so the public catalogue stays as specified.
pub fn example_sum() -> &'static Algorithm {
    static SUM: Algorithm = sum::ALGORITHM;
    &SUM
}

/// Runs one stage of `hello` without failure input: sleeps `stage_ms`
/// milliseconds, then writes `hello world` (one whole, flushed line) to stdout.
///
/// `cancel` is read before the sleep and between waits of at most 250 ms
/// (5 ms outside Linux); a [`wake`] after raising it ends the wait at once.
/// Once it holds any non-zero value the call returns
/// `Ok(StageOutcome::Interrupted)` promptly and prints nothing. A stage of
/// `0` ms prints at once unless `cancel` is already raised.
///
/// This blocks the calling thread for up to `stage_ms`; never call it on an
/// async runtime thread (use a blocking thread, e.g. `spawn_blocking`). It is
/// safe to call from many threads at once, with shared or separate flags.
///
/// # Errors
///
/// [`NativeError::Io`] if the line could not be written to stdout,
/// [`NativeError::InvalidArgument`] or [`NativeError::Unknown`] if the C
/// routine reports an argument error or an unexpected code. Never panics.
pub fn run_stage(stage_ms: u64, cancel: &AtomicI32) -> Result<StageOutcome, NativeError> {
    hello_stage(stage_ms, cancel, None)
}

/// [`run_stage`] with a time limit on its line: `valid_until` holds a
/// [`monotonic_ms`] time (0: no limit), read just after the sleep, before the
/// line would be written; past it the call returns [`StageOutcome::Expired`]
/// and prints nothing. Another thread may move it forward (or back) at any
/// time, e.g. as the lease that entitles the caller to run the stage is
/// renewed: a stage that overran it (the process was stopped, say) leaves no
/// line behind. The cancel flag still wins: a raised flag gives
/// [`StageOutcome::Interrupted`].
///
/// # Errors
///
/// As [`run_stage`].
pub fn run_stage_until(
    stage_ms: u64,
    cancel: &AtomicI32,
    valid_until: &AtomicU64,
) -> Result<StageOutcome, NativeError> {
    hello_stage(stage_ms, cancel, Some(valid_until))
}

/// The monotonic clock (CLOCK_MONOTONIC) in milliseconds, the clock of
/// [`run_stage_until`]'s `valid_until`; 0 if it cannot be read.
pub fn monotonic_ms() -> u64 {
    #[allow(unsafe_code)]
    // SAFETY: no arguments, no preconditions; C only reads the clock.
    unsafe {
        ffi::algo_monotonic_ms()
    }
}

/// Wakes every stage sleeping on `cancel`: call it after raising the flag,
/// so a waiting `hello` stage sees it at once (on Linux it waits on the
/// flag, a futex, rather than polling it). Without it a raised flag is
/// still seen within 250 ms.
pub fn wake(cancel: &AtomicI32) {
    #[allow(unsafe_code)]
    // SAFETY: `cancel` is a live AtomicI32, which has the layout of a C int;
    // the futex wake neither reads nor writes it.
    unsafe {
        ffi::algo_wake(cancel.as_ptr());
    }
}

/// One `hello` stage without failure input, optionally bound to a time.
fn hello_stage(
    stage_ms: u64,
    cancel: &AtomicI32,
    valid_until: Option<&AtomicU64>,
) -> Result<StageOutcome, NativeError> {
    let input = ffi::HelloInput {
        stage_ms,
        ..ffi::HelloInput::default()
    };
    let progress = AtomicI32::new(0);
    let call = StageCall {
        stage: 0,
        attempt: 1,
        cancel,
        progress: &progress,
        allow_crash: false,
    };
    hello::run(&input, 1, &call, valid_until)
}

// Stages that complete print to the real stdout, which libtest cannot capture;
// they are tested in `tests/stages.rs`, which runs each case in a child process
// and checks its stdout. The tests here never print.
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn raised_flag_interrupts_at_once() {
        for value in [1, -1, i32::MAX] {
            let cancel = AtomicI32::new(value);
            let start = std::time::Instant::now();
            let outcome = run_stage(10_000, &cancel).expect("stage failed");
            assert_eq!(outcome, StageOutcome::Interrupted);
            assert!(start.elapsed() < std::time::Duration::from_secs(1));
            // C only reads the flag.
            assert_eq!(cancel.load(Ordering::Acquire), value);
        }
    }

    #[test]
    fn raised_flag_interrupts_a_zero_stage() {
        let cancel = AtomicI32::new(1);
        assert_eq!(
            run_stage(0, &cancel).expect("stage failed"),
            StageOutcome::Interrupted
        );
    }
}
