//! End-to-end checks of `hello` (`native::run_stage`, `run_stage_until` and
//! `hello` jobs),
//! including what reaches stdout, and of its `crash` test input.
//!
//! The C routine writes straight to file descriptor 1, which libtest cannot
//! capture, so this test has no libtest harness (`harness = false`): `main`
//! re-executes this binary once per case with `NATIVE_STAGES_CASE=<name>`,
//! and the child runs the case (asserting outcomes and timings) while the
//! parent captures its stdout and checks that it is exactly one `hello world`
//! line per completed stage and nothing for an interrupted or failed one (and,
//! for the crash case, that the child died of SIGABRT).
//!
//! Arguments: plain words filter cases by substring (`--exact`: by name),
//! `--list` lists them, `--ignored` runs none; other flags are ignored.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use native::{
    algorithm, monotonic_ms, run_stage, run_stage_until, Job, JobSpec, NativeError, StageCall,
    StageOutcome,
};
use serde_json::{json, Value};

const CASE_ENV: &str = "NATIVE_STAGES_CASE";
/// A child that is still running after this long has hung.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
const LINE: &str = "hello world\n";

/// What the parent checks about a child's stdout.
#[derive(Clone, Copy)]
enum Stdout {
    /// Captured; must be exactly this many `hello world` lines.
    Lines(usize),
    /// A pipe whose read end the parent closes before the child writes.
    Closed,
}

/// How the child must end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Exit {
    Success,
    /// Killed by this signal.
    Signal(i32),
}

/// SIGABRT on Linux and macOS.
const SIGABRT: i32 = 6;

struct Case {
    name: &'static str,
    stdout: Stdout,
    exit: Exit,
    run: fn(),
}

const CASES: &[Case] = &[
    Case {
        name: "zero_ms_stage_completes",
        stdout: Stdout::Lines(1),
        exit: Exit::Success,
        run: zero_ms_stage_completes,
    },
    Case {
        name: "fifty_ms_stage_completes_after_fifty_ms",
        stdout: Stdout::Lines(1),
        exit: Exit::Success,
        run: fifty_ms_stage_completes_after_fifty_ms,
    },
    Case {
        name: "each_completed_stage_prints_one_line",
        stdout: Stdout::Lines(3),
        exit: Exit::Success,
        run: each_completed_stage_prints_one_line,
    },
    Case {
        name: "raised_flag_interrupts_at_once_without_output",
        stdout: Stdout::Lines(0),
        exit: Exit::Success,
        run: raised_flag_interrupts_at_once_without_output,
    },
    Case {
        name: "flag_set_from_another_thread_interrupts_a_long_stage",
        stdout: Stdout::Lines(0),
        exit: Exit::Success,
        run: flag_set_from_another_thread_interrupts_a_long_stage,
    },
    Case {
        name: "endless_stage_is_still_interruptible",
        stdout: Stdout::Lines(0),
        exit: Exit::Success,
        run: endless_stage_is_still_interruptible,
    },
    Case {
        name: "sixty_four_concurrent_stages_all_complete",
        stdout: Stdout::Lines(64),
        exit: Exit::Success,
        run: sixty_four_concurrent_stages_all_complete,
    },
    Case {
        name: "interrupting_one_stage_leaves_the_others_alone",
        stdout: Stdout::Lines(7),
        exit: Exit::Success,
        run: interrupting_one_stage_leaves_the_others_alone,
    },
    Case {
        name: "a_stage_past_its_valid_until_prints_nothing",
        stdout: Stdout::Lines(3),
        exit: Exit::Success,
        run: a_stage_past_its_valid_until_prints_nothing,
    },
    Case {
        name: "closed_stdout_is_an_io_error",
        stdout: Stdout::Closed,
        exit: Exit::Success,
        run: closed_stdout_is_an_io_error,
    },
    Case {
        name: "hello_job_prints_one_line_per_stage",
        stdout: Stdout::Lines(3),
        exit: Exit::Success,
        run: hello_job_prints_one_line_per_stage,
    },
    Case {
        name: "hello_error_fails_its_stage_retryably_without_output",
        stdout: Stdout::Lines(2 + 3),
        exit: Exit::Success,
        run: hello_error_fails_its_stage_retryably_without_output,
    },
    Case {
        name: "hello_fatal_fails_its_stage_for_good_without_output",
        stdout: Stdout::Lines(1),
        exit: Exit::Success,
        run: hello_fatal_fails_its_stage_for_good_without_output,
    },
    Case {
        name: "hello_crash_without_permission_is_crash_disabled",
        stdout: Stdout::Lines(1),
        exit: Exit::Success,
        run: hello_crash_without_permission_is_crash_disabled,
    },
    Case {
        name: "hello_crash_aborts_the_process",
        stdout: Stdout::Lines(1),
        exit: Exit::Signal(SIGABRT),
        run: hello_crash_aborts_the_process,
    },
];

