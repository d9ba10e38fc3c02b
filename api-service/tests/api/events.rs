//! Live events over SSE.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

/// Reads SSE frames until the server closes the stream.
struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Sse {
    async fn open(app: &TestApp, id: &str, last_event_id: Option<u64>) -> Sse {
        let mut req = app
            .http
            .get(app.url(&format!("/tasks/{id}/events")))
            .header("accept", "text/event-stream");
        if let Some(last) = last_event_id {
            req = req.header("last-event-id", last.to_string());
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        Sse {
            body: Box::pin(res.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event as (id, type, data), or None when the stream ended.
    async fn next(&mut self) -> Option<(u64, String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                if frame.starts_with(':') {
                    continue;
                }
                let field = |name: &str| {
                    frame
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim().to_owned())
                        .unwrap()
                };
                return Some((
                    field("id:").parse().unwrap(),
                    field("event:"),
                    serde_json::from_str(&field("data:")).unwrap(),
                ));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("SSE stalled")?;
            self.buf
                .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }
}

#[tokio::test]
async fn the_stream_sends_the_past_then_live_events_in_order_and_closes_after_the_end() {
    let app = spawn_app().await;
    let id = app.create(json!({"stages": 2})).await;
    let mut a = Sse::open(&app, &id, None).await;
    let mut b = Sse::open(&app, &id, None).await;
    assert_eq!(a.next().await.unwrap().0, 1, "the past comes first");

    app.claim(&id, "w1").await;
    app.progress_callback(&id, "w1", 1, 2).await;
    app.progress_callback(&id, "w1", 2, 2).await;
    app.status_callback(&id, json!({"status": "COMPLETED", "worker": "w1"}))
        .await;

    let history = app.events(&id).await;
    for (name, sse, from) in [("a", &mut a, 2), ("b", &mut b, 1)] {
        let mut got = Vec::new();
        while let Some((seq, kind, data)) = sse.next().await {
            assert_eq!(data["seq"], seq);
            assert_eq!(data["type"], kind.as_str());
            // Live events come with their announcement, not read back: the
            // same events as the log holds.
            let logged = usize::try_from(seq - 1).unwrap();
            assert_eq!(data, history[logged], "client {name}, event {seq}");
            got.push((seq, kind, data["status"].as_str().unwrap().to_owned()));
        }
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, (from..=5).collect::<Vec<_>>(), "client {name}");
        assert_eq!(
            got.last().unwrap().2,
            "COMPLETED",
            "client {name} ends with the terminal event"
        );
    }
    test_support::eventually(
        "watchers to be released",
        Duration::from_secs(5),
        || async { (app.state().events.watched() == 0).then_some(()) },
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn last_event_id_resumes_and_a_finished_task_streams_its_past_then_closes() {
    let app = spawn_app().await;
    let id = app.create(json!({})).await;
    app.cancel(&id).await;
    let mut sse = Sse::open(&app, &id, Some(1)).await;
    let mut seqs = Vec::new();
    while let Some((seq, _, _)) = sse.next().await {
        seqs.push(seq);
    }
    assert_eq!(seqs, vec![2, 3]);
    let mut sse = Sse::open(&app, &id, Some(3)).await;
    assert!(sse.next().await.is_none(), "nothing left: closes at once");
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_frees_its_watch() {
    let app = spawn_app().await;
    let id = app.create(json!({"stages": 1000})).await;
    let mut sse = Sse::open(&app, &id, None).await;
    sse.next().await.unwrap();
    assert_eq!(app.state().events.watched(), 1);
    drop(sse);
    // The server notices a gone client when a write fails: make events happen.
    app.claim(&id, "w1").await;
    let stage = std::sync::atomic::AtomicU32::new(0);
    test_support::eventually(
        "the watch to be dropped",
        Duration::from_secs(10),
        || async {
            let next = stage.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            app.progress_callback(&id, "w1", next, 1000).await;
            (app.state().events.watched() == 0).then_some(())
        },
    )
    .await;
    app.stop().await;
}
