"""Turn the outputs of bench/compare/run.sh into docs/bench/cpu-vs-peers.md.

Usage: report.py WORK_DIR LOAD_BEFORE LOAD_AFTER THREADS
"""

import json
import os
import re
import sys


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def first_float(pattern, text):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def main():
    work, load_before, load_after, threads = sys.argv[1:5]
    rows = []

    def row(measure, target, kiln, peer, peer_name, unit, higher_is_better=True):
        if kiln is None or peer is None:
            rows.append((measure, target, "—", "—", "n/a", "not measured"))
            return
        ratio = kiln / peer if higher_is_better else peer / kiln
        rows.append((measure, target, f"{kiln:.1f} {unit}", f"{peer:.1f} {unit} ({peer_name})", f"{ratio:.2f}×", ""))

    numpy = float(read(os.path.join(work, "numpy.txt")).strip())
    gemm = read(os.path.join(work, "gemm_speed.txt"))
    kiln_sgemm = first_float(r"f32 gemm 1024³: best\s+[0-9.]+ ms; GFLOP/s\s+([0-9.]+)", gemm)
    row("f32 GEMM 1024³", "≥ 1.0×", kiln_sgemm, numpy, "numpy/OpenBLAS", "GFLOP/s")

    bench = json.loads(read(os.path.join(work, "llama-bench.json")))
    pp = next((b["avg_ts"] for b in bench if b.get("n_prompt", 0) > 0 and b.get("n_gen", 0) == 0), None)
    tg = next((b["avg_ts"] for b in bench if b.get("n_gen", 0) > 0 and b.get("n_prompt", 0) == 0), None)

    prefill = read(os.path.join(work, "kiln-prefill.txt"))
    n_prompt = first_float(r"(\d+) prompt tokens", prefill)
    ttft = first_float(r"TTFT ([0-9.]+) ms", prefill)
    kiln_pp = n_prompt / (ttft / 1e3) if n_prompt and ttft else None
    row("prefill tokens/s (~128-token prompt)", "≥ 2×", kiln_pp, pp, "llama-bench pp128", "tok/s")

    decode = read(os.path.join(work, "kiln-decode.txt"))
    kiln_tg = first_float(r"decode ([0-9.]+) tokens/s", decode)
    row("single-stream decode", "≥ 1.2×", kiln_tg, tg, "llama-bench tg64", "tok/s")

    for c in (1, 16):
        k = os.path.join(work, f"kiln-serve-{c}.json")
        l = os.path.join(work, f"llama-serve-{c}.json")
        if not (os.path.exists(k) and os.path.exists(l)):
            continue
        kj, lj = json.loads(read(k)), json.loads(read(l))
        if c == 1:
            row("server TPOT, 1 stream", "≥ 1.2× (lower is better)", kj["tpot"]["mean_ms"], lj["tpot"]["mean_ms"],
                "llama-server", "ms", higher_is_better=False)
            row("server TTFT, 1 stream", "(reported)", kj["ttft"]["mean_ms"], lj["ttft"]["mean_ms"],
                "llama-server", "ms", higher_is_better=False)
        else:
            row(f"server output tok/s, {c} streams", "≥ 2×", kj["output_throughput"], lj["output_throughput"],
                "llama-server, 16 slots", "tok/s")

    print("# Kiln vs peers on the CPU\n")
    print(f"Measured in one run of `bash bench/compare/run.sh`, {threads} threads, "
          f"default model (SmolLM2-135M-Instruct Q4_1 GGUF). Load average before / after: "
          f"{load_before} / {load_after}. Ratios are Kiln over the peer (for latencies, the peer over Kiln), "
          "so > 1 means Kiln is faster.\n")
    print("| measure | target | Kiln | peer | ratio | note |")
    print("|---|---|--:|--:|--:|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print("\nServing rows: 32 requests, ~128-word prompts, 64 output tokens, `ignore_eos`, all sent at once "
          "under the concurrency cap, measured by `kiln-bench-serve` against each server in turn.")


if __name__ == "__main__":
    main()
