//! The command line: every subcommand and flag, with its `--help` text.
//!
//! Everything a person can get wrong locally (a malformed id, a number out of
//! the contract's range, input that is not JSON, an unknown status) is caught
//! here, before any request, and ends with exit code 2.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use task_model::{TaskId, TaskStatus};

const EXAMPLES: &str = "\
Examples:
  taskctl submit --stages 3 --stage-ms 1000 --wait
  ID=$(taskctl submit --priority 9 --input '{\"name\": \"x\"}')
  taskctl watch \"$ID\"
  taskctl get \"$ID\" --json | jq .status
  taskctl list --status PROCESSING
  taskctl cancel \"$ID\"

Exit codes:
  0  success (watch and submit --wait: the task COMPLETED; cancel: the task
     is CANCELLING or CANCELLED now, also when it already was)
  1  the task ended FAILED, TIMED_OUT or CANCELLED (get --output: the task
     has no result file)
  2  bad usage or argument (also an --input-file that cannot be read, an
     --output that cannot be written)
  3  the api is unreachable
  4  no such task
  5  any other error answer from the api (cancel: the task had already
     ended COMPLETED, FAILED or TIMED_OUT)
  130  watch interrupted with Ctrl-C (the tasks go on)";

/// Command-line client for Taskforge: submit tasks, follow them with a live
/// progress bar, cancel, inspect and list them.
///
/// The api is found through API_URL (or --api-url); when the api has
/// API_KEYS set, pass one of them as API_KEY (or --api-key).
/// When standard output is not a terminal, progress is printed as plain
/// lines, one per event, for scripts and logs.
#[derive(Debug, Parser)]
#[command(name = "taskctl", version, about, long_about, after_help = EXAMPLES)]
pub struct Cli {
    /// Base URL of the Taskforge api.
    #[arg(
        long,
        env = "API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true,
        help_heading = "Connection",
        value_parser = parse_api_url
    )]
    pub api_url: reqwest::Url,

    /// Bearer key for the api, when it requires one (API_KEYS on the api).
    #[arg(
        long,
        env = "API_KEY",
        hide_env_values = true,
        global = true,
        help_heading = "Connection"
    )]
    pub api_key: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// One value per run, parsed once: the size of `Submit` costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit a new task and print its id (with --wait, follow it to the end).
    #[command(after_help = "\
Examples:
  taskctl submit
  taskctl submit --stages 3 --stage-ms 1000 --wait
  taskctl submit --priority 9 --timeout 120 --input '{\"name\": \"x\"}'
  taskctl submit --delay 5m --max-attempts 5
  taskctl submit --at 2026-12-24T18:00:00Z
  taskctl submit --idempotency-key order-42   # a replay returns the first task's id
  taskctl submit --batch tasks.json            # up to 1,000 tasks at once, all or none
  taskctl submit --algorithm grayscale --input-file cat.png --wait
  taskctl submit --algorithm pi --input '{\"samples\": 10000000, \"seed\": 7}'")]
    Submit(SubmitArgs),

    /// List the algorithms a task may name: name, default stages, whether
    /// CPU-bound, description (`--json`: the api's catalogue, with each
    /// input's JSON Schema).
    #[command(after_help = "\
Examples:
  taskctl algorithms
  taskctl algorithms --json | jq '.[] | select(.name == \"pi\") | .input_schema'")]
    Algorithms(JsonArg),

    /// Follow tasks live until they end: a progress bar each (stage k/n,
    /// elapsed, ETA), or plain lines when stdout is not a terminal.
    ///
    /// Exits 0 only when every task COMPLETED, 1 when any ended otherwise.
    #[command(after_help = "\
Examples:
  taskctl watch 2f1c0c6e-8a4b-4f7e-9d0a-3b5e6c7d8e9f
  taskctl watch \"$ID1\" \"$ID2\" && echo all done
  taskctl watch \"$ID\" | tee progress.log   # plain lines")]
    Watch(WatchArgs),

    /// Cancel a task: at once when queued, or ask its worker to stop it.
    ///
    /// Exits 0 when the task is CANCELLING or CANCELLED afterwards, also when
    /// it already was (asking twice is not an error); exits 5 when it had
    /// already ended COMPLETED, FAILED or TIMED_OUT.
    #[command(after_help = "\
