#!/usr/bin/env bash
# The dashboard in a real browser: headless Chromium (Debian's /usr/bin/chromium,
# driven by Python's playwright from PyPI, tests/browser/test_dashboard.py)
# against a real api and two real workers on real Redis and RabbitMQ.
#
# playwright's wheel brings its own driver, so no Node.js is needed; the
# packages (tests/browser/requirements.txt, pinned) go into a virtualenv in
# run/browser-venv, made again only when requirements.txt changes. pip's own
# environment (PIP_INDEX_URL, PIP_NO_INDEX, PIP_FIND_LINKS) is honoured.
#
#   bash scripts/browser-test.sh                      # screenshot → run/browser-test/dashboard.png
#   UPDATE_SCREENSHOT=1 bash scripts/browser-test.sh  # also refresh docs/dashboard.png
#
# Isolation: the workers consume `tasks.algo`, which other processes on this
# machine (scripts/run.sh, the Rust tests) may consume as well. So this run
# gets a RabbitMQ vhost of its own (created through the management API) and a
# Redis key prefix of its own; both are removed on exit, with the processes,
# whatever happens. Redis and RabbitMQ must be up (scripts/infra.sh).
#
# Environment: BROWSER_TEST_API_PORT (18181), BROWSER_TEST_METRICS_PORT (19191;
# the second worker takes the next free port), REDIS_URL
# (redis://127.0.0.1:6379/0), RABBITMQ_MGMT_URL (http://127.0.0.1:15672),
# RABBITMQ_MGMT_CREDS (guest:guest), CHROMIUM_PATH (/usr/bin/chromium),
# BROWSER_VENV (run/browser-venv).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
MGMT_URL="${RABBITMQ_MGMT_URL:-http://127.0.0.1:15672}"
MGMT_CREDS="${RABBITMQ_MGMT_CREDS:-guest:guest}"
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
VENV="${BROWSER_VENV:-$RUN_DIR/browser-venv}"
REQUIREMENTS="$REPO_ROOT/tests/browser/requirements.txt"
OUT_DIR="$RUN_DIR/browser-test"
SUFFIX="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
VHOST="browser-test-$SUFFIX"
PREFIX="browser-test-$SUFFIX:"
TOKEN="$(gen_token)"
# The api runs with an API key, so the test also covers the page's key prompt
# and SSE with a bearer header.
API_KEY="browser-$(gen_token | cut -c1-16)"
AMQP_USER="${MGMT_CREDS%%:*}"
AMQP_PASS="${MGMT_CREDS#*:}"
AMQP_URL="amqp://$AMQP_USER:$AMQP_PASS@127.0.0.1:5672/$VHOST"

# free_port FIRST: the first port from FIRST up that nothing listens on.
free_port() {
    local port="$1"
    while tcp_open 127.0.0.1 "$port"; do port=$((port + 1)); done
    echo "$port"
}

pids=()
vhost_created=""

