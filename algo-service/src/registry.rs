//! The tasks running in this process, and how they are told to stop.
//!
//! Each running task owns an `Arc<AtomicI32>` stop flag that the C routine
//! polls every few milliseconds. The value says why it was raised
//! ([`StopReason`]); the first reason wins, so a later one (say a shutdown
//! after a cancel) does not change how the task ends. The flag is raised by
//! the control consumer (a cancel broadcast), by a callback answer
//! (`cancel_requested`, or a lost lease), by the task's deadline, and by
//! shutdown once the grace period is over.
//!
//! The registry is also what keeps one task from running twice here: a
//! redelivered copy of a task that is still running in this process waits in
//! [`Registry::acquire`] until the first run has ended.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI32, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use task_model::TaskId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why a running task was told to stop; the value stored in its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum StopReason {
    /// A user asked to cancel it → report `CANCELLED`.
    Cancel = 1,
    /// `timeout_secs` after `started_at` passed → report `TIMED_OUT`.
    Deadline = 2,
    /// The grace period after SIGTERM ran out → requeue, report nothing.
    Shutdown = 3,
    /// The api says another worker holds it, or it is finished or gone → report nothing.
    LostLease = 4,
}

impl StopReason {
    /// The reason a flag value encodes; `None` for 0 (keep running) or an unknown value.
    pub fn from_flag(value: i32) -> Option<Self> {
        match value {
            1 => Some(Self::Cancel),
            2 => Some(Self::Deadline),
            3 => Some(Self::Shutdown),
            4 => Some(Self::LostLease),
            _ => None,
        }
    }

    /// The value stored in the flag.
    pub fn as_flag(self) -> i32 {
        self as i32
    }
}

/// A task's stop flag, shared with the blocking thread running its stage.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicI32>);

impl StopFlag {
    /// A lowered flag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag with `reason` unless it is already raised.
    /// Returns whether this call raised it.
    /// A stage sleeping on it is woken ([`native::wake`]).
    pub fn raise(&self, reason: StopReason) -> bool {
        let raised = self
            .0
            .compare_exchange(0, reason.as_flag(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if raised {
            native::wake(&self.0);
        }
        raised
    }

    /// Why it was raised, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        StopReason::from_flag(self.0.load(Ordering::Acquire))
    }

    /// The atomic itself, for [`native::run_stage`].
    pub fn atomic(&self) -> &AtomicI32 {
        &self.0
    }
}

struct Entry {
    flag: StopFlag,
    /// Closed (its sender dropped) when the run ends.
    done: watch::Receiver<()>,
}

/// The running tasks of this process by id. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<TaskId, Entry>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("running", &self.len())
            .finish()
    }
}

/// Proof that this delivery is the only one of its task running here; the
/// registry entry goes away when it is dropped, and the next copy may start.
#[derive(Debug)]
pub struct RunGuard {
    registry: Registry,
    task_id: TaskId,
    flag: StopFlag,
    _done: watch::Sender<()>,
}

