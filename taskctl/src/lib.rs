//! `taskctl`: Taskforge's command-line client for people.
//!
//! `submit [--wait] [--input-file]`, `algorithms`, `watch ID…` (a live
//! progress bar per task, from the api's Server-Sent Events), `cancel`,
//! `get [--json] [--output]`, `list [--status]`, `events`. The api is found through `API_URL` / `--api-url`, with
//! `API_KEY` / `--api-key` when the api requires keys.
//!
//! # Exit codes
//! 0 success (for `watch` and `submit --wait`: only when every task
//! COMPLETED); 1 a followed task ended FAILED, TIMED_OUT or CANCELLED (or
//! `get --output` found no result file); 2 bad usage or argument (or a local
//! file that cannot be read or written); 3 the api is unreachable; 4 no such task; 5 any other
//! error answer; 130 `watch` interrupted by Ctrl-C (the tasks go on).
//! A command whose goal already holds succeeds: `cancel` of a task already
//! CANCELLED (or CANCELLING) exits 0. Errors are one line on stderr:
//! `taskctl: error: <message>`.
//!
//! # Layout
//! - [`cli`]: the clap definition, with local validation of every argument.
//! - [`client`]: one method per endpoint and the typed [`ClientError`].
//! - [`watch`]: the SSE parser and follower (reconnects with `Last-Event-ID`),
//!   shown as indicatif bars on a terminal, plain lines otherwise.
//! - [`output`]: summaries, tables, pretty JSON and the error line.
//! - [`schedules`]: `taskctl schedules list|create|get|delete`.
//! - [`files`]: local files: uploads' content types, result downloads.
//! - [`run`] (here): each subcommand, tying the three together.

pub mod cli;
pub mod client;
pub mod files;
pub mod output;
pub mod schedules;
pub mod watch;

use serde_json::{json, Map, Value};
use task_model::{TaskId, TaskStatus};

pub use cli::Cli;
pub use client::{Client, ClientError};

use cli::{Command, GetArgs, GetTaskArgs, IdArg, JsonArg, ListArgs, SubmitArgs, WatchArgs};
use watch::Display;

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (for `watch`: every task COMPLETED). Exit code 0.
    Success,
    /// A followed task ended FAILED, TIMED_OUT or CANCELLED. Exit code 1.
    TaskNotCompleted,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::TaskNotCompleted => 1,
        }
    }
}

/// Runs one command line.
///
/// # Errors
/// The first [`ClientError`] met (for `watch` with several ids, the others
/// are printed as they are met).
pub async fn run(cli: Cli) -> Result<Outcome, ClientError> {
    let client = Client::new(cli.api_url, cli.api_key)?;
    match cli.command {
        Command::Submit(args) => submit(&client, args).await,
        Command::Algorithms(args) => algorithms(&client, args).await,
        Command::Watch(WatchArgs { ids }) => watch(&client, &ids).await,
        Command::Cancel(IdArg { id }) => cancel(&client, id).await,
        Command::Get(args) => get(&client, args).await,
        Command::List(args) => list(&client, args).await,
        Command::Events(args) => events(&client, args).await,
        Command::Schedules(command) => schedules::run(&client, command).await,
        Command::Queues(args) => queues(&client, args.json).await,
        Command::Pause(args) => set_paused(&client, &args.queue, true).await,
        Command::Resume(args) => set_paused(&client, &args.queue, false).await,
    }
}

fn submit_body(args: &SubmitArgs) -> Value {
    let mut body = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            body.insert(key.to_owned(), v);
        }
    };
    put("algorithm", args.algorithm.clone().map(Value::from));
    put("stages", args.stages.map(Value::from));
    put("stage_ms", args.stage_ms.map(Value::from));
    put("timeout_secs", args.timeout.map(Value::from));
    put("priority", args.priority.map(Value::from));
    put("input", args.input.clone());
    put("webhook_url", args.webhook_url.clone().map(Value::from));
    put("queue", args.queue.clone().map(Value::from));
    put("max_attempts", args.max_attempts.map(Value::from));
    put("delay_ms", args.delay.map(Value::from));
    put("run_at", args.at.clone().map(Value::from));
    Value::Object(body)
}

/// `--input-file`: uploads the file and puts its blob id into the body's
/// `input` (made an object when absent). Checks everything local first.
async fn attach_input_file(
    client: &Client,
    args: &SubmitArgs,
    body: &mut Value,
) -> Result<(), ClientError> {
    let Some(file) = &args.input_file else {
        return Ok(());
    };
    let input = body
        .as_object_mut()
        .map(|o| o.entry("input").or_insert_with(|| json!({})));
    let Some(Value::Object(input)) = input else {
        return Err(ClientError::File {
            action: "cannot use",
            path: file.path.display().to_string(),
            reason: "--input-file needs --input to be a JSON object (or left out)".to_owned(),
        });
    };
    let bytes = files::read(&file.path)?;
    let content_type = files::content_type(&file.path, &bytes);
    let blob = client.upload_blob(bytes, content_type).await?;
    output::note(format!(
        "uploaded {} as blob {} ({} bytes, {})",
        file.path.display(),
        blob.blob_id,
        blob.size,
        blob.content_type
    ));
    input.insert(file.field.clone(), Value::from(blob.blob_id));
    Ok(())
}

