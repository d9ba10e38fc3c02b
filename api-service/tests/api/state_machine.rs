//! The state machine is written twice: `TaskStatus::can_become` (task-model)
//! and `store/transition.lua` (what Redis enforces). This drives the real
//! script, against the real Redis under a key prefix of its own, through
//! every (from, to) pair and every way the api asks for `to`, and checks the
//! edges it takes are exactly those `can_become` allows.

use std::time::Duration;

use api_service::store::{Code, DueEntry, Store};
use task_model::{CreateTaskRequest, NewTask, TaskDefaults, TaskId, TaskStatus};

const HOLDER: &str = "w1";
const OTHER: &str = "w2";
const TTL: Duration = Duration::from_secs(60);

/// A way the api asks the script for a new state.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// `create` again, of an id that exists.
    Create,
    /// A claim by the holder, or by another worker (a takeover: the holder's
    /// lease is 0 ms, so always expired).
    Claim(&'static str),
    /// A user's cancel.
    Cancel,
    /// The holder reports a terminal state.
    Finish(TaskStatus),
    /// The holder reports a retryable failure (attempts are left).
    Retry,
    /// The due sweep fires the task's current schedule.
    Due,
}

/// Every request that could make a task `to`.
fn asks_for(to: TaskStatus) -> Vec<Ask> {
    match to {
        TaskStatus::Scheduled => vec![Ask::Retry],
        TaskStatus::Queued => vec![Ask::Create, Ask::Due],
        TaskStatus::Processing => vec![Ask::Claim(HOLDER), Ask::Claim(OTHER)],
        TaskStatus::Cancelling => vec![Ask::Cancel],
        TaskStatus::Cancelled => vec![Ask::Cancel, Ask::Finish(to)],
        terminal => vec![Ask::Finish(terminal)],
    }
}

fn new_task() -> NewTask {
    let request = CreateTaskRequest {
        stages: Some(3),
        ..CreateTaskRequest::default()
    };
    NewTask::parse(request, TaskDefaults::default()).expect("a valid task")
}

async fn ask(store: &Store, id: &TaskId, ask: Ask) -> Code {
    let outcome = match ask {
        Ask::Create => store.create(id, &new_task()).await,
        Ask::Claim(worker) => store
            .claim(id, worker, Duration::ZERO, 5, TTL)
            .await
            .map(|claim| claim.outcome),
        Ask::Retry => {
            let attempt = load(store, id).await.attempt;
            let due_ms = chrono::Utc::now().timestamp_millis() + 60_000;
            store
                .retry(id, HOLDER, (attempt, due_ms), "flaky", "retry", TTL)
                .await
        }
        Ask::Due => {
            let due_ms = load(store, id)
                .await
                .scheduled_for
                .map_or(0, |at| at.timestamp_millis());
            store.make_due(&DueEntry { id: *id, due_ms }).await
        }
        Ask::Cancel => store.cancel(id, TTL).await,
        Ask::Finish(status) => {
            if status == TaskStatus::Completed {
                // COMPLETED needs every stage's progress first (refused on a
                // task the holder does not hold, as the finish is).
                let stages = new_task().stages;
                store
                    .progress(id, HOLDER, stages, stages, None, TTL)
                    .await
                    .expect("redis answers");
            }
            store
                .finish(id, (HOLDER, None), status, None, None, TTL)
                .await
        }
    };
    outcome.expect("redis answers").code
}

/// A fresh task brought to `from` the way workers and users do it.
async fn task_in(store: &Store, from: TaskStatus) -> TaskId {
    let id = TaskId::new();
    assert_eq!(ask(store, &id, Ask::Create).await, Code::Ok);
    let steps: &[Ask] = match from {
        TaskStatus::Scheduled => &[Ask::Claim(HOLDER), Ask::Retry],
        TaskStatus::Queued => &[],
        TaskStatus::Processing => &[Ask::Claim(HOLDER)],
        TaskStatus::Cancelling => &[Ask::Claim(HOLDER), Ask::Cancel],
        TaskStatus::Cancelled => &[Ask::Cancel],
        terminal => &[Ask::Claim(HOLDER), Ask::Finish(terminal)],
    };
    for step in steps {
        assert_eq!(
            ask(store, &id, *step).await,
            Code::Ok,
            "{step:?} on the way to {from}"
        );
    }
    assert_eq!(status(store, &id).await, from, "set up a task in {from}");
    id
}

async fn load(store: &Store, id: &TaskId) -> task_model::TaskView {
    store
        .load(id)
        .await
        .expect("redis answers")
        .expect("the task exists")
        .view
}

async fn status(store: &Store, id: &TaskId) -> TaskStatus {
    load(store, id).await.status
}

async fn event_count(store: &Store, id: &TaskId) -> usize {
    store
        .events(id, 0, 10_000)
        .await
        .expect("redis answers")
        .len()
}

/// Whether `ask` on a task in `from` is a transition to `to`: accepted, and
/// either the status changed to `to` or (a takeover) an event recorded it.
async fn takes_edge(store: &Store, from: TaskStatus, to: TaskStatus, how: Ask) -> bool {
    let id = task_in(store, from).await;
    let events_before = event_count(store, &id).await;
    let code = ask(store, &id, how).await;
    let now = status(store, &id).await;
    let new_event = event_count(store, &id).await > events_before;
    code == Code::Ok && now == to && (now != from || new_event)
}

#[tokio::test]
async fn the_transition_script_takes_exactly_the_edges_can_become_allows() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("test:state-machine:{}:", uuid::Uuid::new_v4());
    let store = Store::new(&url, &prefix, 4).expect("a redis url");

    let mut mismatches = Vec::new();
    let mut edges = 0;
    for from in TaskStatus::ALL {
        for to in TaskStatus::ALL {
            let mut taken = false;
            for how in asks_for(to) {
                taken |= takes_edge(&store, from, to, how).await;
            }
            edges += usize::from(taken);
            if taken != from.can_become(to) {
                mismatches.push(format!(
                    "{from} -> {to}: the script {} it, can_become says {}",
                    if taken { "takes" } else { "refuses" },
                    from.can_become(to)
                ));
            }
        }
    }

    cleanup(&url, &prefix).await;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // SCHEDULED→{QUEUED, CANCELLED}, QUEUED→{PROCESSING, CANCELLED},
    // PROCESSING→{PROCESSING, CANCELLING, SCHEDULED}, and PROCESSING,
    // CANCELLING → each of the 4 terminal states.
    assert_eq!(edges, 15, "the state machine has 15 edges");
}

async fn cleanup(url: &str, prefix: &str) {
    let client = redis::Client::open(url).expect("a redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers");
    let mut cursor = 0_u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("redis answers");
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("redis answers");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}
