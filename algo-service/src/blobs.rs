//! The worker's blob client: input blobs come from the api's
//! `GET /internal/blobs/{id}`, output blobs go to `POST /internal/blobs`,
//! both under the callback token. Transient failures (no answer, 5xx, 401)
//! are retried with the callbacks' backoff until the stop token fires.

use backon::Retryable;
use reqwest::{Method, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::callbacks::{jittered, retry_policy, ApiClient};

/// Why a blob could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// The api answered for good: unknown or expired (404), or refused (4xx).
    #[error("{0}")]
    Permanent(String),
    /// The stop token fired while retrying.
    #[error("gave up on the blob: the worker is stopping")]
    Abandoned,
}

#[derive(Debug)]
enum Attempt {
    Retry(String),
    Permanent(String),
}

/// A successful answer's body.
#[derive(Debug)]
struct Body {
    bytes: Vec<u8>,
}

async fn once(build: impl Fn() -> reqwest::RequestBuilder, what: &str) -> Result<Body, Attempt> {
    let res = build()
        .send()
        .await
        .map_err(|e| Attempt::Retry(format!("{what}: api unreachable: {e}")))?;
    let status = res.status();
    if status.is_success() {
        let bytes = res
            .bytes()
            .await
            .map_err(|e| Attempt::Retry(format!("{what}: reading the answer: {e}")))?;
        return Ok(Body {
            bytes: bytes.to_vec(),
        });
    }
    let text = res.text().await.unwrap_or_default();
    if status.is_server_error()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Err(Attempt::Retry(format!(
            "{what}: api answered {status}: {text}"
        )))
    } else if status == StatusCode::NOT_FOUND {
        Err(Attempt::Permanent(format!(
            "{what}: no such blob (unknown or expired)"
        )))
    } else {
        Err(Attempt::Permanent(format!(
            "{what}: api answered {status}: {text}"
        )))
    }
}

async fn with_retries(
    build: impl Fn() -> reqwest::RequestBuilder,
    what: &str,
    stop: &CancellationToken,
) -> Result<Body, BlobError> {
    let retried = (|| once(&build, what))
    .retry(retry_policy())
    .when(|e: &Attempt| matches!(e, Attempt::Retry(_)))
    .adjust(|_, delay| delay.map(jittered))
    .notify(|e: &Attempt, delay| {
        tracing::warn!(error = ?e, retry_in_ms = delay.as_millis() as u64, "blob call failed; retrying");
    });
    tokio::select! {
        biased;
        () = stop.cancelled() => Err(BlobError::Abandoned),
        res = retried => res.map_err(|e| match e {
            Attempt::Permanent(m) | Attempt::Retry(m) => BlobError::Permanent(m),
        }),
    }
}

/// The bytes of blob `id`.
///
/// # Errors
/// [`BlobError::Permanent`] for an unknown blob, [`BlobError::Abandoned`]
/// when `stop` fires first.
pub async fn fetch(
    api: &ApiClient,
    id: &str,
    stop: &CancellationToken,
) -> Result<Vec<u8>, BlobError> {
    let path = format!("/internal/blobs/{id}");
    let what = format!("input blob {id}");
    let body = with_retries(|| api.request(Method::GET, &path), &what, stop).await?;
    Ok(body.bytes)
}

/// Stores `bytes` as a new blob of `content_type`; its id.
///
/// # Errors
/// [`BlobError::Permanent`] when the api refuses it (e.g. over
/// `BLOB_MAX_BYTES`), [`BlobError::Abandoned`] when `stop` fires first.
pub async fn store(
    api: &ApiClient,
    bytes: Vec<u8>,
    content_type: &str,
    stop: &CancellationToken,
) -> Result<String, BlobError> {
    let body = bytes::Bytes::from(bytes);
    let build = || {
        api.request(Method::POST, "/internal/blobs")
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.clone())
    };
    let answer = with_retries(build, "output blob", stop).await?;
    let parsed: serde_json::Value = serde_json::from_slice(&answer.bytes)
        .map_err(|e| BlobError::Permanent(format!("output blob: unreadable answer: {e}")))?;
    parsed["blob_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            BlobError::Permanent(format!("output blob: answer without blob_id: {parsed}"))
        })
}
