#!/usr/bin/env bash
# The benchmark: Redis and RabbitMQ up (infra.sh), release builds of the
# api, the worker and the bench, then `bench`, which measures the brokers'
# own limits on this machine, starts the api and the workers itself for each
# scenario (each run in a RabbitMQ vhost and Redis key prefix of its own,
# removed afterwards), and writes docs/BENCHMARKS.md and docs/bench.png.
#
#   bash scripts/bench.sh                 # the full benchmark (a few minutes on 2 cores)
#   bash scripts/bench.sh --smoke         # tiny counts, nothing judged; output in run/bench-smoke/
#   bash scripts/bench.sh --only create,dispatch --runs 1   # part of it; output in run/bench-partial/
#
# Figures depend on a quiet machine: the script warns when the load average
# says something else is running. Service logs are in run/bench-logs/.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

out_dir="docs"
for arg in "$@"; do
    case "$arg" in
        --smoke) out_dir="run/bench-smoke" ;;
        --only | --only=* | --runs | --runs=*) out_dir="run/bench-partial" ;;
        --out-dir | --out-dir=*) die "bench.sh chooses the output directory itself; run target/release/bench directly for another" ;;
    esac
done

log "infrastructure"
bash scripts/infra.sh

have cargo || die "cargo not found: install Rust with rustup (https://rustup.rs)"
ensure_tool cc gcc # the native crate compiles C through the cc crate

log "cargo build --release -p api-service -p algo-service -p bench"
cargo build --release -p api-service -p algo-service -p bench

# The build itself raised the load average; give it up to 90 s to settle.
quiet() { python3 -c "import sys; sys.exit(0 if float(open('/proc/loadavg').read().split()[0]) < 1.5 else 1)"; }
for _ in $(seq 1 18); do
    quiet && break
    sleep 5
done
load="$(cut -d' ' -f1 /proc/loadavg)"
if quiet; then
    log "load average $load: quiet enough"
else
    warn "load average is $load: something else is using the CPUs, figures will be noisy (BENCHMARKS.md records the load)"
fi

rm -rf "$RUN_DIR/bench-logs"
log "bench (output in $out_dir/)"
exec target/release/bench --bin-dir target/release --out-dir "$out_dir" \
    --log-dir "$RUN_DIR/bench-logs" "$@"
