//! Following tasks live: the api's Server-Sent Events, shown as a progress
//! bar per task on a terminal or as plain lines elsewhere.
//!
//! [`follow`] reads a task once (for its stage count and start time), then
//! `GET /tasks/{id}/events` with `Accept: text/event-stream`, parsing frames
//! incrementally ([`SseParser`]) as bytes arrive. When the connection drops,
//! or goes silent for longer than the api's keep-alive period, before the
//! terminal status event, it reconnects with `Last-Event-ID`, so no event is
//! shown twice or lost. It returns the terminal status.

use std::{io::IsTerminal, time::Duration};

use futures_util::{future::join_all, StreamExt};
use indicatif::{
    HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle,
};
use task_model::{EventView, TaskId, TaskStatus, TaskView};

use crate::{
    client::{Client, ClientError},
    output,
};

/// Longer than the api's 15 s keep-alive: silence beyond this means the
/// connection is dead even if TCP has not noticed.
const IDLE_LIMIT: Duration = Duration::from_secs(40);
/// Reconnection attempts in a row before giving up on an api that is gone.
const MAX_RECONNECTS: u32 = 10;

/// One Server-Sent Events frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The last `id:` seen (it carries over frames, as in the SSE spec).
    pub id: Option<String>,
    /// `event:`, or `message` when the frame had none.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Incremental SSE parser: feed it chunks as they arrive, in any split.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    last_id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Adds a chunk; returns the frames it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Frame> {
        self.buf.extend_from_slice(chunk);
        let mut frames = Vec::new();
        let mut start = 0;
        while let Some(len) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[start..start + len];
            start += len + 1;
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some(frame) = self.line(&line) {
                frames.push(frame);
            }
        }
        self.buf.drain(..start);
        frames
    }

    fn line(&mut self, line: &str) -> Option<Frame> {
        if line.is_empty() {
            let event = self.event.take();
            if self.data.is_empty() {
                return None;
            }
            return Some(Frame {
                id: self.last_id.clone(),
                event: event.unwrap_or_else(|| "message".to_owned()),
                data: std::mem::take(&mut self.data).join("\n"),
            });
        }
        if line.starts_with(':') {
            return None; // a comment, e.g. the keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            _ => {} // `retry` and unknown fields
        }
        None
    }
}

/// How progress is shown.
#[derive(Debug, Clone)]
pub enum Display {
    /// A bar per task (stdout is a terminal).
    Bars(MultiProgress),
    /// One plain line per event, no escape codes.
    Lines,
}

impl Display {
    /// Bars when stdout is a terminal, lines otherwise.
    pub fn detect() -> Self {
        if std::io::stdout().is_terminal() {
            Display::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stdout()))
        } else {
            Display::Lines
        }
    }

    /// A reporter for `id`. On a terminal its bar is added to the screen
    /// here, below the bars made before it, so bars stand in the order their
    /// reporters were made, whichever task's answers come first.
    fn reporter(&self, id: TaskId) -> Reporter {
        match self {
            Display::Bars(multi) => {
                // Hidden until the MultiProgress owns it, so it never draws on its own.
                let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
                pb.set_style(waiting_style());
                pb.set_prefix(short(&id));
                pb.set_message("connecting…");
                Reporter::Bar {
                    bar: multi.add(pb),
                    processing: false,
                    stage: 0,
                    stages: 0,
                }
            }
            Display::Lines => Reporter::Line { id, stages: 0 },
        }
    }
}

/// Shows one task's progress.
#[derive(Debug)]
enum Reporter {
    Bar {
        bar: ProgressBar,
        processing: bool,
        /// Stages done and in all, for the bar's message.
        stage: u32,
        stages: u32,
    },
    Line {
        id: TaskId,
        stages: u32,
    },
}

/// The bar's look: the task's `progress` (percent, including the running
/// stage's share when its algorithm reports one), stage k/n in the message.
/// `{eta}` is indicatif's estimate once progress moved; before that
/// (nothing to measure yet) it is the plan: what is left of stages × stage_ms.
fn bar_style(planned_ms: u64) -> ProgressStyle {
    let planned = move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
        let eta = if state.pos() == 0 {
            let left = state.len().unwrap_or(0).saturating_sub(state.pos());
            Duration::from_millis(left.saturating_mul(planned_ms) / 100)
        } else {
            state.eta()
        };
        let _ = write!(w, "{:#}", HumanDuration(eta));
    };
    ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30.cyan/blue}] {pos:>3}% {elapsed_precise} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key("eta", planned)
    .progress_chars("=> ")
}

