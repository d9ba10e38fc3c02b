//! `grayscale` and `pi` through the public API: pixel-exact conversion,
//! determinism, errors and cancellation. (`hello`, which prints, is tested in
//! `tests/stages.rs`.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use image::{ImageEncoder, RgbImage};
use native::{algorithm, luma, Job, JobSpec, NativeError, StageCall, StageOutcome};
use serde_json::{json, Value};

const BLOB: &str = "6f1c2b9e-3d4a-4b5c-8d7e-9f0a1b2c3d4e";

/// A deterministic, colourful test image.
fn pattern(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503);
        image::Rgb([
            (v >> 3) as u8,
            (x * 7 + y) as u8,
            (y * 5) as u8 ^ (v >> 11) as u8,
        ])
    })
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ColorType::Rgb8,
        )
        .expect("encode PNG");
    out
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ColorType::Rgb8,
        )
        .expect("encode JPEG");
    out
}

fn grayscale_job(bytes: Vec<u8>, stages: u32) -> Result<Job, NativeError> {
    let input = json!({"image": BLOB});
    let blobs = HashMap::from([(BLOB.to_owned(), bytes)]);
    let alg = algorithm("grayscale").unwrap();
    assert_eq!(alg.input_blobs(&input), [BLOB]);
    Job::new(
        alg,
        JobSpec {
            input: &input,
            stages,
            stage_ms: 0,
            blobs: &blobs,
        },
    )
}

fn pi_job(input: Value, stages: u32) -> Job {
    let blobs = HashMap::new();
    Job::new(
        algorithm("pi").unwrap(),
        JobSpec {
            input: &input,
            stages,
            stage_ms: 0,
            blobs: &blobs,
        },
    )
    .expect("pi job")
}

fn call<'a>(stage: u32, cancel: &'a AtomicI32, progress: &'a AtomicI32) -> StageCall<'a> {
    StageCall {
        stage,
        attempt: 1,
        cancel,
        progress,
        allow_crash: false,
    }
}

/// Runs stages `from..stages`, all of which must complete.
fn run_all(job: &mut Job, from: u32) {
    let (cancel, progress) = (AtomicI32::new(0), AtomicI32::new(0));
    for stage in from..job.stages() {
        assert_eq!(
            job.run_stage(&call(stage, &cancel, &progress)),
            Ok(StageOutcome::Completed),
            "stage {stage}"
        );
        assert_eq!(progress.load(Ordering::Relaxed), 1000, "stage {stage}");
    }
}

/// The finished job's PNG, decoded, checked against `expected` luma.
fn assert_output(job: &Job, width: u32, height: u32, expected: &[u8]) {
    let out = job.finish().expect("finish");
    assert_eq!(out.result, json!({"width": width, "height": height}));
    let blob = out.blob.expect("an output blob");
    assert_eq!((blob.field, blob.content_type), ("image", "image/png"));
    let decoded = image::load_from_memory_with_format(&blob.bytes, image::ImageFormat::Png)
        .expect("the output is a PNG");
    assert_eq!(decoded.color(), image::ColorType::L8);
    let gray = decoded.into_luma8();
    assert_eq!(gray.dimensions(), (width, height));
    for (i, (got, want)) in gray.as_raw().iter().zip(expected).enumerate() {
        assert_eq!(
            got,
            want,
            "pixel ({}, {})",
            i as u32 % width,
            i as u32 / width
        );
    }
}

fn expected_luma(img: &RgbImage) -> Vec<u8> {
    img.pixels().map(|p| luma(p[0], p[1], p[2])).collect()
}

#[test]
fn luma_formula_is_bt601_rounded() {
    assert_eq!(luma(0, 0, 0), 0);
    assert_eq!(luma(255, 255, 255), 255);
    assert_eq!(luma(255, 0, 0), 76); // 76.245
    assert_eq!(luma(0, 255, 0), 150); // 149.685
    assert_eq!(luma(0, 0, 255), 29); // 29.07
    assert_eq!(luma(10, 20, 30), 18); // 17.61
}

/// Converts a `width`×`height` PNG in `stages` stages, the job started
/// fresh at stage `from`, and checks every pixel.
fn check_png(width: u32, height: u32, stages: u32, from: u32) {
    let img = pattern(width, height);
    let mut job = grayscale_job(png(&img), stages).expect("decode");
    assert!(job.finish().is_err(), "finish before the last stage");
    run_all(&mut job, from);
    assert_output(&job, width, height, &expected_luma(&img));
}

