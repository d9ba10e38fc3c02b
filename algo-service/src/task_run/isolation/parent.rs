//! The worker's side of a stage helper: [`Helper`] starts the process,
//! sends it the job, a stage at a time, and turns its death into the
//! attempt's retryable `algorithm_crashed: <signal>`.

use std::{
    collections::HashMap,
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::atomic::{AtomicI32, Ordering},
    time::Duration,
};

use native::{NativeError, StageOutcome};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Split},
    process::{Child, ChildStderr, ChildStdin, Command as Process},
    time::Instant,
};

use super::{
    wire::{self, Command, Event},
    Finished, FinishedBlob,
};
use crate::{
    registry::{StopFlag, StopReason},
    task_run::{ffi::StageArgs, ffi::ValidUntil, RunParams},
};

/// How often a running stage's flag, deadline and lease are looked at: a
/// cancel reaches the helper within this (plus a pipe write).
const POLL: Duration = Duration::from_millis(20);
/// A helper that has not ended its stage this long after being told to stop
/// is killed (C that ignores its flag cannot hold a task here).
const KILL_AFTER: Duration = Duration::from_secs(2);
/// How long a helper that closed its stderr gets to exit before it is killed.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// Event lines longer than this (blobs) are parsed on a blocking thread.
const LONG_LINE: usize = 64 * 1024;

/// One helper process, for one attempt of one task.
#[derive(Debug)]
pub struct Helper {
    child: Child,
    stdin: ChildStdin,
    events: Split<BufReader<ChildStderr>>,
    pid: u32,
    /// Once the process is gone: what every later call returns.
    gone: Option<NativeError>,
}

/// What a stage's wait watches besides the helper.
struct Watch<'a> {
    flag: &'a StopFlag,
    deadline: Instant,
    valid_until: &'a ValidUntil,
    progress: &'a AtomicI32,
    stage: u32,
}

/// The program to run as the helper: this very executable (also when its
/// file was replaced by a rebuild since), so both sides speak one protocol.
fn program() -> PathBuf {
    let this = PathBuf::from("/proc/self/exe");
    if this.exists() {
        return this;
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("algo-service"))
}

/// `algorithm_crashed: SIGABRT` (or `exit status 3`, for a helper that
/// exited without answering), retryable.
pub(crate) fn crash_error(status: Option<ExitStatus>) -> NativeError {
    let how = match status {
        Some(status) => match (status.signal(), status.code()) {
            (Some(signal), _) => nix::sys::signal::Signal::try_from(signal)
                .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned()),
            (None, Some(code)) => format!("exit status {code}"),
            (None, None) => "unknown exit".to_owned(),
        },
        None => "lost".to_owned(),
    };
    NativeError::Retryable(format!("algorithm_crashed: {how}"))
}

fn protocol_error(what: &str, event: &Event) -> NativeError {
    NativeError::Retryable(format!("the stage helper answered {what} with {event:?}"))
}

