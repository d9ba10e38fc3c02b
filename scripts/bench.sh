#!/usr/bin/env bash
# The benchmark: Redis and RabbitMQ up (infra.sh), release builds of the
# api, the worker and the bench, then `bench`, which measures the brokers'
# own limits on this machine, starts the api and the workers itself for each
# scenario (each run in a RabbitMQ vhost and Redis key prefix of its own,
# removed afterwards), and writes BENCHMARKS.md and bench.png. The same
# run measures a Celery app of ours (bench/peer/) through the same scenarios,
# for its prefork, threads and gevent pools with and without publisher
# confirms, and puts both side by side; Celery comes from PyPI into the
# virtualenv run/peer-venv (bench/peer/requirements.txt, installed again only
# when that file changes).
#
#   bash scripts/bench.sh                 # the full benchmark, Celery included (under 15 min on 2 cores); output in run/bench/
#   bash scripts/bench.sh --publish       # the same, written to docs/ (the tracked report the README cites)
#   bash scripts/bench.sh --no-peer       # without Celery (no virtualenv needed)
#   bash scripts/bench.sh --smoke         # tiny counts, nothing judged, no Celery; output in run/bench-smoke/
#   bash scripts/bench.sh --only create,dispatch --runs 1   # part of it; output in run/bench-partial/
#   bash scripts/bench.sh --only dispatch,peer --runs 1     # part of it, Celery's dispatch beside ours
#   bash scripts/bench.sh --help          # this text, then the bench's own options
#
# Only --publish touches docs/, and only a full run may publish. Other
# arguments go to target/release/bench. Figures depend on a quiet machine:
# the script warns when the load average says something else is running.
# Service logs are in run/bench-logs/.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

out_dir="$RUN_DIR/bench"
publish=0
partial=""
help=0
smoke=0
no_peer=0
only=""
args=()
prev=""
for arg in "$@"; do
    [ "$prev" = --only ] && only="$arg"
    prev="$arg"
    case "$arg" in
        --publish) publish=1; continue ;;
        -h | --help) help=1 ;;
        --smoke) smoke=1; partial="--smoke"; out_dir="$RUN_DIR/bench-smoke" ;;
        --no-peer) no_peer=1 ;;
        --peer-python | --peer-python=*) die "bench.sh makes the peer's virtualenv itself; run target/release/bench directly for another Python" ;;
        --only=*) only="${arg#--only=}"; partial="--only"; out_dir="$RUN_DIR/bench-partial" ;;
        --only | --runs | --runs=*) partial="${arg%%=*}"; out_dir="$RUN_DIR/bench-partial" ;;
        --out-dir | --out-dir=*) die "bench.sh chooses the output directory itself (run/bench/, or docs/ with --publish); run target/release/bench directly for another" ;;
    esac
    args+=("$arg")
done
# The Celery peer runs unless skipped, in a smoke run, or left out by --only.
want_peer=1
if [ "$no_peer" = 1 ] || [ "$smoke" = 1 ]; then
    want_peer=0
elif [ -n "$only" ] && [[ ",$only," != *,peer,* ]]; then
    want_peer=0
fi
if [ "$help" = 1 ]; then
    usage
    if [ -x target/release/bench ]; then
        echo
        exec target/release/bench --help
    fi
    echo
    echo "(build it with \`cargo build --release -p bench\` for the bench's own options)"
    exit 0
fi
if [ "$publish" = 1 ]; then
    [ -z "$partial" ] || die "--publish writes the tracked docs/BENCHMARKS.md: only a full run may (drop $partial)"
    out_dir="docs"
fi

log "infrastructure"
bash scripts/infra.sh

if [ "$want_peer" = 1 ]; then
    # The peer's virtualenv, made again when requirements.txt changed (or a run broke off).
    venv="$RUN_DIR/peer-venv"
    requirements=bench/peer/requirements.txt
    stamp="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [ "$(cat "$venv/.taskforge-requirements" 2>/dev/null)" != "$stamp" ]; then
        ensure_python_venv
        log "making the Celery peer's virtualenv $venv ($requirements)"
        rm -rf "$venv"
        python3 -m venv "$venv" || die "python3 -m venv $venv failed"
        "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$requirements" ||
            die "pip install -r $requirements failed (PyPI reachable? PIP_INDEX_URL set right?); --no-peer skips Celery"
        echo "$stamp" >"$venv/.taskforge-requirements"
    fi
    args+=(--peer-python "$venv/bin/python")
fi

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
    --log-dir "$RUN_DIR/bench-logs" ${args[@]+"${args[@]}"}
