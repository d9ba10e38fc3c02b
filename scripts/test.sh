#!/usr/bin/env bash
# The whole check, as CI runs it (.ci/run): the toolchains checked (Rust) or
# installed from Debian (C, procps), Redis and RabbitMQ up (infra.sh), the
# scripts' own unit tests, formatting, clippy with warnings as errors, a build
# of every target, every test of the workspace against the real Redis and
# RabbitMQ, then the dashboard in headless Chromium (browser-test.sh).
#
# The tests isolate themselves (a RabbitMQ vhost and a Redis key prefix of
# their own per test), so they share the brokers with anything else running.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

step() { log "==> $*"; }

step "prerequisites"
# Rust through rustup with rustfmt and clippy; from Debian, if missing, a C
# toolchain (the native crate) and procps (the tests run kill and ps).
ensure_rust rustfmt clippy
ensure_c_toolchain
ensure_procps

step "infrastructure"
bash scripts/infra.sh

# The services refuse to start without a callback token; tests that spawn
# them read it from the environment.
if [ -z "${CALLBACK_TOKEN:-}" ]; then
    CALLBACK_TOKEN="$(gen_token)"
fi
export CALLBACK_TOKEN

step "scripts' own tests (python3 -m unittest, scripts/test_*.py)"
PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s scripts -p 'test_*.py'

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

step "cargo test --workspace"
# --no-fail-fast: one failing test binary should not hide the others' results.
cargo test --workspace --no-fail-fast -- --test-threads=4

step "browser test (dashboard in headless Chromium, real api and workers)"
bash scripts/browser-test.sh

step "schemathesis against a live api (bounded: under a minute)"
bash scripts/schemathesis.sh

log "all checks passed"
