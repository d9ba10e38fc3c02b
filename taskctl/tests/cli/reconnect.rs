//! The SSE follower reconnects with `Last-Event-ID` when the stream drops
//! before the terminal event. The real api closes a stream only after the
//! end, so a tiny stand-in server plays an api whose connection breaks.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::helpers::{assert_plain, taskctl_at, Live};

const ID: &str = "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f";

fn task() -> Value {
    json!({
        "task_id": ID, "status": "PROCESSING", "algorithm": "hello", "progress": 0,
        "stage": 0, "stages": 2, "stage_ms": 0, "timeout_secs": 50, "priority": 0,
        "input": null, "created_at": "2025-01-01T00:00:00Z",
        "started_at": "2025-01-01T00:00:01Z", "finished_at": null,
        "updated_at": "2025-01-01T00:00:01Z", "worker": "w1", "cancel_requested": false,
        "result": null, "error": null, "webhook": null
    })
}

fn frame(seq: u64, kind: &str, status: &str, stage: u32) -> String {
    let data = json!({
        "seq": seq, "at": "2025-01-01T00:00:01Z", "type": kind, "status": status,
        "progress": stage * 50, "stage": stage, "worker": "w1", "detail": null
    });
    format!("id: {seq}\nevent: {kind}\ndata: {data}\n\n")
}

/// Reads a request head; returns (request line, Last-Event-ID).
async fn read_head(conn: &mut TcpStream) -> (String, Option<String>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let first = head.lines().next().unwrap_or_default().to_owned();
    let last_id = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("last-event-id")
            .then(|| value.trim().to_owned())
    });
    (first, last_id)
}

#[tokio::test]
async fn a_dropped_stream_is_resumed_after_the_last_event_seen() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let resumed_after = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&resumed_after);
    let server = tokio::spawn(async move {
        let mut streams = 0;
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let (request, last_id) = read_head(&mut conn).await;
            let (content_type, body) = if request.starts_with(&format!("GET /tasks/{ID}/events")) {
                streams += 1;
                seen.lock().unwrap().push(last_id.clone());
                match streams {
                    // The first connection breaks after two events.
                    1 => (
                        "text/event-stream",
                        frame(1, "status", "QUEUED", 0) + &frame(2, "status", "PROCESSING", 0),
                    ),
                    // A resumed one sends only what comes after Last-Event-ID
                    // (plus, as a duplicate, event 2, which must be skipped).
                    _ => (
                        "text/event-stream",
                        frame(2, "status", "PROCESSING", 0)
                            + ": keep-alive\n\n"
                            + &frame(3, "progress", "PROCESSING", 1)
                            + &frame(4, "progress", "PROCESSING", 2)
                            + &frame(5, "status", "COMPLETED", 2),
                    ),
                }
            } else {
                ("application/json", task().to_string())
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n{body}"
            );
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        }
    });

    let live = Live::start(taskctl_at(&address), &["watch", ID]);
    let (out, lines) = live.finish().await;
    server.abort();
    assert_eq!(out.code, 0, "{out:?}");
    assert_plain(&lines);
    assert_eq!(
        lines,
        vec![
            format!("{ID} QUEUED stage 0/2 (0%)"),
            format!("{ID} PROCESSING stage 0/2 (0%)"),
            format!("{ID} PROCESSING stage 1/2 (50%)"),
            format!("{ID} PROCESSING stage 2/2 (100%)"),
            format!("{ID} COMPLETED"),
        ],
        "nothing lost, nothing twice"
    );
    assert_eq!(
        *resumed_after.lock().unwrap(),
        vec![None, Some("2".to_owned())],
        "the second connection resumes after event 2"
    );
}
