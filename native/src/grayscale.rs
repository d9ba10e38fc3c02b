//! `grayscale`: PNG/JPEG → 8-bit gray PNG, one horizontal band per stage.
//! Decoding and encoding in Rust (`image`), the pixel kernel in C
//! (`c/grayscale.c`).

use std::io::Cursor;

use image::{ImageEncoder, ImageFormat};
use serde_json::{json, Value};

use crate::ffi;
use crate::job::{JobOutput, JobSpec, OutputBlob, Stages};
use crate::registry::{object, only_fields, present, Algorithm, InputError};
use crate::stage::{call, NativeError, StageCall, StageOutcome};

pub(crate) const ALGORITHM: Algorithm = Algorithm {
    name: "grayscale",
    description: "Converts a PNG or JPEG blob to an 8-bit grayscale PNG (ITU-R BT.601 luma), one horizontal band per stage.",
    default_stages: 10,
    cpu_bound: true,
    schema,
    validate,
    blobs,
    prepare,
};

fn schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "image": {
                "type": "string", "format": "uuid",
                "description": "blob_id of a PNG or JPEG uploaded with POST /blobs"
            }
        },
        "required": ["image"],
        "additionalProperties": false
    })
}

fn validate(input: &Value) -> Result<(), InputError> {
    parse(input).map(|_| ())
}

fn blobs(input: &Value) -> Vec<String> {
    parse(input)
        .map(|id| vec![id.to_owned()])
        .unwrap_or_default()
}

/// The blob id of a valid input.
pub(crate) fn parse(input: &Value) -> Result<&str, InputError> {
    let o = object(input, "input")?;
    only_fields(o, "input", &["image"])?;
    match present(o, "image").and_then(Value::as_str) {
        Some(id) if is_uuid(id) => Ok(id),
        _ => Err(InputError::new("input.image", "must be a blob id (a UUID)")),
    }
}

/// Canonical hyphenated UUID, any case.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn prepare(spec: &JobSpec<'_>) -> Result<Box<dyn Stages>, NativeError> {
    let id = parse(spec.input).map_err(|e| NativeError::Fatal(format!("invalid input: {e}")))?;
    let bytes = spec
        .blobs
        .get(id)
        .ok_or_else(|| NativeError::Fatal(format!("input.image: blob {id} was not provided")))?;
    Ok(Box::new(GrayscaleJob::decode(bytes)?))
}

/// The luma of one pixel, exactly as `c/grayscale.c` computes it:
/// ITU-R BT.601 in integers, `Y = (299 R + 587 G + 114 B + 500) / 1000`.
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    let y = (299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b) + 500) / 1000;
    u8::try_from(y).unwrap_or(u8::MAX)
}

/// The `grayscale` job's state: the decoded image and the luma buffer, whose
/// bands of stages `0..done` are converted.
#[derive(Debug)]
struct GrayscaleJob {
    rgb: Vec<u8>,
    width: u32,
    height: u32,
    gray: Vec<u8>,
    done: u32,
}

impl GrayscaleJob {
    /// Decodes a PNG or JPEG. Anything else is a fatal error.
    fn decode(bytes: &[u8]) -> Result<Self, NativeError> {
        let not_image = |why: String| {
            NativeError::Fatal(format!("input.image is not a PNG or JPEG image: {why}"))
        };
        let reader = image::io::Reader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| not_image(e.to_string()))?;
        match reader.format() {
            Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
            Some(other) => return Err(not_image(format!("it is {other:?}"))),
            None => return Err(not_image("unrecognised format".to_owned())),
        }
        let decoded = reader.decode().map_err(|e| match e {
            image::ImageError::Limits(_) => NativeError::Fatal(format!(
                "input.image is too large to decode (at most 512 MiB decoded): {e}"
            )),
            other => not_image(other.to_string()),
        })?;
        let rgb = decoded.into_rgb8();
        let (width, height) = rgb.dimensions();
        let pixels = usize::try_from(u64::from(width) * u64::from(height))
            .map_err(|_| not_image("too large".to_owned()))?;
        Ok(Self {
            rgb: rgb.into_raw(),
            width,
            height,
            gray: vec![0; pixels],
            done: 0,
        })
    }

    /// The luma buffer as a PNG.
    fn encode(&self) -> Result<Vec<u8>, NativeError> {
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&self.gray, self.width, self.height, image::ColorType::L8)
            .map_err(|e| NativeError::Fatal(format!("grayscale: encoding the PNG failed: {e}")))?;
        Ok(png)
    }
}

impl Stages for GrayscaleJob {
    /// Converts the bands `done..=args.stage` (the earlier ones only when
    /// this job lacks them, e.g. after a resume); a band already converted
    /// is converted again (the same bytes).
    fn run(&mut self, stages: u32, args: &StageCall<'_>) -> Result<StageOutcome, NativeError> {
        let first = self.done.min(args.stage);
        for stage in first..=args.stage {
            let one = StageCall { stage, ..*args };
            let input = ffi::GrayscaleInput {
                rgb: self.rgb.as_ptr(),
                width: self.width,
                height: self.height,
            };
            #[allow(unsafe_code)]
            // SAFETY: `algo_grayscale_stage` takes a `GrayscaleInput` whose
            // `rgb` points to `self.rgb`, width * height * 3 bytes (an RGB8
            // buffer from `image`), borrowed for the whole call, and writes
            // into `self.gray`, width * height bytes (C checks the size).
            let outcome = unsafe {
                call(
                    ffi::algo_grayscale_stage,
                    stages,
                    &input,
                    &mut self.gray[..],
                    &one,
                )
            }?;
            if outcome == StageOutcome::Interrupted {
                return Ok(outcome);
            }
            self.done = self.done.max(stage + 1);
        }
        Ok(StageOutcome::Completed)
    }

    fn finish(&self, stages: u32) -> Result<JobOutput, NativeError> {
        if self.done != stages {
            return Err(NativeError::InvalidArgument);
        }
        Ok(JobOutput {
            result: json!({"width": self.width, "height": self.height}),
            blob: Some(OutputBlob {
                field: "image",
                content_type: "image/png",
                bytes: self.encode()?,
            }),
        })
    }
}
