//! The C routine of the `hello` algorithm behind a safe Rust API.
//!
//! # The boundary
//!
//! `c/algo.c` (built by `build.rs` with `cc`) exports one function,
//! `algo_run_stage(stage_ms, cancel_flag)`: it sleeps `stage_ms` milliseconds in
//! slices of at most 5 ms, then writes `hello world\n` to stdout with a single
//! unbuffered `write(2)`. Its private declaration lives in `ffi.rs`; this crate
//! is the only one in the workspace allowed to use `unsafe`, and
//! [`run_stage`] is its only call into C.
//!
//! - **Cancellation crosses as a flag, not a drop.** The caller owns an
//!   [`AtomicI32`]; C receives a pointer to it (an `AtomicI32` has the same
//!   size, alignment and bit validity as an `i32`, i.e. a C `int`) and reads it
//!   with an acquire atomic load before and between slices. Storing any
//!   non-zero value (preferably with `Ordering::Release`) makes the running
//!   stage return [`StageOutcome::Interrupted`] within about 5 ms, without
//!   printing. C never writes to the flag, so resetting it is up to the caller.
//! - **Nothing is owned across the boundary.** No memory is allocated on either
//!   side, no C state outlives a call, and C never calls back into Rust.
//! - **The call blocks.** [`run_stage`] blocks the calling thread for up to
//!   `stage_ms`. On an async runtime run it on a blocking thread (for example
//!   `tokio::task::spawn_blocking`); dropping that task's `JoinHandle` does not
//!   stop it, only the flag does.
//! - **A line can be bound to a time.** [`run_stage_until`] also takes an
//!   [`AtomicU64`] holding a [`monotonic_ms`] time, read just before the line
//!   is written: past it, the stage returns [`StageOutcome::Expired`] and
//!   prints nothing. The worker keeps its lease there, so a stage that
//!   overran the lease (the process was frozen) leaves no line.
//! - **Output bypasses Rust's stdout buffer.** C writes to file descriptor 1
//!   directly, one whole line per completed stage, so lines from concurrent
//!   stages never interleave, but they are not ordered with respect to text
//!   still sitting in [`std::io::Stdout`]'s buffer.
//!
//! # Example
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
//! let outcome = stage.join().unwrap()?;
//! assert_eq!(outcome, native::StageOutcome::Interrupted);
//! # Ok::<(), native::NativeError>(())
//! ```

use std::ffi::c_int;
use std::sync::atomic::{AtomicI32, AtomicU64};

mod ffi;

/// How a stage that ran without error ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageOutcome {
    /// The full `stage_ms` elapsed and `hello world` was written to stdout.
    Completed,
    /// The cancel flag was non-zero (before the stage or while it slept);
    /// nothing was written.
    Interrupted,
    /// The stage slept its time but ended past its `valid_until`
    /// ([`run_stage_until`]); nothing was written.
    Expired,
}

/// A stage that failed inside the C routine.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The C routine rejected its arguments (`ALGO_EINVAL`). [`run_stage`]
    /// always passes a valid flag, so this points at a mismatch between the
    /// Rust and C sides.
    #[error("the C stage routine rejected its arguments")]
    InvalidArgument,
    /// Writing `hello world` to stdout failed, e.g. because stdout is a closed
    /// pipe (`ALGO_EIO`). The stage's sleep did complete.
    #[error("the C stage routine could not write to stdout")]
    Io,
    /// The C routine returned a code this crate does not know.
    #[error("unknown return code {0}")]
    Unknown(i32),
}

/// Runs one stage of the `hello` algorithm in C: sleeps `stage_ms`
/// milliseconds, then writes `hello world` (one whole, flushed line) to stdout.
///
/// `cancel` is polled before the sleep and at least every 5 ms during it; once
/// it holds any non-zero value the call returns
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
    // `*mut i32` -> `*const c_int`: the same type wherever `c_int` is `i32`,
    // and a compile error on any target where it is not.
    let flag: *const c_int = cancel.as_ptr().cast_const();
    #[allow(unsafe_code)]
    // SAFETY: `flag` comes from a live `&AtomicI32`, so it is non-null, aligned
    // and valid for the whole call (the borrow outlives it), and `AtomicI32`
    // has the layout of a C `int`. C only reads it with `__atomic_load_n`, and
    // Rust code can only touch it through atomic operations on `cancel`, so
    // there is no data race. The routine keeps no pointer after returning.
    let code = unsafe { ffi::algo_run_stage(stage_ms, flag) };
    outcome_from_code(code)
}