Examples:
  taskctl cancel 2f1c0c6e-8a4b-4f7e-9d0a-3b5e6c7d8e9f")]
    Cancel(IdArg),

    /// Show one task: status, progress, times, worker, result or error.
    #[command(after_help = "\
Examples:
  taskctl get 2f1c0c6e-8a4b-4f7e-9d0a-3b5e6c7d8e9f
  taskctl get \"$ID\" --json | jq -r .status
  taskctl get \"$ID\" --output out.png   # a grayscale task's result image")]
    Get(GetTaskArgs),

    /// List tasks, newest first.
    #[command(after_help = "\
Examples:
  taskctl list
  taskctl list --status FAILED --limit 10
  taskctl list --all --json > tasks.json")]
    List(ListArgs),

    /// Show a task's history, oldest first.
    #[command(after_help = "\
Examples:
  taskctl events 2f1c0c6e-8a4b-4f7e-9d0a-3b5e6c7d8e9f
  taskctl events \"$ID\" --json")]
    Events(GetArgs),

    /// List the api's named queues: depth, consumers, paused.
    #[command(after_help = "\
Examples:
  taskctl queues
  taskctl queues --json")]
    Queues(JsonFlag),

    /// Pause a queue: it still accepts tasks, but within 1 s no worker takes
    /// new ones from it (running tasks run on). Pausing twice is not an error.
    #[command(after_help = "\
Examples:
  taskctl pause gpu")]
    Pause(QueueArg),

    /// Resume a paused queue: workers take its tasks again.
    #[command(after_help = "\
Examples:
  taskctl resume gpu")]
    Resume(QueueArg),

    /// Periodic tasks: a cron expression (UTC) and the task each due time creates.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
}

/// `taskctl schedules …`.
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// List every schedule, newest first.
    #[command(after_help = "\
Examples:
  taskctl schedules list
  taskctl schedules list --json")]
    List(JsonFlag),

    /// Create a schedule and print its id and first due time.
    #[command(after_help = "\
Examples:
  taskctl schedules create --cron '*/15 * * * *' --task '{\"stages\": 3}' --name report
  taskctl schedules create --cron '0 6 * * MON-FRI'")]
    Create(ScheduleCreateArgs),

    /// Show one schedule: cron, task, next and last due time, last task.
    #[command(after_help = "\
Examples:
  taskctl schedules get 2f1c0c6e-8a4b-4f7e-9d0a-3b5e6c7d8e9f --json")]
    Get(ScheduleGetArgs),

    /// Delete a schedule: no due time fires after it.
    #[command(after_help = "\
Examples:
  taskctl schedules delete 2f1c0c6e-8a4b-4f7e-9d0a-3b5e6c7d8e9f")]
    Delete(ScheduleIdArg),
}

/// `--json` alone.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print the api's JSON (pretty) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `taskctl schedules create`.
#[derive(Debug, Args)]
pub struct ScheduleCreateArgs {
    /// A 5-field cron expression (minute hour day-of-month month day-of-week), UTC.
    #[arg(long, value_name = "EXPR")]
    pub cron: String,

    /// The task each due time creates, as a `POST /tasks` JSON body (default `{}`).
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub task: Option<serde_json::Value>,

    /// A name for people (at most 200 bytes).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// A schedule id.
#[derive(Debug, Args)]
pub struct ScheduleIdArg {
    /// Schedule id (canonical UUID).
    #[arg(value_name = "ID", value_parser = parse_schedule_id)]
    pub id: String,
}

/// `taskctl schedules get`.
#[derive(Debug, Args)]
pub struct ScheduleGetArgs {
    /// Schedule id (canonical UUID).
    #[arg(value_name = "ID", value_parser = parse_schedule_id)]
    pub id: String,

