#!/usr/bin/env bash
# Makes sure Redis and RabbitMQ run on loopback and are set up for Taskforge:
#
#   * Redis answers PING on 127.0.0.1:$REDIS_PORT. A running one is reused as
#     it is (never reconfigured; its persistence is reported). Otherwise it is
#     installed from Debian's packages if missing and started with AOF
#     (appendonly yes, appendfsync everysec); a server the package itself
#     started during this run (systemd) is switched to AOF the same way.
#   * RabbitMQ answers on 127.0.0.1:5672 (reused, or installed and started).
#   * The management plugin runs and http://127.0.0.1:15672/api answers to
#     guest/guest (the tests create a vhost per test through it).
#   * consumer_timeout is raised on the running broker (no restart) and in
#     /etc/rabbitmq/rabbitmq.conf for later restarts (see rabbitmq/rabbitmq.conf).
#   * rabbitmq/definitions.json is imported into vhost "/".
#
# Idempotent: run it as often as you like. It never stops a running server.
# systemd is not assumed; daemons are started directly.
#
# Environment: REDIS_PORT (6379), INFRA_TIMEOUT (60 s per wait),
# RABBITMQ_MGMT_URL (http://127.0.0.1:15672), RABBITMQ_MGMT_CREDS (guest:guest).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REDIS_PORT="${REDIS_PORT:-6379}"
AMQP_PORT=5672
INFRA_TIMEOUT="${INFRA_TIMEOUT:-60}"
MGMT_URL="${RABBITMQ_MGMT_URL:-http://127.0.0.1:15672}"
MGMT_CREDS="${RABBITMQ_MGMT_CREDS:-guest:guest}"
# Read from rabbitmq/rabbitmq.conf (see the reasoning there), so the file
# and the value applied to a running broker cannot drift apart.
CONSUMER_TIMEOUT_MS="$(sed -n 's/^consumer_timeout *= *\([0-9][0-9]*\) *$/\1/p' "$REPO_ROOT/rabbitmq/rabbitmq.conf")"
[ -n "$CONSUMER_TIMEOUT_MS" ] || die "no consumer_timeout in rabbitmq/rabbitmq.conf"
RABBITMQ_CONF=/etc/rabbitmq/rabbitmq.conf
BLOCK_BEGIN="# >>> taskforge: managed by scripts/infra.sh from rabbitmq/rabbitmq.conf; edits inside are overwritten >>>"
BLOCK_END="# <<< taskforge <<<"
conf_installed=""

# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------

