//! The callback API and the state machine it drives.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TOKEN};

#[tokio::test]
async fn a_task_goes_queued_processing_completed_with_rising_progress_and_ordered_events() {
    let app = spawn_app().await;
    let id = app.create(json!({"stages": 4, "stage_ms": 0})).await;

    let claim = app.claim(&id, "w1").await;
    assert_eq!(
        (claim["status"].as_str(), claim["stage"].as_u64()),
        (Some("PROCESSING"), Some(0))
    );
    assert_eq!(claim["lease_ms"], 10_000);
    assert!(claim["deadline_in_ms"].as_i64().unwrap() > 49_000);

    let mut seen = Vec::new();
    for stage in 1..=4 {
        let (status, _) = app.progress_callback(&id, "w1", stage, 4).await;
        assert_eq!(status, 200);
        seen.push(app.task(&id).await["progress"].as_u64().unwrap());
    }
    assert_eq!(seen, vec![25, 50, 75, 100]);

    let result = json!({"stages": 4, "output": "hello world"});
    let (status, answer) = app
        .status_callback(
            &id,
            json!({"status": "COMPLETED", "worker": "w1", "result": result}),
        )
        .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("COMPLETED"))
    );

    let task = app.task(&id).await;
    assert_eq!(task["status"], "COMPLETED");
    assert_eq!(task["result"], result);
    assert_eq!(task["worker"], "w1");
    assert!(task["started_at"].is_string() && task["finished_at"].is_string());

    let events = app.events(&id).await;
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "status")
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["QUEUED", "PROCESSING", "COMPLETED"]);
    let progress: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "progress")
        .map(|e| e["progress"].as_u64().unwrap())
        .collect();
    assert_eq!(progress, [25, 50, 75, 100]);

    // The finished task expires with RESULT_TTL_SECS.
    let mut redis = app.env.redis().await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{}task:{{{id}}}", app.env.redis_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((86_000..=86_400).contains(&ttl), "ttl {ttl}");
    app.stop().await;
}

#[tokio::test]
async fn progress_never_goes_backwards_and_only_the_holder_may_report() {
    let app = spawn_app().await;
    let id = app.create(json!({"stages": 5})).await;
    app.claim(&id, "w1").await;
    assert_eq!(app.progress_callback(&id, "w1", 3, 5).await.0, 200);

    let (status, answer) = app.progress_callback(&id, "w1", 2, 5).await;
    assert_eq!(
        (status, answer["stage"].as_u64()),
        (200, Some(3)),
        "lower stage: 200, ignored"
    );
    assert_eq!(app.task(&id).await["stage"], 3);

    let (status, answer) = app.progress_callback(&id, "w2", 4, 5).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("not_holder"))
    );
    let (status, _) = app.progress_callback(&id, "w1", 6, 5).await;
    assert_eq!(status, 400, "beyond the last stage");
    let (status, _) = app.progress_callback(&id, "w1", 1, 9).await;
    assert_eq!(status, 400, "wrong stage count");

    let progress_events = app
        .events(&id)
        .await
        .iter()
        .filter(|e| e["type"] == "progress")
        .count();
    assert_eq!(progress_events, 1, "ignored updates are not events");
    app.stop().await;
}

#[tokio::test]
async fn a_live_lease_blocks_takeover_until_it_expires_and_the_stage_is_kept() {
    let app = spawn_app_with(&["--lease-secs", "1"]).await;
    let id = app.create(json!({"stages": 5})).await;
    let first = app.claim(&id, "w1").await;
    app.progress_callback(&id, "w1", 2, 5).await;

    let (status, answer) = app
        .status_callback(&id, json!({"status": "PROCESSING", "worker": "w2"}))
        .await;
    assert_eq!(
        (status, answer["error"].as_str(), answer["worker"].as_str()),
        (409, Some("lease_held"), Some("w1"))
    );
    assert!(answer["lease_remaining_ms"].as_u64().unwrap() > 0);

    // The same worker may re-claim at once (a restart with the same name).
    let again = app.claim(&id, "w1").await;
    assert_eq!(again["stage"], 2);

    // Once w1 stops renewing, w2 takes over and resumes at stage 2.
    let takeover =
        test_support::eventually("the lease to expire", Duration::from_secs(5), || async {
            let (status, body) = app
                .status_callback(&id, json!({"status": "PROCESSING", "worker": "w2"}))
                .await;
            (status == 200).then_some(body)
        })
        .await;
    assert_eq!(takeover["stage"], 2);
    assert_eq!(
        takeover["started_at"], first["started_at"],
        "started_at is kept on takeover"
    );

    // The old holder is now refused.
    let (status, _) = app.progress_callback(&id, "w1", 3, 5).await;
    assert_eq!(status, 409);
    let (status, _) = app
        .status_callback(&id, json!({"status": "COMPLETED", "worker": "w1"}))
        .await;
    assert_eq!(status, 409);
    let takeover_event = app
        .events(&id)
        .await
        .into_iter()
        .find(|e| e["detail"] == "taken over from w1");
    assert!(takeover_event.is_some(), "the takeover is in the history");
    app.stop().await;
}

