//! Raw declarations of `c/algo.h`, kept in sync by hand.
//!
//! Nothing here is safe to call directly; [`crate::run_stage`] is the only
//! caller.

use std::ffi::c_int;

/// `ALGO_OK`: the stage completed and its line was written.
pub(crate) const ALGO_OK: c_int = 0;
/// `ALGO_INTERRUPTED`: the cancel flag was raised; nothing was written.
pub(crate) const ALGO_INTERRUPTED: c_int = 1;
/// `ALGO_EXPIRED`: the stage overran `*valid_until_ms`; nothing was written.
pub(crate) const ALGO_EXPIRED: c_int = 2;
/// `ALGO_EINVAL`: the cancel flag pointer was NULL.
pub(crate) const ALGO_EINVAL: c_int = -1;
/// `ALGO_EIO`: writing to stdout (or reading the monotonic clock) failed.
pub(crate) const ALGO_EIO: c_int = -2;

// `unsafe extern` only states that these signatures are trusted to match
// `c/algo.h`; the calls themselves still need `unsafe` blocks.
#[allow(unsafe_code)]
unsafe extern "C" {
    /// Sleeps `stage_ms` ms in slices of at most 5 ms, polling `*cancel_flag`
    /// with an acquire atomic load before and between slices, then writes
    /// `hello world\n` to fd 1. Returns one of the `ALGO_*` codes above.
    ///
    /// # Safety
    ///
    /// `cancel_flag` is NULL (rejected with `ALGO_EINVAL`) or points to an
    /// aligned `int` that stays valid for the whole call and that every other
    /// thread only accesses atomically. C never writes through it.
    pub(crate) fn algo_run_stage(stage_ms: u64, cancel_flag: *const c_int) -> c_int;

    /// `algo_run_stage`, then, just before writing, returns `ALGO_EXPIRED`
    /// instead if `*valid_until_ms` (acquire load; 0 = no limit) is below
    /// `algo_monotonic_ms()`.
    ///
    /// # Safety
    ///
    /// As `algo_run_stage` for `cancel_flag`; `valid_until_ms` is NULL or
    /// points to an aligned `uint64_t` valid for the whole call that every
    /// other thread only accesses atomically. C never writes through it.
    pub(crate) fn algo_run_stage_until(
        stage_ms: u64,
        cancel_flag: *const c_int,
        valid_until_ms: *const u64,
    ) -> c_int;

    /// CLOCK_MONOTONIC in ms, 0 if it cannot be read. No preconditions.
    pub(crate) fn algo_monotonic_ms() -> u64;
}
