#!/usr/bin/env bash
# The README's two commands on a fresh Debian 12, as a new user would run
# them: debootstraps a minbase bookworm under DIR, and runs
# `bash scripts/run.sh` then `bash scripts/test.sh` inside it, in a chroot
# with its own mount, network, PID and UTS namespaces (unshare). The host's
# Redis, RabbitMQ and every other service stay out of sight: the chroot's
# network has nothing but its own loopback, so the scripts must install and
# start their own.
#
#   sudo bash scripts/fresh-check.sh [DIR]     # DIR: /var/tmp/taskforge-fresh
#
# Offline inside, so it needs no network but the host's, before the run:
#   * the Debian packages the scripts may install are downloaded into the
#     chroot's apt cache (with its package lists) beforehand;
#   * the host's rustup toolchain (~/.rustup, ~/.cargo/bin) is bound in read
#     only and a copy of its cargo registry lent (CARGO_NET_OFFLINE=true), so
#     the host must have built the workspace once;
#   * the Python wheels (tests/browser/requirements.txt and
#     api-service/tests/schemathesis-requirements.txt) are fetched
#     from PyPI on the host into DIR/wheels (PIP_NO_INDEX, PIP_FIND_LINKS).
# The chroot gets a copy of this work tree (tracked and untracked files, not
# the ignored ones: no target/, no run/).
#
# Exit 0 only when both commands pass. Every process started inside dies
# with the namespace, and the mounts with it, also on Ctrl-C. The log is
# DIR/fresh-check.log. Takes 15 to 30 minutes on 2 cores.
#
# Environment: FRESH_MIRROR (the host's Debian mirror), FRESH_SUITE (bookworm),
# FRESH_COMMANDS (the commands run inside; default the README's two).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DIR="$(realpath -m "${1:-/var/tmp/taskforge-fresh}")"
ROOT="$DIR/root"
WHEELS="$DIR/wheels"
LOG="$DIR/fresh-check.log"
SUITE="${FRESH_SUITE:-bookworm}"
COMMANDS="${FRESH_COMMANDS:-bash scripts/run.sh && bash scripts/test.sh}"
# What the scripts may install with apt-get (lib.sh, infra.sh, browser-test.sh).
PACKAGES=(curl ca-certificates python3 python3-venv redis-server redis-tools rabbitmq-server
    gcc libc6-dev procps chromium chromium-driver)

is_root || die "fresh-check needs root (debootstrap, chroot, namespaces)"
case "$DIR" in / | /root | /var | /var/tmp | /tmp | "$REPO_ROOT") die "refusing DIR=$DIR: give a directory of its own" ;; esac
mkdir -p "$DIR"
exec > >(tee "$LOG") 2>&1

