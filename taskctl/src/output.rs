//! What `taskctl` prints: summaries and tables for people, the api's JSON
//! (pretty) for scripts, and the one-line error format.
//!
//! Writing to a closed stdout (`taskctl list | head -1`) is not an error
//! worth a message: output is dropped and the command goes on, so its exit
//! code still tells the outcome.

use std::{
    fmt::Write as _,
    io::{self, Write as _},
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use task_model::{EventView, TaskId, TaskStatus, TaskView};

use crate::client::Algorithm;

/// Prints one line (or block) to stdout.
pub fn line(text: impl AsRef<str>) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", text.as_ref());
    let _ = out.flush();
}

/// Prints `taskctl: error: <message>` to stderr, on one line.
pub fn error_line(message: impl std::fmt::Display) {
    let text = message.to_string().replace(['\n', '\r'], " ");
    let _ = writeln!(io::stderr().lock(), "taskctl: error: {text}");
}

/// Prints `taskctl: <note>` to stderr.
pub fn note(message: impl std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "taskctl: {message}");
}

/// JSON, pretty.
pub fn pretty_json(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let ms = (to - from).num_milliseconds().max(0);
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The status word, plus the reason for an unsuccessful end (`FAILED: …`).
pub fn final_status(status: TaskStatus, detail: Option<&str>) -> String {
    match detail.filter(|d| !d.is_empty() && status != TaskStatus::Completed) {
        Some(detail) => format!("{status}: {detail}"),
        None => status.to_string(),
    }
}

/// A plain progress line: `<id> PROCESSING stage 1/3 (33%)`.
pub fn progress_line(id: &TaskId, e: &EventView, stages: u32) -> String {
    if e.kind == "status" && e.status.is_terminal() {
        return format!("{id} {}", final_status(e.status, e.detail.as_deref()));
    }
    let mut text = format!(
        "{id} {} stage {}/{} ({}%)",
        e.status, e.stage, stages, e.progress
    );
    if e.kind == "cancel_requested" {
        text.push_str(" cancel requested");
    }
    if let Some(detail) = e.detail.as_deref().filter(|d| !d.is_empty()) {
        let _ = write!(text, " - {detail}");
    }
    text
}

/// `taskctl get`: a readable summary of one task.
pub fn task_summary(t: &TaskView) -> String {
    let mut s = String::new();
    let mut row = |label: &str, value: String| {
        let _ = writeln!(s, "{label:<10} {value}");
    };
    row("id", t.task_id.to_string());
    let mut status = t.status.to_string();
    if t.cancel_requested && !t.status.is_terminal() {
        status.push_str(" (cancel requested)");
    }
    row("status", status);
    row(
        "progress",
        format!(
            "{}% (stage {}/{}, {} ms per stage)",
            t.progress, t.stage, t.stages, t.stage_ms
        ),
    );
    row(
        "algorithm",
        format!(
            "{}, priority {}, timeout {} s",
            t.algorithm, t.priority, t.timeout_secs
        ),
    );
    row("worker", t.worker.clone().unwrap_or_else(|| "-".into()));
    let mut attempt = format!("{} of {}", t.attempt, t.max_attempts);
    if t.takeovers > 0 {
        let _ = write!(attempt, ", {} takeover(s)", t.takeovers);
    }
    row("attempt", attempt);
    if let Some(at) = t.scheduled_for {
        row("due", time(at));
    }
    row("created", time(t.created_at));
    row(
        "started",
        match t.started_at {
            Some(at) => format!("{} (waited {})", time(at), seconds(t.created_at, at)),
            None => "-".into(),
        },
    );
    row(
        "finished",
        match (t.finished_at, t.started_at) {
            (Some(at), Some(started)) => format!("{} (ran {})", time(at), seconds(started, at)),
            (Some(at), None) => time(at),
            (None, _) => "-".into(),
        },
    );
    row("updated", time(t.updated_at));
    if !t.input.is_null() {
        row("input", compact(&t.input));
    }
    if let Some(result) = &t.result {
        row("result", compact(result));
    }
    if let Some(error) = &t.error {
        row("error", error.clone());
    }
    for e in &t.errors {
        row(
            "failed",
            format!("attempt {} at {}: {}", e.attempt, time(e.at), e.error),
        );
    }
    if let Some(w) = &t.webhook {
        let mut text = format!("{} after {} attempt(s)", w.state, w.attempts);
        if let Some(e) = &w.last_error {
            let _ = write!(text, "; last error: {e}");
        }
        row("webhook", text);
    }
    s.truncate(s.trim_end().len());
    s
}

/// Left-aligned columns, two spaces apart, the last one unpadded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut s = String::new();
    let mut put = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == widths.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    };
    put(&mut header.iter().copied());
    for row in rows {
        put(&mut row.iter().map(String::as_str));
    }
    s.truncate(s.trim_end().len());
    s
}

