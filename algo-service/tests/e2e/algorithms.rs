//! The catalogue's algorithms through real workers: `grayscale` on real PNG
//! and JPEG blobs, `pi`'s determinism, cancels, and `WORKER_CPU_SLOTS`.

use std::{io::Cursor, time::Duration};

use serde_json::{json, Value};
use test_support::{Stack, WorkerOpts};

const WITHIN: Duration = Duration::from_secs(60);

async fn upload(sys: &Stack, bytes: Vec<u8>, content_type: &str) -> String {
    let res = sys
        .http
        .post(sys.url("/blobs"))
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["blob_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn download(sys: &Stack, id: &str) -> (String, Vec<u8>) {
    let res = sys
        .http
        .get(sys.url(&format!("/blobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    (ct, res.bytes().await.unwrap().to_vec())
}

/// A colourful test picture (no two neighbouring pixels alike).
fn picture(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 7 + y * 3) as u8,
            ((x * 13) ^ (y * 5)) as u8,
            (255 - (x + y * 11) % 256) as u8,
        ])
    })
}

fn encode(img: &image::RgbImage, format: image::ImageOutputFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}

/// Runs grayscale on `bytes` and checks every pixel against `native::luma`
/// of the input as decoded.
async fn check_grayscale(sys: &Stack, bytes: Vec<u8>, content_type: &str) {
    let expected_input = image::load_from_memory(&bytes).unwrap().to_rgb8();
    let blob = upload(sys, bytes, content_type).await;
    let id = sys
        .create(json!({"algorithm": "grayscale", "stages": 3, "input": {"image": blob}}))
        .await;
    let task = sys.wait_terminal(&id, WITHIN).await;
    assert_eq!(task["status"], "COMPLETED", "{task}");
    let result = &task["result"];
    let (w, h) = expected_input.dimensions();
    assert_eq!(
        (result["width"].as_u64(), result["height"].as_u64()),
        (Some(w.into()), Some(h.into()))
    );
    let (ct, png) = download(sys, result["image"].as_str().unwrap()).await;
    assert_eq!(ct, "image/png");
    let gray = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap()
        .to_luma8();
    assert_eq!(gray.dimensions(), (w, h));
    for (x, y, px) in expected_input.enumerate_pixels() {
        let [r, g, b] = px.0;
        assert_eq!(
            gray.get_pixel(x, y).0[0],
            native::luma(r, g, b),
            "pixel ({x}, {y})"
        );
    }
    assert_eq!(task["stage"], 3);
    assert_eq!(task["progress"], 100);
}

#[tokio::test]
async fn grayscale_converts_a_png_and_a_jpeg_pixel_by_pixel_and_refuses_a_non_image() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("wg").await;
    let img = picture(67, 41);
    check_grayscale(
        &sys,
        encode(&img, image::ImageOutputFormat::Png),
        "image/png",
    )
    .await;
    check_grayscale(
        &sys,
        encode(&img, image::ImageOutputFormat::Jpeg(90)),
        "image/jpeg",
    )
    .await;

    let blob = upload(&sys, b"this is not an image".to_vec(), "text/plain").await;
    let id = sys
        .create(json!({"algorithm": "grayscale", "input": {"image": blob}}))
        .await;
    let task = sys.wait_terminal(&id, WITHIN).await;
    assert_eq!(task["status"], "FAILED", "{task}");
    let error = task["error"].as_str().unwrap();
    assert!(error.contains("not a PNG or JPEG image"), "{error}");
    assert_eq!(sys.hellos(), 0, "no hello ran");
    sys.stop().await;
}

#[tokio::test]
async fn pi_with_a_seed_gives_the_same_result_twice() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("wp").await;
    let body = json!({"algorithm": "pi", "stages": 4, "input": {"samples": 200_000, "seed": 42}});
    let a = sys.create(body.clone()).await;
    let b = sys.create(body).await;
    let ta = sys.wait_terminal(&a, WITHIN).await;
    let tb = sys.wait_terminal(&b, WITHIN).await;
    assert_eq!(ta["status"], "COMPLETED", "{ta}");
    assert_eq!(tb["status"], "COMPLETED", "{tb}");
    assert_eq!(ta["result"], tb["result"]);
    assert_eq!(ta["result"]["samples"], 200_000);
    let pi = ta["result"]["pi"].as_f64().unwrap();
    assert!((pi - std::f64::consts::PI).abs() < 0.05, "{pi}");
    sys.stop().await;
}

async fn wait_processing(sys: &Stack, id: &str) {
    test_support::eventually("PROCESSING", WITHIN, || async {
        (sys.task(id).await["status"] == "PROCESSING").then_some(())
    })
    .await;
}

#[tokio::test]
async fn cancelling_a_running_pi_and_a_grayscale_waiting_for_its_slot_ends_cancelled() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker_with_env("wc", WorkerOpts::default(), &[("WORKER_CPU_SLOTS", "1")])
        .await;
    // A pi that would run for a very long time holds the only CPU slot.
    let pi = sys
        .create(json!({"algorithm": "pi", "stages": 2, "timeout_secs": 600, "input": {"samples": 100_000_000_000u64}}))
        .await;
    wait_processing(&sys, &pi).await;
    let blob = upload(
        &sys,
        encode(&picture(8, 8), image::ImageOutputFormat::Png),
        "image/png",
    )
    .await;
    let gray = sys
        .create(json!({"algorithm": "grayscale", "input": {"image": blob}}))
        .await;
    wait_processing(&sys, &gray).await;

    for id in [&gray, &pi] {
        assert_eq!(sys.cancel(id).await.status(), 202);
        let task = sys.wait_terminal(id, Duration::from_secs(10)).await;
        assert_eq!(task["status"], "CANCELLED", "{task}");
        assert!(task["result"].is_null());
    }
    sys.stop().await;
}

