//! Task states and the rules of the state machine.
//!
//! ```text
//! SCHEDULED ──> QUEUED ──> PROCESSING ──> COMPLETED | FAILED | TIMED_OUT | CANCELLED
//!   │  ▲           │            │  │
//!   │  │           │            │  └──> CANCELLING ──> any terminal state
//!   │  └───────────┼────────────┘ (a retryable failure with attempts left)
//!   └──> CANCELLED <┘
//! ```
//! A task created with a future `run_at` (or `delay_ms`) starts SCHEDULED.
//! The api enforces these rules atomically in Redis (`api-service`'s
//! `src/store/transition.lua`); this module is the same table for Rust code
//! and tests. `api-service/tests/api/state_machine.rs` drives the script
//! through every pair of states and checks it against [`TaskStatus::can_become`].

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Where a task is in its life.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Waiting for its time (a `run_at`, or a retry's backoff); not published yet.
    Scheduled,
    /// Stored and published; no worker has claimed it.
    Queued,
    /// A worker holds it (under a lease) and runs its stages.
    Processing,
    /// Cancel requested while running; the holder is stopping.
    Cancelling,
    /// Every stage ran.
    Completed,
    /// The routine reported an error.
    Failed,
    /// The deadline (`timeout_secs` after `started_at`) passed first.
    TimedOut,
    /// Cancelled, either while queued or by its worker after a request.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [TaskStatus; 8] = [
        TaskStatus::Scheduled,
        TaskStatus::Queued,
        TaskStatus::Processing,
        TaskStatus::Cancelling,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::TimedOut,
        TaskStatus::Cancelled,
    ];

    /// The contract's spelling, e.g. `TIMED_OUT`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Scheduled => "SCHEDULED",
            TaskStatus::Queued => "QUEUED",
            TaskStatus::Processing => "PROCESSING",
            TaskStatus::Cancelling => "CANCELLING",
            TaskStatus::Completed => "COMPLETED",
            TaskStatus::Failed => "FAILED",
            TaskStatus::TimedOut => "TIMED_OUT",
            TaskStatus::Cancelled => "CANCELLED",
        }
    }

    /// Terminal states are final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::TimedOut
                | TaskStatus::Cancelled
        )
    }

    /// Whether a worker may report this status through the status callback.
    pub fn is_reportable_by_worker(self) -> bool {
        self == TaskStatus::Processing || self.is_terminal()
    }

    /// Whether `self -> next` is an edge of the state machine (ignoring who asks).
    ///
    /// `PROCESSING -> PROCESSING` is a takeover; whether it is allowed also
    /// depends on the lease, which only the store knows.
    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        match (self, next) {
            (Scheduled, Queued | Cancelled) => true,
            (Queued, Processing | Cancelled) => true,
            (Processing, Processing | Cancelling | Scheduled) => true,
            (Processing | Cancelling, n) if n.is_terminal() => true,
            _ => false,
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the contract's statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}; expected one of SCHEDULED, QUEUED, PROCESSING, CANCELLING, COMPLETED, FAILED, TIMED_OUT, CANCELLED")]
pub struct UnknownStatus(pub String);

impl FromStr for TaskStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_spelling_matches_as_str_and_from_str() {
        for st in TaskStatus::ALL {
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(st.as_str().parse::<TaskStatus>().unwrap(), st);
        }
        assert!("queued".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in TaskStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in TaskStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to} must be illegal");
            }
        }
    }

    #[test]
    fn queued_cannot_skip_to_completion() {
        assert!(!TaskStatus::Queued.can_become(TaskStatus::Completed));
        assert!(TaskStatus::Queued.can_become(TaskStatus::Cancelled));
        assert!(TaskStatus::Cancelling.can_become(TaskStatus::Completed));
        assert!(!TaskStatus::Cancelling.can_become(TaskStatus::Processing));
        assert!(TaskStatus::Processing.can_become(TaskStatus::Scheduled));
        assert!(!TaskStatus::Cancelling.can_become(TaskStatus::Scheduled));
        assert!(!TaskStatus::Scheduled.can_become(TaskStatus::Processing));
    }
}
