#!/usr/bin/env bash
# The CUDA checks, for a machine with an NVIDIA GPU (driver 580 / CUDA 13,
# sm_80 or newer) and no Rust toolchain. It runs one stripped release `kiln`
# built beforehand, in this order, each step under its own time limit and
# each writing its output to $OUT (default: a new temporary directory):
#
#   devices      the kernels compiled for this GPU (the `precompile` example
#                of kernels-cuda, when shipped beside kiln), then kiln devices
#   conformance  kiln conformance --device cuda:0 (every op against the
#                HAL reference; exit 1 if a case fails)
#   parity       kiln parity --device cuda:0 on a synthetic model with the
#                default model's shapes (SmolLM2-135M, Q4_1) and seeded
#                random weights, logits compared with the CPU backend, with
#                decode steps replayed as CUDA graphs and with --eager
#   engine       kiln generate on that model: one stream (graphs, eager) and
#                offline throughput at 1, 16, 64 and 256 requests
#   bench        kiln bench --device cuda:0 $BENCH_ARGS (default --quick)
#   torch        bench/cuda/torch_baseline.py: copy bandwidth, cuBLAS and
#                PyTorch SDPA (flash) on the same GPU, in the same run
#
# then results.md: one table of each step's status and time. Finishes in
# under 8 minutes on an H100. STEPS="conformance bench" runs a subset.
#
# Prepare on a build machine (the binary travels; the model does not):
#   cargo build --release --locked -p engine --bin kiln
#   cargo build --release --locked -p kernels-cuda --example precompile
#   mkdir -p gpu-artifacts && cp target/release/kiln \
#     target/release/examples/precompile gpu-artifacts/ && strip gpu-artifacts/kiln gpu-artifacts/precompile
# then on the GPU machine, from the repository root:
#   bash ci/gpu-check.sh [gpu-artifacts]
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ART=${1:-gpu-artifacts}
KILN="$ART/kiln"
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export KILN_CUDA_CACHE="${KILN_CUDA_CACHE:-$(mktemp -d)}"
# PTX compiled ahead of time (kernels-cuda's `precompile` example) skips
# NVRTC here; a stale or foreign entry is never used (the key is the hash).
[ -d "$ART/ptx-cache" ] && cp "$ART"/ptx-cache/* "$KILN_CUDA_CACHE"/ 2>/dev/null
export KILN_HOME="${KILN_HOME:-$(mktemp -d)}"
if [ ! -x "$KILN" ]; then
    echo "no kiln binary at $KILN (see the header of this script)" >&2
    exit 2
fi

# libnvrtc.so.13 and libcublas.so.13: the toolkit's, or PyTorch's wheels'.
add_lib_dir() {
    case ":${LD_LIBRARY_PATH:-}:" in
    *":$1:"*) ;;
    *) export LD_LIBRARY_PATH="$1${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    esac
}
for lib in libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13; do
    if ! ldconfig -p 2>/dev/null | grep -q "$lib"; then
        found=$(find /usr/local/cuda*/ /usr/lib /opt \
            "$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null || echo /nonexistent)" \
            -name "$lib" 2>/dev/null | head -n1)
        [ -n "$found" ] && add_lib_dir "$(dirname "$found")"
    fi
done
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" | tee "$OUT/env.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
    --format=csv >>"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# STEPS picks steps by name (default: all, in order).
STEPS=${STEPS:-devices conformance parity engine bench torch}
rows=()
step() { # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
    echo "==> $name: $*"
    local t0=$EPOCHREALTIME status
    if declare -F "$1" >/dev/null; then
        timeout "$limit" bash -c "$1" >"$OUT/$name.txt" 2>&1 # an exported function
    else
        timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    fi
    status=$?
    local dt
    dt=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    tail -n 40 "$OUT/$name.txt"
    local verdict=ok
    [ "$status" -eq 124 ] && verdict="TIMED OUT after ${limit}s"
    [ "$status" -ne 0 ] && [ "$status" -ne 124 ] && verdict="FAILED (exit $status)"
    rows+=("| $name | $verdict | ${dt}s |")
    echo "<== $name: $verdict in ${dt}s"
}

SYN=synthetic:smollm2-135m:q4_1
# Engine runs: recorded decode steps (CUDA graphs, the default) and --eager.
engine() {
    "$KILN" generate --device cuda:0 --model "$SYN" --max-tokens 256 --ignore-eos \
        "Once upon a time" || return
    "$KILN" generate --device cuda:0 --model "$SYN" --max-tokens 256 --ignore-eos \
        --eager "Once upon a time" || return
    for n in 1 16 64 256; do
        "$KILN" generate --device cuda:0 --model "$SYN" --throughput "$n" \
            --max-tokens 128 --kv-cache-memory 4GiB || return
    done
    "$KILN" generate --device cuda:0 --model "$SYN" --throughput 64 --max-tokens 128 \
        --kv-cache-memory 4GiB --eager
}
parity() {
    "$KILN" parity --device cuda:0 --model "$SYN" --kv-cache-memory 256MiB || return
    "$KILN" parity --device cuda:0 --model "$SYN" --kv-cache-memory 256MiB --eager
}
# Kernels compiled for this GPU on every core at once (kernels-cuda's
# `precompile` example, when shipped), then the device list.
devices() {
    if [ -x "$ART/precompile" ]; then
        local cc sm
        cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d ' .')
        sm="sm_${cc}"
        [ "$cc" = 90 ] && sm=sm_90a
        "$ART/precompile" "$sm" || return
    fi
    "$KILN" devices
}
export -f engine parity devices
export ART
export KILN SYN
# BENCH_ARGS: e.g. --filter 'llama3-8b' for the full-size shapes (minutes).
read -r -a bench_args <<<"${BENCH_ARGS:---quick}"
step devices 150 devices
step conformance 150 "$KILN" conformance --device cuda:0 --verbose
step parity 90 parity
step engine 120 engine
step bench 240 "$KILN" bench --device cuda:0 "${bench_args[@]}"
step torch 60 python3 bench/cuda/torch_baseline.py

{
    echo "# GPU check on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
    echo
    echo "| step | result | time |"
    echo "|---|---|---|"
    printf '%s\n' "${rows[@]}"
} >"$OUT/results.md"
cat "$OUT/results.md"
