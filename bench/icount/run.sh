#!/usr/bin/env bash
# Instructions per call of the CPU backend's hot kernels, counted by
# `valgrind --tool=callgrind`: a regression signal that, unlike a timing,
# the load on a shared machine does not disturb.
#
#   bash bench/icount/run.sh            # count, compare with bench/icount/counts.tsv
#   bash bench/icount/run.sh --update   # count and rewrite counts.tsv
#
# Each case of the quick grid below (exact and int8-activation products) runs on the `cpu` device with the AVX2
# kernels (valgrind does not run AVX-512) on one pool thread, twice under
# callgrind: 0 calls and $ITERS calls after the same set-up. The difference
# divided by $ITERS is the instructions of one call. A change of more than
# $TOLERANCE_PCT percent either way is reported and makes the run exit 1;
# counts recorded with another rustc are compared but not judged.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln/target}"
iters="${ITERS:-2}"
tolerance="${TOLERANCE_PCT:-2}"
counts=bench/icount/counts.tsv
update=""
[ "${1:-}" = "--update" ] && update=1

command -v valgrind >/dev/null || {
    echo "icount: valgrind not found (apt install valgrind)" >&2
    exit 2
}

cases=(
    'gemm/f32/smollm2-135m.mlp_down/decode_b1/hot'
    'gemm/f32/smollm2-135m.mlp_down/prefill_512/hot'
    'quant_gemm/q4_0/smollm2-135m.mlp_down/decode_b1/hot'
    'quant_gemm/q4_1/smollm2-135m.mlp_down/decode_b1/hot'
    'quant_gemm/q4_1_int8/smollm2-135m.mlp_down/decode_b1/hot'
    'quant_gemm/q8_0/smollm2-135m.mlp_down/decode_b1/hot'
    'quant_gemm/awq/smollm2-135m.mlp_down/decode_b1/hot'
    'quant_gemm/awq_int8/smollm2-135m.mlp_down/decode_b1/hot'
    'quant_gemm/gptq4/smollm2-135m.mlp_down/decode_b1/hot'
    'quant_gemm/fp8/smollm2-135m.mlp_down/decode_b1/hot'
    'quant_gemm/q4_1/smollm2-135m.mlp_down/prefill_512/hot'
    'paged_attention/f32q_f16kv/smollm2-135m/decode_b1_ctx2k/hot'
    'paged_attention/f32q_f16kv/smollm2-135m/decode_b8_ctx512/hot'
    'flash_attention/f32/smollm2-135m/prefill_512/hot'
    'rms_norm/f32/smollm2-135m/decode_b1/hot'
    'rope/f32/smollm2-135m/decode_b1/hot'
    'silu_and_mul/f32/smollm2-135m/decode_b1/hot'
)

cargo build --release --locked -p bench --example icount >&2
bin="$CARGO_TARGET_DIR/release/examples/icount"
rustc_version=$(rustc --version | cut -d' ' -f2)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

count() { # REGEX CALLS -> instructions of the whole run
    KILN_CPU_ISA=avx2 KILN_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
        "$bin" "$1" "$2" >/dev/null 2>"$work/valgrind.log" || {
        cat "$work/valgrind.log" >&2
        return 1
    }
    sed -n 's/^\(summary\|totals\): \([0-9]*\).*/\2/p' "$work/cg.out" | head -n1
}

declare -A old=()
old_rustc=""
if [ -f "$counts" ]; then
    old_rustc=$(sed -n 's/^# rustc \(.*\)/\1/p' "$counts")
    while IFS=$'\t' read -r name ir; do
        [ -n "$name" ] && old[$name]=$ir
    done < <(grep -v '^#' "$counts")
fi
judge=1
if [ -n "$old_rustc" ] && [ "$old_rustc" != "$rustc_version" ]; then
    echo "icount: counts.tsv was recorded with rustc $old_rustc, this is $rustc_version: compared, not judged" >&2
    judge=""
fi

status=0
new="# instructions per call (callgrind, KILN_CPU_ISA=avx2, 1 thread): bash bench/icount/run.sh --update"$'\n'
new+="# rustc $rustc_version"$'\n'
printf '%-62s %14s %14s %8s\n' case "instr/call" recorded change
for c in "${cases[@]}"; do
    regex="^${c//./\\.}\$"
    base=$(count "$regex" 0)
    total=$(count "$regex" "$iters")
    per=$(((total - base) / iters))
    new+="$c"$'\t'"$per"$'\n'
    was=${old[$c]:-}
    change="new"
    if [ -n "$was" ]; then
        change=$(awk -v a="$per" -v b="$was" 'BEGIN { printf "%+.2f%%", (a - b) * 100 / b }')
        if [ -n "$judge" ] && awk -v a="$per" -v b="$was" -v t="$tolerance" \
            'BEGIN { d = (a - b) * 100 / b; exit !(d > t || d < -t) }'; then
            change+=" !"
            status=1
        fi
    fi
    printf '%-62s %14d %14s %8s\n' "$c" "$per" "${was:--}" "$change"
done

if [ -n "$update" ]; then
    printf '%s' "$new" >"$counts"
    echo "icount: wrote $counts" >&2
    status=0
elif [ "$status" -ne 0 ]; then
    echo "icount: instructions per call changed by more than ${tolerance}% (marked !): a kernel got slower or" \
        "faster; if intended, rerun with --update and commit counts.tsv" >&2
fi
exit "$status"
