//! Reading tasks: one task, a page of the list, a task's history, and its
//! live events ([`Feed`]).

use std::sync::Arc;

use task_model::{EventView, TaskId, TaskPage, TaskStatus, TaskView};

use crate::{
    error::ApiError,
    state::AppState,
    store::{Note, Watch},
};

/// Most events one history answer holds.
const MAX_HISTORY: usize = 100_000;

/// Task `id` as `GET /tasks/{id}` shows it.
///
/// # Errors
/// Unknown or expired (404), Redis unavailable (503).
pub async fn task(state: &AppState, id: TaskId) -> Result<TaskView, ApiError> {
    match state.store.load(&id).await? {
        Some(task) => Ok(task.view),
        None => Err(ApiError::NotFound(id.to_string())),
    }
}

/// What `GET /tasks` asks for, as sent (empty = absent).
#[derive(Debug, Clone, Default)]
pub struct ListRequest<'a> {
    pub status: Option<&'a str>,
    pub limit: Option<&'a str>,
    pub cursor: Option<&'a str>,
}

/// One page of tasks, newest first.
///
/// # Errors
/// A bad status, limit or cursor (400), Redis unavailable (503).
pub async fn list(state: &AppState, request: ListRequest<'_>) -> Result<TaskPage, ApiError> {
    let status = match request.status.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<TaskStatus>()
                .map_err(|e| ApiError::invalid("status", e.to_string()))?,
        ),
    };
    let limit = match request.limit {
        None | Some("") => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::invalid("limit", "limit must be an integer from 1 to 1000"))?,
    };
    let after = match request.cursor.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(state.cursor.decode(c).ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "this cursor was not issued by the api")
        })?),
    };
    let page = state.store.list(status, limit, after).await?;
    Ok(TaskPage {
        tasks: page.tasks,
        next_cursor: page.next.map(|m| state.cursor.encode(&m)),
    })
}

/// Task `id`'s events, oldest first.
///
/// # Errors
/// Unknown or expired (404), Redis unavailable (503).
pub async fn history(state: &AppState, id: TaskId) -> Result<Vec<EventView>, ApiError> {
    // Existence first: an unknown task is a 404, not an empty history.
    task(state, id).await?;
    Ok(state.store.events(&id, 0, MAX_HISTORY).await?)
}

/// A task's events as they happen: the past after a given seq, then each new
/// one, ending after the terminal event. Nothing polls: the event hub hands
/// over each new event as announced, and the feed reads the task's log only
/// when it may have missed one (a gap in seqs, a resubscription).
#[derive(Debug)]
pub struct Feed {
    state: Arc<AppState>,
    id: TaskId,
    watch: Watch,
    last: u64,
    /// Told about news not read yet (kept across a cancelled [`Feed::next`]).
    dirty: bool,
    done: bool,
    past: Option<Vec<EventView>>,
}

impl Feed {
    /// Follows task `id` from after `last_seen`.
    ///
    /// # Errors
    /// Unknown or expired (404), Redis unavailable (503).
    pub async fn open(state: Arc<AppState>, id: TaskId, last_seen: u64) -> Result<Self, ApiError> {
        let status = task(&state, id).await?.status;
        // Watch before reading the past, so nothing falls between the two.
        let watch = state.events.watch(id);
        let past = state.store.events(&id, last_seen, MAX_HISTORY).await?;
        let mut feed = Self {
            state,
            id,
            watch,
            last: last_seen,
            dirty: false,
            done: false,
            past: None,
        };
        feed.take(&past);
        // Already over, and the client has seen the end.
        if status.is_terminal() {
            feed.done = true;
        }
        feed.past = Some(past);
        Ok(feed)
    }

    /// The next events, waiting for them; `None` once the terminal event was
    /// given, or when the stream can no longer be read. Cancel-safe.
    pub async fn next(&mut self) -> Option<Vec<EventView>> {
        if let Some(past) = self.past.take().filter(|p| !p.is_empty()) {
            return Some(past);
        }
        while !self.done {
            if !self.dirty {
                match self.watch.next().await? {
                    // The next event, announced with its body: no read.
                    Note::Event(seq, Some(event)) if seq == self.last + 1 => {
                        let events = vec![EventView::clone(&event)];
                        self.take(&events);
                        return Some(events);
                    }
                    // Already given (read along with an earlier one).
                    Note::Event(seq, _) if seq <= self.last => continue,
                    // A gap, an event without its body, a resync.
                    Note::Event(..) | Note::Resync => {}
                }
            }
            self.dirty = true;
            let events = self.read().await?;
            self.dirty = false;
            if !events.is_empty() {
                self.take(&events);
                return Some(events);
            }
        }
        None
    }

    async fn read(&self) -> Option<Vec<EventView>> {
        match self.state.store.events(&self.id, self.last, 10_000).await {
            Ok(events) => Some(events),
            Err(e) => {
                tracing::warn!(task_id = %self.id, error = %e, "cannot read events for a stream; closing it");
                None
            }
        }
    }

    fn take(&mut self, events: &[EventView]) {
        for e in events {
            self.last = e.seq;
            self.done |= is_final(e);
        }
    }
}

/// The terminal status event: nothing follows it.
pub fn is_final(e: &EventView) -> bool {
    e.kind == "status" && e.status.is_terminal()
}
