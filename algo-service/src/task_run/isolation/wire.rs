//! The helper protocol: one JSON object a line. [`Command`]s go to the
//! helper's stdin, [`Event`]s come back on its stderr (its stdout is the
//! worker's own, for `hello world`). Blobs cross as standard base64.

use std::collections::HashMap;

use base64::{engine::general_purpose::STANDARD, Engine};
use native::{NativeError, StageOutcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The first argument that makes `algo-service` a stage helper.
pub const HELPER_ARG: &str = "--stage-helper";

/// The worker's requests, in order: one `init`, then `stage`s, then
/// `finish`; `cancel` and `valid_until` at any time (they take effect at
/// once, also while a stage runs).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Command {
    /// Build the job ([`native::Job::new`]); answered by `ready` or `error`.
    Init {
        algorithm: String,
        input: Value,
        stages: u32,
        stage_ms: u64,
        /// Blob id → base64 bytes.
        blobs: HashMap<String, String>,
    },
    /// Run one stage ([`native::Job::run_stage_until`]); answered by `stage`,
    /// with `progress` events meanwhile.
    Stage {
        stage: u32,
        attempt: u32,
        allow_crash: bool,
        /// The [`native::monotonic_ms`] time the stage's line must be
        /// written by (the clock is the system's, the same in both processes).
        valid_until: u64,
    },
    /// The lease was renewed: the running stage may print until `ms`.
    ValidUntil { ms: u64 },
    /// Raise the cancel flag (for good).
    Cancel,
    /// Build the result ([`native::Job::finish`]); answered by `output` or
    /// `error`, after which the helper exits.
    Finish,
}

/// The helper's answers and reports.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    /// The job is built.
    Ready,
    /// Progress within stage `stage`, per mille (at most every 50 ms, when it moved).
    Progress { stage: u32, per_mille: i32 },
    /// How the stage ended.
    Stage { outcome: Outcome },
    /// The finished job's result.
    Output { result: Value, blob: Option<Blob> },
    /// `init` or `finish` failed.
    Error { error: WireError },
}

/// A stage's [`Result<StageOutcome, NativeError>`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Completed,
    Interrupted,
    Expired,
    Failed(WireError),
}

/// A [`NativeError`], kind and text preserved.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum WireError {
    Retryable { message: String },
    Fatal { message: String },
    InvalidArgument,
    Io,
    Unknown { code: i32 },
}

/// [`native::OutputBlob`] with owned strings and base64 bytes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Blob {
    pub(crate) field: String,
    pub(crate) content_type: String,
    pub(crate) bytes: String,
}

impl From<&NativeError> for WireError {
    fn from(e: &NativeError) -> Self {
        match e {
            NativeError::Retryable(message) => Self::Retryable {
                message: message.clone(),
            },
            NativeError::Fatal(message) => Self::Fatal {
                message: message.clone(),
            },
            NativeError::InvalidArgument => Self::InvalidArgument,
            NativeError::Io => Self::Io,
            NativeError::Unknown(code) => Self::Unknown { code: *code },
        }
    }
}

impl From<WireError> for NativeError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Retryable { message } => Self::Retryable(message),
            WireError::Fatal { message } => Self::Fatal(message),
            WireError::InvalidArgument => Self::InvalidArgument,
            WireError::Io => Self::Io,
            WireError::Unknown { code } => Self::Unknown(code),
        }
    }
}

impl From<&Result<StageOutcome, NativeError>> for Outcome {
    fn from(r: &Result<StageOutcome, NativeError>) -> Self {
        match r {
            Ok(StageOutcome::Completed) => Self::Completed,
            Ok(StageOutcome::Interrupted) => Self::Interrupted,
            Ok(StageOutcome::Expired) => Self::Expired,
            Err(e) => Self::Failed(e.into()),
        }
    }
}

impl From<Outcome> for Result<StageOutcome, NativeError> {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Completed => Ok(StageOutcome::Completed),
            Outcome::Interrupted => Ok(StageOutcome::Interrupted),
            Outcome::Expired => Ok(StageOutcome::Expired),
            Outcome::Failed(e) => Err(e.into()),
        }
    }
}

/// Base64 of `bytes`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The bytes of base64 `text`.
///
/// # Errors
/// `text` is not base64.
pub(crate) fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_outcomes_cross_unchanged() {
        for e in [
            NativeError::Retryable("again".into()),
            NativeError::Fatal("crash_disabled".into()),
            NativeError::InvalidArgument,
            NativeError::Io,
            NativeError::Unknown(9),
        ] {
            let r: Result<StageOutcome, NativeError> = Err(e.clone());
            let line = serde_json::to_string(&Event::Stage {
                outcome: Outcome::from(&r),
            })
            .unwrap();
            let Event::Stage { outcome } = serde_json::from_str(&line).unwrap() else {
                panic!("{line}");
            };
            let back: Result<StageOutcome, NativeError> = outcome.into();
            assert_eq!(back, r, "{line}");
            assert_eq!(back.unwrap_err().to_string(), e.to_string());
        }
        let line = serde_json::to_string(&Command::ValidUntil { ms: 5 }).unwrap();
        assert_eq!(line, r#"{"op":"valid_until","ms":5}"#);
        assert_eq!(decode(&encode(b"\x00\xffpng")).unwrap(), b"\x00\xffpng");
    }
}
