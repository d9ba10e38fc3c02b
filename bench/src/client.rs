//! The public API as a load generator uses it: one keep-alive pool, and the
//! few calls the scenarios need.

use std::{pin::Pin, time::Duration};

use anyhow::{bail, Context};
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use task_model::{EventView, TaskId, TaskStatus, TaskView};

/// A client of one api process.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
}

/// A task's SSE stream, read event by event.
pub(crate) struct Events {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// The next event, or `None` when the server closed the stream.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<EventView>> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let data = block.lines().find_map(|l| l.strip_prefix("data:"));
                if let Some(data) = data {
                    let event: EventView = serde_json::from_str(data.trim())
                        .with_context(|| format!("an SSE event that is not an event: {data}"))?;
                    return Ok(Some(event));
                }
                continue; // a keep-alive comment
            }
            match self.body.next().await {
                Some(chunk) => self.buf.push_str(&String::from_utf8_lossy(&chunk?)),
                None => return Ok(None),
            }
        }
    }
}

impl Api {
    pub(crate) fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(4096)
            .tcp_nodelay(true)
            .build()
            .expect("a plain reqwest client builds");
        Self {
            http,
            base: base.to_owned(),
        }
    }

    /// `POST /tasks`; anything but 202 is an error.
    pub(crate) async fn create(&self, body: &Value) -> anyhow::Result<TaskId> {
        let resp = self
            .http
            .post(format!("{}/tasks", self.base))
            .timeout(Duration::from_secs(30))
            .json(body)
            .send()
            .await
            .context("POST /tasks")?;
        let status = resp.status();
        if status != reqwest::StatusCode::ACCEPTED {
            bail!(
                "POST /tasks answered {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        let v: Value = resp.json().await?;
        TaskId::parse(v["task_id"].as_str().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("POST /tasks answered a bad task_id: {e}"))
    }

    /// `POST /tasks/batch` of `count` copies of `body`; answers how many it created.
    pub(crate) async fn create_batch(&self, body: &Value, count: usize) -> anyhow::Result<usize> {
        let tasks = vec![body.clone(); count];
        let resp = self
            .http
            .post(format!("{}/tasks/batch", self.base))
            .timeout(Duration::from_secs(120))
            .json(&serde_json::json!({ "tasks": tasks }))
            .send()
            .await
            .context("POST /tasks/batch")?;
        let status = resp.status();
        if status != reqwest::StatusCode::ACCEPTED {
            bail!(
                "POST /tasks/batch answered {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        let v: Value = resp.json().await?;
        Ok(v["tasks"].as_array().map_or(0, Vec::len))
    }

    /// `GET /tasks/{id}`.
    pub(crate) async fn get(&self, id: TaskId) -> anyhow::Result<TaskView> {
        self.get_json(&format!("/tasks/{id}")).await
    }

    /// GET `path` (with a 10 s timeout), expecting 2xx and a JSON body.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("GET {path} answered {}", resp.status());
        }
        Ok(resp.json().await?)
    }

    /// `GET /tasks?limit={limit}`: the first page; answers how many tasks it held.
    pub(crate) async fn list_page(&self, limit: usize) -> anyhow::Result<usize> {
        let page: Value = self.get_json(&format!("/tasks?limit={limit}")).await?;
        Ok(page["tasks"].as_array().map_or(0, Vec::len))
    }

    /// `DELETE /tasks/{id}`: the answer's HTTP status and task status.
    pub(crate) async fn cancel(&self, id: TaskId) -> anyhow::Result<(u16, String)> {
        let resp = self
            .http
            .delete(format!("{}/tasks/{id}", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        let code = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or_default();
        Ok((code, v["status"].as_str().unwrap_or_default().to_owned()))
    }

    /// `GET /tasks/{id}/events` as JSON.
    pub(crate) async fn history(&self, id: TaskId) -> anyhow::Result<Vec<EventView>> {
        self.get_json(&format!("/tasks/{id}/events")).await
    }

    /// Opens the task's event stream (`Accept: text/event-stream`).
    pub(crate) async fn events(&self, id: TaskId) -> anyhow::Result<Events> {
        let resp = self
            .http
            .get(format!("{}/tasks/{id}/events", self.base))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("GET /tasks/{id}/events (SSE) answered {}", resp.status());
        }
        Ok(Events {
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        })
    }

    /// Every task of `status`, newest first, through all pages.
    pub(crate) async fn list_all(&self, status: TaskStatus) -> anyhow::Result<Vec<TaskView>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut req = self
                .http
                .get(format!("{}/tasks", self.base))
                .timeout(Duration::from_secs(30))
                .query(&[("status", status.as_str()), ("limit", "1000")]);
            if let Some(c) = &cursor {
                req = req.query(&[("cursor", c.as_str())]);
            }
            let resp = req.send().await?;
            if !resp.status().is_success() {
                bail!("GET /tasks answered {}", resp.status());
            }
            let page: Value = resp.json().await?;
            let tasks: Vec<TaskView> = serde_json::from_value(page["tasks"].clone())?;
            out.extend(tasks);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(out),
            }
        }
    }

    /// The Prometheus text of `/metrics`.
    pub(crate) async fn metrics(&self) -> anyhow::Result<Metrics> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .text()
            .await?;
        Ok(Metrics(text))
    }
}

/// Scrapes any Prometheus endpoint (a worker's).
pub(crate) async fn scrape(url: &str) -> anyhow::Result<Metrics> {
    let text = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await?
        .text()
        .await?;
    Ok(Metrics(text))
}

/// A Prometheus text exposition.
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics(pub(crate) String);

impl Metrics {
    /// The value of the sample named exactly `series` (name plus labels as
    /// printed, e.g. `taskforge_tasks_finished_total{status="COMPLETED"}`);
    /// 0 when absent (counters not yet touched).
    pub(crate) fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }

    /// Sum and count of every series of histogram `name` whose labels contain all of `labels`.
    pub(crate) fn histogram(&self, name: &str, labels: &[&str]) -> (f64, f64) {
        let mut sum = 0.0;
        let mut count = 0.0;
        for line in self.0.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            if !labels.iter().all(|l| rest.contains(l)) {
                continue;
            }
            if metric == format!("{name}_sum") {
                sum += value;
            } else if metric == format!("{name}_count") {
                count += value;
            }
        }
        (sum, count)
    }

    /// Tasks the api recorded as COMPLETED.
    pub(crate) fn completed(&self) -> f64 {
        self.value(r#"taskforge_tasks_finished_total{status="COMPLETED"}"#)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP taskforge_tasks_finished_total Tasks
# TYPE taskforge_tasks_finished_total counter
taskforge_tasks_finished_total{status="COMPLETED"} 42
taskforge_callback_duration_seconds_sum{kind="status"} 0.5
taskforge_callback_duration_seconds_count{kind="status"} 100
taskforge_callback_duration_seconds_sum{kind="progress"} 0.25
taskforge_callback_duration_seconds_count{kind="progress"} 50
"#;

    #[test]
    fn reads_counters_and_histograms() {
        let m = Metrics(TEXT.to_owned());
        assert_eq!(m.completed(), 42.0);
        assert_eq!(m.value("nothing"), 0.0);
        assert_eq!(
            m.histogram("taskforge_callback_duration_seconds", &[r#"kind="status""#]),
            (0.5, 100.0)
        );
        assert_eq!(
            m.histogram("taskforge_callback_duration_seconds", &[]),
            (0.75, 150.0)
        );
    }
}
