#!/usr/bin/env bash
# Takes this machine to a running Taskforge: a Rust toolchain checked (rustup,
# at least the workspace's rust-version) and a C toolchain installed from
# Debian if missing (gcc, libc6-dev), Redis and RabbitMQ (infra.sh),
# a release build, the api and two workers in the background, then a demo:
# a hello task followed to its end, a grayscale of scripts/demo/colours.png
# (the result written to run/demo-grayscale.png) and a pi estimate, both
# through taskctl. Rerunning restarts the api and workers with a
# fresh build; scripts/stop.sh stops them.
#
# Files in run/: callback_token (kept across runs), api.log, worker-N.log,
# *.pid, demo-grayscale.png. Environment passed through to the services (REDIS_URL, AMQP_URL,
# API_KEYS, RUST_LOG, ...) is honoured; API_BIND defaults to 127.0.0.1:8080.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

API_BIND="${API_BIND:-127.0.0.1:8080}"
API_PORT="${API_BIND##*:}"
API_HOST="${API_BIND%:*}"
case "$API_HOST" in 0.0.0.0 | "[::]" | "") API_HOST=127.0.0.1 ;; esac
API_URL="http://$API_HOST:$API_PORT"
WORKERS=(worker-1 worker-2)
WORKER_BINDS=(127.0.0.1:9091 127.0.0.1:9092)
WAIT_SECS="${RUN_WAIT_SECS:-60}"
DEMO_SECS="${RUN_DEMO_SECS:-120}"

# What the build needs, checked first so a missing piece stops us early.
ensure_rust
ensure_c_toolchain # the native crate compiles C through the cc crate

bash scripts/infra.sh

mkdir -p "$RUN_DIR"

# One callback token for the api and the workers, kept so reruns (and a
# worker started by hand) agree with the running api.
token_file="$RUN_DIR/callback_token"
if [ -z "${CALLBACK_TOKEN:-}" ]; then
    if [ -s "$token_file" ]; then
        CALLBACK_TOKEN="$(cat "$token_file")"
        log "using the callback token in $token_file"
    else
        (umask 077 && gen_token >"$token_file")
        CALLBACK_TOKEN="$(cat "$token_file")"
        log "generated a callback token into $token_file"
    fi
fi
export CALLBACK_TOKEN

log "cargo build --release --workspace"
cargo build --release --workspace

bash scripts/stop.sh

for port in "$API_PORT" "${WORKER_BINDS[@]##*:}"; do
    if tcp_open 127.0.0.1 "$port"; then
        die "port $port is taken by a program run.sh did not start; stop it or change API_BIND"
    fi
done

# start_bg NAME BINARY [VAR=VALUE...]: starts BINARY under nohup with the
# extra environment, logging to run/NAME.log (the previous one kept as
# NAME.log.prev), pid in run/NAME.pid.
start_bg() {
    local name="$1" bin="$2" logfile="$RUN_DIR/$1.log"
    shift 2
    [ -x "$bin" ] || die "$bin is missing after the build"
    if [ -e "$logfile" ]; then
        mv -f "$logfile" "$logfile.prev"
    fi
    nohup env "$@" "$bin" >"$logfile" 2>&1 </dev/null &
    echo "$!" >"$RUN_DIR/$name.pid"
    log "started $name (pid $!), log $logfile"
}

# need_up DESCRIPTION URL NAME: waits for URL to answer 2xx, else shows the
# end of NAME's log and fails.
need_up() {
    local what="$1" url="$2" name="$3"
    if ! wait_until "$WAIT_SECS" "$what ($url)" http_ok "$url"; then
        warn "last lines of $RUN_DIR/$name.log:"
        tail -n 30 "$RUN_DIR/$name.log" >&2 || true
        die "$what did not come up; see $RUN_DIR/$name.log"
    fi
    log "$what is up ($url)"
}

start_bg api target/release/api-service API_BIND="$API_BIND"
for i in "${!WORKERS[@]}"; do
    start_bg "${WORKERS[$i]}" target/release/algo-service \
        WORKER_NAME="${WORKERS[$i]}" METRICS_BIND="${WORKER_BINDS[$i]}" API_URL="$API_URL"