started=$SECONDS
ns_pid=""
finish() {
    local status=$?
    set +e
    if [ -n "$ns_pid" ] && kill -0 "$ns_pid" 2>/dev/null; then
        # unshare --fork ignores SIGINT and SIGTERM while its child runs; the
        # child is the namespace's PID 1, and when it dies the kernel kills
        # every process of the namespace (the daemons too).
        local init
        init="$(cat "/proc/$ns_pid/task/$ns_pid/children" 2>/dev/null)"
        log "stopping the namespace (unshare pid $ns_pid, its init ${init:-gone})"
        [ -z "$init" ] || kill -KILL $init 2>/dev/null
        kill -TERM "$ns_pid" 2>/dev/null
        wait "$ns_pid" 2>/dev/null
    fi
    # The mounts live in private mount namespaces and go with them; this is
    # a last guard, should one have leaked.
    grep -F " $ROOT/" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do
        warn "unmounting leftover $m"
        umount -l "$m"
    done
    exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- what the host lends -------------------------------------------------------
have unshare && have chroot || die "unshare/chroot missing: apt-get install util-linux coreutils"
have ip || apt_install iproute2
have debootstrap || apt_install debootstrap
ensure_rust rustfmt clippy
RUSTUP_HOME_HOST="${RUSTUP_HOME:-$HOME/.rustup}"
CARGO_HOME_HOST="${CARGO_HOME:-$HOME/.cargo}"
[ -d "$RUSTUP_HOME_HOST/toolchains" ] ||
    die "no rustup toolchain in $RUSTUP_HOME_HOST: the check lends the host's rustup installation"
[ -d "$CARGO_HOME_HOST/registry" ] ||
    die "no cargo registry in $CARGO_HOME_HOST: build the workspace once on the host (cargo test --workspace --no-run)"

mirror="${FRESH_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)"
fi
if [ -z "$mirror" ]; then
    mirror="$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n 1)"
fi
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list*: set FRESH_MIRROR"

# --- a fresh Debian --------------------------------------------------------------
if grep -qF " $ROOT" /proc/self/mountinfo; then
    die "something is mounted under $ROOT (another fresh-check running?)"
fi
rm -rf "$ROOT"
log "debootstrap --variant=minbase $SUITE $ROOT ($mirror)"
debootstrap --variant=minbase "$SUITE" "$ROOT" "$mirror" >"$DIR/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $DIR/debootstrap.log"
echo fresh-check >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost fresh-check\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"

log "downloading into the chroot's apt cache: ${PACKAGES[*]}"
unshare --mount --fork -- bash -euc '
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    chroot "$root" apt-get update -qq
    chroot "$root" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --download-only --no-install-recommends "$@" >/dev/null
' _ "$ROOT" "${PACKAGES[@]}" || die "downloading the packages into the chroot failed"
log "apt cache: $(find "$ROOT/var/cache/apt/archives" -name '*.deb' | wc -l) packages, $(du -sh "$ROOT/var/cache/apt/archives" | cut -f1)"
# The network is gone from here on; a fresh Debian has no resolver to ask.
: >"$ROOT/etc/resolv.conf"

log "fetching the browser test's and schemathesis' wheels into $WHEELS"
rm -rf "$WHEELS"
mkdir -p "$WHEELS"
python3 -m pip download --disable-pip-version-check -q -d "$WHEELS" \
    --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux_2_36_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -r "$REPO_ROOT/tests/browser/requirements.txt" \
    -r "$REPO_ROOT/api-service/tests/schemathesis-requirements.txt" ||
    die "pip download of the Python requirements failed (host's python3 -m pip; apt-get install python3-pip)"

log "copying the work tree into /root/taskforge and lending the cargo registry"
mkdir -p "$ROOT/root/taskforge" "$ROOT/root/.cargo/bin" "$ROOT/root/.rustup" "$ROOT/var/cache/taskforge-wheels"
git -C "$REPO_ROOT" ls-files -z --cached --others --exclude-standard |
    (cd "$REPO_ROOT" && tar --null --ignore-failed-read -T - -cf -) 2>/dev/null |
    tar -C "$ROOT/root/taskforge" -xf -
cp -a "$CARGO_HOME_HOST/registry" "$ROOT/root/.cargo/registry"

# --- the run, isolated -------------------------------------------------------------
log "running inside (own mount, net, pid, uts namespaces): $COMMANDS"
unshare --mount --net --pid --uts --fork --kill-child=KILL -- bash -euc '
    root=$1 rustup_home=$2 cargo_bin=$3 wheels=$4 commands=$5
    ip link set lo up
    hostname fresh-check
    # The proof of isolation: nothing of the host answers here.
    for port in 6379 5672 15672 8080; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "fresh-check: 127.0.0.1:$port answers inside the new network namespace" >&2
            exit 1
        fi
    done
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
    mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
    for pair in "$rustup_home:/root/.rustup" "$cargo_bin:/root/.cargo/bin" "$wheels:/var/cache/taskforge-wheels"; do
        mount --bind "${pair%%:*}" "$root${pair#*:}"
        mount -o remount,bind,ro "$root${pair#*:}"
    done
    exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb CI=true \
        PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        CARGO_NET_OFFLINE=true PIP_NO_INDEX=1 PIP_FIND_LINKS=/var/cache/taskforge-wheels \
        /bin/bash -c "cd /root/taskforge && $commands" </dev/null
' _ "$ROOT" "$RUSTUP_HOME_HOST" "$CARGO_HOME_HOST/bin" "$WHEELS" "$COMMANDS" &
ns_pid=$!
rc=0
wait "$ns_pid" || rc=$?
ns_pid=""

elapsed=$((SECONDS - started))
if [ "$rc" -eq 0 ]; then
    log "fresh-check PASSED on a fresh $SUITE minbase in $((elapsed / 60)) m $((elapsed % 60)) s: $COMMANDS"
else
    die "fresh-check FAILED (rc $rc) after $((elapsed / 60)) m $((elapsed % 60)) s: $COMMANDS; log $LOG"
fi
