//! `taskctl algorithms`, `submit --input-file` (a blob upload) and
//! `get --output` (a result blob download).

use std::path::PathBuf;

use serde_json::{json, Value};
use test_support::Stack;

use crate::helpers::{run, Taskctl};

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("taskctl-test-{}", uuid_like()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_like() -> String {
    task_model::TaskId::new().to_string()
}

/// A real 4×3 PNG, each pixel different.
fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 60, y as u8 * 80, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageOutputFormat::Png)
        .expect("encode png");
    out.into_inner()
}

async fn blob(api: &Stack, id: &str) -> (String, Vec<u8>) {
    let res = reqwest::get(api.url(&format!("/blobs/{id}")))
        .await
        .expect("GET /blobs");
    assert_eq!(res.status(), 200, "GET /blobs/{id}");
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, res.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn algorithms_shows_the_catalogue_and_json_is_the_apis() {
    let api = Stack::start(&[]).await;
    let out = run(api.taskctl(), &["algorithms"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("CPU-BOUND"),
        "{out:?}"
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} in {lines:?}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("grayscale")[1..3], ["10", "yes"], "{lines:?}");
    assert_eq!(row("hello")[2], "no", "{lines:?}");
    assert_eq!(row("pi")[2], "yes", "{lines:?}");

    let json = run(api.taskctl(), &["algorithms", "--json"]).await;
    assert_eq!(json.code, 0, "{json:?}");
    let printed: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(printed, api.get_json("/algorithms").await);
    api.stop().await;
}

#[tokio::test]
async fn submit_input_file_uploads_the_file_and_names_its_blob_in_the_input() {
    let api = Stack::start(&[]).await;
    let dir = TempDir::new();
    let file = dir.path("cat.png");
    std::fs::write(&file, png()).unwrap();
    let file = file.to_str().unwrap();

    let out = run(
        api.taskctl(),
        &["submit", "--algorithm", "grayscale", "--input-file", file],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("uploaded"), "{out:?}");
    let task = api.task(out.stdout.trim()).await;
    assert_eq!(task["algorithm"], "grayscale");
    let blob_id = task["input"]["image"].as_str().expect("input.image");
    assert_eq!(blob(&api, blob_id).await, ("image/png".to_owned(), png()));

    // Without an extension the type is sniffed; --input's other fields stay.
    let bare = dir.path("cat");
    std::fs::write(&bare, png()).unwrap();
    let arg = format!("photo={}", bare.display());
    let out = run(
        api.taskctl(),
        &["submit", "--input", r#"{"keep": 1}"#, "--input-file", &arg],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let input = api.task(out.stdout.trim()).await["input"].clone();
    assert_eq!(input["keep"], 1, "{input}");
    let (content_type, _) = blob(&api, input["photo"].as_str().expect("photo")).await;
    assert_eq!(content_type, "image/png");
    api.stop().await;
}

#[tokio::test]
async fn an_unreadable_input_file_is_a_usage_error_and_submits_nothing() {
    let api = Stack::start(&[]).await;
    let dir = TempDir::new();
    let missing = dir.path("missing.png");
    let out = run(
        api.taskctl(),
        &[
            "submit",
            "--algorithm",
            "grayscale",
            "--input-file",
            missing.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.one_error_line().contains("cannot read"),
        "{}",
        out.stderr
    );
    assert!(api.listed().await.is_empty(), "no task was created");

    let not_an_object = run(
        api.taskctl(),
        &["submit", "--input", "[1]", "--input-file", "cat.png"],
    )
    .await;
    assert_eq!(not_an_object.code, 2, "{not_an_object:?}");
    assert!(not_an_object.one_error_line().contains("JSON object"));
    api.stop().await;
}

/// A grayscale task run to COMPLETED by the test in a worker's place, its
/// result an uploaded PNG; returns the task id and the PNG.
async fn completed_grayscale(api: &Stack) -> (String, Vec<u8>) {
    let http = reqwest::Client::new();
    let upload = |path: &'static str, auth: bool| {
        let mut req = http.post(api.url(path)).body(png());
        if auth {
            req = req.bearer_auth(test_support::TOKEN);
        }
        req.header("content-type", "image/png").send()
    };
    let input: Value = upload("/blobs", false).await.unwrap().json().await.unwrap();
    let id = api
        .create(
            json!({"algorithm": "grayscale", "stages": 2, "input": {"image": input["blob_id"]}}),
        )
        .await;
    api.claim(&id, "w1").await;
    api.progress(&id, "w1", 1, 2).await;
    api.progress(&id, "w1", 2, 2).await;
    let output: Value = upload("/internal/blobs", true)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    api.report(
        &id,
        json!({"status": "COMPLETED", "worker": "w1",
               "result": {"image": output["blob_id"], "width": 4, "height": 3}}),
    )
    .await;
    (id, png())
}

#[tokio::test]
async fn get_output_writes_the_result_blob_and_fails_clearly_without_one() {
    let api = Stack::start(&[]).await;
    let dir = TempDir::new();
    let (id, result) = completed_grayscale(&api).await;
    let out_file = dir.path("out.png");
    let out = run(
        api.taskctl(),
        &["get", &id, "--output", out_file.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("COMPLETED"), "the summary too: {out:?}");
    assert!(out.stderr.contains("wrote"), "{out:?}");
    assert_eq!(std::fs::read(&out_file).unwrap(), result);

    let queued = api.create(json!({})).await;
    let none = dir.path("none.png");
    let out = run(
        api.taskctl(),
        &["get", &queued, "--output", none.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    let line = out.one_error_line();
    assert!(
        line.contains("no result file") && line.contains("QUEUED"),
        "{line}"
    );
    assert!(!none.exists(), "nothing written");

    let hello = api.create(json!({"stages": 1})).await;
    api.claim(&hello, "w1").await;
    api.run_to_completion(&hello, "w1", 1).await;
    let out = run(
        api.taskctl(),
        &["get", &hello, "--json", "-o", none.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.one_error_line().contains("\"image\""), "{out:?}");
    api.stop().await;
}
