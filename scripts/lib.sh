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
        # Offline (or a mirror down), the lists already here may still do.
        apt-get update -qq ||
            warn "apt-get update failed (no network to the Debian mirror?); trying with the package lists this machine has"
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

# ensure_c_toolchain: a C compiler that can link a program. `gcc` alone is
# not enough: it only recommends libc6-dev (crt1.o, libc.so), which
# --no-install-recommends leaves out, and then every Rust link fails.
_c_links() {
    local dir ok=1
    dir="$(mktemp -d)"
    printf 'int main(void) { return 0; }\n' >"$dir/t.c"
    cc -o "$dir/t" "$dir/t.c" >/dev/null 2>&1 && ok=0
    rm -rf "$dir"
    return "$ok"
}
ensure_c_toolchain() {
    if have cc && _c_links; then
        return 0
    fi
    apt_install gcc libc6-dev
    have cc && _c_links ||
        die "cc still cannot link a C program after installing gcc and libc6-dev; try apt-get install build-essential"
}

# ensure_procps: the kill, ps and pgrep programs (bash's kill builtin is not
# enough for the tests, which run /usr/bin/kill); minbase Debian and
# container images come without them.
ensure_procps() {
    if type -P kill >/dev/null && type -P ps >/dev/null && type -P pgrep >/dev/null; then
        return 0
    fi
    apt_install procps
}

# version_ge A B: true when dotted version A >= B (missing parts count as 0).
version_ge() {
    local i a b
    IFS=. read -ra a <<<"$1"
    IFS=. read -ra b <<<"$2"
    for ((i = 0; i < ${#a[@]} || i < ${#b[@]}; i++)); do
        if ((10#${a[i]:-0} > 10#${b[i]:-0})); then return 0; fi
        if ((10#${a[i]:-0} < 10#${b[i]:-0})); then return 1; fi
    done
    return 0
}

# workspace_rust_version: the rust-version of the workspace's Cargo.toml.
workspace_rust_version() {
    sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$REPO_ROOT/Cargo.toml" | head -n 1
}

# ensure_rust [rustfmt] [clippy]: cargo and a rustc at least the workspace's
# rust-version, plus the named components; otherwise stops with the fix.
# Rust is not installed from Debian: bookworm's rustc (1.63) is too old.
RUSTUP_HINT="install Rust with rustup (https://rustup.rs; on a fresh Debian first: apt-get install curl ca-certificates), with the components: rustup component add rustfmt clippy; then open a new shell or run: . \"\$HOME/.cargo/env\""
ensure_rust() {
    local need have_version rustc_path component
    need="$(workspace_rust_version)"
    have cargo && have rustc || die "cargo or rustc not found: $RUSTUP_HINT"
    rustc_path="$(command -v rustc)"
    have_version="$(rustc --version 2>/dev/null | sed -n 's/^rustc \([0-9][0-9.]*\).*/\1/p')"
    [ -n "$have_version" ] || die "could not run '$rustc_path --version': $RUSTUP_HINT"
    if [ -n "$need" ] && ! version_ge "$have_version" "$need"; then
        case "$rustc_path" in
            /usr/bin/*) die "rustc $have_version ($rustc_path, from Debian) is older than the workspace's rust-version $need: $RUSTUP_HINT; rustup's cargo must come first in PATH" ;;
            *) die "rustc $have_version ($rustc_path) is older than the workspace's rust-version $need: run 'rustup update stable' (or 'rustup default stable')" ;;
        esac
    fi
    for component in "$@"; do
        cargo "${component#rust}" --version >/dev/null 2>&1 ||
            die "cargo $component is missing: rustup component add $component"
    done
    log "rust: rustc $have_version (workspace needs >= ${need:-any})"
}

# ensure_python_venv: python3 with venv and ensurepip (Debian splits them
# into python3-venv).
ensure_python_venv() {
    if have python3 && python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        return 0
    fi
    apt_install python3 python3-venv
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 ||
        die "python3 still lacks venv/ensurepip after installing python3-venv"
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