/// `taskctl list`: id, status, progress, created_at.
pub fn task_table(tasks: &[TaskView]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.task_id.to_string(),
                t.status.to_string(),
                format!("{}% ({}/{})", t.progress, t.stage, t.stages),
                time(t.created_at),
            ]
        })
        .collect();
    table(&["ID", "STATUS", "PROGRESS", "CREATED"], &rows)
}

/// `taskctl queues`: name, depth, consumers, paused, from `GET /queues`.
pub fn queue_table(queues: &Value) -> String {
    let rows: Vec<Vec<String>> = queues
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|q| {
            let paused = q["paused"].as_bool().unwrap_or(false);
            vec![
                q["name"].as_str().unwrap_or("?").to_owned(),
                q["depth"].to_string(),
                q["consumers"].to_string(),
                if paused { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    table(&["QUEUE", "DEPTH", "CONSUMERS", "PAUSED"], &rows)
}

/// `taskctl algorithms`: name, default stages, CPU-bound, description.
pub fn algorithm_table(algorithms: &[Algorithm]) -> String {
    let rows: Vec<Vec<String>> = algorithms
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.default_stages.to_string(),
                if a.cpu_bound { "yes" } else { "no" }.to_owned(),
                a.description.clone(),
            ]
        })
        .collect();
    table(&["NAME", "STAGES", "CPU-BOUND", "DESCRIPTION"], &rows)
}

/// `taskctl events`: the history, oldest first.
pub fn events_table(events: &[EventView]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                time(e.at),
                e.kind.clone(),
                e.status.to_string(),
                format!("{}%", e.progress),
                e.stage.to_string(),
                e.worker.clone().unwrap_or_else(|| "-".into()),
                e.detail.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "SEQ", "AT", "TYPE", "STATUS", "PROGRESS", "STAGE", "WORKER", "DETAIL",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, status: TaskStatus, stage: u32, detail: Option<&str>) -> EventView {
        EventView {
            seq: 1,
            at: Utc::now(),
            kind: kind.into(),
            status,
            progress: task_model::progress_percent(stage, 3),
            stage,
            worker: Some("w1".into()),
            detail: detail.map(str::to_owned),
            attempt: 1,
        }
    }

    #[test]
    fn progress_lines_read_as_the_contract_says() {
        let id = TaskId::parse("2f1c0c6e-8a4b-4f7e-9d0a-3b5e6c7d8e9f").unwrap();
        let line = progress_line(&id, &event("progress", TaskStatus::Processing, 1, None), 3);
        assert_eq!(line, format!("{id} PROCESSING stage 1/3 (33%)"));
        let line = progress_line(&id, &event("status", TaskStatus::Completed, 3, None), 3);
        assert_eq!(line, format!("{id} COMPLETED"));
        let line = progress_line(
            &id,
            &event("status", TaskStatus::Failed, 1, Some("boom")),
            3,
        );
        assert_eq!(line, format!("{id} FAILED: boom"));
        let line = progress_line(
            &id,
            &event("cancel_requested", TaskStatus::Cancelling, 1, None),
            3,
        );
        assert_eq!(
            line,
            format!("{id} CANCELLING stage 1/3 (33%) cancel requested")
        );
    }

    #[test]
    fn tables_align_their_columns() {
        let t = table(
            &["A", "BB", "C"],
            &[vec!["xxx".into(), "y".into(), "z".into()]],
        );
        assert_eq!(t, "A    BB  C\nxxx  y   z");
    }
}
