#!/usr/bin/env bash
# Taskforge at scale on one box, all on loopback:
#
#   * a 3-node RabbitMQ cluster (rabbit-1..3@localhost, one Erlang cookie,
#     management on every node), with rabbitmq/definitions.quorum.json
#     imported (quorum task queues, one per priority lane);
#   * a 6-node Redis Cluster (3 primaries, 3 replicas, AOF appendfsync
#     everysec);
#   * HAProxy (deploy/haproxy.cfg.tmpl) round-robin in front of 2 api
#     processes, health-checked on /healthz;
#   * 3 workers with QUEUE_TYPE=quorum, AMQP_URL listing the three nodes,
#     REDIS_CLUSTER_URLS listing the Redis seeds, API_URL = HAProxy.
#
# `start` waits until every part answers (both clusters formed, HAProxy's
# apis healthy, the workers' /healthz) and prints every address; about a
# minute on 2 cores. The failover chaos run (`scripts/chaos.sh --cluster`)
# starts a private copy of this topology on free ports instead.
#
# Usage: scripts/cluster.sh start|stop|status
#
# Everything lives under run/cluster/ (data, logs, pid files); `stop` stops
# exactly the processes whose pid files are there, and keeps the data, so a
# later `start` brings back the same clusters. `rm -rf run/cluster` after a
# stop starts afresh. The shared services (5672/15672/6379) are never touched.
#
# Binaries come from target/release (built with `cargo build --release` when
# missing); CLUSTER_BIN_DIR=target/debug uses a debug build instead.
# Ports: CLUSTER_AMQP_BASE (5681: AMQP 5681-5683, management 15681-15683,
# Erlang distribution 25681-25683), CLUSTER_REDIS_BASE (7001: 7001-7006, bus
# +10000), CLUSTER_HTTP_PORT (8090, HAProxy; stats on 8099), api processes on
# 8091-8092, worker metrics on 9191-9193.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

C_DIR="$RUN_DIR/cluster"
PID_DIR="$C_DIR/pids"
LOG_DIR="$C_DIR/logs"
BIN_DIR="${CLUSTER_BIN_DIR:-target/release}"
AMQP_BASE="${CLUSTER_AMQP_BASE:-5681}"
REDIS_BASE="${CLUSTER_REDIS_BASE:-7001}"
HTTP_PORT="${CLUSTER_HTTP_PORT:-8090}"
STATS_PORT=$((HTTP_PORT + 9))
WAIT_SECS="${CLUSTER_WAIT_SECS:-120}"
RABBITS=(1 2 3)
REDIS_NODES=6
APIS=(1 2)
WORKERS=(1 2 3)

amqp_port() { echo $((AMQP_BASE + $1 - 1)); }
mgmt_port() { echo $((AMQP_BASE + 10000 + $1 - 1)); }
dist_port() { echo $((AMQP_BASE + 20000 + $1 - 1)); }
redis_port() { echo $((REDIS_BASE + $1 - 1)); }
api_port() { echo $((HTTP_PORT + $1)); }
worker_port() { echo $((9190 + $1)); }
node_name() { echo "rabbit-$1@localhost"; }

amqp_urls() {
    local n urls=()
    for n in "${RABBITS[@]}"; do urls+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f"); done
    (IFS=,; echo "${urls[*]}")
}
redis_seeds() {
    local i urls=()
    for ((i = 1; i <= REDIS_NODES; i++)); do urls+=("redis://127.0.0.1:$(redis_port "$i")"); done
    (IFS=,; echo "${urls[*]}")
}

# rabbit_env N: the environment a node (and rabbitmqctl talking to it) needs.
# HOME holds the one Erlang cookie every node and rabbitmqctl share.
rabbit_env() {
    local n="$1" dir="$C_DIR/rabbit-$1"
    echo HOME="$C_DIR/rabbit-home" \
        RABBITMQ_NODENAME="$(node_name "$n")" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq" \
        RABBITMQ_CONF_ENV_FILE="$dir/env.conf"
}
ctl() {
    local n="$1"
    shift
    # shellcheck disable=SC2046 # rabbit_env prints VAR=value words
    # (the /usr/sbin wrapper would switch to the rabbitmq user and its cookie)
    env $(rabbit_env "$n") timeout 60 /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$(node_name "$n")" "$@"
}