/// Before the task's first answer: its id and what is happening.
fn waiting_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:.bold} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A bar whose task has ended (or that gave up): where it got to and the
/// outcome, without an ETA — nothing is left to estimate.
fn ended_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30.cyan/blue}] {pos:>3}% {elapsed_precise} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn short(id: &TaskId) -> String {
    id.to_string().chars().take(8).collect()
}

/// `stage 1/3 PROCESSING on w1`.
fn bar_message(stage: u32, stages: u32, status: TaskStatus, worker: Option<&str>) -> String {
    let mut msg = format!("stage {stage}/{stages} {status}");
    if let Some(worker) = worker {
        msg.push_str(&format!(" on {worker}"));
    }
    msg
}

impl Reporter {
    fn start(&mut self, task: &TaskView) {
        match self {
            Reporter::Bar {
                bar,
                processing,
                stage,
                stages,
            } => {
                bar.set_length(100);
                if let (Some(started), false) = (task.started_at, task.status.is_terminal()) {
                    let since = (chrono::Utc::now() - started).to_std().unwrap_or_default();
                    // `with_elapsed` sets the shared state of every clone.
                    let _ = bar.clone().with_elapsed(since);
                    *processing = true;
                } else {
                    bar.reset_elapsed();
                }
                (*stage, *stages) = (task.stage, task.stages);
                bar.set_position(u64::from(task.progress));
                let planned = u64::from(task.stages).saturating_mul(task.stage_ms);
                bar.set_style(bar_style(planned));
                bar.set_message(bar_message(task.stage, task.stages, task.status, None));
                bar.enable_steady_tick(Duration::from_millis(200));
            }
            Reporter::Line { stages, .. } => *stages = task.stages,
        }
    }

    fn event(&mut self, e: &EventView) {
        match self {
            Reporter::Bar {
                bar: pb,
                processing,
                stage,
                stages,
            } => {
                if e.status == TaskStatus::Processing && !*processing {
                    // Elapsed and ETA count the running time, not the wait in the queue.
                    *processing = true;
                    pb.reset_elapsed();
                    pb.reset_eta();
                }
                pb.set_position(u64::from(e.progress).max(pb.position()));
                *stage = e.stage.max(*stage);
                pb.set_message(bar_message(*stage, *stages, e.status, e.worker.as_deref()));
            }
            // The terminal status event's line is `finish`'s.
            Reporter::Line { .. } if e.kind == "status" && e.status.is_terminal() => {}
            Reporter::Line { id, stages } => output::line(output::progress_line(id, e, *stages)),
        }
    }

    fn finish(&mut self, status: TaskStatus, detail: Option<&str>) {
        let text = output::final_status(status, detail);
        match self {
            Reporter::Bar {
                bar: pb,
                stage,
                stages,
                ..
            } => {
                let text = format!("stage {stage}/{stages} {text}");
                pb.set_style(ended_style());
                if status == TaskStatus::Completed {
                    pb.finish_with_message(text);
                } else {
                    pb.abandon_with_message(text);
                }
            }
            Reporter::Line { id, .. } => output::line(format!("{id} {text}")),
        }
    }

    fn fail(&mut self) {
        if let Reporter::Bar { bar: pb, .. } = self {
            if pb.length().is_some() {
                pb.set_style(ended_style());
            }
            pb.abandon_with_message("error (see below)");
        }
    }
}

/// Follows one task to its end, showing it on `display`; returns its final status.
///
/// # Errors
/// The task does not exist, the api cannot be reached (at first, or again
/// after repeated reconnection attempts), or it answers something unexpected.
pub async fn follow(
    client: &Client,
    id: TaskId,
    display: &Display,
) -> Result<TaskStatus, ClientError> {
    follow_reporting(client, id, display.reporter(id)).await
}

/// Follows every task of `ids` at once; a bar each, in the order of `ids`.
/// Returns each one's outcome (see [`follow`]), in the same order.
pub async fn follow_all(
    client: &Client,
    ids: &[TaskId],
    display: &Display,
) -> Vec<Result<TaskStatus, ClientError>> {
    // Every bar is placed before any request goes out.
    let reporters: Vec<Reporter> = ids.iter().map(|id| display.reporter(*id)).collect();
    join_all(
        ids.iter()
            .zip(reporters)
            .map(|(id, reporter)| follow_reporting(client, *id, reporter)),
    )
    .await
}

async fn follow_reporting(
    client: &Client,
    id: TaskId,
    mut reporter: Reporter,
) -> Result<TaskStatus, ClientError> {
    let outcome = follow_with(client, id, &mut reporter).await;
    if outcome.is_err() {
        reporter.fail();
    }
    outcome
}