/// [`run_stage`] with a time limit on its line: `valid_until` holds a
/// [`monotonic_ms`] time (0: no limit), read just before the line would be
/// written; past it the call returns [`StageOutcome::Expired`] and prints
/// nothing. Another thread may move it forward (or back) at any time, e.g. as
/// the lease that entitles the caller to run the stage is renewed: a stage
/// that overran it (the process was stopped, say) leaves no line behind.
///
/// # Errors
///
/// As [`run_stage`].
pub fn run_stage_until(
    stage_ms: u64,
    cancel: &AtomicI32,
    valid_until: &AtomicU64,
) -> Result<StageOutcome, NativeError> {
    let flag: *const c_int = cancel.as_ptr().cast_const();
    let until: *const u64 = valid_until.as_ptr().cast_const();
    #[allow(unsafe_code)]
    // SAFETY: as in `run_stage` for `flag`; `until` comes from a live
    // `&AtomicU64` (same layout as a C `uint64_t`, aligned, valid for the
    // whole call), and C only reads it with `__atomic_load_n`.
    let code = unsafe { ffi::algo_run_stage_until(stage_ms, flag, until) };
    outcome_from_code(code)
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

/// Maps every `ALGO_*` return code; anything else becomes
/// [`NativeError::Unknown`].
fn outcome_from_code(code: c_int) -> Result<StageOutcome, NativeError> {
    match code {
        ffi::ALGO_OK => Ok(StageOutcome::Completed),
        ffi::ALGO_INTERRUPTED => Ok(StageOutcome::Interrupted),
        ffi::ALGO_EXPIRED => Ok(StageOutcome::Expired),
        ffi::ALGO_EINVAL => Err(NativeError::InvalidArgument),
        ffi::ALGO_EIO => Err(NativeError::Io),
        other => Err(NativeError::Unknown(other)),
    }
}

// Stages that complete print to the real stdout, which libtest cannot capture;
// they are tested in `tests/stages.rs`, which runs each case in a child process
// and checks its stdout. The tests here never print.
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    #[test]
    fn every_c_code_is_mapped() {
        assert_eq!(outcome_from_code(0).ok(), Some(StageOutcome::Completed));
        assert_eq!(outcome_from_code(1).ok(), Some(StageOutcome::Interrupted));
        assert_eq!(outcome_from_code(2).ok(), Some(StageOutcome::Expired));
        assert!(matches!(
            outcome_from_code(-1),
            Err(NativeError::InvalidArgument)
        ));
        assert!(matches!(outcome_from_code(-2), Err(NativeError::Io)));
    }

    #[test]
    fn unknown_codes_are_errors_not_panics() {
        for code in [3, -3, 42, i32::MIN, i32::MAX] {
            match outcome_from_code(code) {
                Err(NativeError::Unknown(c)) => assert_eq!(c, code),
                other => panic!("code {code} mapped to {other:?}"),
            }
        }
        assert_eq!(NativeError::Unknown(7).to_string(), "unknown return code 7");
    }

    #[test]
    fn null_flag_is_rejected_by_c() {
        #[allow(unsafe_code)]
        // SAFETY: a NULL flag is an explicitly handled input: the routine
        // returns ALGO_EINVAL before sleeping, writing or dereferencing it.
        let code = unsafe { ffi::algo_run_stage(0, std::ptr::null()) };
        assert!(matches!(
            outcome_from_code(code),
            Err(NativeError::InvalidArgument)
        ));
    }

    #[test]
    fn raised_flag_interrupts_at_once() {
        for value in [1, -1, i32::MAX] {
            let cancel = AtomicI32::new(value);
            let start = Instant::now();
            let outcome = run_stage(10_000, &cancel).expect("stage failed");
            assert_eq!(outcome, StageOutcome::Interrupted);
            assert!(start.elapsed() < Duration::from_secs(1));
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