// ---- cases (run in the child) ----

fn stage(stage_ms: u64, cancel: &AtomicI32) -> StageOutcome {
    run_stage(stage_ms, cancel).unwrap_or_else(|e| panic!("stage of {stage_ms} ms failed: {e}"))
}

/// Raises `cancel` after `delay`, from another thread.
fn cancel_after(cancel: &Arc<AtomicI32>, delay: Duration) -> thread::JoinHandle<()> {
    let cancel = Arc::clone(cancel);
    thread::spawn(move || {
        thread::sleep(delay);
        cancel.store(1, Ordering::Release);
        native::wake(&cancel);
    })
}

fn zero_ms_stage_completes() {
    assert_eq!(stage(0, &AtomicI32::new(0)), StageOutcome::Completed);
}

fn fifty_ms_stage_completes_after_fifty_ms() {
    let start = Instant::now();
    assert_eq!(stage(50, &AtomicI32::new(0)), StageOutcome::Completed);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(50), "took {elapsed:?}");
}

fn each_completed_stage_prints_one_line() {
    let cancel = AtomicI32::new(0);
    for stage_ms in [0, 1, 7] {
        assert_eq!(stage(stage_ms, &cancel), StageOutcome::Completed);
    }
    cancel.store(1, Ordering::Release);
    assert_eq!(stage(7, &cancel), StageOutcome::Interrupted);
}