#[test]
fn grayscale_png_is_converted_pixel_by_pixel() {
    // 37 rows over 10 stages: uneven bands.
    check_png(53, 37, 10, 0);
}

#[test]
fn grayscale_jpeg_is_converted_from_its_decoded_pixels() {
    let img = pattern(64, 48);
    let bytes = jpeg(&img);
    let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
        .expect("decode JPEG")
        .into_rgb8();
    let mut job = grayscale_job(bytes, 3).expect("decode");
    run_all(&mut job, 0);
    assert_output(&job, 64, 48, &expected_luma(&decoded));
}

#[test]
fn more_stages_than_rows_still_converts_every_row() {
    check_png(5, 3, 7, 0);
}

#[test]
fn a_fresh_grayscale_job_resumed_at_stage_k_converts_earlier_bands_too() {
    check_png(40, 30, 5, 3);
}

#[test]
fn a_non_image_blob_is_a_fatal_error() {
    for bytes in [b"hello, not an image".to_vec(), Vec::new(), {
        let mut truncated = png(&pattern(20, 20));
        truncated.truncate(60);
        truncated
    }] {
        match grayscale_job(bytes, 10) {
            Err(e @ NativeError::Fatal(_)) => {
                assert!(!e.is_retryable());
                assert!(
                    e.to_string()
                        .starts_with("input.image is not a PNG or JPEG image"),
                    "{e}"
                );
            }
            other => panic!("expected a fatal error, got {other:?}"),
        }
    }
}

#[test]
fn a_missing_blob_or_bad_input_is_fatal() {
    let blobs = HashMap::new();
    let alg = algorithm("grayscale").unwrap();
    for input in [json!({"image": BLOB}), json!({"image": 1}), json!(null)] {
        let r = Job::new(
            alg,
            JobSpec {
                input: &input,
                stages: 1,
                stage_ms: 0,
                blobs: &blobs,
            },
        );
        assert!(matches!(r, Err(NativeError::Fatal(_))), "{input}: {r:?}");
    }
}

/// Runs stage 0 of `job` and raises the cancel flag from another thread as
/// soon as the stage reports progress; returns its outcome and how long after
/// the cancel it returned.
fn cancel_once_running(job: &mut Job) -> (Result<StageOutcome, NativeError>, Duration) {
    let (cancel, progress) = (AtomicI32::new(0), AtomicI32::new(0));
    thread::scope(|s| {
        let canceller = s.spawn(|| {
            while progress.load(Ordering::Relaxed) == 0 {
                std::hint::spin_loop();
            }
            cancel.store(1, Ordering::Release);
            native::wake(&cancel);
            Instant::now()
        });
        let outcome = job.run_stage(&call(0, &cancel, &progress));
        let end = Instant::now();
        let raised = canceller.join().expect("canceller panicked");
        (outcome, end.saturating_duration_since(raised))
    })
}

#[test]
fn cancelling_a_running_grayscale_stage_interrupts_it() {
    // Uniform, so the debug-built PNG codec is quick; the kernel is -O2.
    let img = RgbImage::from_pixel(4000, 3000, image::Rgb([200, 100, 50]));
    let mut job = grayscale_job(png(&img), 1).expect("decode");
    let (outcome, latency) = cancel_once_running(&mut job);
    println!("grayscale stage returned {latency:?} after the cancel");
    assert_eq!(outcome, Ok(StageOutcome::Interrupted));
    assert!(job.finish().is_err(), "an interrupted stage does not count");
}

#[test]
fn pi_with_a_seed_is_deterministic_and_close() {
    let input = json!({"samples": 10_000_000, "seed": 42});
    let mut a = pi_job(input.clone(), 10);
    run_all(&mut a, 0);
    let mut b = pi_job(input, 10);
    run_all(&mut b, 0);
    let (a, b) = (a.finish().unwrap(), b.finish().unwrap());
    assert_eq!(a, b);
    assert_eq!(a.blob, None);
    assert_eq!(a.result["samples"], 10_000_000);
    let pi = a.result["pi"].as_f64().unwrap();
    println!("pi ≈ {pi}");
    assert!((pi - std::f64::consts::PI).abs() < 0.01, "{pi}");
}

