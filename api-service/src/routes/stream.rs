//! Live task events as Server-Sent Events: each event of a
//! [`Feed`] becomes a frame (`id: <seq>`, `event: <type>`, `data: <JSON>`),
//! with a keep-alive comment while nothing happens. A client that goes away
//! ends its task (the response channel closes), which drops the feed's watch.

use std::{convert::Infallible, time::Duration};

use actix_web::{http::header, HttpResponse};
use bytes::Bytes;
use task_model::EventView;
use tokio::sync::mpsc;

use crate::service::query::Feed;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

type Frames = mpsc::Sender<Result<Bytes, Infallible>>;

fn frame(e: &EventView) -> Bytes {
    let data = serde_json::to_string(e).unwrap_or_default();
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        e.seq, e.kind, data
    ))
}

fn stream_headers() -> actix_web::HttpResponseBuilder {
    let mut res = HttpResponse::Ok();
    res.content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"));
    res
}

/// The SSE answer for `feed`, streamed by a task in `span`.
pub fn event_stream(feed: Feed, span: tracing::Span) -> HttpResponse {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(tracing::Instrument::instrument(pump(feed, tx), span));
    stream_headers().streaming(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The answer to `HEAD` with `Accept: text/event-stream`: the stream's
/// headers, no body.
pub fn event_stream_head() -> HttpResponse {
    stream_headers().finish()
}

/// Sends the feed's events until it ends or the client leaves.
async fn pump(mut feed: Feed, tx: Frames) {
    let mut keep_alive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    loop {
        let events = tokio::select! {
            events = feed.next() => events,
            _ = keep_alive.tick() => Some(Vec::new()),
            _ = tx.closed() => return,
        };
        let Some(events) = events else { return };
        if events.is_empty() && !send(&tx, Bytes::from_static(b": keep-alive\n\n")).await {
            return;
        }
        for e in &events {
            if !send(&tx, frame(e)).await {
                return;
            }
        }
    }
}

async fn send(tx: &Frames, frame: Bytes) -> bool {
    tx.send(Ok(frame)).await.is_ok()
}