async fn follow_with(
    client: &Client,
    id: TaskId,
    reporter: &mut Reporter,
) -> Result<TaskStatus, ClientError> {
    let task = client.task(id).await?;
    reporter.start(&task);
    let mut last_seen = 0u64;
    let mut failures = 0u32;
    let mut saw_terminal_task = false;
    loop {
        let error = match read_stream(client, id, &mut last_seen, reporter).await {
            Ok(StreamEnd::Terminal(status)) => return Ok(status),
            Ok(StreamEnd::Dropped { progressed }) => {
                if progressed {
                    failures = 0;
                }
                // If the task is over but its final event never came (a
                // connection closed at the wrong moment), ask once more for
                // the rest, then go by the task itself.
                match client.task(id).await {
                    Ok(task) if task.status.is_terminal() => {
                        if saw_terminal_task {
                            reporter.finish(task.status, task.error.as_deref());
                            return Ok(task.status);
                        }
                        saw_terminal_task = true;
                        continue;
                    }
                    Ok(_) => ClientError::InvalidResponse(
                        "the event stream keeps closing before the task ends".to_owned(),
                    ),
                    Err(e) if retryable(&e) => e,
                    Err(e) => return Err(e),
                }
            }
            Err(e) if retryable(&e) => e,
            Err(e) => return Err(e),
        };
        failures += 1;
        if failures > MAX_RECONNECTS {
            return Err(error);
        }
        tokio::time::sleep(backoff(failures - 1)).await;
    }
}

fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. } => true,
        ClientError::Api { status, .. } => *status >= 500,
        ClientError::NotFound { .. }
        | ClientError::NoSchedule { .. }
        | ClientError::InvalidResponse(_)
        | ClientError::File { .. }
        | ClientError::NoResultFile { .. } => false,
    }
}

fn backoff(failures: u32) -> Duration {
    let ms = 100u64 << failures.min(5);
    Duration::from_millis(ms.min(2_000))
}

/// How one SSE connection ended.
#[derive(Debug)]
enum StreamEnd {
    /// With the terminal status event.
    Terminal(TaskStatus),
    /// Closed, broken or silent before it; `progressed` if it brought news.
    Dropped { progressed: bool },
}

