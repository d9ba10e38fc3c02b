//! Poison messages dead-letter once; a duplicate of a finished task's
//! message is acked without running anything.

use std::{collections::HashSet, time::Duration};

use lapin::{
    options::{BasicAckOptions, BasicGetOptions},
    types::AMQPValue,
};
use serde_json::json;
use task_model::{TaskId, TaskMessage};
use test_support::{body, eventually, publish, status_trail, terminal_events, Stack};

/// A message as earlier versions published it, the whole task in it.
fn task_message(task_id: TaskId, algorithm: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "task_id": task_id, "algorithm": algorithm, "stages": 1, "stage_ms": 0,
        "timeout_secs": 10, "priority": 0, "input": null
    }))
    .unwrap()
}

#[tokio::test]
async fn poison_messages_land_in_tasks_dead_exactly_once_and_are_never_redelivered() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("w1").await;
    let (conn, ch) = sys.env.channel().await.expect("a channel into the vhost");

    let unparseable = b"{\"task_id\": not json".to_vec();
    let unknown_algorithm = task_message(TaskId::new(), "sort");
    let unknown_id = TaskId::new();
    let unknown_task = task_message(unknown_id, "hello");
    for (message_id, body) in [
        ("poison-1".to_owned(), &unparseable),
        ("poison-2".to_owned(), &unknown_algorithm),
        (unknown_id.to_string(), &unknown_task),
    ] {
        publish(&ch, &message_id, body).await.expect("published");
    }

    eventually("three dead letters", Duration::from_secs(15), || async {
        (sys.queue_depth("tasks.dead").await == 3).then_some(())
    })
    .await;
    // A real task after them completes: the worker is alive and past them.
    let id = sys.create(body(1, 0)).await;
    sys.assert_all_completed_once(&[id], Duration::from_secs(15))
        .await;
    assert_eq!(
        sys.queue_depth("tasks.dead").await,
        3,
        "no more dead letters"
    );
    assert_eq!(
        sys.queue_depth("tasks.algo").await,
        0,
        "nothing left to loop"
    );
    assert_eq!(sys.hellos(), 1, "only the real task ran");
    let w = &sys.workers[0];
    assert_eq!(
        w.log_lines("rejecting an unusable message"),
        1,
        "the unparseable one, handled once"
    );
    assert_eq!(
        w.log_lines("does not know this task"),
        2,
        "the two that name unknown tasks (whatever their algorithm), claimed once each"
    );

    // Each dead letter was rejected once (x-death count 1), never requeued.
    let mut bodies = HashSet::new();
    for _ in 0..3 {
        let got = ch
            .basic_get("tasks.dead".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .expect("a dead letter");
        let headers = got
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
            panic!("no x-death header: {headers:?}");
        };
        assert_eq!(deaths.as_slice().len(), 1, "{deaths:?}");
        let AMQPValue::FieldTable(death) = &deaths.as_slice()[0] else {
            panic!("{deaths:?}");
        };
        let count = match death.inner().get("count") {
            Some(AMQPValue::LongLongInt(n)) => *n,
            other => panic!("x-death count: {other:?}"),
        };
        assert_eq!(count, 1, "{death:?}");
        assert_eq!(
            death.inner().get("reason"),
            Some(&AMQPValue::LongString("rejected".into()))
        );
        assert!(!got.delivery.redelivered || count == 1);
        bodies.insert(got.delivery.data.clone());
        got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(
        bodies,
        HashSet::from([unparseable, unknown_algorithm, unknown_task])
    );
    let _ = conn.close(200, "done".into()).await;
    sys.stop().await;
}

#[tokio::test]
async fn a_duplicate_delivery_of_a_finished_task_is_acked_and_runs_nothing() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("w1").await;
    let id = sys.create(body(2, 50)).await;
    sys.assert_all_completed_once(std::slice::from_ref(&id), Duration::from_secs(15))
        .await;
    assert_eq!(sys.hellos(), 2);

    let (conn, ch) = sys.env.channel().await.expect("a channel into the vhost");
    let task_id = TaskId::parse(&id).unwrap();
    let copy = serde_json::to_vec(&TaskMessage {
        task_id,
        priority: 0,
    })
    .unwrap();
    publish(&ch, &id, &copy).await.expect("published");
    eventually(
        "the copy to be acked as already finished",
        Duration::from_secs(10),
        || async {
            (sys.workers[0].log_lines("already finished; acking without running it") == 1)
                .then_some(())
        },
    )
    .await;
    sys.assert_drained().await;

    assert_eq!(sys.hellos(), 2, "no stage ran again");
    let events = sys.events(&id).await;
    assert_eq!(terminal_events(&events), 1);
    assert_eq!(status_trail(&events), ["QUEUED", "PROCESSING", "COMPLETED"]);
    let _ = conn.close(200, "done".into()).await;
    sys.stop().await;
}
