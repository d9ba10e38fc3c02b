//! The catalogue: one [`Algorithm`] descriptor per native algorithm.

use serde_json::{Map, Value};

use crate::job::{JobSpec, Stages};
use crate::stage::NativeError;
use crate::{grayscale, hello, pi};

/// An input an algorithm rejects, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputError {
    /// Dotted path of the field from the task body, e.g. `input.samples`
    /// (`input` itself when the whole input is wrong), for the api's
    /// `"field"`.
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl InputError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One algorithm of the catalogue (`GET /algorithms` lists them).
#[derive(Debug)]
pub struct Algorithm {
    /// The task's `algorithm`, e.g. `pi`.
    pub name: &'static str,
    /// One line for a person.
    pub description: &'static str,
    /// Stages of a task that names none.
    pub default_stages: u32,
    /// Whether its stages keep a core busy (they take one of the worker's
    /// `WORKER_CPU_SLOTS`); `hello` only sleeps.
    pub cpu_bound: bool,
    pub(crate) schema: fn() -> Value,
    pub(crate) validate: fn(&Value) -> Result<(), InputError>,
    pub(crate) blobs: fn(&Value) -> Vec<String>,
    /// Builds the job state for a validated input.
    pub(crate) prepare: fn(&JobSpec<'_>) -> Result<Box<dyn Stages>, NativeError>,
}

impl Algorithm {
    /// JSON Schema (draft 2020-12) of the task's `input`; an absent input is
    /// passed as `null`.
    pub fn input_schema(&self) -> Value {
        (self.schema)()
    }

    /// Checks a task's `input` (`Value::Null` when absent) exactly as
    /// [`Algorithm::input_schema`] describes it.
    ///
    /// # Errors
    ///
    /// The first problem found, with its dotted field name.
    pub fn validate(&self, input: &Value) -> Result<(), InputError> {
        (self.validate)(input)
    }

    /// Blob ids a valid `input` names, which the worker fetches before
    /// [`crate::Job::new`] (`grayscale`: `input.image`). Empty for an
    /// invalid input.
    pub fn input_blobs(&self, input: &Value) -> Vec<String> {
        (self.blobs)(input)
    }

    /// The `GET /algorithms` entry:
    /// `{"name", "description", "input_schema", "default_stages", "cpu_bound"}`.
    pub fn describe(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema(),
            "default_stages": self.default_stages,
            "cpu_bound": self.cpu_bound,
        })
    }
}

static ALGORITHMS: [Algorithm; 3] = [hello::ALGORITHM, grayscale::ALGORITHM, pi::ALGORITHM];

/// Every algorithm, `hello` first.
pub fn algorithms() -> &'static [Algorithm] {
    &ALGORITHMS
}

/// The `GET /algorithms` body: [`Algorithm::describe`] of every algorithm.
pub fn catalogue() -> Value {
    Value::Array(ALGORITHMS.iter().map(Algorithm::describe).collect())
}

/// The algorithm called `name`, if any.
pub fn algorithm(name: &str) -> Option<&'static Algorithm> {
    ALGORITHMS.iter().find(|a| a.name == name)
}

// ---- validation helpers ----

/// `input` as an object, else an error about `field`.
pub(crate) fn object<'a>(
    value: &'a Value,
    field: &str,
) -> Result<&'a Map<String, Value>, InputError> {
    value
        .as_object()
        .ok_or_else(|| InputError::new(field, "must be an object"))
}

