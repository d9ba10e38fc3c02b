//! Blobs: `POST /blobs`, `GET /blobs/{id}` for users (API-key rules as
//! `/tasks`), and the same under `/internal/blobs` for workers (callback
//! token), which fetch input blobs and upload results through them.

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use crate::{
    auth::{Caller, Worker},
    error::{error_body, ApiError, ErrorBody},
    service::blobs::{self, BlobView},
    state::AppState,
    store::BlobMeta,
};

fn too_large(limit: usize) -> HttpResponse {
    HttpResponse::PayloadTooLarge().json(error_body(
        "payload_too_large",
        &format!("blobs are limited to {limit} bytes (BLOB_MAX_BYTES)"),
    ))
}

/// The body, or the 413 answer when it is over `BLOB_MAX_BYTES`.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Result<Vec<u8>, HttpResponse>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Ok(Err(too_large(limit)));
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("bad_request", format!("could not read the body: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Ok(Err(too_large(limit)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Ok(body))
}

async fn upload(
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let body = match read_body(&req, payload, state.blob_max_bytes).await? {
        Ok(body) => body,
        Err(answer) => return Ok(answer),
    };
    let given = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let blob = blobs::upload(state, &body, given).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/blobs/{}", blob.blob_id)))
        .json(blob))
}

fn not_found(raw: &str) -> HttpResponse {
    HttpResponse::NotFound().json(error_body(
        "not_found",
        &format!("no blob with id {raw} (unknown or expired)"),
    ))
}

fn bytes(req: &HttpRequest, found: Option<(Vec<u8>, BlobMeta)>, raw: &str) -> HttpResponse {
    let Some((data, meta)) = found else {
        return not_found(raw);
    };
    let etag = format!("\"{}\"", meta.sha256);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if fresh {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish();
    }
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, meta.content_type))
        .insert_header((header::ETAG, etag))
        .body(data)
}

/// `POST /blobs`: store the raw body.
#[utoipa::path(post, path = "/blobs", tag = "blobs", security(("api_key" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "Any bytes, up to BLOB_MAX_BYTES; the Content-Type is kept"),
    responses(
        (status = 201, description = "Stored for RESULT_TTL_SECS", body = BlobView, headers(("Location" = String))),
        (status = 400, description = "Malformed Content-Type", body = ErrorBody),
        (status = 401, description = "API key missing or wrong", body = ErrorBody),
        (status = 413, description = "Over BLOB_MAX_BYTES", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
    ))]
#[tracing::instrument(name = "upload_blob", skip_all)]
pub async fn upload_blob(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    upload(req, payload, &state).await
}

/// `GET /blobs/{id}`: the bytes, with their content type and `ETag`.
#[utoipa::path(get, path = "/blobs/{id}", tag = "blobs", security(("api_key" = [])),
    params(("id" = String, Path, description = "Blob id (UUID)")),
    responses(
        (status = 200, description = "The bytes; ETag = the quoted sha256", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "If-None-Match matched the ETag"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "API key missing or wrong", body = ErrorBody),
        (status = 404, description = "Unknown or expired", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
    ))]
#[tracing::instrument(name = "get_blob", skip_all, fields(blob_id = %path))]
pub async fn get_blob(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    _: Caller,
) -> Result<HttpResponse, ApiError> {
    let id = blobs::parse_blob_id(&path)?;
    let found = blobs::download(&state, &id).await?;
    Ok(bytes(&req, found, &path))
}

/// `POST /internal/blobs`: a worker stores an output blob.
#[utoipa::path(post, path = "/internal/blobs", tag = "callbacks", security(("callback_token" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "As POST /blobs"),
    responses(
        (status = 201, description = "Stored for RESULT_TTL_SECS", body = BlobView),
        (status = 401, description = "Callback token missing or wrong", body = ErrorBody),
        (status = 413, description = "Over BLOB_MAX_BYTES", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
    ))]
#[tracing::instrument(name = "worker_upload_blob", skip_all)]
pub async fn worker_upload_blob(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    _: Worker,
) -> Result<HttpResponse, ApiError> {
    upload(req, payload, &state).await
}

/// `GET /internal/blobs/{id}`: a worker fetches an input blob, which keeps
/// it a day past `RESULT_TTL_SECS` from now.
#[utoipa::path(get, path = "/internal/blobs/{id}", tag = "callbacks", security(("callback_token" = [])),
    params(("id" = String, Path, description = "Blob id (UUID)")),
    responses(
        (status = 200, description = "The bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Callback token missing or wrong", body = ErrorBody),
        (status = 404, description = "Unknown or expired", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
    ))]
#[tracing::instrument(name = "worker_get_blob", skip_all, fields(blob_id = %path))]
pub async fn worker_get_blob(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    _: Worker,
) -> Result<HttpResponse, ApiError> {
    let id = blobs::parse_blob_id(&path)?;
    let found = blobs::fetch_for_worker(&state, &id).await?;
    Ok(bytes(&req, found, &path))
}