done

need_up "api" "$API_URL/readyz" api
for i in "${!WORKERS[@]}"; do
    need_up "${WORKERS[$i]}" "http://${WORKER_BINDS[$i]}/healthz" "${WORKERS[$i]}"
done

cat <<EOF

  Taskforge is running.
    API:            $API_URL  (OpenAPI: $API_URL/openapi.json)
    Dashboard:      $API_URL/
    RabbitMQ UI:    http://127.0.0.1:15672  (guest / guest)
    Worker metrics: http://${WORKER_BINDS[0]}/metrics, http://${WORKER_BINDS[1]}/metrics
    Logs:           $RUN_DIR/api.log, $RUN_DIR/worker-1.log, $RUN_DIR/worker-2.log
    Stop:           scripts/stop.sh

EOF

# Demo: a short hello task followed with curl, then a grayscale of the
# bundled image and a pi estimate with taskctl.
auth=()
if [ -n "${API_KEYS:-}" ]; then
    auth=(-H "authorization: Bearer ${API_KEYS%%,*}")
fi
log "demo: POST $API_URL/tasks {\"stages\":3,\"stage_ms\":1000}"
created="$(curl -fsS -X POST -H 'content-type: application/json' "${auth[@]}" \
    -d '{"stages":3,"stage_ms":1000}' "$API_URL/tasks")" ||
    die "demo: creating a task failed"
task_id="$(json_get task_id <<<"$created")"
[ -n "$task_id" ] || die "demo: no task_id in the answer: $created"
log "demo: task $task_id"

deadline=$((SECONDS + DEMO_SECS))
while :; do
    task="$(curl -fsS "${auth[@]}" "$API_URL/tasks/$task_id")" ||
        die "demo: GET /tasks/$task_id failed"
    status="$(json_get status <<<"$task")"
    progress="$(json_get progress <<<"$task")"
    log "demo: $status ${progress:-0}%"
    case "$status" in
        COMPLETED)
            log "demo: result $(json_get result <<<"$task")"
            break
            ;;
        FAILED | TIMED_OUT | CANCELLED)
            die "demo: task ended $status: $(json_get error <<<"$task")"
            ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "demo: task not finished after ${DEMO_SECS}s"
    sleep 1
done

# taskctl, as a person would use it; API_URL and API_KEY tell it where.
taskctl() {
    local key="${API_KEYS:-}"
    API_URL="$API_URL" API_KEY="${key%%,*}" timeout "$DEMO_SECS" target/release/taskctl "$@"
}

# demo_submit ARGS...: `taskctl submit ARGS... --wait`, its progress lines
# logged (on stderr); prints the task id. Fails unless the task COMPLETED.
demo_submit() {
    local out line
    out="$(taskctl submit "$@" --wait)" || {
        printf '%s\n' "$out" >&2
        return 1
    }
    # The first line is the id alone; the rest are the task's progress.
    while IFS= read -r line; do log "demo:   $line" >&2; done < <(tail -n +2 <<<"$out")
    head -n 1 <<<"$out"
}

demo_image="scripts/demo/colours.png"
demo_out="$RUN_DIR/demo-grayscale.png"
log "demo: taskctl submit --algorithm grayscale --input-file $demo_image --wait"
gray_id="$(demo_submit --algorithm grayscale --input-file "$demo_image")" ||
    die "demo: the grayscale task did not complete"
taskctl get "$gray_id" --output "$demo_out" >/dev/null ||
    die "demo: downloading the grayscale result failed"
log "demo: grayscale $gray_id COMPLETED: $demo_image in grey is $demo_out"

log "demo: taskctl submit --algorithm pi --input '{\"samples\": 10000000, \"seed\": 42}' --wait"
pi_id="$(demo_submit --algorithm pi --input '{"samples": 10000000, "seed": 42}')" ||
    die "demo: the pi task did not complete"
pi_result="$(taskctl get "$pi_id" --json)" || die "demo: GET /tasks/$pi_id failed"
log "demo: pi $pi_id COMPLETED: pi ≈ $(json_get result <<<"$pi_result" | json_get pi) from 10^7 samples"
