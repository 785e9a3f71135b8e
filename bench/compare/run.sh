#!/usr/bin/env bash
# Kiln and its peers on this machine, side by side, in one run:
#
#   bash bench/compare/run.sh            # everything, writes docs/bench/cpu-vs-peers.md
#   SKIP_SERVE=1 bash bench/compare/run.sh   # kernels and llama-bench only
#   SKIP_TORCH=1 bash bench/compare/run.sh   # without PyTorch (a ~2.5 GB install)
#
# Builds the peers from the registries into a private folder, once
# ($KILN_PEERS_DIR, default ~/.cache/kiln/peers): llama.cpp from the source
# distribution of llama-cpp-python on PyPI (its vendor/llama.cpp, with cmake
# and ninja from PyPI; ~6 minutes on 2 cores), numpy (OpenBLAS sgemm) and
# PyTorch (CPU scaled_dot_product_attention; its wheel drags the CUDA
# libraries along, ~2.5 GB). Then runs the same work with the same threads on
# Kiln and on each peer, times Kiln's bandwidth-bound kernels against the
# roofline `kiln bench` measures in the same run, and writes a markdown table
# of ratios. Not part of CI: it takes minutes and
# measures speed, which a shared CI machine cannot judge.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
peers="${KILN_PEERS_DIR:-$HOME/.cache/kiln/peers}"
threads="${THREADS:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln/target}"
out="$root/docs/bench/cpu-vs-peers.md"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

log() { echo "compare: $*" >&2; }

mkdir -p "$peers"
venv="$peers/venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check cmake ninja numpy
fi

llama="$peers/llama.cpp/build/bin"
# Not GGML_NATIVE: on Sapphire Rapids it compiles ggml's AMX matmul, which
# crashes (SIGSEGV in ggml_backend_amx_mul_mat, or SIGILL) on virtual
# machines that do not grant AMX tile state. The AVX-512 / VNNI / BF16 paths
# are listed explicitly instead; they are the comparison that matters here.
flags="-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON"
if [ ! -x "$llama/llama-bench" ] || [ ! -x "$llama/llama-server" ] ||
    [ "$(cat "$peers/llama.cpp/kiln-flags" 2>/dev/null)" != "$flags" ]; then
    log "building llama.cpp (vendored by llama-cpp-python 0.3.36) into $peers/llama.cpp"
    "$venv/bin/python" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
        llama-cpp-python==0.3.36 -d "$peers/dl"
    rm -rf "$peers/src" && mkdir -p "$peers/src"
    tar xzf "$peers/dl/llama_cpp_python-0.3.36.tar.gz" -C "$peers/src"
    rm -rf "$peers/llama.cpp" && cp -r "$peers/src/llama_cpp_python-0.3.36/vendor/llama.cpp" "$peers/llama.cpp"
    # shellcheck disable=SC2086
    PATH="$venv/bin:$PATH" cmake -S "$peers/llama.cpp" -B "$peers/llama.cpp/build" -G Ninja $flags >&2
    PATH="$venv/bin:$PATH" cmake --build "$peers/llama.cpp/build" --target llama-bench llama-server -j "$threads" >&2
    echo "$flags" >"$peers/llama.cpp/kiln-flags"
fi

torch_venv="$peers/torch-venv"
if [ -z "${SKIP_TORCH:-}" ] && [ ! -x "$torch_venv/bin/python" ]; then
    log "installing PyTorch 2.15.0 into $torch_venv"
    python3 -m venv "$torch_venv"
    "$torch_venv/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.15.0 numpy ||
        log "PyTorch did not install: the flash-attention rows will say not measured"
fi

log "building kiln (release)"
cargo build --release --locked -p engine --bin kiln -p bench --bin kiln-bench-serve \
    -p kernels-cpu --example gemm_speed >&2
bin="$CARGO_TARGET_DIR/release"
model=$("$bin/kiln" download -q)

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# sgemm 1024³: numpy (OpenBLAS) and Kiln's CPU GEMM.
log "sgemm 1024³"
OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads "$venv/bin/python" - >"$work/numpy.txt" <<'PY'
import time, numpy as np
a = np.random.rand(1024, 1024).astype(np.float32); b = np.random.rand(1024, 1024).astype(np.float32)
best = 1e9
for _ in range(20):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
print(2 * 1024**3 / best / 1e9)
PY
KILN_NUM_THREADS=$threads "$bin/examples/gemm_speed" >"$work/gemm_speed.txt"