    /// Print the api's JSON (pretty) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// `taskctl pause` and `taskctl resume`.
#[derive(Debug, Args)]
pub struct QueueArg {
    /// The queue's name (one of the api's QUEUES).
    #[arg(value_name = "QUEUE")]
    pub queue: String,
}

/// `taskctl submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Number of stages (1..=1000; the api's default when left out).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub stages: Option<u32>,

    /// Length of one stage in milliseconds (0..=600000).
    #[arg(long, value_name = "MS", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(0..=600_000))]
    pub stage_ms: Option<u32>,

    /// Deadline in seconds after a worker first claims the task (1..=86400).
    #[arg(long, value_name = "S", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub timeout: Option<u32>,

    /// Priority 0..=9; higher runs first.
    #[arg(long, value_name = "P", allow_negative_numbers = true, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,

    /// Input for the routine, as JSON (at most 16 KiB serialized).
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub input: Option<serde_json::Value>,

    /// The routine to run (the api's default, `hello`, when left out; see
    /// `taskctl algorithms`).
    #[arg(long, value_name = "NAME")]
    pub algorithm: Option<String>,

    /// The named queue to send it to (one of the api's QUEUES; `algo` when left out).
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,

    /// Uploads the file as a blob (POST /blobs; its content type guessed
    /// from the extension, else sniffed) and puts the blob's id in the
    /// input as FIELD (default `image`), beside what --input gives.
    #[arg(long, value_name = "[FIELD=]PATH", value_parser = parse_input_file)]
    pub input_file: Option<InputFile>,

    /// http(s) URL the api POSTs the finished task to (its host must be allowed by the api).
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,

    /// Attempts in all (1..=100; the api's DEFAULT_MAX_ATTEMPTS when left
    /// out): a retryable failure runs the failed stage again after a backoff.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: Option<u32>,

    /// Run the task after this long, e.g. `1500ms`, `30s`, `5m`, `2h` (at most 30 days).
    #[arg(long, value_name = "DURATION", value_parser = parse_delay, conflicts_with = "at")]
    pub delay: Option<u64>,

    /// Run the task at this time (RFC 3339, e.g. `2026-12-24T18:00:00Z`; at most 30 days ahead).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<String>,

    /// Makes the submission safe to retry: the same key with the same
    /// options returns the first task instead of creating another. (With
    /// --input-file each run uploads a new blob, so a rerun's input differs
    /// and the api answers 409 idempotency_conflict rather than replaying.)
    #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
    pub idempotency_key: Option<String>,

    /// Submit every task in FILE at once instead (`POST /tasks/batch`, up to
    /// 1,000, all or none): a JSON list of task bodies, or `{"tasks": [...]}`.
    /// Prints one id per line, in the file's order.
    #[arg(long, value_name = "FILE", value_parser = parse_batch_file,
        conflicts_with_all = ["stages", "stage_ms", "timeout", "priority", "input", "algorithm", "webhook_url"])]
    pub batch: Option<serde_json::Value>,

    /// After submitting, follow the task (every task of a batch) like `watch` until it ends.
    #[arg(long)]
    pub wait: bool,
}

/// A delay such as `1500ms`, `30s`, `5m` or `2h` (a bare number is
/// milliseconds), in milliseconds.
fn parse_delay(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s or 5m"))?;
    let factor = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown unit {other:?}; use ms, s, m, h or d")),
    };
    n.checked_mul(factor)
        .filter(|ms| *ms <= 2_592_000_000)
        .ok_or_else(|| "at most 30 days".to_owned())
}

/// An RFC 3339 time, kept as given.
fn parse_time(text: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("not an RFC 3339 time ({e}), e.g. 2026-12-24T18:00:00Z"))
}

/// `taskctl watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Task ids (canonical UUIDs).
    #[arg(required = true, value_name = "ID", value_parser = parse_task_id)]
    pub ids: Vec<TaskId>,
}

/// A single task id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// Task id (canonical UUID).
    #[arg(value_name = "ID", value_parser = parse_task_id)]
    pub id: TaskId,
}

