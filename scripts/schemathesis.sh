#!/usr/bin/env bash
# Schemathesis (from PyPI) against a live api: the Rust test
# api-service/tests/api/schemathesis.rs starts the api in-process (its own
# RabbitMQ vhost and Redis key prefix, removed afterwards, as every api test)
# and runs the tool on its /openapi.json with every check, a bounded number of
# examples (SCHEMATHESIS_MAX_EXAMPLES, default 15: under a minute) and a fixed
# seed; settings and the documented exceptions are in
# api-service/tests/schemathesis.toml.
#
# The tool lives in a virtualenv this script creates, run/venv-schemathesis
# (version pinned in api-service/tests/schemathesis-requirements.txt; delete the folder to rebuild it). Python 3.12 or
# later is preferred: before 3.12 the ast module trips over hypothesis
# ("AST constructor recursion depth mismatch") when it runs in two threads,
# so an older Python gets one worker thread (slower: about 45 s, not 15 s).
#
# Redis and RabbitMQ must be up (scripts/infra.sh); CALLBACK_TOKEN need not be set.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

REQUIREMENTS="$REPO_ROOT/api-service/tests/schemathesis-requirements.txt"
SCHEMATHESIS_VERSION="$(sed -n 's/^schemathesis==//p' "$REQUIREMENTS")"
VENV="$RUN_DIR/venv-schemathesis"

# A Python for the virtualenv: the first 3.12+ found (on PATH, then under
# pyenv), else any 3.10+ (run with one worker thread, see below).
is_312() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; }
candidates=(python3.13 python3.12)
if have pyenv; then
    for v in "$(pyenv root)"/versions/3.1[2-9]*/bin/python3; do
        [ -x "$v" ] && candidates+=("$v")
    done
fi
candidates+=(python3)
python=""
fallback=""
for candidate in "${candidates[@]}"; do
    "$candidate" -c 'import venv' 2>/dev/null || continue
    if is_312 "$candidate"; then
        python="$candidate"
        break
    fi
    if [ -z "$fallback" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        fallback="$candidate"
    fi
done
python="${python:-$fallback}"
[ -n "$python" ] || die "no Python 3.10 or later with venv found (Debian: apt-get install python3-venv)"

# Rebuilt when the version differs, or when a 3.12+ replaces an older Python.
rebuild=""
"$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION" || rebuild=1
if ! is_312 "$VENV/bin/python" && is_312 "$python"; then rebuild=1; fi
if [ -n "$rebuild" ]; then
    log "creating $VENV with $("$python" --version) and schemathesis $SCHEMATHESIS_VERSION"
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
fi

export SCHEMATHESIS="$VENV/bin/schemathesis"
# Two worker threads where CPython can take them; one before 3.12, whose ast
# module trips over hypothesis's recursion-limit changes made in another
# thread (gh-106905: "AST constructor recursion depth mismatch").
if is_312 "$VENV/bin/python"; then
    export SCHEMATHESIS_WORKERS="${SCHEMATHESIS_WORKERS:-2}"
else
    export SCHEMATHESIS_WORKERS="${SCHEMATHESIS_WORKERS:-1}"
fi
export SCHEMATHESIS_CONFIG="$REPO_ROOT/api-service/tests/schemathesis.toml"
export CALLBACK_TOKEN="${CALLBACK_TOKEN:-$(gen_token)}"
cargo test -p api-service --test api -- --ignored --exact \
    schemathesis::schemathesis_finds_nothing_against_the_openapi_document
