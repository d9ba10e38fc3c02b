//! Raw declarations of `c/stage.h`, kept in sync by hand.
//!
//! Nothing here is safe to call directly; [`crate::stage::call`] is the only
//! caller.

use std::ffi::{c_char, c_int, c_void};

/// `ALGO_OK`: the stage completed; its output is updated.
pub(crate) const ALGO_OK: c_int = 0;
/// `ALGO_INTERRUPTED`: the cancel flag was raised.
pub(crate) const ALGO_INTERRUPTED: c_int = 1;
/// `ALGO_RETRYABLE`: the stage failed, running it again may succeed.
pub(crate) const ALGO_RETRYABLE: c_int = 2;
/// `ALGO_FATAL`: the stage failed for good.
pub(crate) const ALGO_FATAL: c_int = 3;
/// `ALGO_EXPIRED`: the stage ended past `*valid_until_ms`; nothing was written.
pub(crate) const ALGO_EXPIRED: c_int = 4;
/// `ALGO_EINVAL`: an argument was invalid (a Rust/C mismatch).
pub(crate) const ALGO_EINVAL: c_int = -1;
/// `ALGO_EIO`: writing to stdout (or reading the monotonic clock) failed.
pub(crate) const ALGO_EIO: c_int = -2;

/// `ALGO_FLAG_ALLOW_CRASH`.
pub(crate) const ALGO_FLAG_ALLOW_CRASH: u32 = 1;

/// `struct algo_stage`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct AlgoStage {
    pub(crate) input: *const c_void,
    pub(crate) input_size: usize,
    pub(crate) output: *mut c_void,
    pub(crate) output_size: usize,
    pub(crate) stage: u32,
    pub(crate) stages: u32,
    pub(crate) attempt: u32,
    pub(crate) flags: u32,
    pub(crate) cancel: *const c_int,
    pub(crate) progress: *mut c_int,
    pub(crate) error: *mut c_char,
    pub(crate) error_size: usize,
}

/// `ALGO_HELLO_FAIL_*`.
pub(crate) const HELLO_FAIL_NONE: u32 = 0;
pub(crate) const HELLO_FAIL_ERROR: u32 = 1;
pub(crate) const HELLO_FAIL_FATAL: u32 = 2;
pub(crate) const HELLO_FAIL_CRASH: u32 = 3;

/// `struct algo_hello_input`.
///
/// `valid_until_ms` is NULL except in the copy `hello::run` builds for one
/// call, where it points to the caller's live `AtomicU64`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HelloInput {
    pub(crate) stage_ms: u64,
    pub(crate) fail_at_stage: u32,
    pub(crate) fail_attempts: u32,
    pub(crate) fail_mode: u32,
    pub(crate) reserved: u32,
    pub(crate) valid_until_ms: *const u64,
}

impl Default for HelloInput {
    fn default() -> Self {
        Self {
            stage_ms: 0,
            fail_at_stage: 0,
            fail_attempts: 0,
            fail_mode: HELLO_FAIL_NONE,
            reserved: 0,
            valid_until_ms: std::ptr::null(),
        }
    }
}

#[allow(unsafe_code)]
// SAFETY: the only pointer, `valid_until_ms`, is NULL in every `HelloInput`
// that is stored (a job's) and so may move between threads; the one that is
// not lives on the stack of `hello::run` for one call and points to an
// `AtomicU64`, which is `Sync`.
unsafe impl Send for HelloInput {}

/// `struct algo_pi_input`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PiInput {
    pub(crate) samples: u64,
    pub(crate) seed: u64,
}

/// `struct algo_pi_output`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PiOutput {
    pub(crate) hits: u64,
    pub(crate) samples: u64,
}

/// `struct algo_grayscale_input`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct GrayscaleInput {
    pub(crate) rgb: *const u8,
    pub(crate) width: u32,
    pub(crate) height: u32,
}

/// `struct algo_sum_input`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SumInput {
    pub(crate) n: u64,
}

/// `struct algo_sum_output`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SumOutput {
    pub(crate) sum: u64,
    pub(crate) count: u64,
}

/// `algo_stage_fn`.
pub(crate) type StageFn = unsafe extern "C" fn(call: *const AlgoStage) -> c_int;

// `unsafe extern` only states that these signatures are trusted to match
// `c/stage.h`; the calls themselves still need `unsafe` blocks.
#[allow(unsafe_code)]
unsafe extern "C" {
    /// # Safety
    ///
    /// `call` is NULL (rejected) or points to an `AlgoStage` whose pointers
    /// are valid as `c/stage.h` describes for the whole call, with
    /// `input` a `HelloInput` and no output.
    pub(crate) fn algo_hello_stage(call: *const AlgoStage) -> c_int;
    /// # Safety
    ///
    /// As [`algo_hello_stage`], with `input` a `PiInput` and `output` a
    /// `PiOutput`.
    pub(crate) fn algo_pi_stage(call: *const AlgoStage) -> c_int;
    /// # Safety
    ///
    /// As [`algo_hello_stage`], with `input` a `GrayscaleInput` whose `rgb`
    /// holds `width * height * 3` readable bytes and `output` a writable
    /// buffer of `width * height` bytes.
    pub(crate) fn algo_grayscale_stage(call: *const AlgoStage) -> c_int;
    /// CLOCK_MONOTONIC in ms, 0 if it cannot be read. No preconditions.
    pub(crate) fn algo_monotonic_ms() -> u64;
    /// # Safety
    ///
    /// `cancel` is NULL or points to a live `int` (an `AtomicI32`).
    pub(crate) fn algo_wake(cancel: *mut c_int);
    /// # Safety
    ///
    /// As [`algo_hello_stage`], with `input` a `SumInput` and `output` a
    /// `SumOutput`.
    pub(crate) fn algo_sum_stage(call: *const AlgoStage) -> c_int;
}