cleanup() {
    local status=$?
    set +e
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ -n "$vhost_created" ]; then
        curl -fsS -o /dev/null --max-time 10 -u "$MGMT_CREDS" -X DELETE "$MGMT_URL/api/vhosts/$VHOST" ||
            warn "could not delete vhost $VHOST"
    fi
    if have redis-cli; then
        redis-cli -u "$REDIS_URL" --scan --pattern "${PREFIX}*" 2>/dev/null |
            xargs -r -n 200 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1
    fi
    if [ "$status" -ne 0 ]; then
        for f in "$OUT_DIR"/*.log; do
            [ -s "$f" ] || continue
            warn "last lines of $f:"
            tail -n 25 "$f" >&2
        done
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- what the test needs ----------------------------------------------------
if [ ! -x "$CHROMIUM_PATH" ]; then
    apt_install chromium chromium-driver
fi
[ -x "$CHROMIUM_PATH" ] || die "no Chromium at $CHROMIUM_PATH"
ensure_python_venv
ensure_tool curl
ensure_tool redis-cli redis-tools
if ! { tcp_open 127.0.0.1 6379 && tcp_open 127.0.0.1 5672 && http_ok "$MGMT_URL/api/overview" -u "$MGMT_CREDS"; }; then
    die "Redis, RabbitMQ or its management API is not up: run scripts/infra.sh first"
fi

# The virtualenv, made again when requirements.txt changed (or a run broke off).
stamp="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.taskforge-requirements" 2>/dev/null)" != "$stamp" ]; then
    log "making the virtualenv $VENV (tests/browser/requirements.txt)"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQUIREMENTS" ||
        die "pip install -r tests/browser/requirements.txt failed (PyPI reachable? PIP_INDEX_URL set right?)"
    echo "$stamp" >"$VENV/.taskforge-requirements"
fi

log "building api-service and algo-service"
cargo build --quiet -p api-service -p algo-service --bins
API_BIN="$REPO_ROOT/target/debug/api-service"
WORKER_BIN="$REPO_ROOT/target/debug/algo-service"

mkdir -p "$OUT_DIR"

# --- an isolated broker vhost -------------------------------------------------
log "creating RabbitMQ vhost $VHOST"
curl -fsS -o /dev/null --max-time 10 -u "$MGMT_CREDS" -X PUT "$MGMT_URL/api/vhosts/$VHOST" ||
    die "could not create vhost $VHOST"
vhost_created=1
curl -fsS -o /dev/null --max-time 10 -u "$MGMT_CREDS" -X PUT \
    -H 'content-type: application/json' \
    -d '{"configure": ".*", "write": ".*", "read": ".*"}' \
    "$MGMT_URL/api/permissions/$VHOST/$AMQP_USER" ||
    die "could not grant $AMQP_USER access to $VHOST"

# --- the api and two workers --------------------------------------------------
API_PORT="$(free_port "${BROWSER_TEST_API_PORT:-18181}")"
API="http://127.0.0.1:$API_PORT"
log "starting the api on $API (Redis prefix $PREFIX)"
env API_BIND="127.0.0.1:$API_PORT" REDIS_URL="$REDIS_URL" REDIS_PREFIX="$PREFIX" \
    AMQP_URL="$AMQP_URL" CALLBACK_TOKEN="$TOKEN" API_KEYS="$API_KEY" RUST_LOG="${RUST_LOG:-info}" \
    "$API_BIN" >"$OUT_DIR/api.log" 2>&1 &
pids+=("$!")

metrics_port="${BROWSER_TEST_METRICS_PORT:-19191}"
worker_health=()
for n in 1 2; do
    metrics_port="$(free_port "$metrics_port")"
    log "starting worker browser-w$n (metrics on 127.0.0.1:$metrics_port)"
    env AMQP_URL="$AMQP_URL" API_URL="$API" CALLBACK_TOKEN="$TOKEN" WORKER_NAME="browser-w$n" \
        METRICS_BIND="127.0.0.1:$metrics_port" SHUTDOWN_GRACE_SECS=2 RUST_LOG="${RUST_LOG:-info}" \
        "$WORKER_BIN" >"$OUT_DIR/worker-$n.log" 2>&1 &
    pids+=("$!")
    worker_health+=("http://127.0.0.1:$metrics_port/healthz")
    metrics_port=$((metrics_port + 1))
done

# alive_and_ok URL: the URL answers 2xx; ends the whole run at once when a
# process we started has died (no point in waiting out the timeout).
# wait_until silences its command, so the message goes to fd 3.
exec 3>&2
alive_and_ok() {
    local pid
    for pid in "${pids[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            printf '[%s %s] ERROR: a process exited early (pid %s); logs in %s\n' \
                "$(date +%H:%M:%S)" "$_log_tag" "$pid" "$OUT_DIR" >&3
            exit 1
        fi
    done
    http_ok "$1"
}
wait_until 60 "the api's /readyz" alive_and_ok "$API/readyz" || die "the api is not ready"
for url in "${worker_health[@]}"; do
    wait_until 60 "worker $url" alive_and_ok "$url" || die "a worker is not ready"
done
log "api and workers ready"

# --- the browser test -----------------------------------------------------------
screenshot="$OUT_DIR/dashboard.png"
log "running the browser test (python -m unittest, playwright $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("playwright"))'))"
(
    cd tests/browser
    DASHBOARD_URL="$API/" DASHBOARD_API_KEY="$API_KEY" CHROMIUM_PATH="$CHROMIUM_PATH" SCREENSHOT_PATH="$screenshot" \
        PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" -m unittest -v test_dashboard
)
if [ -n "${UPDATE_SCREENSHOT:-}" ]; then
    mkdir -p docs
    cp "$screenshot" docs/dashboard.png
    log "updated docs/dashboard.png"
fi
log "browser test passed (screenshot: ${screenshot#"$REPO_ROOT"/})"