/// `taskctl get` and `taskctl events`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Task id (canonical UUID).
    #[arg(value_name = "ID", value_parser = parse_task_id)]
    pub id: TaskId,

    /// Print the api's JSON (pretty) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// `--input-file [FIELD=]PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// The input field that gets the blob id.
    pub field: String,
    /// The file to upload.
    pub path: PathBuf,
}

/// `taskctl get`.
#[derive(Debug, Args)]
pub struct GetTaskArgs {
    /// Task id (canonical UUID).
    #[arg(value_name = "ID", value_parser = parse_task_id)]
    pub id: TaskId,

    /// Print the api's JSON (pretty) instead of a summary.
    #[arg(long)]
    pub json: bool,

    /// Also download the task's result file (the blob `result.image`, e.g.
    /// grayscale's PNG) to PATH; fails (exit 1) when the task has none.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// A command whose only option is `--json`.
#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print the api's JSON (pretty) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `taskctl list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks in this state (SCHEDULED, QUEUED, PROCESSING, CANCELLING, COMPLETED,
    /// FAILED, TIMED_OUT, CANCELLED; any case).
    #[arg(long, value_name = "S", value_parser = parse_status)]
    pub status: Option<TaskStatus>,

    /// Tasks per page (1..=1000).
    #[arg(long, value_name = "N", default_value_t = 50, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,

    /// Follow the api's cursor through every page (otherwise: one page).
    #[arg(long)]
    pub all: bool,

    /// Print JSON (`{"tasks": [...], "next_cursor": ...}`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_task_id(s: &str) -> Result<TaskId, String> {
    TaskId::parse(s.trim()).map_err(|e| e.to_string())
}

fn parse_status(s: &str) -> Result<TaskStatus, String> {
    s.trim()
        .to_ascii_uppercase()
        .replace('-', "_")
        .parse::<TaskStatus>()
        .map_err(|_| {
            "expected one of SCHEDULED, QUEUED, PROCESSING, CANCELLING, COMPLETED, FAILED, TIMED_OUT, CANCELLED"
                .to_owned()
        })
}

fn parse_json(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))
}

fn parse_schedule_id(s: &str) -> Result<String, String> {
    TaskId::parse(s.trim())
        .map(|id| id.to_string())
        .map_err(|_| "schedule ids are UUIDs in canonical hyphenated form".to_owned())
}

/// A batch file's tasks as a `POST /tasks/batch` body, `{"tasks": [...]}`.
fn parse_batch_file(path: &str) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{path} is not valid JSON: {e}"))?;
    match value {
        serde_json::Value::Array(tasks) => Ok(serde_json::json!({ "tasks": tasks })),
        serde_json::Value::Object(o) if o.get("tasks").is_some_and(serde_json::Value::is_array) => {
            Ok(serde_json::Value::Object(o))
        }
        _ => Err(format!(
            "{path} must hold a JSON list of task bodies or {{\"tasks\": [...]}}"
        )),
    }
}

/// `[FIELD=]PATH`: a leading `name=` (lowercase letters, digits, `_`) names
/// the field; anything else is all path.
fn parse_input_file(s: &str) -> Result<InputFile, String> {
    let named = s.split_once('=').filter(|(field, _)| {
        field.starts_with(|c: char| c.is_ascii_lowercase())
            && field
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    });
    let (field, path) = named.unwrap_or(("image", s));
    if path.is_empty() {
        return Err("expected a file path, e.g. cat.png or image=cat.png".to_owned());
    }
    Ok(InputFile {
        field: field.to_owned(),
        path: PathBuf::from(path),
    })
}

fn parse_idempotency_key(s: &str) -> Result<String, String> {
    let ok = (1..=200).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(s.to_owned())
    } else {
        Err("must be 1 to 200 visible ASCII characters (no spaces)".to_owned())
    }
}