# Kiln's kernels against the roofline of this run (`kiln bench` measures
# peak FLOP/s and DRAM / L3 read bandwidth first): 4-bit, 8-bit and FP8
# matvecs on Llama-3-8B's projections (4096×4096 and 4096×14336), exact and
# with int8 activations (`_int8`), cache-resident (hot) and cycling
# through more weights than the L3 holds (cold); paged decode attention,
# batch 32 at 2k context; causal flash attention at 512 and 2k tokens.
log "kiln bench (kernels against the roofline)"
kernels='^(quant_gemm/(q4_0|q4_1|awq|gptq4|q8_0|fp8)(_int8)?/llama3-8b\.[a-z_]+/decode_b1/(hot|cold)'
kernels+='|paged_attention/(f32|f16)q_f16kv/llama3-8b/decode_b32_ctx2k/cold'
kernels+='|flash_attention/f32/[a-z0-9.-]+/prefill_(512|2k)/hot)/cpu$'
KILN_NUM_THREADS=$threads "$bin/kiln" bench --device cpu --filter "$kernels" >"$work/kernels.md"

if [ -z "${SKIP_TORCH:-}" ] && [ -x "$torch_venv/bin/python" ]; then
    log "PyTorch scaled_dot_product_attention"
    OMP_NUM_THREADS=$threads "$torch_venv/bin/python" "$root/bench/compare/sdpa.py" "$threads" \
        >"$work/sdpa.json" || log "PyTorch SDPA failed: the flash-attention rows will say not measured"
fi

# llama-bench (prefill 128, decode 64) and Kiln on the same prompt length and
# generation length, interleaved three times (best of each): on a shared or
# virtual machine a single run of either can lose a third to a neighbour.
# Kiln runs with llama.cpp's arithmetic (`--precision auto`: activations
# quantised to int8 per 32 values for the Q4_1 / Q8_0 products, as
# llama.cpp's Q8_1 / Q8_0 activations are), and decodes once more with the
# activations as given (`--precision exact`).
prompt=$(python3 -c "print(' '.join(['word%d' % i for i in range(42)]))")
for round in 1 2 3; do
    log "llama-bench and kiln generate, round $round of 3"
    "$llama/llama-bench" -m "$model" -t "$threads" -p 128 -n 64 -r 1 -o json >"$work/llama-bench-$round.json"
    KILN_NUM_THREADS=$threads "$bin/kiln" generate "$prompt" --max-tokens 1 --precision auto \
        2>"$work/kiln-prefill-$round.txt" >/dev/null
    KILN_NUM_THREADS=$threads "$bin/kiln" generate "The capital of France is" --max-tokens 128 --ignore-eos \
        --precision auto 2>"$work/kiln-decode-$round.txt" >/dev/null
    KILN_NUM_THREADS=$threads "$bin/kiln" generate "The capital of France is" --max-tokens 128 --ignore-eos \
        --precision exact 2>"$work/kiln-decode-exact-$round.txt" >/dev/null
done

if [ -z "${SKIP_SERVE:-}" ]; then
    wait_ready() { # URL
        for _ in $(seq 1 600); do
            curl -sf "$1" >/dev/null 2>&1 && return 0
            sleep 0.1
        done
        return 1
    }
    for c in 1 16; do
        log "llama-server, concurrency $c"
        "$llama/llama-server" -m "$model" -t "$threads" -np 16 -c 16384 --port 18080 >"$work/llama-server.log" 2>&1 &
        pid=$!
        wait_ready http://127.0.0.1:18080/health
        "$bin/kiln-bench-serve" --base-url http://127.0.0.1:18080 --num-prompts 32 --input-len 128 \
            --output-len 64 --max-concurrency "$c" --seed "$c" --json "$work/llama-serve-$c.json" >&2
        kill "$pid"; wait "$pid" 2>/dev/null || true

        log "kiln serve, concurrency $c"
        KILN_NUM_THREADS=$threads "$bin/kiln" serve --port 18081 --precision auto >"$work/kiln-serve.log" 2>&1 &
        pid=$!
        wait_ready http://127.0.0.1:18081/health
        "$bin/kiln-bench-serve" --base-url http://127.0.0.1:18081 --num-prompts 32 --input-len 128 \
            --output-len 64 --max-concurrency "$c" --seed "$c" --json "$work/kiln-serve-$c.json" >&2
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
fi

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
python3 "$root/bench/compare/report.py" "$work" "$load_before" "$load_after" "$threads" "$out" >"$work/report.md"
mv "$work/report.md" "$out"
log "wrote $out"
cat "$out"