/// Reads one SSE connection to its end.
async fn read_stream(
    client: &Client,
    id: TaskId,
    last_seen: &mut u64,
    reporter: &mut Reporter,
) -> Result<StreamEnd, ClientError> {
    let res = client.event_stream(id, *last_seen).await?;
    let mut body = res.bytes_stream();
    let mut parser = SseParser::default();
    let mut progressed = false;
    loop {
        let chunk = match tokio::time::timeout(IDLE_LIMIT, body.next()).await {
            Err(_) | Ok(None) | Ok(Some(Err(_))) => return Ok(StreamEnd::Dropped { progressed }),
            Ok(Some(Ok(chunk))) => chunk,
        };
        for frame in parser.push(&chunk) {
            let event: EventView = serde_json::from_str(&frame.data).map_err(|e| {
                ClientError::InvalidResponse(format!("an event that is not one: {e}"))
            })?;
            if event.seq <= *last_seen {
                continue;
            }
            *last_seen = event.seq;
            progressed = true;
            reporter.event(&event);
            if event.kind == "status" && event.status.is_terminal() {
                reporter.finish(event.status, event.detail.as_deref());
                return Ok(StreamEnd::Terminal(event.status));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "id: 1\nevent: status\ndata: {\"a\":1}\n\n: keep-alive\n\nid: 2\r\nevent: progress\r\ndata: x\r\ndata: y\r\n\r\n";

    fn expected() -> Vec<Frame> {
        vec![
            Frame {
                id: Some("1".into()),
                event: "status".into(),
                data: "{\"a\":1}".into(),
            },
            Frame {
                id: Some("2".into()),
                event: "progress".into(),
                data: "x\ny".into(),
            },
        ]
    }

    #[test]
    fn frames_parse_whatever_the_chunking() {
        let bytes = STREAM.as_bytes();
        for split in 0..=bytes.len() {
            let mut p = SseParser::default();
            let mut frames = p.push(&bytes[..split]);
            frames.extend(p.push(&bytes[split..]));
            assert_eq!(frames, expected(), "split at {split}");
        }
        let mut p = SseParser::default();
        let frames: Vec<Frame> = bytes.iter().flat_map(|b| p.push(&[*b])).collect();
        assert_eq!(frames, expected(), "byte by byte");
    }

    #[test]
    fn comments_and_dataless_frames_dispatch_nothing() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nevent: x\n\n").is_empty());
        // The dataless frame's event type does not leak into the next one.
        let f = p.push(b"data:no space\n\n");
        assert_eq!(f[0].event, "message");
        assert_eq!(f[0].data, "no space");
    }

    /// A terminal that keeps what is drawn on it: one string per frame.
    #[derive(Debug, Clone, Default)]
    struct Screen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl Screen {
        fn display(&self) -> Display {
            let target = ProgressDrawTarget::term_like(Box::new(self.clone()));
            Display::Bars(MultiProgress::with_draw_target(target))
        }

        /// The last frame drawn.
        fn last(&self) -> String {
            let frames = self.0.lock().unwrap();
            let last = frames.iter().rev().find(|f| !f.is_empty());
            last.cloned().unwrap_or_default()
        }

        fn new_frame(&self) {
            let mut frames = self.0.lock().unwrap();
            if frames.last().is_none_or(|f| !f.is_empty()) {
                frames.push(String::new());
            }
        }

        fn write(&self, s: &str) {
            let mut frames = self.0.lock().unwrap();
            match frames.last_mut() {
                Some(frame) => frame.push_str(s),
                None => frames.push(s.to_owned()),
            }
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            200
        }
        fn height(&self) -> u16 {
            50
        }
        // Every redraw starts by moving up to the first line: a new frame.
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            self.new_frame();
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write(&format!("{s}\n"));
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.write(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn task(id: &str, status: TaskStatus, stage: u32) -> TaskView {
        let now = chrono::Utc::now();
        TaskView {
            task_id: TaskId::parse(id).unwrap(),
            status,
            algorithm: "hello".into(),
            progress: task_model::progress_percent(stage, 3),
            stage,
            stages: 3,
            stage_ms: 1000,
            timeout_secs: 50,
            priority: 0,
            input: serde_json::Value::Null,
            created_at: now,
            started_at: (status != TaskStatus::Queued).then_some(now),
            finished_at: None,
            updated_at: now,
            worker: None,
            cancel_requested: false,
            result: None,
            error: None,
            webhook: None,
            queue: "algo".into(),
            attempt: 1,
            max_attempts: 3,
            takeovers: 0,
            scheduled_for: None,
            errors: Vec::new(),
        }
    }

    const IDS: [&str; 3] = [
        "aaaaaaaa-0000-4000-8000-000000000001",
        "bbbbbbbb-0000-4000-8000-000000000002",
        "cccccccc-0000-4000-8000-000000000003",
    ];

    #[test]
    fn bars_stand_in_argument_order_whichever_task_answers_first() {
        let screen = Screen::default();
        let display = screen.display();
        let mut reporters: Vec<Reporter> = IDS
            .iter()
            .map(|id| display.reporter(TaskId::parse(id).unwrap()))
            .collect();
        // The answers come in reverse order: the last task's first.
        for (reporter, id) in reporters.iter_mut().zip(IDS).rev() {
            reporter.start(&task(id, TaskStatus::Processing, 1));
        }
        let frame = screen.last();
        let at: Vec<usize> = IDS
            .iter()
            .map(|id| {
                frame
                    .find(&id[..8])
                    .unwrap_or_else(|| panic!("{id} in {frame:?}"))
            })
            .collect();
        assert!(at[0] < at[1] && at[1] < at[2], "{frame:?}");
    }

    #[test]
    fn an_ended_bar_shows_its_outcome_and_no_eta() {
        for (status, detail, shown) in [
            (TaskStatus::Cancelled, None, "CANCELLED"),
            (TaskStatus::Failed, Some("boom"), "FAILED: boom"),
            (TaskStatus::Completed, None, "COMPLETED"),
        ] {
            let screen = Screen::default();
            let mut reporter = screen.display().reporter(TaskId::parse(IDS[0]).unwrap());
            reporter.start(&task(IDS[0], TaskStatus::Processing, 1));
            assert!(screen.last().contains("ETA"), "a running bar has one");
            reporter.finish(status, detail);
            let frame = screen.last();
            assert!(frame.contains(shown), "{frame:?}");
            assert!(!frame.contains("ETA"), "{frame:?}");
        }
    }

    #[test]
    fn a_bar_moves_within_a_stage_with_the_tasks_progress() {
        let screen = Screen::default();
        let mut reporter = screen.display().reporter(TaskId::parse(IDS[0]).unwrap());
        reporter.start(&task(IDS[0], TaskStatus::Processing, 1));
        assert!(screen.last().contains(" 33% "), "{:?}", screen.last());
        // Half of stage 2 of 3 done: floor(100 × 1.5 / 3) = 50.
        reporter.event(&EventView {
            seq: 4,
            at: chrono::Utc::now(),
            kind: "progress".into(),
            status: TaskStatus::Processing,
            progress: 50,
            stage: 1,
            worker: Some("w1".into()),
            detail: None,
            attempt: 1,
        });
        let frame = screen.last();
        assert!(frame.contains(" 50% "), "{frame:?}");
        assert!(frame.contains("stage 1/3 PROCESSING on w1"), "{frame:?}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(10), Duration::from_millis(2_000));
    }
}
