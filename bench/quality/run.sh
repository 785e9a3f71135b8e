#!/usr/bin/env bash
# Quality and speed of every quantised format Kiln writes, for the default
# model, in one run:
#
#   bash bench/quality/run.sh        # writes docs/bench/quantization-table.md
#
# For each format: `kiln quantize` (calibrated on bench/quality/calibration.txt
# where the method has a calibrated variant), `kiln perplexity` on
# bench/quality/eval.txt (William Shakespeare, Coriolanus, Act I, scene 1 —
# public domain; the calibration text is the scene's first part, the
# evaluation text the rest), the size of the weights written, and
# single-stream decode tokens/s of `kiln generate` on the CPU backend (best
# of three runs).
# Not part of CI: it takes several minutes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln/target}"
out="${OUT:-$root/docs/bench/quantization-table.md}"
work="${WORK:-$(mktemp -d)}"
mkdir -p "$work"
cal=bench/quality/calibration.txt
text=bench/quality/eval.txt

cargo build --release --locked -p engine --bin kiln >&2
kiln="$CARGO_TARGET_DIR/release/kiln"
model=$("$kiln" download -q)

# name | how to make it (empty: the shipped file) | path
formats=(
    "Q4_1 GGUF (as shipped)||$model"
    "f32 (dequantised Q4_1)|--method f32|$work/f32"
    "Q8_0 GGUF|--method q8_0|$work/q8_0.gguf"
    "Q4_0 GGUF|--method q4_0|$work/q4_0.gguf"
    "FP8 e4m3, dynamic activations|--method fp8|$work/fp8"
    "FP8 e4m3, static activations|--method fp8 --activation-scheme static --calibration $cal|$work/fp8-static"
    "AWQ 4-bit, round-to-nearest|--method awq|$work/awq-rtn"
    "AWQ 4-bit (scale search)|--method awq --calibration $cal|$work/awq"
    "GPTQ 4-bit, round-to-nearest|--method gptq|$work/gptq-rtn"
    "GPTQ 4-bit (Hessian, act-order)|--method gptq --calibration $cal|$work/gptq"
    "GPTQ 8-bit (Hessian, act-order)|--method gptq --bits 8 --calibration $cal|$work/gptq8"
)

size_mb() {
    if [ -d "$1" ]; then
        du -cb "$1"/*.safetensors | tail -1 | awk '{ printf "%.1f", $1 / 1e6 }'
    else
        du -b "$1" | awk '{ printf "%.1f", $1 / 1e6 }'
    fi
}

rows=()
base_tps=""
for f in "${formats[@]}"; do
    IFS='|' read -r name make path <<<"$f"
    if [ -n "$make" ] && [ ! -e "$path" ]; then
        # shellcheck disable=SC2086
        "$kiln" quantize --model "$model" $make --out "$path" >&2
    fi
    ppl=$("$kiln" perplexity --model "$path" --text "$text" --json 2>/dev/null |
        python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["perplexity"])')
    # Best of three: on a shared machine the fastest run is the least disturbed.
    tps=$(for _ in 1 2 3; do
        "$kiln" generate --model "$path" --max-tokens 64 --ignore-eos \
            "The history of the Roman Republic" 2>&1 >/dev/null |
            sed -n 's/.*decode \([0-9.]*\) tokens\/s.*/\1/p' | tail -1
    done | sort -g | tail -1)
    base_tps=${base_tps:-$tps}
    ratio=$(awk -v a="$tps" -v b="$base_tps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    rows+=("| $name | $ppl | $(size_mb "$path") | $tps | $ratio |")
    echo "quality: $name: perplexity $ppl, decode $tps tokens/s" >&2
done

{
    echo "<!-- written by bench/quality/run.sh; do not edit by hand -->"
    echo
    echo "| format | perplexity | weights (MB) | decode tokens/s (CPU, 1 stream) | decode vs Q4_1 |"
    echo "|---|--:|--:|--:|--:|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end of the run; $(date -u +%Y-%m-%d)."
} >"$out"
echo "wrote $out" >&2
