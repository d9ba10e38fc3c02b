//! What `WORKER_ISOLATION=process` costs against `thread`: runs zero-length
//! `hello` stages both ways through the worker's own stage code
//! (`task_run::isolation`) and prints the figures on stderr.
//!
//! ```text
//! cargo run --release -p algo-service --example isolation_cost -- [STAGES] [ATTEMPTS] >/dev/null
//! ```
//!
//! `STAGES` (default 2000) zero-length stages run in one attempt (one job,
//! one helper process); `ATTEMPTS` (default 100) one-stage attempts each
//! build a job (under `process`: start a helper), run it and finish it.
//! Stdout gets the stages' `hello world` lines, so send it elsewhere. This
//! executable is its own stage helper, as `algo-service` is.

use std::{collections::HashMap, time::Duration};

use algo_service::{
    registry::StopFlag,
    task_run::{
        ffi::{StageArgs, ValidUntil},
        isolation::{self, StageJob},
        RunParams,
    },
    Isolation,
};
use tokio::time::Instant;

fn params(stages: u32) -> RunParams {
    RunParams {
        task_id: task_model::TaskId::new(),
        algorithm: "hello".to_owned(),
        input: serde_json::Value::Null,
        stages,
        stage_ms: 0,
        attempt: 1,
    }
}

async fn job(isolation: Isolation, stages: u32) -> StageJob {
    let hello = native::algorithm("hello").expect("hello is in the catalogue");
    isolation::build(isolation, hello, &params(stages), HashMap::new())
        .await
        .expect("the job builds")
}

/// Runs every stage of `job`; the time per stage.
async fn stages(mut job: StageJob, count: u32) -> (StageJob, Duration) {
    let (flag, progress) = (StopFlag::new(), std::sync::Arc::default());
    let far = Instant::now() + Duration::from_secs(3600);
    let valid = ValidUntil::new(far);
    let started = Instant::now();
    for stage in 0..count {
        let args = StageArgs {
            stage,
            attempt: 1,
            allow_crash: false,
        };
        let (back, outcome) = job
            .run_stage(args, &flag, far, &valid, std::sync::Arc::clone(&progress))
            .await
            .expect("the stage runs");
        assert_eq!(outcome, Ok(native::StageOutcome::Completed));
        job = back;
    }
    (job, started.elapsed() / count)
}

/// One-stage attempts (build, stage, finish); the time per attempt.
async fn attempts(isolation: Isolation, count: u32) -> Duration {
    let started = Instant::now();
    for _ in 0..count {
        let (job, _) = stages(job(isolation, 1).await, 1).await;
        job.finish().await.expect("the job finishes");
    }
    started.elapsed() / count
}

fn main() {
    if isolation::is_helper() {
        std::process::exit(match isolation::helper_main() {
            code if code == std::process::ExitCode::SUCCESS => 0,
            _ => 1,
        });
    }
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let m: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        for isolation in [Isolation::Thread, Isolation::Process] {
            let (_, per_stage) = stages(job(isolation, n).await, n).await;
            let per_attempt = attempts(isolation, m).await;
            eprintln!(
                "{isolation:?}: {:.3} ms/stage over {n} stages in one attempt; {:.3} ms per one-stage attempt (build, stage, finish) over {m}",
                per_stage.as_secs_f64() * 1e3,
                per_attempt.as_secs_f64() * 1e3,
            );
        }
    });
}