impl Helper {
    /// Starts a helper and has it build the job from `params` and `blobs`.
    ///
    /// # Errors
    /// The job could not be built (the algorithm's error, e.g. a blob that
    /// is not an image), or the helper could not start or died
    /// (`algorithm_crashed: …`).
    pub(crate) async fn start(
        params: &RunParams,
        blobs: HashMap<String, Vec<u8>>,
    ) -> Result<Self, NativeError> {
        let mut child = Process::new(program())
            .arg(wire::HELPER_ARG)
            // It needs no secret: the worker does all the talking.
            .env_remove("CALLBACK_TOKEN")
            .env_remove("AMQP_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            // Not in the worker's process group: a terminal's Ctrl-C is the
            // worker's to handle (its drain), not a crash of every stage.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| NativeError::Retryable(format!("cannot start a stage helper: {e}")))?;
        let (Some(stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
            return Err(NativeError::Retryable(
                "the stage helper has no pipes".to_owned(),
            ));
        };
        let pid = child.id().unwrap_or_default();
        tracing::debug!(pid, "stage helper started");
        let mut helper = Self {
            child,
            stdin,
            events: BufReader::new(stderr).split(b'\n'),
            pid,
            gone: None,
        };
        let init = init_line(params, blobs).await?;
        helper.write(&init).await?;
        match helper.next_event(None).await? {
            Event::Ready => Ok(helper),
            Event::Error { error } => Err(error.into()),
            other => Err(protocol_error("init", &other)),
        }
    }

    /// Runs one stage in the helper, raising `flag` when `deadline` passes
    /// and passing on a raised flag and lease renewals while it runs;
    /// `progress` gets the stage's progress per mille.
    ///
    /// # Errors
    /// The stage's own error, or `algorithm_crashed: <signal>` (retryable)
    /// when the helper died.
    pub(crate) async fn run_stage(
        &mut self,
        args: StageArgs,
        flag: &StopFlag,
        deadline: Instant,
        valid_until: &ValidUntil,
        progress: &AtomicI32,
    ) -> Result<StageOutcome, NativeError> {
        if let Some(gone) = &self.gone {
            return Err(gone.clone());
        }
        progress.store(0, Ordering::Relaxed);
        self.send(&Command::Stage {
            stage: args.stage,
            attempt: args.attempt,
            allow_crash: args.allow_crash,
            valid_until: valid_until.get(),
        })
        .await?;
        let watch = Watch {
            flag,
            deadline,
            valid_until,
            progress,
            stage: args.stage,
        };
        match self.next_event(Some(&watch)).await? {
            Event::Stage { outcome } => outcome.into(),
            other => Err(protocol_error("a stage", &other)),
        }
    }

    /// The finished job's result (the helper exits after it).
    ///
    /// # Errors
    /// As [`native::Job::finish`], or the helper died.
    pub(crate) async fn finish(mut self) -> Result<Finished, NativeError> {
        if let Some(gone) = self.gone.take() {
            return Err(gone);
        }
        self.send(&Command::Finish).await?;
        let finished = match self.next_event(None).await? {
            Event::Output { result, blob } => Finished {
                result,
                blob: blob.map(decode_blob).transpose()?,
            },
            Event::Error { error } => return Err(error.into()),
            other => return Err(protocol_error("finish", &other)),
        };
        drop(self.stdin);
        match tokio::time::timeout(EXIT_WAIT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            other => {
                tracing::warn!(pid = self.pid, exit = ?other, "the stage helper did not exit cleanly after its result")
            }
        }
        Ok(finished)
    }

    async fn send(&mut self, command: &Command) -> Result<(), NativeError> {
        let mut line = serde_json::to_vec(command)
            .map_err(|e| NativeError::Retryable(format!("encoding a helper command: {e}")))?;
        line.push(b'\n');
        self.write(&line).await
    }

    async fn write(&mut self, line: &[u8]) -> Result<(), NativeError> {
        if let Some(gone) = &self.gone {
            return Err(gone.clone());
        }
        if let Err(e) = self.stdin.write_all(line).await {
            tracing::debug!(pid = self.pid, error = %e, "writing to the stage helper failed");
            return Err(self.died().await);
        }
        Ok(())
    }

    /// The next event other than progress (which goes to `watch.progress`);
    /// while a stage runs, also watches its flag, deadline and lease.
    async fn next_event(&mut self, watch: Option<&Watch<'_>>) -> Result<Event, NativeError> {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut told_to_stop: Option<Instant> = None;
        let mut sent_until = watch.map(|w| w.valid_until.get());
        loop {
            tokio::select! {
                line = self.events.next_segment() => {
                    let line = match line {
                        // Lossy: a stray non-UTF-8 byte from C is logged, not fatal.
                        Ok(Some(line)) => String::from_utf8_lossy(&line).into_owned(),
                        Ok(None) => return Err(self.died().await),
                        Err(e) => {
                            tracing::warn!(pid = self.pid, error = %e, "reading the stage helper's events failed");
                            return Err(self.died().await);
                        }
                    };
                    match parse(line).await {
                        Ok(Event::Progress { stage, per_mille }) => {
                            if let Some(w) = watch.filter(|w| w.stage == stage) {
                                w.progress.store(per_mille, Ordering::Relaxed);
                            }
                        }
                        Ok(event) => return Ok(event),
                        Err(text) => tracing::warn!(pid = self.pid, stderr = %text, "stage helper"),
                    }
                }
                _ = tick.tick(), if watch.is_some() => {
                    let Some(w) = watch else { continue };
                    if let Some(stopped) = self.watch_tick(w, &mut told_to_stop, &mut sent_until).await? {
                        return Ok(stopped);
                    }
                }
            }
        }
    }

    /// One look at a running stage's flag, deadline and lease; an event
    /// when the helper had to be killed for ignoring its cancel.
    async fn watch_tick(
        &mut self,
        w: &Watch<'_>,
        told_to_stop: &mut Option<Instant>,
        sent_until: &mut Option<u64>,
    ) -> Result<Option<Event>, NativeError> {
        if Instant::now() >= w.deadline && w.flag.raise(StopReason::Deadline) {
            tracing::info!("deadline passed; interrupting the stage");
        }
        if w.flag.reason().is_some() {
            match told_to_stop {
                None => {
                    self.send(&Command::Cancel).await?;
                    *told_to_stop = Some(Instant::now());
                }
                Some(at) if at.elapsed() >= KILL_AFTER => {
                    tracing::warn!(
                        pid = self.pid,
                        "the stage helper ignored its cancel; killing it"
                    );
                    let _ = self.child.start_kill();
                    let status = self.child.wait().await.ok();
                    self.gone = Some(crash_error(status));
                    return Ok(Some(Event::Stage {
                        outcome: wire::Outcome::Interrupted,
                    }));
                }
                Some(_) => {}
            }
        }
        let until = w.valid_until.get();
        if *sent_until != Some(until) {
            self.send(&Command::ValidUntil { ms: until }).await?;
            *sent_until = Some(until);
        }
        Ok(None)
    }

    /// The helper's events ended: waits for it (killing it if it lingers)
    /// and gives the error of its death.
    async fn died(&mut self) -> NativeError {
        if let Some(gone) = &self.gone {
            return gone.clone();
        }
        let status = match tokio::time::timeout(EXIT_WAIT, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.start_kill();
                self.child.wait().await.ok()
            }
        };
        let error = crash_error(status);
        tracing::error!(pid = self.pid, error = %error, "the stage helper process died");
        self.gone = Some(error.clone());
        error
    }
}

/// The `init` line: base64 and JSON of the input blobs, on a blocking
/// thread (an image may be megabytes).
async fn init_line(
    params: &RunParams,
    blobs: HashMap<String, Vec<u8>>,
) -> Result<Vec<u8>, NativeError> {
    let (algorithm, input, stages, stage_ms) = (
        params.algorithm.clone(),
        params.input.clone(),
        params.stages,
        params.stage_ms,
    );
    let encoded = tokio::task::spawn_blocking(move || {
        let blobs = blobs
            .iter()
            .map(|(id, b)| (id.clone(), wire::encode(b)))
            .collect();
        let mut line = serde_json::to_vec(&Command::Init {
            algorithm,
            input,
            stages,
            stage_ms,
            blobs,
        })?;
        line.push(b'\n');
        Ok::<_, serde_json::Error>(line)
    })
    .await;
    match encoded {
        Ok(Ok(line)) => Ok(line),
        Ok(Err(e)) => Err(NativeError::Retryable(format!(
            "encoding the job for the stage helper: {e}"
        ))),
        Err(e) => Err(NativeError::Retryable(format!(
            "encoding the job for the stage helper crashed: {e}"
        ))),
    }
}

/// An event line, or the text itself when it is not one (a panic message,
/// something C wrote to stderr). Long lines parse on a blocking thread.
async fn parse(line: String) -> Result<Event, String> {
    if line.len() <= LONG_LINE {
        return serde_json::from_str(&line).map_err(|_| line);
    }
    tokio::task::spawn_blocking(move || serde_json::from_str(&line).map_err(|_| line))
        .await
        .unwrap_or_else(|e| Err(format!("parsing a long event line crashed: {e}")))
}

fn decode_blob(blob: wire::Blob) -> Result<FinishedBlob, NativeError> {
    let bytes = wire::decode(&blob.bytes).map_err(|e| {
        NativeError::Retryable(format!(
            "the output blob did not cross from the stage helper: {e}"
        ))
    })?;
    Ok(FinishedBlob {
        field: blob.field,
        content_type: blob.content_type,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_death_is_named_and_retryable() {
        let abort = crash_error(Some(ExitStatus::from_raw(6)));
        assert_eq!(
            abort,
            NativeError::Retryable("algorithm_crashed: SIGABRT".into())
        );
        assert!(abort.is_retryable());
        let segv = crash_error(Some(ExitStatus::from_raw(11)));
        assert_eq!(segv.to_string(), "algorithm_crashed: SIGSEGV");
        let exited = crash_error(Some(ExitStatus::from_raw(3 << 8)));
        assert_eq!(exited.to_string(), "algorithm_crashed: exit status 3");
    }
}
