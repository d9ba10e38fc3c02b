//! Local files: what `submit --input-file` uploads (with its content type)
//! and where `get --output` writes a result blob.

use std::path::Path;

use serde_json::Value;

use crate::client::ClientError;

/// The content type of an upload that is not a known image.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// The file's bytes.
///
/// # Errors
/// [`ClientError::File`] when it cannot be read.
pub fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| file_error("cannot read", path, &e))
}

/// Writes `bytes` to `path`, replacing what was there.
///
/// # Errors
/// [`ClientError::File`] when it cannot be written.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    std::fs::write(path, bytes).map_err(|e| file_error("cannot write", path, &e))
}

fn file_error(action: &'static str, path: &Path, e: &std::io::Error) -> ClientError {
    ClientError::File {
        action,
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The content type to upload `bytes` from `path` with: from the extension
/// when it names an image format, else sniffed from the first bytes (PNG,
/// JPEG, GIF, WebP, …), else `application/octet-stream`.
pub fn content_type(path: &Path, bytes: &[u8]) -> &'static str {
    image::ImageFormat::from_path(path)
        .or_else(|_| image::guess_format(bytes))
        .map_or(OCTET_STREAM, |format| format.to_mime_type())
}

/// The blob id of the task's result file: `result.image`.
///
/// # Errors
/// [`ClientError::NoResultFile`] when the task has not COMPLETED or its
/// result names no blob.
pub fn result_blob(task: &Value) -> Result<String, ClientError> {
    let id = task
        .get("task_id")
        .and_then(Value::as_str)
        .and_then(|s| task_model::TaskId::parse(s).ok())
        .ok_or_else(|| ClientError::InvalidResponse("a task without task_id".to_owned()))?;
    let status = task.get("status").and_then(Value::as_str).unwrap_or("?");
    if status != "COMPLETED" {
        return Err(ClientError::NoResultFile {
            id,
            why: format!("it is {status}, not COMPLETED"),
        });
    }
    match task.pointer("/result/image").and_then(Value::as_str) {
        Some(blob) => Ok(blob.to_owned()),
        None => Err(ClientError::NoResultFile {
            id,
            why: "its result has no \"image\" blob".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

    #[test]
    fn content_types_come_from_the_extension_else_the_bytes() {
        assert_eq!(content_type(Path::new("cat.png"), b""), "image/png");
        assert_eq!(content_type(Path::new("cat.JPG"), b""), "image/jpeg");
        assert_eq!(content_type(Path::new("cat"), PNG_MAGIC), "image/png");
        assert_eq!(
            content_type(Path::new("cat.bin"), b"\xff\xd8\xff\xe0"),
            "image/jpeg"
        );
        assert_eq!(content_type(Path::new("notes.txt"), b"hello"), OCTET_STREAM);
    }

    #[test]
    fn only_a_completed_task_with_an_image_has_a_result_file() {
        let id = "2f1c0c6e-8a4b-4f7e-9d0a-3b5e6c7d8e9f";
        let done = json!({"task_id": id, "status": "COMPLETED", "result": {"image": "b1"}});
        assert_eq!(result_blob(&done).unwrap(), "b1");
        let running = json!({"task_id": id, "status": "PROCESSING", "result": null});
        let e = result_blob(&running).unwrap_err();
        assert!(e.to_string().contains("PROCESSING"), "{e}");
        assert_eq!(e.exit_code(), 1);
        let hello = json!({"task_id": id, "status": "COMPLETED", "result": {"output": "x"}});
        assert!(result_blob(&hello)
            .unwrap_err()
            .to_string()
            .contains("\"image\""));
    }
}