redis_ping() {
    if have redis-cli; then
        [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
    else
        # RESP by hand, so a running server needs no redis-cli.
        # shellcheck disable=SC2016 # expanded by the inner shell
        timeout 3 bash -c '
            exec 3<>"/dev/tcp/127.0.0.1/$1"
            printf "PING\r\n" >&3
            IFS= read -r line <&3
            [[ $line == "+PONG"* ]]
        ' _ "$REDIS_PORT" 2>/dev/null
    fi
}

# redis_cli ARGS...: redis-cli against 127.0.0.1:$REDIS_PORT, bounded.
redis_cli() { timeout 10 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# Says what a reused server keeps on disk (read only: CONFIG GET), so nobody
# mistakes it for the AOF a server started by this script has.
report_redis_persistence() {
    local aof save
    if ! have redis-cli; then
        log "redis: (no redis-cli to read its persistence settings)"
        return 0
    fi
    aof="$(redis_cli config get appendonly 2>/dev/null | sed -n 2p)" || aof=""
    save="$(redis_cli config get save 2>/dev/null | sed -n 2p)" || save=""
    if [ -z "$aof" ]; then
        log "redis: could not read its persistence settings (CONFIG GET refused); left as it is"
    elif [ "$aof" = "yes" ]; then
        log "redis: it runs with AOF (appendonly yes); left as it is"
    else
        warn "redis: this server runs without AOF (appendonly $aof, RDB save '${save}'); infra.sh does not reconfigure a Redis it did not start, so tasks may be lost when it restarts. For AOF: redis-cli config set appendonly yes && redis-cli config set appendfsync everysec && redis-cli config rewrite"
    fi
}

# A server the Debian package started during this run (systemd does that at
# install): the scripts installed it, so it gets the same AOF settings as one
# they start, at run time and in its config file (CONFIG REWRITE).
configure_package_redis() {
    log "redis: the package started a server on 127.0.0.1:$REDIS_PORT; switching it to AOF (appendfsync everysec)"
    redis_cli config set appendonly yes >/dev/null &&
        redis_cli config set appendfsync everysec >/dev/null ||
        die "redis: could not switch the package's server to AOF (redis-cli config set appendonly yes)"
    if redis_cli config rewrite >/dev/null 2>&1; then
        log "redis: AOF on; saved into its config file (CONFIG REWRITE), so it stays on after a restart"
    else
        warn "redis: AOF is on, but CONFIG REWRITE failed: set 'appendonly yes' and 'appendfsync everysec' in /etc/redis/redis.conf so it stays on after a restart"
    fi
}

ensure_redis() {
    if redis_ping; then
        log "redis: already running on 127.0.0.1:$REDIS_PORT (reusing it)"
        report_redis_persistence
        return 0
    fi
    if tcp_open 127.0.0.1 "$REDIS_PORT"; then
        die "redis: something listens on 127.0.0.1:$REDIS_PORT but does not answer PING with PONG (a password? another program?); free the port or fix that server"
    fi
    if ! have redis-server; then
        apt_install redis-server
        # On a systemd machine the package starts a server of its own.
        if redis_ping; then
            configure_package_redis
            return 0
        fi
    fi
    ensure_tool redis-cli redis-tools

    local dir logfile
    if is_root; then
        dir=/var/lib/redis
        logfile=/var/log/redis/taskforge.log
    else
        dir="$RUN_DIR/redis"
        logfile="$RUN_DIR/redis.log"
    fi
    mkdir -p "$dir" "$(dirname "$logfile")"
    # Redis is the system of record: AOF, fsync once a second, no RDB snapshots.
    log "redis: starting redis-server on 127.0.0.1:$REDIS_PORT (AOF, appendfsync everysec, in $dir; log $logfile)"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
        --appendonly yes --appendfsync everysec --save "" \
        --dir "$dir" --logfile "$logfile" ||
        die "redis: redis-server failed to start; see $logfile"
    wait_until "$INFRA_TIMEOUT" "redis on 127.0.0.1:$REDIS_PORT" redis_ping ||
        die "redis: no PONG from 127.0.0.1:$REDIS_PORT after ${INFRA_TIMEOUT}s; see $logfile"
    log "redis: up on 127.0.0.1:$REDIS_PORT"
}

# --------------------------------------------------------------------------
# RabbitMQ
# --------------------------------------------------------------------------

ctl() { timeout 30 rabbitmqctl "$@"; }

broker_ctl_ok() {
    have rabbitmqctl && ctl -q status >/dev/null 2>&1
}

mgmt() { # mgmt METHOD PATH [CURL_ARGS...]
    local method="$1" path="$2"
    shift 2
    curl -sS --max-time 10 -u "$MGMT_CREDS" -X "$method" "$@" "$MGMT_URL/api$path"
}

mgmt_ok() { http_ok "$MGMT_URL/api/overview" -u "$MGMT_CREDS"; }

start_rabbitmq() {
    if ! have rabbitmq-server; then
        apt_install rabbitmq-server
        if broker_ctl_ok; then
            log "rabbitmq: the package started a broker (reusing it)"
            return 0
        fi
    fi
    is_root || die "rabbitmq: need root to start rabbitmq-server (it runs as the rabbitmq user)"
    # Before the boot, so the new broker starts with our consumer_timeout.
    install_rabbitmq_conf
    log "rabbitmq: starting rabbitmq-server -detached (AMQP on 127.0.0.1:$AMQP_PORT)"
    # RABBITMQ_NODE_IP_ADDRESS keeps AMQP on loopback when no config file
    # names a listener; a listener in /etc/rabbitmq/rabbitmq.conf wins.
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 rabbitmq-server -detached ||
        die "rabbitmq: rabbitmq-server -detached failed; see /var/log/rabbitmq/"
    local deadline=$((SECONDS + INFRA_TIMEOUT))
    until ctl -q await_startup --timeout 10 >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] ||
            die "rabbitmq: broker not up after ${INFRA_TIMEOUT}s; see /var/log/rabbitmq/"
        sleep 1
    done
    log "rabbitmq: broker started"
}

# Writes rabbitmq/rabbitmq.conf into /etc/rabbitmq/rabbitmq.conf as a marked
# block, for the broker's next restart: creates the file if there is none,
# refreshes our block if it is there, appends it to a foreign file otherwise
# (after a one-time backup). Lines outside the block are never touched.
install_rabbitmq_conf() {
    if ! is_root; then
        warn "rabbitmq: not root, leaving $RABBITMQ_CONF alone; consumer_timeout will reset on restart"
        return 0
    fi
    local action
    action="$(python3 "$REPO_ROOT/scripts/infra_helper.py" install-conf \
        "$RABBITMQ_CONF" "$REPO_ROOT/rabbitmq/rabbitmq.conf" "$BLOCK_BEGIN" "$BLOCK_END")" || die "rabbitmq: could not write $RABBITMQ_CONF"
    log "rabbitmq: $action $RABBITMQ_CONF (read when the broker boots)"
    conf_installed=1
}

enable_management() {
    # If no config names the management listener yet, keep it on loopback.
    # `persistent` makes the value survive the plugin's application load.
    local listener
    listener="$(ctl -q eval 'case application:get_env(rabbitmq_management, tcp_config) of undefined -> ok = application:set_env(rabbitmq_management, tcp_config, [{ip, "127.0.0.1"}, {port, 15672}], [{persistent, true}]), loopback; {ok, _} -> configured end.')" || die "rabbitmq: rabbitmqctl eval failed"
    log "rabbitmq: management listener: $listener; enabling rabbitmq_management"
    timeout 120 rabbitmq-plugins -q enable rabbitmq_management >/dev/null ||
        die "rabbitmq: rabbitmq-plugins enable rabbitmq_management failed"
}

apply_consumer_timeout() {
    ctl -q eval "application:set_env(rabbit, consumer_timeout, $CONSUMER_TIMEOUT_MS)." >/dev/null ||
        die "rabbitmq: could not set consumer_timeout on the running broker"
    local got
    got="$(ctl -q eval 'application:get_env(rabbit, consumer_timeout).')" || got="?"
    [ "$got" = "{ok,$CONSUMER_TIMEOUT_MS}" ] ||
        die "rabbitmq: consumer_timeout reads back as $got, expected {ok,$CONSUMER_TIMEOUT_MS}"
    # rabbit_channel reads it when a channel opens: channels opened from now on get it.
    log "rabbitmq: consumer_timeout = $CONSUMER_TIMEOUT_MS ms on the running broker (for channels opened from now on)"
}

import_definitions() {
    local defs="$REPO_ROOT/rabbitmq/definitions.json" out code
    out="$(mktemp)"
    code="$(mgmt POST /definitions -H 'content-type: application/json' \
        --data-binary "@$defs" -o "$out" -w '%{http_code}')" || code="000"
    case "$code" in
        2??) log "rabbitmq: imported rabbitmq/definitions.json into vhost /" ;;
        *)
            warn "management API answered $code: $(cat "$out")"
            rm -f "$out"
            die "rabbitmq: importing rabbitmq/definitions.json into vhost / failed"
            ;;
    esac
    rm -f "$out"
    verify_queue_arguments
}