fn parse_api_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s.trim())
        .map_err(|e| format!("not a URL ({e}); expected e.g. http://127.0.0.1:8080"))?;
    match url.scheme() {
        "http" => {}
        // reqwest is built without TLS in this workspace.
        "https" => {
            return Err(
                "https is not supported by this build; use an http:// URL (e.g. through a TLS-terminating proxy)"
                    .to_owned(),
            )
        }
        other => return Err(format!("unsupported scheme {other:?}; expected http://")),
    }
    if url.host().is_none() {
        return Err("the URL has no host".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL must not have a query or fragment".to_owned());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn delays_read_with_units_and_at_most_30_days() {
        assert_eq!(parse_delay("1500"), Ok(1500));
        assert_eq!(parse_delay("1500ms"), Ok(1500));
        assert_eq!(parse_delay("30s"), Ok(30_000));
        assert_eq!(parse_delay("5m"), Ok(300_000));
        assert_eq!(parse_delay("2h"), Ok(7_200_000));
        assert_eq!(parse_delay("30d"), Ok(2_592_000_000));
        assert!(parse_delay("31d").is_err());
        assert!(parse_delay("soon").is_err());
        assert!(parse_delay("5w").is_err());
        assert!(parse_time("2026-12-24T18:00:00Z").is_ok());
        assert!(parse_time("tomorrow").is_err());
        assert!(
            Cli::try_parse_from([
                "taskctl",
                "submit",
                "--delay",
                "5s",
                "--at",
                "2026-12-24T18:00:00Z"
            ])
            .is_err(),
            "--delay and --at conflict"
        );
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ids_must_be_canonical_uuids() {
        assert!(parse_task_id("2f1c0c6e-8a4b-4f7e-9d0a-3b5e6c7d8e9f").is_ok());
        assert!(parse_task_id("2F1C0C6E-8A4B-4F7E-9D0A-3B5E6C7D8E9F").is_ok());
        for bad in [
            "",
            "abc",
            "2f1c0c6e8a4b4f7e9d0a3b5e6c7d8e9f",
            "{2f1c0c6e-8a4b-4f7e-9d0a-3b5e6c7d8e9f}",
        ] {
            assert!(parse_task_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn statuses_are_accepted_in_any_case() {
        assert_eq!(parse_status("timed_out"), Ok(TaskStatus::TimedOut));
        assert_eq!(parse_status("Completed"), Ok(TaskStatus::Completed));
        assert!(parse_status("done").is_err());
    }

    #[test]
    fn api_urls_are_checked() {
        assert!(parse_api_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_api_url("http://host/prefix/").is_ok());
        assert!(parse_api_url("127.0.0.1:8080").is_err());
        assert!(parse_api_url("ftp://host").is_err());
        assert!(parse_api_url("https://host").is_err());
    }

    #[test]
    fn numbers_out_of_the_contracts_range_are_usage_errors() {
        for args in [
            &["taskctl", "submit", "--stages", "0"][..],
            &["taskctl", "submit", "--stages", "1001"],
            &["taskctl", "submit", "--priority", "10"],
            &["taskctl", "submit", "--stage-ms", "-1"],
            &["taskctl", "submit", "--input", "{oops"],
            &["taskctl", "list", "--limit", "0"],
        ] {
            let err = Cli::try_parse_from(args).expect_err("must be rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
        let cli = Cli::try_parse_from([
            "taskctl",
            "submit",
            "--stages",
            "3",
            "--stage-ms",
            "0",
            "--input",
            "[1,2]",
            "--wait",
        ])
        .unwrap();
        let Command::Submit(s) = cli.command else {
            panic!("submit")
        };
        assert_eq!((s.stages, s.stage_ms, s.wait), (Some(3), Some(0), true));
        assert_eq!(s.input, Some(serde_json::json!([1, 2])));
    }

    #[test]
    fn input_files_name_their_field_or_default_to_image() {
        let file = |s: &str| parse_input_file(s).map(|f| (f.field, f.path));
        assert_eq!(file("cat.png"), Ok(("image".into(), "cat.png".into())));
        assert_eq!(
            file("photo=cat.png"),
            Ok(("photo".into(), "cat.png".into()))
        );
        assert_eq!(file("./a=b.png"), Ok(("image".into(), "./a=b.png".into())));
        assert!(file("image=").is_err());
        assert!(file("").is_err());
    }
}
