//! The stage helper process: `algo-service --stage-helper`, started by the
//! worker for one task attempt. It builds the [`native::Job`], runs the
//! stages it is asked for, and sends the result; the FFI calls happen here,
//! so a crash in C ends this process only.
//!
//! Three threads: the main one runs the job; a reader takes the commands
//! from stdin (raising the cancel flag or moving the line's time limit at
//! once, also mid-stage; at EOF — the worker is gone or done — it raises
//! the flag, so a running stage returns within milliseconds and the helper
//! exits); a poller sends the progress within the stage every 50 ms when it
//! moved. Events go to stderr, one whole line per write under std's lock.

use std::{
    collections::HashMap,
    io::{BufRead, Write},
    process::ExitCode,
    sync::{
        atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use native::{Job, JobSpec, NativeError, StageCall};

use super::wire::{self, Blob, Command, Event, Outcome, WireError};

/// How often the poller looks at the progress within the stage.
const PROGRESS_POLL: Duration = Duration::from_millis(50);

/// What the three threads share.
#[derive(Debug, Default)]
struct Shared {
    cancel: AtomicI32,
    valid_until: AtomicU64,
    progress: AtomicI32,
    stage: AtomicU32,
}

/// Runs the helper until its job is finished or stdin closes.
pub fn main() -> ExitCode {
    let shared = Arc::new(Shared::default());
    let (tx, rx) = mpsc::channel();
    let reader = Arc::clone(&shared);
    std::thread::spawn(move || read_commands(&reader, &tx));
    let poller = Arc::clone(&shared);
    std::thread::spawn(move || poll_progress(&poller));
    match serve(&shared, &rx) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Not an event: the worker logs it as the helper's stderr text.
            eprintln!("stage helper: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Writes one event line to stderr. A worker that is gone cannot be told;
/// stdin's EOF ends the helper then.
fn emit(event: &Event) {
    if let Ok(mut line) = serde_json::to_vec(event) {
        line.push(b'\n');
        let _ = std::io::stderr().lock().write_all(&line);
    }
}

/// Applies `cancel` and `valid_until` at once and hands the rest to the
/// main thread, in order; at EOF (or a broken pipe) raises the cancel flag.
fn read_commands(shared: &Shared, tx: &mpsc::Sender<Command>) {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let command = match serde_json::from_str::<Command>(&line) {
            Ok(command) => command,
            Err(e) => {
                eprintln!("stage helper: a command it does not understand ({e})");
                break;
            }
        };
        match command {
            Command::Cancel => {
                shared.cancel.store(1, Ordering::Release);
                native::wake(&shared.cancel);
                native::wake(&shared.cancel);
            }
            Command::ValidUntil { ms } => shared.valid_until.store(ms, Ordering::Release),
            Command::Stage { valid_until, .. } => {
                // Stored here, in command order, so a later renewal is never undone.
                shared.valid_until.store(valid_until, Ordering::Release);
                if tx.send(command).is_err() {
                    break;
                }
            }
            other => {
                if tx.send(other).is_err() {
                    break;
                }
            }
        }
    }
    shared.cancel.store(1, Ordering::Release);
    native::wake(&shared.cancel);
}

/// Sends the stage's progress whenever it moved.
fn poll_progress(shared: &Shared) {
    let mut last = (u32::MAX, 0);
    loop {
        std::thread::sleep(PROGRESS_POLL);
        let stage = shared.stage.load(Ordering::SeqCst);
        let per_mille = shared.progress.load(Ordering::SeqCst);
        if per_mille > 0 && (stage, per_mille) != last {
            last = (stage, per_mille);
            emit(&Event::Progress { stage, per_mille });
        }
    }
}

/// `init`, then stages until `finish` or the end of the commands.
fn serve(shared: &Shared, rx: &mpsc::Receiver<Command>) -> Result<(), String> {
    let Ok(Command::Init {
        algorithm,
        input,
        stages,
        stage_ms,
        blobs,
    }) = rx.recv()
    else {
        return Err("the first command was not init (or stdin closed)".to_owned());
    };
    let mut job = match build(&algorithm, &input, stages, stage_ms, &blobs) {
        Ok(job) => job,
        Err(e) => {
            emit(&Event::Error { error: (&e).into() });
            return Ok(());
        }
    };
    emit(&Event::Ready);
    while let Ok(command) = rx.recv() {
        match command {
            Command::Stage {
                stage,
                attempt,
                allow_crash,
                ..
            } => {
                // Reset before the stage number moves, so the poller never
                // pairs this stage with the last one's progress.
                shared.progress.store(0, Ordering::SeqCst);
                shared.stage.store(stage, Ordering::SeqCst);
                let call = StageCall {
                    stage,
                    attempt,
                    cancel: &shared.cancel,
                    progress: &shared.progress,
                    allow_crash,
                };
                let outcome = job.run_stage_until(&call, &shared.valid_until);
                emit(&Event::Stage {
                    outcome: Outcome::from(&outcome),
                });
            }
            Command::Finish => {
                emit(&finish(&job));
                return Ok(());
            }
            other => return Err(format!("unexpected command {other:?}")),
        }
    }
    Ok(())
}

/// The job, as the worker would build it on a blocking thread.
fn build(
    algorithm: &str,
    input: &serde_json::Value,
    stages: u32,
    stage_ms: u64,
    blobs: &HashMap<String, String>,
) -> Result<Job, NativeError> {
    let Some(algorithm) = native::algorithm(algorithm) else {
        return Err(NativeError::Fatal(format!(
            "unknown algorithm {algorithm:?}"
        )));
    };
    let mut bytes = HashMap::with_capacity(blobs.len());
    for (id, text) in blobs {
        let blob = wire::decode(text).map_err(|e| {
            NativeError::Fatal(format!("blob {id} did not reach the stage helper: {e}"))
        })?;
        bytes.insert(id.clone(), blob);
    }
    Job::new(
        algorithm,
        JobSpec {
            input,
            stages,
            stage_ms,
            blobs: &bytes,
        },
    )
}

/// The `output` (or `error`) event of the finished job.
fn finish(job: &Job) -> Event {
    match job.finish() {
        Ok(out) => Event::Output {
            result: out.result,
            blob: out.blob.map(|b| Blob {
                field: b.field.to_owned(),
                content_type: b.content_type.to_owned(),
                bytes: wire::encode(&b.bytes),
            }),
        },
        Err(e) => Event::Error {
            error: WireError::from(&e),
        },
    }
}
