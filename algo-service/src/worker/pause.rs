//! Which named queues are paused, as this worker knows it.
//!
//! Changes come two ways: `queue_state` broadcasts on `tasks.control`
//! ([`crate::worker::control`]) and, each time a session opens, the api's
//! `GET /internal/queues` ([`learn`]), asked after the control queue is
//! bound so that no change falls between the two. Every change carries the
//! version the api gave it; per queue the highest version wins, so the
//! order in which the two ways deliver does not matter.

use std::{collections::HashMap, time::Duration};

use backon::BackoffBuilder;
use task_model::QueuePause;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::callbacks::{jittered, retry_policy, ApiClient};

/// Per queue: paused, and the version of the change that said so.
type States = HashMap<String, (bool, u64)>;

/// The pause states; cheap to clone, every clone the same book.
#[derive(Debug, Clone)]
pub(crate) struct Pauses {
    states: watch::Sender<States>,
}

impl Default for Pauses {
    fn default() -> Self {
        Self {
            states: watch::Sender::new(States::new()),
        }
    }
}

impl Pauses {
    /// Records a change unless a newer one of `queue` is known; notifies the
    /// subscribers when whether `queue` is paused changed.
    pub(crate) fn apply(&self, queue: &str, paused: bool, version: u64) -> bool {
        self.states
            .send_if_modified(|states| match states.get(queue) {
                Some(&(_, known)) if known >= version => false,
                old => {
                    let flipped = old.map_or(paused, |&(was, _)| was != paused);
                    states.insert(queue.to_owned(), (paused, version));
                    flipped
                }
            })
    }

    /// Whether `queue` is paused.
    pub(crate) fn is_paused(&self, queue: &str) -> bool {
        self.states.borrow().get(queue).is_some_and(|&(p, _)| p)
    }

    /// Fires whenever a queue is paused or resumed.
    pub(crate) fn subscribe(&self) -> watch::Receiver<States> {
        self.states.subscribe()
    }
}

/// Asks the api for the pause state (`GET /internal/queues`), retrying
/// until it answers; `false` if `shutdown` fires first. An api that does not
/// know the endpoint (404: older than this worker) pauses nothing.
pub(crate) async fn learn(api: ApiClient, pauses: Pauses, shutdown: CancellationToken) -> bool {
    let mut backoff = retry_policy().build();
    for attempt in 1u32.. {
        let asked = tokio::select! {
            biased;
            () = shutdown.cancelled() => return false,
            asked = ask(&api) => asked,
        };
        match asked {
            Ok(states) => {
                for s in states {
                    pauses.apply(&s.queue, s.paused, s.version);
                }
                return true;
            }
            Err(e) => {
                let delay = jittered(backoff.next().unwrap_or(Duration::from_secs(5)));
                tracing::warn!(error = format!("{e:#}"), attempt, retry_in_ms = delay.as_millis() as u64,
                    "cannot learn which queues are paused from the api; not consuming until it answers");
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    false
}

async fn ask(api: &ApiClient) -> anyhow::Result<Vec<QueuePause>> {
    let response = api
        .request(reqwest::Method::GET, "/internal/queues")
        .send()
        .await?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        tracing::warn!("the api has no GET /internal/queues (older than this worker); assuming no queue is paused");
        return Ok(Vec::new());
    }
    let response = response.error_for_status()?;
    Ok(response.json().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_version_wins_whatever_the_order() {
        let pauses = Pauses::default();
        assert!(!pauses.is_paused("gpu"));
        assert!(pauses.apply("gpu", true, 5));
        assert!(pauses.is_paused("gpu"));
        // An older answer (asked before the pause) changes nothing.
        assert!(!pauses.apply("gpu", false, 4));
        assert!(pauses.is_paused("gpu"));
        // The same state again does not notify.
        assert!(!pauses.apply("gpu", true, 6));
        assert!(pauses.apply("gpu", false, 7));
        assert!(!pauses.is_paused("gpu"));
        // A resume of a queue never seen paused does not notify.
        assert!(!pauses.apply("cpu", false, 8));
    }
}
