//! The lease sweep: a running task whose holder stopped renewing (a frozen
//! worker keeps its delivery) is re-offered, once per lease however many api
//! processes sweep, and again after a renewal lapses anew.

use std::time::Duration;

use api_service::service::reoffer;
use serde_json::{json, Value};
use test_support::eventually;

use crate::helpers::spawn_app_with;

/// Takes one ready message off `tasks.algo` (auto-acked), returning its body.
async fn take(channel: &lapin::Channel) -> Vec<u8> {
    let got = channel
        .basic_get(
            "tasks.algo".into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get answers");
    got.expect("a message is ready").delivery.data
}

#[tokio::test]
async fn a_lapsed_lease_is_re_offered_once_per_lease_whatever_the_number_of_sweepers() {
    let app = spawn_app_with(&["--lease-secs", "1"]).await;
    let id = app.create(json!({"stages": 5})).await;
    assert_eq!(
        app.queue_depth("tasks.algo").await,
        1,
        "the create's message"
    );
    app.claim(&id, "w1").await;
    app.progress(&id, "w1", 1, 5).await;

    // w1 stops renewing. Three more sweepers (as other api processes would
    // be) race the api's own one, every 20 ms for 3 s, across the lapse.
    let state = app.state();
    let sweepers = (0..3).map(|_| {
        let state = std::sync::Arc::clone(&state);
        tokio::spawn(async move {
            let mut reoffered = 0;
            let end = tokio::time::Instant::now() + Duration::from_secs(3);
            while tokio::time::Instant::now() < end {
                reoffered += reoffer::sweep_once(&state).await.expect("Redis answers");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            reoffered
        })
    });
    let mut by_test = 0;
    for sweeper in sweepers.collect::<Vec<_>>() {
        by_test += sweeper.await.unwrap();
    }
    assert!(
        by_test <= 1,
        "re-offered {by_test} times by the test's sweepers"
    );
    eventually(
        "the task to be re-offered",
        Duration::from_secs(10),
        || async { (app.queue_depth("tasks.algo").await == 2).then_some(()) },
    )
    .await;
    assert_eq!(
        app.queue_depth("tasks.algo").await,
        2,
        "the create's message and one re-offer, whatever the number of sweepers"
    );

    // The copy names the task; a worker claiming it takes over at stage 1.
    let channel = app.amqp().await;
    for _ in 0..2 {
        let message: Value = serde_json::from_slice(&take(&channel).await).unwrap();
        assert_eq!(message["task_id"], id.as_str());
        assert_eq!(
            message["priority"], 0,
            "a copy like the create's: {message}"
        );
    }
    let takeover = app.claim(&id, "w2").await;
    assert_eq!(takeover["stage"], 1);

    // w2's lease lapses in turn: a new lease, a new re-offer.
    eventually("the second re-offer", Duration::from_secs(10), || async {
        (app.queue_depth("tasks.algo").await == 1).then_some(())
    })
    .await;

    // A finished task is not re-offered.
    app.claim(&id, "w3").await;
    app.run_to_completion(&id, "w3", 5).await;
    take(&channel).await;
    for _ in 0..3 {
        assert_eq!(reoffer::sweep_once(&state).await.unwrap(), 0);
    }
    assert_eq!(app.queue_depth("tasks.algo").await, 0);
    app.stop().await;
}
