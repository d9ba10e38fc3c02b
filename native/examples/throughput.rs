//! Measures the native kernels: `cargo run --release -p native --example throughput`.
//!
//! grayscale: a 4000×3000 RGB image (decode PNG, 10 C stages, encode PNG,
//! each timed); pi: 10^9 samples over 10 stages.

use std::collections::HashMap;
use std::sync::atomic::AtomicI32;
use std::time::{Duration, Instant};

use image::ImageEncoder;
use native::{algorithm, Job, JobSpec, StageCall, StageOutcome};
use serde_json::json;

const WIDTH: u32 = 4000;
const HEIGHT: u32 = 3000;
const STAGES: u32 = 10;
const PI_SAMPLES: u64 = 1_000_000_000;

fn run_stages(job: &mut Job) -> Duration {
    let (cancel, progress) = (AtomicI32::new(0), AtomicI32::new(0));
    let start = Instant::now();
    for stage in 0..job.stages() {
        let call = StageCall {
            stage,
            attempt: 1,
            cancel: &cancel,
            progress: &progress,
            allow_crash: false,
        };
        assert_eq!(job.run_stage(&call), Ok(StageOutcome::Completed));
    }
    start.elapsed()
}

fn main() {
    let img = image::RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8])
    });
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(img.as_raw(), WIDTH, HEIGHT, image::ColorType::Rgb8)
        .expect("encode");
    let id = "00000000-0000-4000-8000-000000000000";
    let blobs = HashMap::from([(id.to_owned(), png)]);
    let input = json!({"image": id});
    let spec = JobSpec {
        input: &input,
        stages: STAGES,
        stage_ms: 0,
        blobs: &blobs,
    };
    let megapixels = f64::from(WIDTH) * f64::from(HEIGHT) / 1e6;

    let start = Instant::now();
    let mut job = Job::new(algorithm("grayscale").unwrap(), spec).expect("decode");
    let decode = start.elapsed();
    let kernel = run_stages(&mut job);
    let start = Instant::now();
    let out = job.finish().expect("finish");
    let encode = start.elapsed();
    let total = decode + kernel + encode;
    println!(
        "grayscale {WIDTH}x{HEIGHT} ({megapixels:.0} MP), {STAGES} stages: kernel {kernel:?} = {:.0} MP/s; decode PNG {decode:?}, encode PNG {encode:?} ({} bytes); end to end {:.1} MP/s",
        megapixels / kernel.as_secs_f64(),
        out.blob.map_or(0, |b| b.bytes.len()),
        megapixels / total.as_secs_f64(),
    );

    let input = json!({"samples": PI_SAMPLES, "seed": 1});
    let no_blobs = HashMap::new();
    let spec = JobSpec {
        input: &input,
        stages: STAGES,
        stage_ms: 0,
        blobs: &no_blobs,
    };
    let mut job = Job::new(algorithm("pi").unwrap(), spec).expect("pi");
    let elapsed = run_stages(&mut job);
    let result = job.finish().expect("finish").result;
    #[allow(clippy::cast_precision_loss)]
    let rate = PI_SAMPLES as f64 / elapsed.as_secs_f64();
    println!(
        "pi {PI_SAMPLES} samples, {STAGES} stages: {elapsed:?} = {:.0} M samples/s, pi ≈ {}",
        rate / 1e6,
        result["pi"]
    );
}