impl RunGuard {
    /// The task's stop flag.
    pub fn flag(&self) -> &StopFlag {
        &self.flag
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.task_id);
        // `_done` is dropped right after this, waking any waiting copy.
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TaskId, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every critical section is a single insert, remove or lookup).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `task_id` as running here, first waiting for a run of the
    /// same task in this process to end. Returns `None` if `stop` fires first.
    pub async fn acquire(&self, task_id: TaskId, stop: &CancellationToken) -> Option<RunGuard> {
        loop {
            let mut waiting = match self.try_acquire(task_id) {
                Ok(guard) => return Some(guard),
                Err(running) => running,
            };
            tracing::info!("this task is already running in this process; holding the delivery until that run ends");
            tokio::select! {
                // Err once the sender (the running copy's guard) is gone, even if it went before this await.
                _ = waiting.changed() => {}
                () = stop.cancelled() => return None,
            }
        }
    }

    /// Registers `task_id` unless it runs here already; then `Err` with the
    /// running copy's end signal.
    fn try_acquire(&self, task_id: TaskId) -> Result<RunGuard, watch::Receiver<()>> {
        let mut map = self.lock();
        if let Some(entry) = map.get(&task_id) {
            return Err(entry.done.clone());
        }
        let flag = StopFlag::new();
        let (tx, rx) = watch::channel(());
        map.insert(
            task_id,
            Entry {
                flag: flag.clone(),
                done: rx,
            },
        );
        Ok(RunGuard {
            registry: self.clone(),
            task_id,
            flag,
            _done: tx,
        })
    }

    /// Raises the flag of `task_id` if it runs here. Returns whether it does.
    pub fn signal(&self, task_id: TaskId, reason: StopReason) -> bool {
        match self.lock().get(&task_id) {
            Some(entry) => {
                entry.flag.raise(reason);
                true
            }
            None => false,
        }
    }

    /// Raises every running task's flag; returns how many there were.
    pub fn signal_all(&self, reason: StopReason) -> usize {
        let map = self.lock();
        for entry in map.values() {
            entry.flag.raise(reason);
        }
        map.len()
    }

    /// Tasks running here.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no task runs here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn flag_values_round_trip_and_zero_means_run() {
        for r in [
            StopReason::Cancel,
            StopReason::Deadline,
            StopReason::Shutdown,
            StopReason::LostLease,
        ] {
            assert_eq!(StopReason::from_flag(r.as_flag()), Some(r));
        }
        assert_eq!(StopReason::from_flag(0), None);
        assert_eq!(
            (
                StopReason::Cancel.as_flag(),
                StopReason::Deadline.as_flag(),
                StopReason::Shutdown.as_flag(),
                StopReason::LostLease.as_flag()
            ),
            (1, 2, 3, 4)
        );
    }

    #[test]
    fn the_first_reason_wins() {
        let flag = StopFlag::new();
        assert_eq!(flag.reason(), None);
        assert!(flag.raise(StopReason::Deadline));
        assert!(!flag.raise(StopReason::Cancel));
        assert_eq!(flag.reason(), Some(StopReason::Deadline));
    }

    #[tokio::test]
    async fn signal_reaches_a_running_task_only() {
        let reg = Registry::new();
        let stop = CancellationToken::new();
        let id = TaskId::new();
        let guard = reg.acquire(id, &stop).await.unwrap();
        assert!(!reg.signal(TaskId::new(), StopReason::Cancel));
        assert!(reg.signal(id, StopReason::Cancel));
        assert_eq!(guard.flag().reason(), Some(StopReason::Cancel));
        drop(guard);
        assert!(reg.is_empty());
        assert!(!reg.signal(id, StopReason::Cancel));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_copy_waits_until_the_first_run_ends() {
        let reg = Registry::new();
        let stop = CancellationToken::new();
        let id = TaskId::new();
        let first = reg.acquire(id, &stop).await.unwrap();

        let reg2 = reg.clone();
        let stop2 = stop.clone();
        let second = tokio::spawn(async move { reg2.acquire(id, &stop2).await.is_some() });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !second.is_finished(),
            "the copy must wait while the first runs"
        );

        drop(first);
        assert!(second.await.unwrap(), "the copy runs once the first ended");
    }

    #[tokio::test]
    async fn a_waiting_copy_gives_up_on_shutdown() {
        let reg = Registry::new();
        let stop = CancellationToken::new();
        let id = TaskId::new();
        let _first = reg.acquire(id, &stop).await.unwrap();
        stop.cancel();
        assert!(reg.acquire(id, &stop).await.is_none());
    }

    #[tokio::test]
    async fn signal_all_raises_every_flag() {
        let reg = Registry::new();
        let stop = CancellationToken::new();
        let a = reg.acquire(TaskId::new(), &stop).await.unwrap();
        let b = reg.acquire(TaskId::new(), &stop).await.unwrap();
        assert_eq!(reg.signal_all(StopReason::Shutdown), 2);
        assert_eq!(a.flag().reason(), Some(StopReason::Shutdown));
        assert_eq!(b.flag().reason(), Some(StopReason::Shutdown));
    }
}
