//! The api stopped while workers run, and started again on the same port.

use std::time::Duration;

use api_service::store::{
    reservation_secs, IdemReservation, IdempotencyKey, Set, RESERVATION_SECS,
};
use task_model::{CreateTaskRequest, NewTask, TaskId};
use test_support::{body, eventually, Stack};

#[tokio::test]
async fn the_api_restarted_on_its_port_while_workers_run_loses_nothing() {
    let mut sys = Stack::start(&["--lease-secs", "10"]).await;
    sys.add_worker("w1").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(sys.create(body(4, 300)).await);
    }
    sys.wait_all_for(&ids, Duration::from_secs(15), |t| {
        t["stage"].as_u64().unwrap_or(0) >= 1
    })
    .await;

    sys.stop_api().await;
    // The stages go on; every report (progress, then COMPLETED) is retried.
    eventually(
        "every stage to run while the api is down",
        Duration::from_secs(10),
        || async { (sys.hellos() == 16).then_some(()) },
    )
    .await;
    eventually(
        "callbacks to be retried",
        Duration::from_secs(10),
        || async {
            let retries = sys.workers[0]
                .metric("taskforge_worker_callback_retries_total")
                .await;
            (retries >= 4.0).then_some(())
        },
    )
    .await;

    sys.start_api().await;
    sys.assert_all_completed_once(&ids, Duration::from_secs(30))
        .await;
    assert_eq!(sys.hellos(), 16, "no stage ran twice");
    for id in &ids {
        assert_eq!(sys.task(id).await["worker"], "w1");
    }
    sys.assert_drained().await;
    sys.stop().await;
}

/// A worker that ran every stage while the api was down, then died: had it
/// acked any delivery before the api recorded the outcome, that task would
/// stay PROCESSING forever. Instead another worker takes each one over.
#[tokio::test]
async fn a_worker_killed_while_the_api_was_down_had_acked_nothing() {
    // A lease long enough for w1 to run every stage unrenewed on a loaded
    // machine (it stops running a task once its lease may have run out).
    let mut sys = Stack::start(&["--lease-secs", "8"]).await;
    sys.add_worker("w1").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(sys.create(body(3, 200)).await);
    }
    sys.wait_all_for(&ids, Duration::from_secs(15), |t| {
        t["status"] == "PROCESSING"
    })
    .await;

    sys.stop_api().await;
    eventually(
        "w1 to run every stage while the api is down",
        Duration::from_secs(10),
        || async { (sys.hellos() == 9).then_some(()) },
    )
    .await;
    sys.workers[0].signal("KILL");
    sys.workers[0].wait_exit(Duration::from_secs(5)).await;

    sys.start_api().await;
    sys.add_worker("w2").await;
    sys.assert_all_completed_once(&ids, Duration::from_secs(40))
        .await;
    for id in &ids {
        assert_eq!(
            sys.task(id).await["worker"],
            "w2",
            "taken over once w1's lease ran out"
        );
    }
    sys.assert_drained().await;
    sys.stop().await;
}

/// An api that dies between storing a task and publishing its message (the
/// state is made here with the api's own store, exactly as `POST /tasks`
/// leaves it before publishing) would leave the task QUEUED with no message
/// for ever; the outbox sweep of the api started in its place publishes it.
#[tokio::test]
async fn a_task_stored_by_an_api_that_died_before_publishing_it_still_runs() {
    let mut sys = Stack::start(&["--republish-after-secs", "1"]).await;
    sys.add_worker("w1").await;

    let state = sys.state();
    let id = TaskId::new();
    let request = CreateTaskRequest {
        stages: Some(2),
        stage_ms: Some(50),
        ..CreateTaskRequest::default()
    };
    let task = NewTask::parse(request, state.defaults).unwrap();
    state.store.create(&id, &task).await.expect("stored");
    drop(state);
    // The api dies here, before publishing; another starts on its port.
    sys.stop_api().await;
    sys.start_api().await;

    let id = id.to_string();
    sys.assert_all_completed_once(std::slice::from_ref(&id), Duration::from_secs(20))
        .await;
    assert_eq!(sys.hellos(), 2);
    let events = sys.events(&id).await;
    assert_eq!(
        test_support::status_trail(&events),
        ["QUEUED", "PROCESSING", "COMPLETED"]
    );
    // The outbox is empty again, and a normal create leaves nothing in it either.
    let created = sys.create(body(1, 0)).await;
    sys.assert_all_completed_once(&[created], Duration::from_secs(20))
        .await;
    let outbox = sys.env.set_size(Set::Outbox).await.unwrap();
    assert_eq!(outbox, 0);
    assert_eq!(sys.hellos(), 3, "published once each");
    sys.stop().await;
}

/// Over 30 s: waits out a reservation.
///
/// An api that dies between reserving an `Idempotency-Key` and storing its
/// task (the reservation is made here with the api's own store, as
/// `POST /tasks` makes it) used to leave the key answering "still in flight"
/// (503) to every retry for `RESULT_TTL_SECS`, a day by default. The
/// reservation now lapses after `RESERVATION_SECS` and the retry goes through.
#[tokio::test]
async fn an_idempotency_key_reserved_by_an_api_that_died_frees_itself_within_seconds() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("w1").await;

    let body = serde_json::json!({"stages": 1, "stage_ms": 0});
    let request: CreateTaskRequest = serde_json::from_value(body.clone()).unwrap();
    let state = sys.state();
    // Open api (no API_KEYS): scope "-"; the fingerprint is the normalized request.
    let key = IdempotencyKey::new(
        &state.store,
        "-",
        "order-17",
        &serde_json::to_value(&request).unwrap(),
    );
    let ttl = reservation_secs(state.result_ttl);
    let reserved = state
        .store
        .reserve_idempotency_key(&key, &TaskId::new(), ttl)
        .await
        .unwrap();
    assert_eq!(reserved, IdemReservation::Reserved);
    drop(state);
    // The api dies here; another starts on its port.
    sys.stop_api().await;
    sys.start_api().await;

    let post = || async {
        sys.http
            .post(format!("{}/tasks", sys.address))
            .header("idempotency-key", "order-17")
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    let first = post().await;
    assert_eq!(first.status(), 503, "the key is still held");
    let accepted = eventually(
        "a retry with the key to be accepted",
        Duration::from_secs(RESERVATION_SECS + 10),
        || async {
            let res = post().await;
            (res.status() == 202).then_some(res)
        },
    )
    .await;
    let id = accepted.json::<serde_json::Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sys.assert_all_completed_once(std::slice::from_ref(&id), Duration::from_secs(20))
        .await;
    // From now on the key answers for that task, for RESULT_TTL_SECS.
    let replay = post().await;
    assert_eq!(replay.status(), 200);
    assert_eq!(
        replay.json::<serde_json::Value>().await.unwrap()["task_id"],
        id.as_str()
    );
    assert_eq!(sys.hellos(), 1);
    sys.stop().await;
}
