//! Blobs: upload, download, and the check a create makes that its input
//! blobs exist (extending their life so they outlive the task).

use std::time::Duration;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{error::ApiError, state::AppState, store::BlobMeta};

/// The content type of an upload that names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// How much longer than `RESULT_TTL_SECS` an input blob is kept, from a
/// create that names it and from each worker fetch: the longest
/// `timeout_secs`, so the blob outlives its task's run and the task's own
/// `RESULT_TTL_SECS` after it.
pub const INPUT_EXTRA: Duration = Duration::from_secs(86_400);

/// `POST /blobs`' answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BlobView {
    /// The new blob's id (a UUID).
    #[schema(format = Uuid)]
    pub blob_id: String,
    /// Its size in bytes.
    pub size: u64,
    /// The upload's `Content-Type`, `application/octet-stream` when none.
    pub content_type: String,
    /// Lowercase hex SHA-256 of the bytes (also the `ETag` of a GET).
    pub sha256: String,
}

/// Parses a blob id (canonical hyphenated UUID, any case), or 400.
pub fn parse_blob_id(raw: &str) -> Result<Uuid, ApiError> {
    task_model::TaskId::parse(raw)
        .map(|id| *id.as_uuid())
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_id",
                "blob ids are UUIDs in canonical hyphenated form (8-4-4-4-12 hex digits)",
            )
        })
}

/// A content type worth keeping: visible ASCII and spaces, 1 to 200 bytes.
fn content_type(given: Option<&str>) -> Result<String, ApiError> {
    let Some(given) = given.map(str::trim).filter(|c| !c.is_empty()) else {
        return Ok(DEFAULT_CONTENT_TYPE.to_owned());
    };
    if given.len() > 200 || !given.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_content_type",
            "Content-Type must be 1 to 200 visible ASCII characters",
        ));
    }
    Ok(given.to_owned())
}

/// Stores `bytes` as a new blob for `RESULT_TTL_SECS`.
///
/// # Errors
/// A malformed content type (400), Redis unavailable (503).
pub async fn upload(
    state: &AppState,
    bytes: &[u8],
    given_type: Option<&str>,
) -> Result<BlobView, ApiError> {
    let meta = BlobMeta {
        content_type: content_type(given_type)?,
        sha256: hex::encode(Sha256::digest(bytes)),
        size: bytes.len() as u64,
    };
    let id = Uuid::new_v4();
    state
        .store
        .put_blob(&id, bytes, &meta, state.result_ttl)
        .await?;
    tracing::info!(blob_id = %id, size = meta.size, content_type = %meta.content_type, "blob stored");
    Ok(BlobView {
        blob_id: id.hyphenated().to_string(),
        size: meta.size,
        content_type: meta.content_type,
        sha256: meta.sha256,
    })
}

/// A blob's bytes and description; `None` when unknown or expired.
///
/// # Errors
/// Redis unavailable (503).
pub async fn download(
    state: &AppState,
    id: &Uuid,
) -> Result<Option<(Vec<u8>, BlobMeta)>, ApiError> {
    Ok(state.store.get_blob(id).await?)
}

/// A worker's fetch: the blob, kept [`INPUT_EXTRA`] past `RESULT_TTL_SECS`
/// from now, since a task is running on it.
///
/// # Errors
/// Redis unavailable (503).
pub async fn fetch_for_worker(
    state: &AppState,
    id: &Uuid,
) -> Result<Option<(Vec<u8>, BlobMeta)>, ApiError> {
    if !state
        .store
        .keep_blob(id, state.result_ttl + INPUT_EXTRA)
        .await?
    {
        return Ok(None);
    }
    download(state, id).await
}

/// Checks that every blob `input` names exists, and keeps each
/// [`INPUT_EXTRA`] past `RESULT_TTL_SECS`; 400 `invalid_input` naming the
/// field (`input.image`) otherwise.
///
/// # Errors
/// A missing blob (400), Redis unavailable (503).
pub async fn keep_inputs(
    state: &AppState,
    algorithm: &native::Algorithm,
    input: &serde_json::Value,
) -> Result<(), ApiError> {
    for raw in algorithm.input_blobs(input) {
        let missing = match parse_blob_id(&raw) {
            Ok(id) => {
                !state
                    .store
                    .keep_blob(&id, state.result_ttl + INPUT_EXTRA)
                    .await?
            }
            Err(_) => true,
        };
        if missing {
            let field = input
                .as_object()
                .and_then(|o| o.iter().find(|(_, v)| v.as_str() == Some(raw.as_str())))
                .map_or_else(|| "input".to_owned(), |(k, _)| format!("input.{k}"));
            return Err(ApiError::invalid_field(
                "invalid_input",
                field,
                format!("no blob with id {raw} (unknown or expired; upload it with POST /blobs)"),
            ));
        }
    }
    Ok(())
}
