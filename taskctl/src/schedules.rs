//! `taskctl schedules list|create|get|delete`: periodic tasks.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use task_model::ScheduleView;

use crate::{
    cli::{ScheduleCreateArgs, ScheduleGetArgs, ScheduleIdArg, SchedulesCommand},
    output, Client, ClientError, Outcome,
};

/// Runs one `schedules` subcommand.
///
/// # Errors
/// See [`ClientError`].
pub async fn run(client: &Client, command: SchedulesCommand) -> Result<Outcome, ClientError> {
    match command {
        SchedulesCommand::List(flag) => list(client, flag.json).await,
        SchedulesCommand::Create(args) => create(client, args).await,
        SchedulesCommand::Get(args) => get(client, args).await,
        SchedulesCommand::Delete(ScheduleIdArg { id }) => {
            client.delete_schedule(&id).await?;
            output::line(format!("{id} deleted"));
            Ok(Outcome::Success)
        }
    }
}

fn views(value: Value) -> Result<Vec<ScheduleView>, ClientError> {
    serde_json::from_value(value["schedules"].clone())
        .map_err(|e| ClientError::InvalidResponse(format!("not a list of schedules: {e}")))
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// One line per schedule: id, next due time, last due time, cron, name.
pub fn schedule_table(schedules: &[ScheduleView]) -> String {
    let mut out = format!(
        "{:<36}  {:<20}  {:<20}  {:<16}  NAME",
        "ID", "NEXT RUN", "LAST RUN", "CRON"
    );
    for s in schedules {
        let _ = write!(
            out,
            "\n{:<36}  {:<20}  {:<20}  {:<16}  {}",
            s.schedule_id,
            time(Some(s.next_run_at)),
            time(s.last_run_at),
            s.cron,
            s.name.as_deref().unwrap_or("")
        );
    }
    out
}

/// A schedule for people.
pub fn schedule_summary(s: &ScheduleView) -> String {
    let task = serde_json::to_string(&s.task).unwrap_or_default();
    let last_task = s
        .last_task_id
        .map_or_else(|| "-".to_owned(), |t| t.to_string());
    format!(
        "schedule  {}\nname      {}\ncron      {} (UTC)\ntask      {task}\ncreated   {}\nnext run  {}\nlast run  {}\nlast task {last_task}",
        s.schedule_id,
        s.name.as_deref().unwrap_or("-"),
        s.cron,
        time(Some(s.created_at)),
        time(Some(s.next_run_at)),
        time(s.last_run_at),
    )
}

async fn list(client: &Client, json: bool) -> Result<Outcome, ClientError> {
    let value = client.schedules_json().await?;
    if json {
        output::line(output::pretty_json(&value));
        return Ok(Outcome::Success);
    }
    let schedules = views(value)?;
    if schedules.is_empty() {
        output::note("no schedules");
    } else {
        output::line(schedule_table(&schedules));
    }
    Ok(Outcome::Success)
}

async fn create(client: &Client, args: ScheduleCreateArgs) -> Result<Outcome, ClientError> {
    let mut body = json!({"cron": args.cron, "task": args.task.unwrap_or_else(|| json!({}))});
    if let Some(name) = args.name {
        body["name"] = Value::from(name);
    }
    let created = client.create_schedule(&body).await?;
    output::line(created.schedule_id.to_string());
    output::note(format!(
        "next run at {}",
        created
            .next_run_at
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    ));
    Ok(Outcome::Success)
}

async fn get(client: &Client, args: ScheduleGetArgs) -> Result<Outcome, ClientError> {
    let value = client.schedule_json(&args.id).await?;
    if args.json {
        output::line(output::pretty_json(&value));
        return Ok(Outcome::Success);
    }
    let view: ScheduleView = serde_json::from_value(value)
        .map_err(|e| ClientError::InvalidResponse(format!("not a schedule: {e}")))?;
    output::line(schedule_summary(&view));
    Ok(Outcome::Success)
}