/// `(started?, line)` for each CPU stage log line, in the order written.
fn cpu_stage_lines(sys: &Stack) -> Vec<(bool, String)> {
    sys.workers[0]
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| {
            if l.contains("cpu stage started") {
                Some((true, l.clone()))
            } else if l.contains("cpu stage ended") {
                Some((false, l.clone()))
            } else {
                None
            }
        })
        .collect()
}

#[tokio::test]
async fn with_one_cpu_slot_no_two_cpu_bound_stages_run_at_once() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker_with_env("ws", WorkerOpts::default(), &[("WORKER_CPU_SLOTS", "1")])
        .await;
    let blob = upload(
        &sys,
        encode(&picture(40, 40), image::ImageOutputFormat::Png),
        "image/png",
    )
    .await;
    let mut ids = Vec::new();
    for seed in 0..3 {
        ids.push(
            sys.create(json!({"algorithm": "pi", "stages": 3, "input": {"samples": 300_000_000, "seed": seed}}))
                .await,
        );
    }
    ids.push(
        sys.create(json!({"algorithm": "grayscale", "stages": 4, "input": {"image": blob}}))
            .await,
    );
    // hello takes no slot: it runs beside them.
    ids.push(sys.create(test_support::body(2, 10)).await);
    let mut tasks = Vec::new();
    for id in &ids {
        let task = sys.wait_terminal(id, WITHIN).await;
        assert_eq!(task["status"], "COMPLETED", "{task}");
        tasks.push(task);
    }
    let lines = cpu_stage_lines(&sys);
    assert_eq!(
        lines.len(),
        2 * (3 * 3 + 4),
        "one start and one end per CPU stage: {lines:#?}"
    );
    for pair in lines.chunks(2) {
        assert!(
            pair[0].0 && !pair[1].0,
            "a stage started before the previous one ended: {pair:#?}"
        );
    }
    // The tasks were held at once: the slot interleaved their stages (a
    // stage of another task between two of one task), so it is the slot
    // that kept them apart.
    let owners: Vec<String> = lines
        .iter()
        .filter(|(start, _)| *start)
        .map(|(_, l)| {
            let at = l.find("task_id=").expect("the line names its task") + 8;
            l[at..at + 36].to_owned()
        })
        .collect();
    let interleaved = (0..owners.len()).any(|i| {
        (i + 1..owners.len())
            .any(|j| owners[j] != owners[i] && owners[j + 1..].contains(&owners[i]))
    });
    assert!(interleaved, "stages of held tasks interleave: {owners:#?}");
    sys.stop().await;
}

#[tokio::test]
async fn pi_reports_progress_within_its_stage() {
    let mut sys = Stack::start(&[]).await;
    sys.add_worker("wq").await;
    let id = sys
        .create(json!({"algorithm": "pi", "stages": 1, "timeout_secs": 600, "input": {"samples": 100_000_000_000u64}}))
        .await;
    // One stage: any progress above 0 came from within it.
    let seen = test_support::eventually("progress within the stage", WITHIN, || async {
        let task = sys.task(&id).await;
        let p = task["progress"].as_u64().unwrap();
        (p >= 1).then_some((p, task["stage"].as_u64().unwrap()))
    })
    .await;
    assert_eq!(seen.1, 0, "still in stage 0");
    assert!(seen.0 < 100);
    assert_eq!(sys.cancel(&id).await.status(), 202);
    let task = sys.wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(task["status"], "CANCELLED");
    assert!(
        task["progress"].as_u64().unwrap() >= seen.0,
        "never backwards"
    );
    sys.stop().await;
}

#[tokio::test]
async fn hello_crash_input_is_refused_unless_allow_crash_input_is_set() {
    let mut sys = Stack::start(&[]).await;
    let crash =
        json!({"stages": 2, "stage_ms": 0, "input": {"fail": {"at_stage": 1, "mode": "crash"}}});
    sys.add_worker("safe").await;
    let id = sys.create(crash.clone()).await;
    let task = sys.wait_terminal(&id, WITHIN).await;
    assert_eq!(task["status"], "FAILED", "{task}");
    assert_eq!(task["error"], "crash_disabled");
    sys.workers[0].signal("TERM");
    sys.workers[0].wait_exit(Duration::from_secs(10)).await;

    // With ALLOW_CRASH_INPUT=1 the C routine aborts the worker process.
    let w = sys
        .add_worker_with_env(
            "crashy",
            WorkerOpts::default(),
            &[("ALLOW_CRASH_INPUT", "1")],
        )
        .await;
    sys.create(crash).await;
    let status = sys.workers[w].wait_exit(WITHIN).await;
    assert!(!status.success(), "the worker died: {status:?}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(6), "SIGABRT: {status:?}");
    }
    sys.stop().await;
}