fn raised_flag_interrupts_at_once_without_output() {
    let start = Instant::now();
    assert_eq!(stage(10_000, &AtomicI32::new(1)), StageOutcome::Interrupted);
    assert_eq!(stage(0, &AtomicI32::new(-1)), StageOutcome::Interrupted);
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

fn flag_set_from_another_thread_interrupts_a_long_stage() {
    let cancel = Arc::new(AtomicI32::new(0));
    let start = Instant::now();
    let canceller = cancel_after(&cancel, Duration::from_millis(20));
    assert_eq!(stage(10_000, &cancel), StageOutcome::Interrupted);
    let elapsed = start.elapsed();
    canceller.join().expect("canceller panicked");
    assert!(elapsed >= Duration::from_millis(20), "took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

fn endless_stage_is_still_interruptible() {
    // u64::MAX ms overflows any CLOCK_MONOTONIC deadline; C saturates it.
    let cancel = Arc::new(AtomicI32::new(0));
    let start = Instant::now();
    let canceller = cancel_after(&cancel, Duration::from_millis(20));
    assert_eq!(stage(u64::MAX, &cancel), StageOutcome::Interrupted);
    canceller.join().expect("canceller panicked");
    assert!(start.elapsed() < Duration::from_secs(2));
}

fn sixty_four_concurrent_stages_all_complete() {
    let cancel = Arc::new(AtomicI32::new(0));
    let barrier = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let cancel = Arc::clone(&cancel);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                stage(10, &cancel)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(
            t.join().expect("stage thread panicked"),
            StageOutcome::Completed
        );
    }
}

fn interrupting_one_stage_leaves_the_others_alone() {
    let doomed = Arc::new(AtomicI32::new(0));
    let others: Vec<_> = (0..7)
        .map(|_| thread::spawn(|| stage(30, &AtomicI32::new(0))))
        .collect();
    let canceller = cancel_after(&doomed, Duration::from_millis(5));
    assert_eq!(stage(10_000, &doomed), StageOutcome::Interrupted);
    canceller.join().expect("canceller panicked");
    for t in others {
        assert_eq!(
            t.join().expect("stage thread panicked"),
            StageOutcome::Completed
        );
    }
}

fn a_stage_past_its_valid_until_prints_nothing() {
    let cancel = AtomicI32::new(0);
    let until = |ms: u64| AtomicU64::new(ms);
    let run = |stage_ms: u64, valid: &AtomicU64| {
        run_stage_until(stage_ms, &cancel, valid).expect("a stage runs")
    };
    let now = monotonic_ms();
    assert!(now > 0, "the monotonic clock reads");
    // No limit, and a limit well after the stage: it prints.
    assert_eq!(run(5, &until(0)), StageOutcome::Completed);
    assert_eq!(run(5, &until(now + 60_000)), StageOutcome::Completed);
    // A limit that passes while the stage sleeps: it sleeps, then stays silent.
    let start = Instant::now();
    let limit = until(monotonic_ms() + 10);
    assert_eq!(run(50, &limit), StageOutcome::Expired);
    assert!(start.elapsed() >= Duration::from_millis(50));
    // Moved forward by another thread before the end: it prints after all.
    let limit = Arc::new(until(monotonic_ms() + 10));
    let mover = {
        let limit = Arc::clone(&limit);
        thread::spawn(move || limit.store(monotonic_ms() + 60_000, Ordering::Release))
    };
    mover.join().unwrap();
    assert_eq!(run(50, &limit), StageOutcome::Completed);
    // The flag still wins over the limit.
    cancel.store(1, Ordering::Release);
    assert_eq!(run(5, &until(1)), StageOutcome::Interrupted);
}

fn closed_stdout_is_an_io_error() {
    // The parent closes our stdout's read end, then our stdin; wait for that.
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink).expect("read stdin");
    // Rust's runtime ignores SIGPIPE, so write(2) fails with EPIPE instead.
    match run_stage(0, &AtomicI32::new(0)) {
        Err(NativeError::Io) => {}
        other => panic!("expected Err(Io), got {other:?}"),
    }
}

fn hello_job(input: Value, stages: u32, stage_ms: u64) -> Job {
    let blobs = std::collections::HashMap::new();
    let spec = JobSpec {
        input: &input,
        stages,
        stage_ms,
        blobs: &blobs,
    };
    Job::new(algorithm("hello").expect("hello"), spec).expect("hello job")
}

/// Runs stage `stage` (0-based) of `job` in attempt `attempt`.
fn hello_stage(
    job: &mut Job,
    stage: u32,
    attempt: u32,
    allow_crash: bool,
) -> Result<StageOutcome, NativeError> {
    let (cancel, progress) = (AtomicI32::new(0), AtomicI32::new(0));
    let call = StageCall {
        stage,
        attempt,
        cancel: &cancel,
        progress: &progress,
        allow_crash,
    };
    let outcome = job.run_stage(&call);
    // hello reports no progress within a stage.
    assert_eq!(progress.load(Ordering::Relaxed), 0);
    outcome
}

fn hello_job_prints_one_line_per_stage() {
    // Fields other than `fail` change nothing.
    let mut job = hello_job(json!({"note": "x", "fail": null}), 3, 2);
    for stage in 0..3 {
        assert_eq!(
            hello_stage(&mut job, stage, 1, false),
            Ok(StageOutcome::Completed)
        );
    }
    assert_eq!(
        job.finish().expect("finish").result,
        json!({"stages": 3, "output": "hello world"})
    );
}

fn hello_error_fails_its_stage_retryably_without_output() {
    let input = json!({"fail": {"at_stage": 2, "attempts": 2, "mode": "error"}});
    let mut job = hello_job(input, 3, 1);
    // Attempt 1: stage 1 completes, stage 2 fails (prints nothing).
    assert_eq!(
        hello_stage(&mut job, 0, 1, false),
        Ok(StageOutcome::Completed)
    );
    match hello_stage(&mut job, 1, 1, false) {
        Err(e @ NativeError::Retryable(_)) => assert!(e.is_retryable(), "{e}"),
        other => panic!("expected a retryable error, got {other:?}"),
    }
    // Attempt 2 resumes at stage 2, which fails again.
    assert!(matches!(
        hello_stage(&mut job, 1, 2, false),
        Err(NativeError::Retryable(_))
    ));
    // Attempt 3: the first `attempts` attempts are over.
    for stage in 1..3 {
        assert_eq!(
            hello_stage(&mut job, stage, 3, false),
            Ok(StageOutcome::Completed)
        );
    }
    // `attempts` defaults to 1: attempt 2 runs stage 2 normally.
    let mut job = hello_job(json!({"fail": {"at_stage": 2, "mode": "error"}}), 5, 0);
    assert_eq!(
        hello_stage(&mut job, 0, 1, false),
        Ok(StageOutcome::Completed)
    );
    assert!(hello_stage(&mut job, 1, 1, false).is_err());
    assert_eq!(
        hello_stage(&mut job, 1, 2, false),
        Ok(StageOutcome::Completed)
    );
}

fn hello_fatal_fails_its_stage_for_good_without_output() {
    let mut job = hello_job(json!({"fail": {"at_stage": 2, "mode": "fatal"}}), 2, 1);
    assert_eq!(
        hello_stage(&mut job, 0, 1, false),
        Ok(StageOutcome::Completed)
    );
    match hello_stage(&mut job, 1, 1, false) {
        Err(e @ NativeError::Fatal(_)) => {
            assert!(!e.is_retryable());
            assert!(e.to_string().contains("stage 2"), "{e}");
        }
        other => panic!("expected a fatal error, got {other:?}"),
    }
}

fn hello_crash_without_permission_is_crash_disabled() {
    let mut job = hello_job(json!({"fail": {"at_stage": 2, "mode": "crash"}}), 2, 0);
    assert_eq!(
        hello_stage(&mut job, 0, 1, false),
        Ok(StageOutcome::Completed)
    );
    match hello_stage(&mut job, 1, 1, false) {
        Err(NativeError::Fatal(message)) => assert_eq!(message, "crash_disabled"),
        other => panic!("expected Fatal(crash_disabled), got {other:?}"),
    }
}

fn hello_crash_aborts_the_process() {
    let mut job = hello_job(json!({"fail": {"at_stage": 2, "mode": "crash"}}), 3, 0);
    assert_eq!(
        hello_stage(&mut job, 0, 1, true),
        Ok(StageOutcome::Completed)
    );
    let outcome = hello_stage(&mut job, 1, 1, true);
    // Only reached if C did not abort; the parent then sees a clean exit.
    eprintln!("the crash stage returned {outcome:?}");
}

// ---- harness (parent) ----

fn main() -> ExitCode {
    if let Ok(name) = std::env::var(CASE_ENV) {
        return match CASES.iter().find(|c| c.name == name) {
            Some(case) => {
                (case.run)();
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("no case named {name:?}");
                ExitCode::FAILURE
            }
        };
    }

    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let selected: Vec<&Case> = CASES
        .iter()
        .filter(|c| {
            !has("--ignored")
                && (filters.is_empty()
                    || filters.iter().any(|f| {
                        if has("--exact") {
                            c.name == *f
                        } else {
                            c.name.contains(f)
                        }
                    }))
        })
        .collect();

    if has("--list") {
        for case in &selected {
            println!("{}: test", case.name);
        }
        return ExitCode::SUCCESS;
    }

    println!("\nrunning {} tests", selected.len());
    let mut failures = Vec::new();
    for case in &selected {
        let result = run_case(case);
        println!(
            "test {} ... {}",
            case.name,
            if result.is_ok() { "ok" } else { "FAILED" }
        );
        if let Err(report) = result {
            failures.push((case.name, report));
        }
    }
    for (name, report) in &failures {
        println!("\n---- {name} ----\n{report}");
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; {} filtered out\n",
        if failures.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failures.len(),
        failures.len(),
        CASES.len() - selected.len()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `case` in a child process; `Err` describes what went wrong.
fn run_case(case: &Case) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Command::new(exe)
        .env(CASE_ENV, case.name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;

    let stdout = child.stdout.take().expect("piped stdout");
    let stdout = match case.stdout {
        Stdout::Lines(_) => Some(read_in_background(stdout)),
        Stdout::Closed => {
            drop(stdout);
            None
        }
    };
    let stderr = read_in_background(child.stderr.take().expect("piped stderr"));
    // Closing stdin (after stdout, above) releases a child that waits for it.
    drop(child.stdin.take());

    let status = wait_with_timeout(&mut child)?;
    let err = stderr.join().expect("stderr reader panicked");
    match case.exit {
        Exit::Success if !status.success() => {
            return Err(format!("child exited with {status}\nstderr:\n{err}"));
        }
        Exit::Signal(signal) if status.signal() != Some(signal) => {
            return Err(format!(
                "child exited with {status}, expected signal {signal}\nstderr:\n{err}"
            ));
        }
        _ => {}
    }
    if let (Stdout::Lines(n), Some(stdout)) = (case.stdout, stdout) {
        let out = stdout.join().expect("stdout reader panicked");
        if out != LINE.repeat(n) {
            return Err(format!(
                "stdout: expected exactly {n} `hello world` lines, got {out:?}"
            ));
        }
    }
    Ok(())
}

/// Drains `pipe` on its own thread, so a chatty child cannot fill the pipe
/// and block.
fn read_in_background(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn wait_with_timeout(child: &mut Child) -> Result<std::process::ExitStatus, String> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if start.elapsed() > CHILD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("child still running after {CHILD_TIMEOUT:?}"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
}