#[tokio::test]
async fn racing_terminal_reports_and_cancels_produce_exactly_one_terminal_state() {
    let app = spawn_app().await;
    for round in 0..30 {
        let id = app.create(json!({"stages": 1})).await;
        app.claim(&id, "w1").await;
        app.progress(&id, "w1", 1, 1).await;
        let complete = app.status_callback(
            &id,
            json!({"status": "COMPLETED", "worker": "w1", "result": {"stages": 1}}),
        );
        let fail = app.status_callback(
            &id,
            json!({"status": "FAILED", "worker": "w1", "error": "boom"}),
        );
        let cancel = app.cancel(&id);
        let timeout = app.status_callback(&id, json!({"status": "TIMED_OUT", "worker": "w1"}));
        let (c, f, x, t) = tokio::join!(complete, fail, cancel, timeout);
        let wins = [c.0, f.0, t.0].iter().filter(|s| **s == 200).count();
        assert!(wins <= 1, "round {round}: {wins} terminal reports accepted");

        let events = app.events(&id).await;
        let terminal: Vec<&Value> = events
            .iter()
            .filter(|e| {
                e["type"] == "status"
                    && ["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"]
                        .contains(&e["status"].as_str().unwrap())
            })
            .collect();
        assert_eq!(terminal.len(), 1, "round {round}: {events:?}");
        let task = app.task(&id).await;
        assert_eq!(task["status"], terminal[0]["status"], "round {round}");
        if x.status() == 409 {
            assert_eq!(wins, 1, "round {round}: cancel lost to a report");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn callbacks_need_the_token_and_reject_statuses_a_worker_may_not_send() {
    let app = spawn_app().await;
    let id = app.create(json!({})).await;
    let url = app.url(&format!("/internal/tasks/{id}/status"));
    let body = json!({"status": "PROCESSING", "worker": "w1"});

    let res = app.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let res = app
        .http
        .post(&url)
        .bearer_auth(format!("{TOKEN}x"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "unauthorized");

    for bad in [
        json!({"status": "QUEUED", "worker": "w1"}),
        json!({"status": "CANCELLING", "worker": "w1"}),
        json!({"status": "DONE", "worker": "w1"}),
        json!({"status": "PROCESSING"}),
        json!({"status": "PROCESSING", "worker": "w1", "extra": 1}),
    ] {
        let (status, answer) = app.status_callback(&id, bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            answer["error"].is_string() && answer["message"].is_string(),
            "{bad}: {answer}"
        );
    }
    // A terminal report for a task nobody claimed is an illegal transition.
    let (status, _) = app
        .status_callback(&id, json!({"status": "COMPLETED", "worker": "w1"}))
        .await;
    assert_eq!(status, 409);
    assert_eq!(app.task(&id).await["status"], "QUEUED");
    app.stop().await;
}

#[tokio::test]
async fn the_claim_answer_carries_the_stored_task_and_only_the_claim_does() {
    let app = spawn_app().await;
    let id = app
        .create(json!({"stages": 3, "stage_ms": 40, "timeout_secs": 9, "input": {"n": 1}}))
        .await;
    let claim = app.claim(&id, "w1").await;
    assert_eq!(
        claim["run"],
        json!({"algorithm": "hello", "stages": 3, "stage_ms": 40, "timeout_secs": 9, "input": {"n": 1}})
    );
    let (status, progress) = app.progress_callback(&id, "w1", 1, 3).await;
    assert_eq!(status, 200);
    assert!(progress.get("run").is_none(), "{progress}");
    let (status, refused) = app
        .status_callback(&id, json!({"status": "PROCESSING", "worker": "w2"}))
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (409, Some("lease_held"))
    );
    assert!(refused.get("run").is_none(), "{refused}");
    app.stop().await;
}

#[tokio::test]
async fn completed_before_every_stage_is_refused_and_the_task_stays_with_its_holder() {
    let app = spawn_app().await;
    let id = app.create(json!({"stages": 3})).await;
    app.claim(&id, "w1").await;
    app.progress(&id, "w1", 1, 3).await;
    let done = json!({"status": "COMPLETED", "worker": "w1", "result": {"stages": 1}});

    let (status, answer) = app.status_callback(&id, done.clone()).await;
    assert_eq!(
        (status, answer["error"].as_str(), answer["status"].as_str()),
        (409, Some("stages_incomplete"), Some("PROCESSING")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("1 of 3 stages"),
        "{answer}"
    );
    let task = app.task(&id).await;
    assert_eq!(
        (task["status"].as_str(), task["stage"].as_u64()),
        (Some("PROCESSING"), Some(1))
    );
    assert!(task["result"].is_null());

    // The other terminal states may come at any stage; COMPLETED once all ran.
    app.progress(&id, "w1", 3, 3).await;
    let (status, answer) = app
        .status_callback(
            &id,
            json!({"status": "COMPLETED", "worker": "w1", "result": {"stages": 3}}),
        )
        .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("COMPLETED"))
    );
    let failed = app.create(json!({"stages": 3})).await;
    app.claim(&failed, "w1").await;
    let (status, _) = app
        .status_callback(
            &failed,
            json!({"status": "FAILED", "worker": "w1", "error": "boom"}),
        )
        .await;
    assert_eq!(status, 200, "FAILED at stage 0 is fine");
    app.stop().await;
}

#[tokio::test]
async fn a_terminal_report_carries_the_last_stage_which_is_recorded_with_its_progress_event_first()
{
    let app = spawn_app().await;
    let id = app.create(json!({"stages": 2, "stage_ms": 0})).await;
    app.claim(&id, "w1").await;
    app.progress(&id, "w1", 1, 2).await;

    // A stage the task does not have is refused, and nothing changes.
    let (status, answer) = app
        .status_callback(
            &id,
            json!({"status": "COMPLETED", "worker": "w1", "stage": 3}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    // One stage short is still short.
    let (status, answer) = app
        .status_callback(
            &id,
            json!({"status": "COMPLETED", "worker": "w1", "stage": 1}),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("stages_incomplete")),
        "{answer}"
    );

    let (status, answer) = app
        .status_callback(
            &id,
            json!({"status": "COMPLETED", "worker": "w1", "stage": 2, "result": {"stages": 2}}),
        )
        .await;
    assert_eq!(
        (status, answer["status"].as_str(), answer["stage"].as_u64()),
        (200, Some("COMPLETED"), Some(2)),
        "{answer}"
    );
    let task = app.task(&id).await;
    assert_eq!(
        (task["stage"].as_u64(), task["progress"].as_u64()),
        (Some(2), Some(100))
    );
    let kinds: Vec<(String, u64)> = app
        .events(&id)
        .await
        .iter()
        .map(|e| {
            let kind = if e["type"] == "status" {
                e["status"].as_str()
            } else {
                e["type"].as_str()
            };
            (kind.unwrap().to_owned(), e["progress"].as_u64().unwrap())
        })
        .collect();
    let kinds: Vec<(&str, u64)> = kinds.iter().map(|(k, p)| (k.as_str(), *p)).collect();
    assert_eq!(
        kinds,
        [
            ("QUEUED", 0),
            ("PROCESSING", 0),
            ("progress", 50),
            ("progress", 100),
            ("COMPLETED", 100)
        ]
    );

    // A FAILED report after stages records them too (a later attempt does not rerun them).
    let failed = app.create(json!({"stages": 2, "stage_ms": 0})).await;
    app.claim(&failed, "w1").await;
    let (status, _) = app
        .status_callback(
            &failed,
            json!({"status": "FAILED", "worker": "w1", "stage": 1, "error": "output lost"}),
        )
        .await;
    assert_eq!(status, 200);
    let task = app.task(&failed).await;
    assert_eq!(
        (task["status"].as_str(), task["stage"].as_u64()),
        (Some("FAILED"), Some(1))
    );
    app.stop().await;
}

/// The event log is a list (a stream's first node preallocates 4 KB): a
/// finished one-stage task keeps its hash and events in under 2 KiB.
#[tokio::test]
async fn a_finished_task_keeps_under_2_kib_in_redis() {
    let app = spawn_app().await;
    let id = app.create(json!({"stages": 1, "stage_ms": 0})).await;
    app.claim(&id, "w1").await;
    let (status, _) = app
        .status_callback(
            &id,
            json!({"status": "COMPLETED", "worker": "w1", "stage": 1, "result": {"stages": 1, "output": "hello world"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        app.events(&id).await.len(),
        4,
        "QUEUED, PROCESSING, progress, COMPLETED"
    );
    let mut redis = app.env.redis().await.unwrap();
    let mut bytes = 0;
    for key in ["task", "events"] {
        let used: Option<i64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(format!("{}{key}:{{{id}}}", app.env.redis_prefix))
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut redis)
            .await
            .unwrap();
        bytes += used.expect("the key exists");
    }
    assert!(bytes <= 2048, "{bytes} bytes");
    app.stop().await;
}

/// A task stored by a version that kept its events in a Redis stream goes
/// on there: new events are appended to the stream and all are read back.
#[tokio::test]
async fn a_task_whose_events_are_a_stream_keeps_them_there() {
    let app = spawn_app().await;
    let id = app.create(json!({"stages": 2, "stage_ms": 0})).await;
    let key = format!("{}events:{{{id}}}", app.env.redis_prefix);
    let mut redis = app.env.redis().await.unwrap();
    let first = app.events(&id).await;
    let at = chrono::DateTime::parse_from_rfc3339(first[0]["at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    let _: () = redis::pipe()
        .atomic()
        .del(&key)
        .cmd("XADD")
        .arg(&key)
        .arg("0-1")
        .arg(&[
            "type", "status", "status", "QUEUED", "stage", "0", "stages", "2", "attempt", "0",
        ])
        .arg("at")
        .arg(at)
        .ignore()
        .query_async(&mut redis)
        .await
        .unwrap();

    app.claim(&id, "w1").await;
    app.progress(&id, "w1", 1, 2).await;
    let kind: String = redis::cmd("TYPE")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(kind, "stream");
    let events = app.events(&id).await;
    let seen: Vec<(u64, &str)> = events
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [(1, "status"), (2, "status"), (3, "progress")]);
    assert_eq!(events[2]["progress"], 50);
    app.stop().await;
}

/// `POST /internal/reports` handles each report as its single callback
/// and answers each in order, with the status that callback would get.
#[tokio::test]
async fn batched_reports_are_each_answered_as_their_single_callback() {
    let app = spawn_app().await;
    let a = app.create(json!({"stages": 1, "stage_ms": 0})).await;
    let b = app.create(json!({"stages": 2, "stage_ms": 0})).await;
    let held = app.create(json!({"stages": 1, "stage_ms": 0})).await;
    app.claim(&held, "w2").await;
    let unknown = "00000000-0000-4000-8000-000000000000";
    let claim = |id: &str| json!({"task_id": id, "report": {"status": {"status": "PROCESSING", "worker": "w1"}}});

    let (status, body) = app
        .reports_callback(json!([
            claim(&a),
            claim(&b),
            claim(&held),
            claim(unknown),
            {"task_id": b, "report": {"status": {"status": "QUEUED", "worker": "w1"}}},
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    let answers = body["answers"].as_array().unwrap();
    let codes: Vec<(&str, u64)> = answers
        .iter()
        .map(|x| (x["task_id"].as_str().unwrap(), x["code"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [
            (a.as_str(), 200),
            (b.as_str(), 200),
            (held.as_str(), 409),
            (unknown, 404),
            // a status a worker may not send
            (b.as_str(), 400),
        ]
    );
    assert_eq!(answers[0]["body"]["status"], "PROCESSING");
    assert_eq!(answers[0]["body"]["run"]["stages"], 1);
    assert_eq!(answers[2]["body"]["error"], "lease_held");
    assert_eq!(answers[3]["body"]["error"], "not_found");

    // A finish of one, progress of the other, in one batch.
    let (status, body) = app
        .reports_callback(json!([
            {"task_id": a, "report": {"status": {"status": "COMPLETED", "worker": "w1", "stage": 1,
                "result": {"stages": 1, "output": "hello world"}}}},
            {"task_id": b, "report": {"progress": {"progress": 50, "stage": 1, "stages": 2, "worker": "w1"}}},
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["answers"][0]["code"], 200);
    assert_eq!(body["answers"][1]["code"], 200);
    assert_eq!(app.task(&a).await["status"], "COMPLETED");
    assert_eq!(app.task(&b).await["progress"], 50);
    let statuses: Vec<Value> = app
        .events(&a)
        .await
        .iter()
        .filter(|e| e["type"] == "status")
        .map(|e| e["status"].clone())
        .collect();
    assert_eq!(statuses, ["QUEUED", "PROCESSING", "COMPLETED"]);

    // Empty, too many, not a batch, or a report against its schema:
    // refused as a whole.
    let progress = |p: u32, worker: &str| json!({"task_id": b, "report": {"progress": {"progress": p, "stage": 1, "stages": 2, "worker": worker}}});
    for bad in [
        json!([]),
        Value::Array(vec![claim(&a); 257]),
        json!([{"task_id": a, "report": {"queued": {}}}]),
        json!([claim(&b), progress(101, "w1")]),
        json!([claim(&b), progress(50, "")]),
    ] {
        let (status, body) = app.reports_callback(bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let last_stage = json!({"task_id": b, "report": {"progress": {"progress": 100, "stage": 2, "stages": 2, "worker": "w1"}}});
    let (_, body) = app
        .reports_callback(json!([last_stage, progress(50, "")]))
        .await;
    assert_eq!(body["index"], 1, "{body}");
    assert_eq!(
        app.task(&b).await["progress"],
        50,
        "nothing of a refused batch ran"
    );
    app.stop().await;
}
