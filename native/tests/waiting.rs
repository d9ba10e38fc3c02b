//! A sleeping `hello` stage waits on its cancel flag (a futex on Linux)
//! instead of polling it: a thousand stages polling every 5 ms kept a core
//! busy switching between their threads.

#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicI32, AtomicU64};

use native::{run_stage_until, StageOutcome};

/// This thread's voluntary context switches so far.
fn switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("thread status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches in /proc/thread-self/status")
}

#[test]
fn a_sleeping_stage_wakes_a_few_times_not_every_five_milliseconds() {
    let cancel = AtomicI32::new(0);
    // Already past: the stage sleeps, then returns without printing.
    let expired = AtomicU64::new(1);
    let before = switches();
    let outcome = run_stage_until(600, &cancel, &expired).expect("the stage");
    let woke = switches() - before;
    assert_eq!(outcome, StageOutcome::Expired);
    // Polling every 5 ms would be about 120; waits of 250 ms are 3.
    assert!(woke < 30, "the stage thread woke {woke} times in 600 ms");
}
