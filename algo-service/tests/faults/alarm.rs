//! A broker resource alarm (a memory alarm on a private RabbitMQ node): the
//! broker blocks publishing connections, so creates answer 503
//! `broker_blocked` at once instead of waiting for a confirm that cannot
//! come, and a cancel is recorded and answered without its broadcast; the
//! worker learns of it from its next callback answer.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_support::{
    body, eventually,
    servers::{PrivateRabbit, RabbitOptions},
    Stack,
};

#[tokio::test]
async fn under_a_broker_memory_alarm_creates_answer_503_at_once_and_a_cancel_still_cancels() {
    let rabbit = PrivateRabbit::start(RabbitOptions::default())
        .await
        .expect("a private RabbitMQ node boots");
    let mut sys = Stack::start_on_broker(rabbit.amqp_url(), &[]).await;
    sys.add_worker("w1").await;
    // 10 stages of 1 s: progress every second, so the cancel flag reaches
    // the worker in a progress answer long before the last stage.
    let id = sys.create(body(10, 1_000)).await;
    sys.wait_for(&id, Duration::from_secs(20), |t| {
        t["status"] == "PROCESSING" && t["stage"].as_u64() >= Some(1)
    })
    .await;

    rabbit
        .ctl(&["set_vm_memory_high_watermark", "0.0000001"])
        .await
        .expect("a memory alarm on the private node");
    // Creates answer 503 broker_blocked once the broker has blocked the api's
    // connection (a create confirmed just before the alarm answers 202).
    let before_alarm = std::sync::Mutex::new(Vec::new());
    eventually(
        "a create to be refused",
        Duration::from_secs(30),
        || async {
            let started = Instant::now();
            let res = sys.post_task(body(1, 0)).await;
            println!(
                "POST /tasks after raising the alarm: {} in {:?}",
                res.status(),
                started.elapsed()
            );
            if res.status() == 202 {
                let task: Value = res.json().await.unwrap();
                let id = task["task_id"].as_str().unwrap().to_owned();
                before_alarm.lock().unwrap().push(id);
                return None;
            }
            Some(())
        },
    )
    .await;
    for _ in 0..3 {
        let started = Instant::now();
        let res = sys.post_task(body(1, 0)).await;
        let took = started.elapsed();
        println!("POST /tasks under the alarm: {} in {took:?}", res.status());
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "5");
        let error: Value = res.json().await.unwrap();
        assert_eq!(error["error"], "broker_blocked", "{error}");
    }

    // The cancel is recorded and answered; the worker stops the task.
    let started = Instant::now();
    let res = sys.cancel(&id).await;
    println!(
        "DELETE /tasks/{{id}} under the alarm: {} in {:?}",
        res.status(),
        started.elapsed()
    );
    assert!(
        [200, 202].contains(&res.status().as_u16()),
        "{}",
        res.status()
    );
    let task = sys.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(task["status"], "CANCELLED", "{task}");
    assert!(task["stage"].as_u64().unwrap() < 10, "{task}");

    // The alarm clears: creates work again, and every task made runs.
    rabbit
        .ctl(&["set_vm_memory_high_watermark", "0.4"])
        .await
        .expect("the alarm cleared");
    let after = eventually("creates to work again", Duration::from_secs(30), || async {
        let res = sys.post_task(json!({"stages": 1, "stage_ms": 0})).await;
        (res.status() == 202).then_some(res)
    })
    .await;
    let after: Value = after.json().await.unwrap();
    let mut ids = before_alarm.into_inner().unwrap();
    ids.push(after["task_id"].as_str().unwrap().to_owned());
    sys.assert_all_completed_once(&ids, Duration::from_secs(30))
        .await;
    sys.stop().await;
}
