# shellcheck shell=bash
# Helpers shared by the scripts in this folder. Source it, do not run it:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It sets REPO_ROOT and RUN_DIR, puts cargo on PATH when rustup installed it
# in the usual place, and defines logging, bounded waits, apt installs and
# small HTTP/JSON helpers. It does not change shell options; callers use
# `set -euo pipefail` themselves.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$REPO_ROOT/run"
export REPO_ROOT RUN_DIR

# A shell started without a login profile (CI, cron) may lack rustup's PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
    export PATH
fi

_log_tag="$(basename "${0:-taskforge}" .sh)"

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$_log_tag" "$*"; }
warn() { printf '[%s %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$_log_tag" "$*" >&2; }
die() {
    printf '[%s %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$_log_tag" "$*" >&2
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# wait_until TIMEOUT_SECS DESCRIPTION CMD [ARGS...]
# Runs CMD once a second until it succeeds; fails after TIMEOUT_SECS with a
# message naming DESCRIPTION. CMD's output is discarded.
wait_until() {
    local timeout="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            warn "gave up after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 1
    done
}

# tcp_open HOST PORT: true when something accepts a TCP connection there.
tcp_open() {
    # shellcheck disable=SC2016 # expanded by the inner shell
    timeout 2 bash -c ': >"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# http_ok URL [CURL_ARGS...]: true when URL answers 2xx within 3 s.
http_ok() {
    local url="$1"
    shift
    curl -fsS -o /dev/null --max-time 3 "$@" "$url"
}

# apt_install PKG...: installs Debian packages, running `apt-get update` at
# most once per script run. Service start-up during the install is left to
# the package (our scripts start the daemons themselves and only after
# checking whether one already runs).
_apt_updated=""
apt_install() {
    is_root || die "need root to apt-get install $*; install them yourself or rerun as root"
    have apt-get || die "apt-get not found: install $* by hand"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "$_apt_updated" ]; then
        log "apt-get update"
        apt-get update -qq || die "apt-get update failed"
        _apt_updated=1
    fi
    log "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" ||
        die "apt-get install $* failed"
}

# ensure_tool CMD [PKG]: installs PKG (default CMD) when CMD is missing.
ensure_tool() {
    local cmd="$1" pkg="${2:-$1}"
    have "$cmd" || apt_install "$pkg"
    have "$cmd" || die "$cmd still missing after installing $pkg"
}

# json_get KEY < JSON: prints a top-level field of a JSON object read from
# stdin: strings and integers as they are, other values as JSON, nothing for
# null or absent. python3 keeps jq optional.
json_get() {
    python3 -c '
import json, sys
value = json.load(sys.stdin).get(sys.argv[1])
if value is None:
    value = ""
print(value if isinstance(value, str) else json.dumps(value))
' "$1"
}

# gen_token: 64 hex characters from the kernel's CSPRNG.
gen_token() {
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

# pid_alive PIDFILE NAME: true when the pid in PIDFILE runs a command whose
# command line mentions NAME (guards against a recycled pid).
pid_alive() {
    local pidfile="$1" name="$2" pid
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$name"
}

# stop_pidfile PIDFILE NAME [GRACE_SECS]: SIGTERM the process recorded in
# PIDFILE if it is still ours, wait up to GRACE_SECS (default 40), then
# SIGKILL. Removes the pid file.
stop_pidfile() {
    local pidfile="$1" name="$2" grace="${3:-40}" pid deadline
    if ! pid_alive "$pidfile" "$name"; then
        rm -f "$pidfile"
        return 0
    fi
    pid="$(cat "$pidfile")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            warn "$name (pid $pid) still running after ${grace}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$pidfile"
}