/// Rejects any key of `object` not in `known`.
pub(crate) fn only_fields(
    object: &Map<String, Value>,
    field: &str,
    known: &[&str],
) -> Result<(), InputError> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(InputError::new(
            format!("{field}.{unknown}"),
            format!("unknown field (expected one of: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// `object[key]` unless absent or `null`.
pub(crate) fn present<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|v| !v.is_null())
}

/// An integer in `min..=max`, else an error about `field`.
pub(crate) fn integer(value: &Value, field: &str, min: u64, max: u64) -> Result<u64, InputError> {
    match value.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(InputError::new(
            field,
            format!("must be an integer from {min} to {max}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn catalogue_lists_three_algorithms_with_schemas() {
        let names: Vec<_> = algorithms().iter().map(|a| a.name).collect();
        assert_eq!(names, ["hello", "grayscale", "pi"]);
        for a in algorithms() {
            assert_eq!(algorithm(a.name).map(|b| b.name), Some(a.name));
            let d = a.describe();
            assert_eq!(d["name"], a.name);
            assert_eq!(d["default_stages"], 10);
            assert!(d["input_schema"].is_object());
        }
        assert!(!algorithm("hello").unwrap().cpu_bound);
        assert!(algorithm("pi").unwrap().cpu_bound);
        assert!(algorithm("grayscale").unwrap().cpu_bound);
        assert!(algorithm("nope").is_none());
        let body = catalogue();
        assert_eq!(body.as_array().map(Vec::len), Some(3));
        assert_eq!(body[2]["input_schema"]["required"], json!(["samples"]));
    }

    fn err(name: &str, input: Value) -> String {
        algorithm(name)
            .unwrap()
            .validate(&input)
            .expect_err("accepted")
            .field
    }

    #[test]
    fn hello_accepts_anything_but_a_malformed_fail() {
        let hello = algorithm("hello").unwrap();
        for ok in [
            json!(null),
            json!("text"),
            json!({"x": 1}),
            json!({"fail": null}),
            json!({"fail": {"at_stage": 2, "mode": "error"}}),
            json!({"fail": {"at_stage": 1, "attempts": 3, "mode": "crash"}}),
        ] {
            assert_eq!(hello.validate(&ok), Ok(()), "{ok}");
        }
        assert_eq!(err("hello", json!({"fail": 1})), "input.fail");
        assert_eq!(
            err("hello", json!({"fail": {"mode": "error"}})),
            "input.fail.at_stage"
        );
        assert_eq!(
            err("hello", json!({"fail": {"at_stage": 0, "mode": "error"}})),
            "input.fail.at_stage"
        );
        assert_eq!(
            err("hello", json!({"fail": {"at_stage": 1}})),
            "input.fail.mode"
        );
        assert_eq!(
            err("hello", json!({"fail": {"at_stage": 1, "mode": "boom"}})),
            "input.fail.mode"
        );
        assert_eq!(
            err(
                "hello",
                json!({"fail": {"at_stage": 1, "mode": "fatal", "attempts": 0}})
            ),
            "input.fail.attempts"
        );
        assert_eq!(
            err(
                "hello",
                json!({"fail": {"at_stage": 1, "mode": "fatal", "when": 0}})
            ),
            "input.fail.when"
        );
    }

    #[test]
    fn pi_requires_samples_in_range() {
        let pi = algorithm("pi").unwrap();
        assert_eq!(pi.validate(&json!({"samples": 1})), Ok(()));
        assert_eq!(
            pi.validate(&json!({"samples": 100_000_000_000u64, "seed": u64::MAX})),
            Ok(())
        );
        assert_eq!(pi.validate(&json!({"samples": 5, "seed": null})), Ok(()));
        assert_eq!(err("pi", json!(null)), "input");
        assert_eq!(err("pi", json!({})), "input.samples");
        assert_eq!(err("pi", json!({"samples": 0})), "input.samples");
        assert_eq!(
            err("pi", json!({"samples": 100_000_000_001u64})),
            "input.samples"
        );
        assert_eq!(err("pi", json!({"samples": 1.5})), "input.samples");
        assert_eq!(err("pi", json!({"samples": "7"})), "input.samples");
        assert_eq!(err("pi", json!({"samples": 7, "seed": -1})), "input.seed");
        assert_eq!(err("pi", json!({"samples": 7, "extra": 1})), "input.extra");
    }

    #[test]
    fn grayscale_requires_a_blob_id() {
        let g = algorithm("grayscale").unwrap();
        let id = "0b8f3a4e-7c1d-4e2a-9f3b-5d6c7e8f9a0b";
        assert_eq!(g.validate(&json!({"image": id})), Ok(()));
        assert_eq!(g.validate(&json!({"image": id.to_uppercase()})), Ok(()));
        assert_eq!(g.input_blobs(&json!({"image": id})), [id]);
        assert!(g.input_blobs(&json!({"image": 3})).is_empty());
        assert_eq!(err("grayscale", json!(null)), "input");
        assert_eq!(err("grayscale", json!({})), "input.image");
        assert_eq!(
            err("grayscale", json!({"image": "not-a-uuid"})),
            "input.image"
        );
        assert_eq!(err("grayscale", json!({"image": 5})), "input.image");
        assert_eq!(err("grayscale", json!({"image": id, "x": 1})), "input.x");
    }
}
