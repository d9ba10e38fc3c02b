//! The Rust half of the stage interface: the arguments every stage call
//! takes, its outcomes, and the one function that calls into C.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::ffi;

/// Size of the error message buffer handed to C (including the NUL).
const ERROR_BUF: usize = 512;

/// What the caller hands to every stage call, whatever the algorithm.
#[derive(Debug, Clone, Copy)]
pub struct StageCall<'a> {
    /// 0-based stage to run: the number of stages already completed (the
    /// task's recorded `stage`). Must be less than the job's stage count.
    pub stage: u32,
    /// 1-based attempt of the task (`hello`'s `fail` input counts attempts).
    pub attempt: u32,
    /// The cancel flag: any non-zero value (stored with `Ordering::Release`,
    /// from any thread) makes the stage return
    /// [`StageOutcome::Interrupted`] within a few milliseconds. C only reads
    /// it; resetting it is up to the caller.
    pub cancel: &'a AtomicI32,
    /// Progress within the stage, per mille (0..=1000), stored by C with
    /// relaxed atomic stores while the stage runs and reset to 0 by the call
    /// before it starts. Poll it (e.g. every 250 ms) from another thread;
    /// the fraction `f` of the contract is `min(value, 999) / 1000`. Stays 0
    /// for algorithms that report none (`hello`).
    pub progress: &'a AtomicI32,
    /// Whether `hello`'s `crash` test input may abort the process
    /// (`ALLOW_CRASH_INPUT=1`); otherwise such a stage fails fatally with the
    /// error `crash_disabled`.
    pub allow_crash: bool,
}

/// How a stage that ran without error ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageOutcome {
    /// The stage ran to completion; the job's state includes it.
    Completed,
    /// The cancel flag was non-zero (before or during the stage); the stage
    /// left no trace (`hello` printed nothing) and may be run again.
    Interrupted,
    /// The stage ran its course but ended past its `valid_until`
    /// ([`crate::run_stage_until`]); nothing was written.
    Expired,
}

/// A stage (or a job's preparation) that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NativeError {
    /// The stage failed but running it again may succeed (`ALGO_RETRYABLE`).
    #[error("{0}")]
    Retryable(String),
    /// The stage failed for good (`ALGO_FATAL`, or input data the algorithm
    /// cannot use, such as a blob that is not an image). The message is the
    /// task's `error`.
    #[error("{0}")]
    Fatal(String),
    /// The C routine rejected its arguments (`ALGO_EINVAL`). The safe API
    /// always passes valid ones, so this points at a mismatch between the
    /// Rust and C sides, or at a stage number out of range.
    #[error("the C stage routine rejected its arguments")]
    InvalidArgument,
    /// Writing `hello world` to stdout failed, e.g. because stdout is a closed
    /// pipe (`ALGO_EIO`).
    #[error("the C stage routine could not write to stdout")]
    Io,
    /// The C routine returned a code this crate does not know.
    #[error("unknown return code {0}")]
    Unknown(i32),
}

impl NativeError {
    /// Whether another attempt may succeed: [`NativeError::Retryable`] and
    /// [`NativeError::Io`]; everything else is fatal.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_) | Self::Io)
    }
}

/// Maps every `ALGO_*` return code; anything else becomes
/// [`NativeError::Unknown`]. `message` is the C error buffer's text.
pub(crate) fn outcome_from_code(
    code: c_int,
    message: impl FnOnce() -> String,
) -> Result<StageOutcome, NativeError> {
    match code {
        ffi::ALGO_OK => Ok(StageOutcome::Completed),
        ffi::ALGO_INTERRUPTED => Ok(StageOutcome::Interrupted),
        ffi::ALGO_EXPIRED => Ok(StageOutcome::Expired),
        ffi::ALGO_RETRYABLE => Err(NativeError::Retryable(message())),
        ffi::ALGO_FATAL => Err(NativeError::Fatal(message())),
        ffi::ALGO_EINVAL => Err(NativeError::InvalidArgument),
        ffi::ALGO_EIO => Err(NativeError::Io),
        other => Err(NativeError::Unknown(other)),
    }
}

