//! `GET /algorithms`: the catalogue of native algorithms a task may name.

use actix_web::HttpResponse;
use serde::Serialize;

/// One entry of `GET /algorithms`, built from `native`'s descriptor (the
/// same fields as `native::Algorithm::describe`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlgorithmView {
    /// The task's `algorithm`, e.g. `pi`.
    pub name: &'static str,
    /// One line for a person.
    pub description: &'static str,
    /// JSON Schema (draft 2020-12) of the task's `input`.
    #[schema(value_type = Object)]
    pub input_schema: serde_json::Value,
    /// Stages of a task that names none (`hello`: the api's `DEFAULT_STAGES`).
    pub default_stages: u32,
    /// Whether its stages take one of a worker's `WORKER_CPU_SLOTS`.
    pub cpu_bound: bool,
}

impl From<&native::Algorithm> for AlgorithmView {
    fn from(a: &native::Algorithm) -> Self {
        Self {
            name: a.name,
            description: a.description,
            input_schema: a.input_schema(),
            default_stages: a.default_stages,
            cpu_bound: a.cpu_bound,
        }
    }
}

/// The whole catalogue, `hello` first.
pub fn catalogue() -> Vec<AlgorithmView> {
    native::algorithms()
        .iter()
        .map(AlgorithmView::from)
        .collect()
}

/// `GET /algorithms`. Open, like `/openapi.json`: it describes the api.
#[utoipa::path(get, path = "/algorithms", tag = "tasks",
    responses((status = 200, description = "Every algorithm a task may name", body = [AlgorithmView])))]
pub async fn list_algorithms() -> HttpResponse {
    HttpResponse::Ok().json(catalogue())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_view_is_natives_catalogue() {
        assert_eq!(
            serde_json::to_value(super::catalogue()).unwrap(),
            native::catalogue()
        );
    }

    #[test]
    fn task_model_knows_every_algorithm_of_the_catalogue() {
        let names: Vec<_> = native::algorithms().iter().map(|a| a.name).collect();
        assert_eq!(names, task_model::ALGORITHMS);
    }
}
