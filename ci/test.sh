#!/usr/bin/env bash
# Kiln's test command, for people and CI alike: `bash ci/test.sh` from anywhere
# in a checkout. On a fresh Debian 12 machine with a Rust toolchain it installs
# what the tests need, then runs, timing each stage:
#   fmt     cargo fmt --all --check
#   clippy  cargo clippy --workspace --all-targets --locked -- -D warnings
#   test    cargo test --workspace --locked
# Build outputs go to $CARGO_TARGET_DIR, by default ~/.cache/kiln/target, so
# later runs on the same machine are incremental.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Stage timings, printed as one summary line at the end (also on failure).
stages=()
t_start=$EPOCHREALTIME

elapsed() { # seconds since $1 (an $EPOCHREALTIME), one decimal
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

summary() {
    local status=$1 joined="" s
    for s in "${stages[@]}"; do
        joined+="${joined:+, }${s}"
    done
    echo "ci/test.sh: ${status}: ${joined}; total $(elapsed "$t_start")s"
}

stage() { # stage NAME COMMAND...
    local name=$1
    shift
    echo "==> ${name}: $*"
    local t0=$EPOCHREALTIME
    if "$@"; then
        local dt
        dt=$(elapsed "$t0")
        stages+=("${name} ${dt}s")
        echo "<== ${name}: ok in ${dt}s"
    else
        local rc=$?
        stages+=("${name} FAILED after $(elapsed "$t0")s")
        echo "<== ${name}: FAILED (exit ${rc})"
        summary FAILED
        exit "$rc"
    fi
}

# Runs inside `if` (no errexit): every step returns its failure explicitly.
setup() {
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck source=/dev/null
        . "$HOME/.cargo/env"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install a Rust toolchain (https://rustup.rs) first" >&2
        return 1
    fi
    if ! cargo fmt --version >/dev/null 2>&1; then
        rustup component add rustfmt || return
    fi
    if ! cargo clippy --version >/dev/null 2>&1; then
        rustup component add clippy || return
    fi
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln/target}"
    mkdir -p "$CARGO_TARGET_DIR" || return
    export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
    # Whole-crate builds: the persistent target dir gives reuse across runs,
    # and incremental state is what breaks when runs overlap.
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
    echo "$(rustc --version); $(cargo --version); target dir ${CARGO_TARGET_DIR}"
}

stage setup setup
stage fmt cargo fmt --all --check
stage clippy cargo clippy --workspace --all-targets --locked -- -D warnings
stage test cargo test --workspace --locked
summary ok