# start_bg NAME CMD...: runs CMD in a session of its own, output to
# logs/NAME.log, pid in pids/NAME.pid.
start_bg() {
    local name="$1"
    shift
    setsid nohup "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
    echo "$!" >"$PID_DIR/$name.pid"
}

port_free_or_die() {
    if tcp_open 127.0.0.1 "$1"; then
        die "port $1 is taken by a program cluster.sh did not start (see the port variables in the header)"
    fi
}

running_any() {
    local f
    for f in "$PID_DIR"/*.pid; do
        [ -e "$f" ] || continue
        pid_alive "$f" "" && return 0
    done
    return 1
}

start_rabbits() {
    mkdir -p "$C_DIR/rabbit-home"
    if [ ! -s "$C_DIR/rabbit-home/.erlang.cookie" ]; then
        (umask 077 && gen_token >"$C_DIR/rabbit-home/.erlang.cookie")
        chmod 400 "$C_DIR/rabbit-home/.erlang.cookie"
    fi
    local n dir
    for n in "${RABBITS[@]}"; do
        dir="$C_DIR/rabbit-$n"
        mkdir -p "$dir/mnesia" "$dir/log"
        echo "[rabbitmq_management]." >"$dir/enabled_plugins"
        : >"$dir/env.conf"
        cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$n")
loopback_users.guest = true
$(grep -E '^consumer_timeout' rabbitmq/rabbitmq.conf || true)
EOF
        # shellcheck disable=SC2046
        start_bg "rabbit-$n" env $(rabbit_env "$n") \
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
            /usr/lib/rabbitmq/bin/rabbitmq-server
        log "started $(node_name "$n") (pid $(cat "$PID_DIR/rabbit-$n.pid")), AMQP $(amqp_port "$n")"
    done
    for n in "${RABBITS[@]}"; do
        wait_until "$WAIT_SECS" "$(node_name "$n") to boot" ctl "$n" await_startup ||
            die "$(node_name "$n") did not boot; see $LOG_DIR/rabbit-$n.log and $C_DIR/rabbit-$n/log"
    done
    for n in "${RABBITS[@]:1}"; do
        if ctl 1 cluster_status --formatter json | grep -q "\"$(node_name "$n")\""; then
            continue
        fi
        log "joining $(node_name "$n") to $(node_name 1)"
        ctl "$n" stop_app
        ctl "$n" join_cluster "$(node_name 1)"
        ctl "$n" start_app
    done
    wait_until 60 "management API on node 1" http_ok "http://127.0.0.1:$(mgmt_port 1)/api/overview" -u guest:guest ||
        die "management API of $(node_name 1) not answering"
    curl -fsS -u guest:guest -H 'content-type: application/json' -X POST \
        --data-binary @rabbitmq/definitions.quorum.json \
        "http://127.0.0.1:$(mgmt_port 1)/api/definitions" >/dev/null ||
        die "importing rabbitmq/definitions.quorum.json failed"
    log "imported rabbitmq/definitions.quorum.json (quorum task queues)"
}

start_redis() {
    local i port dir fresh=""
    for ((i = 1; i <= REDIS_NODES; i++)); do
        port="$(redis_port "$i")"
        dir="$C_DIR/redis-$port"
        mkdir -p "$dir"
        [ -s "$dir/nodes.conf" ] || fresh=1
        start_bg "redis-$port" redis-server --port "$port" --bind 127.0.0.1 \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
            --appendonly yes --appendfsync everysec --save "" --daemonize no --dir "$dir"
    done
    for ((i = 1; i <= REDIS_NODES; i++)); do
        port="$(redis_port "$i")"
        wait_until 20 "redis $port" redis-cli -p "$port" ping || die "redis on $port did not start; see $LOG_DIR/redis-$port.log"
    done
    if [ -n "$fresh" ]; then
        local addrs=()
        for ((i = 1; i <= REDIS_NODES; i++)); do addrs+=("127.0.0.1:$(redis_port "$i")"); done
        log "creating the Redis Cluster (3 primaries, 1 replica each)"
        redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$LOG_DIR/redis-create.log" 2>&1 ||
            die "redis-cli --cluster create failed; see $LOG_DIR/redis-create.log"
    fi
    for ((i = 1; i <= REDIS_NODES; i++)); do
        wait_until 60 "cluster_state:ok on $(redis_port "$i")" redis_cluster_ok "$(redis_port "$i")" ||
            die "the Redis Cluster is not ok"
    done
    log "Redis Cluster ok on ports $(redis_port 1)-$(redis_port "$REDIS_NODES")"
}
redis_cluster_ok() { redis-cli -p "$1" cluster info | grep -q '^cluster_state:ok'; }

start_apps() {
    local token_file="$C_DIR/callback_token"
    [ -s "$token_file" ] || (umask 077 && gen_token >"$token_file")
    local token amqp seeds
    token="$(cat "$token_file")"
    amqp="$(amqp_urls)"
    seeds="$(redis_seeds)"
    if [ ! -x "$BIN_DIR/api-service" ] || [ ! -x "$BIN_DIR/algo-service" ]; then
        [ "$BIN_DIR" = target/release ] || die "$BIN_DIR/api-service or algo-service missing"
        log "cargo build --release -p api-service -p algo-service"
        cargo build --release -p api-service -p algo-service
    fi
    local a servers=""
    for a in "${APIS[@]}"; do
        start_bg "api-$a" env API_BIND="127.0.0.1:$(api_port "$a")" CALLBACK_TOKEN="$token" \
            AMQP_URL="$amqp" REDIS_CLUSTER_URLS="$seeds" REDIS_URL="redis://127.0.0.1:$(redis_port 1)/0" \
            QUEUE_TYPE=quorum "$BIN_DIR/api-service"
        servers+="    server api-$a 127.0.0.1:$(api_port "$a") check"$'\n'
    done
    sed -e "s|@FRONT_BIND@|127.0.0.1:$HTTP_PORT|" -e "s|@STATS_BIND@|127.0.0.1:$STATS_PORT|" \
        deploy/haproxy.cfg.tmpl | API_SERVERS="$servers" python3 -c '
import os, sys
sys.stdout.write(sys.stdin.read().replace("@API_SERVERS@\n", os.environ["API_SERVERS"]))' \
        >"$C_DIR/haproxy.cfg"
    haproxy -c -q -f "$C_DIR/haproxy.cfg" || die "haproxy rejects $C_DIR/haproxy.cfg"
    start_bg haproxy haproxy -db -f "$C_DIR/haproxy.cfg"
    local w
    for w in "${WORKERS[@]}"; do
        start_bg "worker-$w" env WORKER_NAME="cluster-worker-$w" METRICS_BIND="127.0.0.1:$(worker_port "$w")" \
            API_URL="http://127.0.0.1:$HTTP_PORT" CALLBACK_TOKEN="$token" AMQP_URL="$amqp" \
            REDIS_CLUSTER_URLS="$seeds" QUEUE_TYPE=quorum "$BIN_DIR/algo-service"
    done
    wait_until 20 "HAProxy on $HTTP_PORT" tcp_open 127.0.0.1 "$HTTP_PORT" || die "HAProxy did not start; see $LOG_DIR/haproxy.log"
}

cmd_start() {
    have redis-server || apt_install redis-server
    have rabbitmq-server || apt_install rabbitmq-server
    have haproxy || apt_install haproxy
    mkdir -p "$PID_DIR" "$LOG_DIR"
    running_any && die "something from a previous start still runs: scripts/cluster.sh stop first"
    local n i a w
    for n in "${RABBITS[@]}"; do
        port_free_or_die "$(amqp_port "$n")"
        port_free_or_die "$(mgmt_port "$n")"
        port_free_or_die "$(dist_port "$n")"
    done
    for ((i = 1; i <= REDIS_NODES; i++)); do
        port_free_or_die "$(redis_port "$i")"
        port_free_or_die $(($(redis_port "$i") + 10000))
    done
    port_free_or_die "$HTTP_PORT"
    port_free_or_die "$STATS_PORT"
    for a in "${APIS[@]}"; do port_free_or_die "$(api_port "$a")"; done
    for w in "${WORKERS[@]}"; do port_free_or_die "$(worker_port "$w")"; done
    start_redis
    start_rabbits
    start_apps
    cmd_status
}

cmd_status() {
    local n i a w state
    echo
    echo "  RabbitMQ cluster (guest / guest; QUEUE_TYPE=quorum):"
    for n in "${RABBITS[@]}"; do
        state=down
        pid_alive "$PID_DIR/rabbit-$n.pid" "" && state=up
        echo "    $(node_name "$n") [$state]  amqp://127.0.0.1:$(amqp_port "$n")  UI http://127.0.0.1:$(mgmt_port "$n")/"
    done
    if pid_alive "$PID_DIR/rabbit-1.pid" ""; then
        echo "    running nodes: $(ctl 1 cluster_status --formatter json 2>/dev/null |
            python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["running_nodes"]))' 2>/dev/null || echo '?')"
    fi
    echo "  Redis Cluster (AOF everysec):"
    for ((i = 1; i <= REDIS_NODES; i++)); do
        local port role="down"
        port="$(redis_port "$i")"
        if pid_alive "$PID_DIR/redis-$port.pid" ""; then
            role="$(redis-cli -p "$port" role 2>/dev/null | head -1) $(redis-cli -p "$port" cluster info 2>/dev/null | grep '^cluster_state' | tr -d '\r')"
        fi
        echo "    redis://127.0.0.1:$port [$role]"
    done
    echo "  HAProxy: http://127.0.0.1:$HTTP_PORT  (stats http://127.0.0.1:$STATS_PORT/)"
    for a in "${APIS[@]}"; do
        state=down
        pid_alive "$PID_DIR/api-$a.pid" "" && state=running
        http_ok "http://127.0.0.1:$(api_port "$a")/healthz" 2>/dev/null && state=healthy
        echo "    api-$a http://127.0.0.1:$(api_port "$a") [$state]"
    done
    echo "  Workers (API_URL = HAProxy):"
    for w in "${WORKERS[@]}"; do
        state=down
        pid_alive "$PID_DIR/worker-$w.pid" "" && state=running
        http_ok "http://127.0.0.1:$(worker_port "$w")/healthz" 2>/dev/null && state=healthy
        echo "    cluster-worker-$w metrics http://127.0.0.1:$(worker_port "$w")/metrics [$state]"
    done
    echo "  AMQP_URL=$(amqp_urls)"
    echo "  REDIS_CLUSTER_URLS=$(redis_seeds)"
    echo "  Data, logs, pids: $C_DIR"
    echo
}

cmd_stop() {
    local n a w
    for w in "${WORKERS[@]}"; do stop_pidfile "$PID_DIR/worker-$w.pid" algo-service 20; done
    stop_pidfile "$PID_DIR/haproxy.pid" haproxy 20
    for a in "${APIS[@]}"; do stop_pidfile "$PID_DIR/api-$a.pid" api-service 20; done
    for n in "${RABBITS[@]}"; do
        if pid_alive "$PID_DIR/rabbit-$n.pid" ""; then
            log "stopping $(node_name "$n")"
            ctl "$n" stop >/dev/null 2>&1 || warn "rabbitmqctl stop $(node_name "$n") failed; signalling"
            stop_pidfile "$PID_DIR/rabbit-$n.pid" rabbit 30
        fi
        rm -f "$PID_DIR/rabbit-$n.pid"
    done
    local f
    for f in "$PID_DIR"/redis-*.pid; do
        [ -e "$f" ] || continue
        stop_pidfile "$f" redis-server 20
    done
    log "stopped; data kept in $C_DIR"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) die "usage: scripts/cluster.sh start|stop|status" ;;
esac
