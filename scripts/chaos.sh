#!/usr/bin/env bash
# Chaos: N tasks across 3 workers while workers are killed (SIGKILL) and
# stopped (SIGTERM), RabbitMQ is restarted (cleanly or killed, then booted on
# its own data) and the api is killed and started again on its port, at
# random moments drawn from a seed; then every task is checked through the
# api: exactly one terminal state, none lost, none stuck.
#
#   bash scripts/chaos.sh                          # 500 tasks, 30 faults, 100 s window
#   bash scripts/chaos.sh --tasks 100 --faults 8 --seed 42 --duration-secs 60
#
# Extra arguments go to target/release/chaos (`--help` lists them). It runs
# on loopback with a private redis-server and a private RabbitMQ node on free
# ports (the shared servers are never touched); infra.sh is still run so the
# Debian packages are installed. Processes' logs go to run/chaos-logs/<time>/.
# The last line gives the figures; the exit code is non-zero when a task was
# lost, stuck or finished twice.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

log "infrastructure"
bash scripts/infra.sh

have cargo || die "cargo not found: install Rust with rustup (https://rustup.rs)"
ensure_tool cc gcc # the native crate compiles C through the cc crate

log "cargo build --release -p api-service -p algo-service -p chaos"
cargo build --release -p api-service -p algo-service -p chaos

logs="$RUN_DIR/chaos-logs/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$logs"
log "chaos (logs in $logs)"
exec target/release/chaos --tasks 500 --workers 3 --faults 30 --duration-secs 100 \
    --log-dir "$logs" "$@"