# The import leaves an existing queue as it is, even when its arguments
# differ, and then the services' own declare fails with PRECONDITION_FAILED.
# Catch that here with the fix.
verify_queue_arguments() {
    local defs="$REPO_ROOT/rabbitmq/definitions.json" live problems
    live="$(mgmt GET '/queues/%2F?columns=name,arguments' -f)" ||
        die "rabbitmq: could not list the queues of vhost /"
    problems="$(python3 "$REPO_ROOT/scripts/infra_helper.py" check-queues "$defs" "$live" | paste -sd ';' -)" || die "rabbitmq: could not compare queue arguments"
    if [ -n "$problems" ]; then
        die "rabbitmq: vhost / does not match rabbitmq/definitions.json: $problems. Delete the queue (rabbitmqctl delete_queue NAME; its messages are lost) and rerun"
    fi
    log "rabbitmq: queues in vhost / match rabbitmq/definitions.json"
}

ensure_rabbitmq() {
    if broker_ctl_ok; then
        log "rabbitmq: broker already running (reusing it)"
    elif tcp_open 127.0.0.1 "$AMQP_PORT"; then
        # A broker that rabbitmqctl cannot reach (a container, another
        # node name): configure what the HTTP API allows and say what is left.
        warn "rabbitmq: 127.0.0.1:$AMQP_PORT answers but rabbitmqctl cannot reach that broker"
        mgmt_ok || die "rabbitmq: and $MGMT_URL does not answer to $MGMT_CREDS either; enable rabbitmq_management on that broker"
        warn "rabbitmq: cannot raise consumer_timeout there; set consumer_timeout = $CONSUMER_TIMEOUT_MS in its config (long tasks would be requeued after 30 min)"
        import_definitions
        return 0
    else
        start_rabbitmq
    fi

    [ -n "$conf_installed" ] || install_rabbitmq_conf
    if mgmt_ok; then
        # Already on (a second run, or the scripts' own broker): no CLI
        # round trip. RabbitMQ 3.10's management stats can crash for a while
        # when a CLI connection meets its 5 s sample (rabbit_net:dist_info
        # case_clause), failing /api/overview longer than the wait below.
        log "rabbitmq: management API already up at $MGMT_URL"
    else
        enable_management
        wait_until "$INFRA_TIMEOUT" "$MGMT_URL/api/overview" mgmt_ok ||
            die "rabbitmq: management API $MGMT_URL does not answer to $MGMT_CREDS after ${INFRA_TIMEOUT}s"
        log "rabbitmq: management API up at $MGMT_URL"
    fi
    apply_consumer_timeout
    import_definitions
}

main() {
    ensure_tool curl
    ensure_tool python3
    ensure_redis
    ensure_rabbitmq
    log "ready: redis 127.0.0.1:$REDIS_PORT, amqp 127.0.0.1:$AMQP_PORT, management $MGMT_URL ($MGMT_CREDS)"
}

# Sourcing the file (for tests of single steps) defines the functions only.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
