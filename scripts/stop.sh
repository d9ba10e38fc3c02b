#!/usr/bin/env bash
# Stops what scripts/run.sh started (the pid files in run/): the workers first,
# so they can finish or requeue in-flight tasks while the api still takes their
# callbacks, then the api. Redis and RabbitMQ keep running.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# A worker gets SHUTDOWN_GRACE_SECS (default 30) to finish its tasks.
grace=$(( ${SHUTDOWN_GRACE_SECS:-30} + 10 ))

stopped=0
pids=()
for pidfile in "$RUN_DIR"/worker-*.pid; do
    [ -e "$pidfile" ] || continue
    stop_pidfile "$pidfile" algo-service "$grace" &
    pids+=("$!")
    stopped=1
done
for pid in "${pids[@]}"; do
    wait "$pid"
done
if [ -e "$RUN_DIR/api.pid" ]; then
    stop_pidfile "$RUN_DIR/api.pid" api-service 40
    stopped=1
fi

if [ "$stopped" -eq 1 ]; then
    log "stopped"
else
    log "nothing to stop (no pid files in $RUN_DIR)"
fi