/// The text C wrote into `buf` (up to the first NUL), or a placeholder.
fn message_from(buf: &[u8]) -> String {
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if len == 0 {
        return "the algorithm failed without a message".to_owned();
    }
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// Runs one C stage function.
///
/// # Safety
///
/// `f` must be the C stage function whose input struct is `I` (with every
/// pointer inside it valid for reads of what `c/stage.h` says for the whole
/// call) and whose output is `O` (`c/stage.h` gives the size it expects).
#[allow(unsafe_code)]
pub(crate) unsafe fn call<I, O: ?Sized>(
    f: ffi::StageFn,
    stages: u32,
    input: &I,
    output: &mut O,
    args: &StageCall<'_>,
) -> Result<StageOutcome, NativeError> {
    let mut error = [0u8; ERROR_BUF];
    args.progress.store(0, Ordering::Relaxed);
    let output_size = std::mem::size_of_val(output);
    let raw = ffi::AlgoStage {
        input: std::ptr::from_ref(input).cast::<c_void>(),
        input_size: std::mem::size_of::<I>(),
        output: std::ptr::from_mut(output).cast::<c_void>(),
        output_size,
        stage: args.stage,
        stages,
        attempt: args.attempt,
        flags: if args.allow_crash {
            ffi::ALGO_FLAG_ALLOW_CRASH
        } else {
            0
        },
        // `*mut i32` -> `*const c_int`: the same type wherever `c_int` is
        // `i32`, and a compile error on any target where it is not.
        cancel: args.cancel.as_ptr().cast_const(),
        progress: args.progress.as_ptr(),
        error: error.as_mut_ptr().cast::<c_char>(),
        error_size: error.len(),
    };
    // SAFETY: every pointer in `raw` comes from a live reference that outlives
    // the call: `input` and `output` (sizes from the same references; the
    // caller vouches for their layout and inner pointers), `error` (a local
    // buffer of `error_size` bytes), and the two atomics, which have the
    // layout of a C `int` and which C only touches with atomic operations,
    // as Rust does, so there is no data race. C keeps no pointer after
    // returning.
    let code = unsafe { f(&raw) };
    outcome_from_code(code, || message_from(&error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_message() -> String {
        String::new()
    }

    #[test]
    fn every_c_code_is_mapped() {
        assert_eq!(
            outcome_from_code(0, no_message),
            Ok(StageOutcome::Completed)
        );
        assert_eq!(
            outcome_from_code(1, no_message),
            Ok(StageOutcome::Interrupted)
        );
        assert_eq!(
            outcome_from_code(2, || "again".into()),
            Err(NativeError::Retryable("again".into()))
        );
        assert_eq!(
            outcome_from_code(3, || "never".into()),
            Err(NativeError::Fatal("never".into()))
        );
        assert_eq!(outcome_from_code(4, no_message), Ok(StageOutcome::Expired));
        assert_eq!(
            outcome_from_code(-1, no_message),
            Err(NativeError::InvalidArgument)
        );
        assert_eq!(outcome_from_code(-2, no_message), Err(NativeError::Io));
    }

    #[test]
    fn unknown_codes_are_errors_not_panics() {
        for code in [5, -3, 42, i32::MIN, i32::MAX] {
            match outcome_from_code(code, no_message) {
                Err(NativeError::Unknown(c)) => assert_eq!(c, code),
                other => panic!("code {code} mapped to {other:?}"),
            }
        }
        assert_eq!(NativeError::Unknown(7).to_string(), "unknown return code 7");
    }

    #[test]
    fn retryable_errors() {
        assert!(NativeError::Retryable("x".into()).is_retryable());
        assert!(NativeError::Io.is_retryable());
        assert!(!NativeError::Fatal("x".into()).is_retryable());
        assert!(!NativeError::InvalidArgument.is_retryable());
        assert!(!NativeError::Unknown(9).is_retryable());
    }

    #[test]
    fn messages_stop_at_the_nul_and_are_never_empty() {
        assert_eq!(message_from(b"boom\0junk"), "boom");
        assert_eq!(message_from(b"no nul"), "no nul");
        assert_eq!(
            message_from(b"\0"),
            "the algorithm failed without a message"
        );
        assert_eq!(message_from(b"\xff\0"), "\u{fffd}");
    }

    #[test]
    fn null_call_is_rejected_by_c() {
        for f in [
            ffi::algo_hello_stage as ffi::StageFn,
            ffi::algo_pi_stage,
            ffi::algo_grayscale_stage,
        ] {
            #[allow(unsafe_code)]
            // SAFETY: a NULL call is an explicitly handled input: every stage
            // function returns ALGO_EINVAL before dereferencing anything.
            let code = unsafe { f(std::ptr::null()) };
            assert_eq!(code, ffi::ALGO_EINVAL);
        }
    }

    #[test]
    fn wrong_sizes_and_stages_are_rejected_by_c() {
        let cancel = AtomicI32::new(0);
        let progress = AtomicI32::new(0);
        let args = |stage| StageCall {
            stage,
            attempt: 1,
            cancel: &cancel,
            progress: &progress,
            allow_crash: false,
        };
        let input = ffi::PiInput {
            samples: 10,
            seed: 0,
        };
        let mut wrong = [0u8; 3];
        #[allow(unsafe_code)]
        // SAFETY: the sizes are wrong on purpose; C checks them before any
        // access and answers ALGO_EINVAL.
        let r = unsafe { call(ffi::algo_pi_stage, 1, &input, &mut wrong[..], &args(0)) };
        assert_eq!(r, Err(NativeError::InvalidArgument));
        let mut out = ffi::PiOutput::default();
        #[allow(unsafe_code)]
        // SAFETY: right types; stage 2 of 2 is out of range and rejected.
        let r = unsafe { call(ffi::algo_pi_stage, 2, &input, &mut out, &args(2)) };
        assert_eq!(r, Err(NativeError::InvalidArgument));
        assert_eq!(out, ffi::PiOutput::default());
    }
}