async fn submit(client: &Client, args: SubmitArgs) -> Result<Outcome, ClientError> {
    if let Some(batch) = &args.batch {
        return submit_batch(client, batch, &args).await;
    }
    let mut body = submit_body(&args);
    attach_input_file(client, &args, &mut body).await?;
    let submitted = client
        .submit(&body, args.idempotency_key.as_deref())
        .await?;
    output::line(submitted.task_id.to_string());
    if submitted.replayed {
        output::note(format!(
            "this Idempotency-Key was used before: nothing new was created; the task is {}",
            submitted.status
        ));
    }
    if args.wait {
        watch(client, &[submitted.task_id]).await
    } else {
        Ok(Outcome::Success)
    }
}

async fn submit_batch(
    client: &Client,
    batch: &Value,
    args: &SubmitArgs,
) -> Result<Outcome, ClientError> {
    let submitted = client
        .submit_batch(batch, args.idempotency_key.as_deref())
        .await?;
    let ids: Vec<TaskId> = submitted.tasks.iter().map(|t| t.task_id).collect();
    output::line(
        ids.iter()
            .map(TaskId::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    );
    if submitted.replayed {
        output::note("this Idempotency-Key was used before: nothing new was created");
    }
    if args.wait {
        watch(client, &ids).await
    } else {
        Ok(Outcome::Success)
    }
}

async fn watch(client: &Client, ids: &[TaskId]) -> Result<Outcome, ClientError> {
    let display = Display::detect();
    let follows = watch::follow_all(client, ids, &display);
    let results = tokio::select! {
        results = follows => results,
        _ = tokio::signal::ctrl_c() => {
            // The bars stay as they were, showing where each task got to.
            output::note("interrupted; the tasks go on (cancel them with `taskctl cancel ID`)");
            std::process::exit(130);
        }
    };
    let mut first_error = None;
    let mut outcome = Outcome::Success;
    for result in results {
        match result {
            Ok(TaskStatus::Completed) => {}
            Ok(_) => outcome = Outcome::TaskNotCompleted,
            Err(e) if first_error.is_none() => first_error = Some(e),
            Err(e) => output::error_line(e),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}

async fn cancel(client: &Client, id: TaskId) -> Result<Outcome, ClientError> {
    let answer = client.cancel(id).await?;
    let text = match answer.status {
        TaskStatus::Cancelled if answer.already => {
            format!("{id} CANCELLED (it already was; nothing changed)")
        }
        TaskStatus::Cancelling => format!("{id} CANCELLING (its worker is stopping it)"),
        status => format!("{id} {status}"),
    };
    output::line(text);
    Ok(Outcome::Success)
}

async fn algorithms(client: &Client, args: JsonArg) -> Result<Outcome, ClientError> {
    let value = client.algorithms_json().await?;
    if args.json {
        output::line(output::pretty_json(&value));
    } else {
        output::line(output::algorithm_table(&client::algorithms(value)?));
    }
    Ok(Outcome::Success)
}

async fn get(client: &Client, args: GetTaskArgs) -> Result<Outcome, ClientError> {
    let value = client.task_json(args.id).await?;
    if args.json {
        output::line(output::pretty_json(&value));
    } else {
        output::line(output::task_summary(&client::view(value.clone())?));
    }
    if let Some(path) = &args.output {
        let blob = files::result_blob(&value)?;
        let bytes = client.download_blob(&blob).await?;
        files::write(path, &bytes)?;
        output::note(format!(
            "wrote {} ({} bytes, blob {blob})",
            path.display(),
            bytes.len()
        ));
    }
    Ok(Outcome::Success)
}

async fn list(client: &Client, args: ListArgs) -> Result<Outcome, ClientError> {
    let mut page = client.list(args.status, args.limit, None).await?;
    let mut tasks = std::mem::take(&mut page.tasks);
    let mut next = page.next_cursor.take();
    if args.all {
        while let Some(cursor) = next {
            let mut page = client.list(args.status, args.limit, Some(&cursor)).await?;
            tasks.append(&mut page.tasks);
            next = page.next_cursor;
        }
    }
    if args.json {
        output::line(output::pretty_json(
            &json!({ "tasks": tasks, "next_cursor": next }),
        ));
        return Ok(Outcome::Success);
    }
    let views = tasks
        .into_iter()
        .map(client::view)
        .collect::<Result<Vec<_>, _>>()?;
    if views.is_empty() {
        output::note("no tasks");
    } else {
        output::line(output::task_table(&views));
    }
    if next.is_some() {
        output::note("more tasks: use --all to list every page");
    }
    Ok(Outcome::Success)
}

async fn queues(client: &Client, json: bool) -> Result<Outcome, ClientError> {
    let value = client.queues_json().await?;
    if json {
        output::line(output::pretty_json(&value));
    } else {
        output::line(output::queue_table(&value));
    }
    Ok(Outcome::Success)
}

async fn set_paused(client: &Client, queue: &str, paused: bool) -> Result<Outcome, ClientError> {
    client.set_paused(queue, paused).await?;
    output::note(format!(
        "queue {queue} {}",
        if paused { "paused" } else { "resumed" }
    ));
    Ok(Outcome::Success)
}

async fn events(client: &Client, args: GetArgs) -> Result<Outcome, ClientError> {
    let value = client.events_json(args.id).await?;
    if args.json {
        output::line(output::pretty_json(&value));
    } else {
        output::line(output::events_table(&client::events(value)?));
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn submit_sends_only_the_options_given() {
        let cli =
            Cli::try_parse_from(["taskctl", "submit", "--stages", "3", "--timeout", "9"]).unwrap();
        let Command::Submit(args) = cli.command else {
            panic!("submit")
        };
        assert_eq!(submit_body(&args), json!({"stages": 3, "timeout_secs": 9}));
    }
}