#[test]
fn pi_seeds_differ_and_samples_split_unevenly() {
    let run = |input: Value, stages| {
        let mut job = pi_job(input, stages);
        run_all(&mut job, 0);
        job.finish().unwrap().result
    };
    let one = run(json!({"samples": 100_003, "seed": 1}), 7);
    let two = run(json!({"samples": 100_003, "seed": 2}), 7);
    assert_eq!(one["samples"], 100_003);
    assert_ne!(one["pi"], two["pi"]);
    // No seed means seed 0.
    assert_eq!(
        run(json!({"samples": 999}), 3),
        run(json!({"samples": 999, "seed": 0}), 3)
    );
    // Fewer samples than stages: the empty stages complete too.
    assert_eq!(run(json!({"samples": 2}), 5)["samples"], 2);
}

#[test]
fn pi_resumed_from_a_checkpoint_or_from_scratch_gives_the_same_result() {
    let input = json!({"samples": 1_000_000, "seed": 9});
    let mut whole = pi_job(input.clone(), 4);
    run_all(&mut whole, 0);
    let expected = whole.finish().unwrap();

    let mut first = pi_job(input.clone(), 4);
    let (cancel, progress) = (AtomicI32::new(0), AtomicI32::new(0));
    for stage in 0..2 {
        first.run_stage(&call(stage, &cancel, &progress)).unwrap();
    }
    let saved = first.checkpoint().expect("pi has checkpoints");
    assert_eq!(saved["stage"], 2);

    let mut restored = pi_job(input.clone(), 4);
    restored.restore(&saved).unwrap();
    run_all(&mut restored, 2);
    assert_eq!(restored.finish().unwrap(), expected);

    let mut scratch = pi_job(input.clone(), 4);
    run_all(&mut scratch, 2);
    assert_eq!(scratch.finish().unwrap(), expected);

    // A completed stage is not counted twice.
    assert_eq!(
        restored.run_stage(&call(1, &cancel, &progress)),
        Err(NativeError::InvalidArgument)
    );
    assert!(pi_job(input, 4).restore(&json!({"stage": 9})).is_err());
}

#[test]
fn stage_out_of_range_is_invalid() {
    let mut job = pi_job(json!({"samples": 10}), 2);
    let (cancel, progress) = (AtomicI32::new(0), AtomicI32::new(0));
    assert_eq!(
        job.run_stage(&call(2, &cancel, &progress)),
        Err(NativeError::InvalidArgument)
    );
}

#[test]
fn cancelling_a_running_pi_stage_interrupts_it() {
    // 10^11 samples in one stage would take minutes.
    let mut job = pi_job(json!({"samples": 100_000_000_000u64, "seed": 3}), 1);
    let (outcome, latency) = cancel_once_running(&mut job);
    println!("pi stage returned {latency:?} after the cancel");
    assert_eq!(outcome, Ok(StageOutcome::Interrupted));
    assert_eq!(job.checkpoint().unwrap()["samples"], 0);
}

#[test]
fn a_raised_flag_interrupts_before_any_work() {
    let cancel = AtomicI32::new(1);
    let progress = AtomicI32::new(0);
    let mut job = pi_job(json!({"samples": 1000}), 1);
    assert_eq!(
        job.run_stage(&call(0, &cancel, &progress)),
        Ok(StageOutcome::Interrupted)
    );
    let mut job = grayscale_job(png(&pattern(8, 8)), 2).unwrap();
    assert_eq!(
        job.run_stage(&call(1, &cancel, &progress)),
        Ok(StageOutcome::Interrupted)
    );
}

/// CRC-32 (ISO-HDLC), as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_png_claiming_huge_dimensions_is_refused_before_allocating() {
    // A valid 1×1 PNG whose IHDR then claims 40000×40000 (4.8 GB of RGB).
    let mut bytes = png(&pattern(1, 1));
    // 8-byte signature, 4-byte length, "IHDR", then width and height.
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&40_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&40_000u32.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    match grayscale_job(bytes, 1) {
        Err(NativeError::Fatal(message)) => {
            assert!(message.starts_with("input.image is too large"), "{message}")
        }
        other => panic!("expected a fatal error, got {other:?}"),
    }
}
