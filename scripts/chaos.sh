#!/usr/bin/env bash
# Chaos: N tasks across 3 workers while workers are killed (SIGKILL) and
# stopped (SIGTERM), RabbitMQ is restarted (cleanly or killed, then booted on
# its own data) and the api is killed and started again on its port, at
# random moments drawn from a seed; then every task is checked through the
# api: exactly one terminal state, none lost, none stuck.
#
#   bash scripts/chaos.sh                          # 500 tasks, 30 faults, 100 s window
#   bash scripts/chaos.sh --tasks 100 --faults 8 --seed 42 --duration-secs 60
#   bash scripts/chaos.sh --cluster                # the failover run, 240 s window
#
# --cluster runs the scale-out topology instead, all private on free loopback
# ports: a 3-node RabbitMQ cluster (QUEUE_TYPE=quorum, AMQP_URL listing the
# 3 nodes), a Redis Cluster of 3 primaries + 3 replicas (REDIS_CLUSTER_URLS),
# HAProxy (deploy/haproxy.cfg.tmpl) in front of 2 api processes, the workers'
# API_URL being HAProxy. Its faults, in turn: SIGKILL of a RabbitMQ node
# (booted again: it rejoins), SIGKILL of a Redis primary (its replica is
# promoted; the old one comes back as a replica), SIGKILL of one api behind
# HAProxy (started again), worker SIGKILL and SIGTERM. Node faults take
# seconds each (a RabbitMQ boot, a Redis failover and resync), so the default
# window is 240 s there; it needs Debian's haproxy (installed when missing).
#
# Extra arguments go to target/release/chaos (`--help` lists them; later ones
# win). It runs on loopback with private servers on free ports (the shared
# servers are never touched); infra.sh is still run so the Debian packages
# are installed. Processes' logs go to run/chaos-logs/<time>/. The last line
# gives the figures, with the count of each kind of fault; the exit code is
# non-zero when a task was lost, stuck or finished twice.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

window=100 cluster=0
for arg in "$@"; do
    if [ "$arg" = --cluster ]; then
        window=240 cluster=1
    fi
done

log "infrastructure"
bash scripts/infra.sh
if [ "$cluster" = 1 ]; then
    have haproxy || apt_install haproxy
fi

have cargo || die "cargo not found: install Rust with rustup (https://rustup.rs)"
ensure_tool cc gcc # the native crate compiles C through the cc crate

log "cargo build --release -p api-service -p algo-service -p chaos"
cargo build --release -p api-service -p algo-service -p chaos

logs="$RUN_DIR/chaos-logs/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$logs"
log "chaos (logs in $logs)"
exec target/release/chaos --tasks 500 --workers 3 --faults 30 --duration-secs "$window" \
    --log-dir "$logs" "$@"
