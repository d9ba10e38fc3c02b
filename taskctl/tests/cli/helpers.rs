//! The real `taskctl` binary as a child process, pointed at the api of a
//! [`test_support::Stack`] (in-process, own RabbitMQ vhost and Redis prefix,
//! random port) in which the test plays the worker.

use std::{process::Stdio, time::Duration};

use test_support::Stack;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

/// How long any single step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(15);
/// An id no task has.
pub const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

/// `taskctl` pointed at a [`Stack`]'s api.
pub trait Taskctl {
    /// The real binary with this api's URL (no key unless the test adds one).
    fn taskctl(&self) -> Command;
}

impl Taskctl for Stack {
    fn taskctl(&self) -> Command {
        taskctl_at(&self.address)
    }
}

/// The real binary with `API_URL` set and nothing else inherited that matters.
pub fn taskctl_at(api_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskctl"));
    cmd.env("API_URL", api_url)
        .env_remove("API_KEY")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A finished run of `taskctl`.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts stderr is exactly one `taskctl: error: …` line; returns it.
    pub fn one_error_line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr, got {:?}", self.stderr);
        assert!(
            lines[0].starts_with("taskctl: error: "),
            "error format: {:?}",
            lines[0]
        );
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "no panic: {}",
            self.stderr
        );
        lines[0]
    }
}

/// Runs `cmd args…` to the end.
pub async fn run(mut cmd: Command, args: &[&str]) -> Run {
    let output = tokio::time::timeout(STEP, cmd.args(args).output())
        .await
        .unwrap_or_else(|_| panic!("taskctl {args:?} did not finish"))
        .expect("taskctl starts");
    Run {
        code: output.status.code().expect("taskctl exits (no signal)"),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    }
}

/// A running `taskctl` whose stdout is read line by line as it comes.
pub struct Live {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Live {
    pub fn start(mut cmd: Command, args: &[&str]) -> Live {
        let mut child = cmd.args(args).spawn().expect("taskctl starts");
        let stdout = child.stdout.take().expect("piped stdout");
        Live {
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// The next line of stdout (fails the test if none comes in time).
    pub async fn next_line(&mut self) -> String {
        let line = tokio::time::timeout(STEP, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no output in time; so far {:?}", self.seen))
            .expect("stdout readable")
            .unwrap_or_else(|| panic!("stdout closed early; so far {:?}", self.seen));
        self.seen.push(line.clone());
        line
    }

    /// Reads the rest of stdout and waits for the exit.
    pub async fn finish(mut self) -> (Run, Vec<String>) {
        while let Some(line) = tokio::time::timeout(STEP, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("taskctl did not finish; so far {:?}", self.seen))
            .expect("stdout readable")
        {
            self.seen.push(line);
        }
        let status = tokio::time::timeout(STEP, self.child.wait())
            .await
            .expect("taskctl exits")
            .expect("wait");
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            err.read_to_string(&mut stderr).await.expect("stderr");
        }
        let run = Run {
            code: status.code().expect("taskctl exits (no signal)"),
            stdout: self.seen.join("\n"),
            stderr,
        };
        (run, self.seen)
    }
}

/// Asserts `lines` are plain text: no terminal escape codes at all.
pub fn assert_plain(lines: &[String]) {
    for line in lines {
        assert!(
            !line.contains('\x1b') && !line.contains('\r'),
            "escape codes in {line:?}"
        );
    }
}

/// Positions of `needles` in `lines` (each must occur), asserting they ascend.
pub fn assert_in_order(lines: &[String], needles: &[String]) {
    let mut from = 0;
    for needle in needles {
        let at = lines[from..]
            .iter()
            .position(|l| l == needle)
            .unwrap_or_else(|| panic!("{needle:?} missing (in order) from {lines:#?}"));
        from += at + 1;
    }
}
