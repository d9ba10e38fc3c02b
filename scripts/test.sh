#!/usr/bin/env bash
# The whole check, as CI runs it (.ci/run): Redis and RabbitMQ up (infra.sh),
# formatting, clippy with warnings as errors, a build of every target, then
# every test of the workspace against the real Redis and RabbitMQ.
#
# The tests isolate themselves (a RabbitMQ vhost and a Redis key prefix of
# their own per test), so they share the brokers with anything else running.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

step() { log "==> $*"; }

step "infrastructure"
bash scripts/infra.sh

# The services refuse to start without a callback token; tests that spawn
# them read it from the environment.
if [ -z "${CALLBACK_TOKEN:-}" ]; then
    CALLBACK_TOKEN="$(gen_token)"
fi
export CALLBACK_TOKEN

have cargo || die "cargo not found: install Rust with rustup (https://rustup.rs)"
ensure_tool cc gcc # the native crate compiles C through the cc crate

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

step "cargo test --workspace"
# --no-fail-fast: one failing test binary should not hide the others' results.
cargo test --workspace --no-fail-fast -- --test-threads=4

# ---------------------------------------------------------------------------
# Browser / npm tests go here (they need the Rust binaries built above), e.g.
#   step "browser tests"
#   (cd tests/browser && npm ci && npm test)
# ---------------------------------------------------------------------------

step "browser test (dashboard in headless Chromium, real api and workers)"
bash scripts/browser-test.sh

step "schemathesis against a live api (bounded: about 40 s)"
bash scripts/schemathesis.sh

log "all checks passed"
