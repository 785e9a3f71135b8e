"""Turn the outputs of bench/compare/run.sh into docs/bench/cpu-vs-peers.md.

Usage: report.py WORK_DIR LOAD_BEFORE LOAD_AFTER THREADS [PREVIOUS_REPORT]

Everything from the line `<!-- analysis -->` on in PREVIOUS_REPORT (the
hand-written reading of the misses, with profile evidence) is kept below the
new table.
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


UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def seconds(text):
    """`2.39 ms` -> 0.00239."""
    value, unit = text.split()
    return float(value) * UNITS[unit]


def bench_rows(markdown):
    """The case rows of a `kiln bench` summary: case -> dict of its columns."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 8 or not cells[0].startswith("`"):
            continue
        case, backend, time, gflops, gbs, bound, _, pct_bw = cells
        rows[case.strip("`")] = {
            "backend": backend,
            "seconds": seconds(time),
            "gflops": float(gflops),
            "gbs": float(gbs),
            "bound": bound,
            "pct_bw": float(pct_bw.strip("*%")) if pct_bw.strip("*%") not in ("", "—") else None,
        }
    return rows


def roof_line(markdown, label):
    """The all-threads figure of a roofline row of the summary header."""
    for line in markdown.splitlines():
        if line.startswith(f"| {label}"):
            m = re.search(r"([0-9.]+) (GB|GFLOP)/s \(\d+ threads\)", line)
            return float(m.group(1)) if m else None
    return None


ANALYSIS_MARKER = "<!-- analysis -->"


def kept_analysis(path):
    """The hand-written tail of the previous report, from the marker on."""
    if not path or not os.path.exists(path):
        return None
    text = read(path)
    at = text.find(ANALYSIS_MARKER)
    return text[at:] if at >= 0 else None


def main():
    work, load_before, load_after, threads = sys.argv[1:5]
    analysis = kept_analysis(sys.argv[5] if len(sys.argv) > 5 else None)
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

    kernels_path = os.path.join(work, "kernels.md")
    kernels = read(kernels_path) if os.path.exists(kernels_path) else ""
    cases = bench_rows(kernels)
    dram, l3 = roof_line(kernels, "DRAM read"), roof_line(kernels, "L3 read")

    def bw_row(measure, target, pattern, roof_name, roof, need):
        """Each case matching `pattern`: its GB/s against the measured roof."""
        found = sorted(c for c in cases if re.search(pattern, c))
        if not found:
            rows.append((measure, target, "—", "—", "n/a", "not measured"))
        for c in found:
            r = cases[c]
            frac = r["gbs"] / roof if roof else None
            miss = "" if frac is None or frac >= need else "misses: see below"
            rows.append((f"{measure}: `{c}`", target, f"{r['gbs']:.1f} GB/s ({r['seconds'] * 1e3:.2f} ms)",
                         f"{roof:.1f} GB/s ({roof_name}, measured)" if roof else "—",
                         f"{frac:.0%}" if frac is not None else "n/a", miss))

    int4 = r"^quant_gemm/(q4_0|q4_1|awq|gptq4)(_int8)?/"
    bw_row("int4 matvec, cold", "≥ 80% of DRAM read", int4 + r".*/cold$", "DRAM read", dram, 0.8)
    bw_row("int4 matvec, cache-resident", "≥ 70% of L3 read", int4 + r".*/hot$", "L3 read", l3, 0.7)
    bw_row("FP8 / Q8_0 matvec, cold", "≥ 80% of DRAM read", r"^quant_gemm/(q8_0|fp8)(_int8)?/.*/cold$", "DRAM read",
           dram, 0.8)
    bw_row("paged decode attention", "≥ 70% of read BW on KV bytes", r"^paged_attention/.*decode_b32_ctx2k/cold$",
           "DRAM read", dram, 0.7)

    sdpa_path = os.path.join(work, "sdpa.json")
    sdpa = json.loads(read(sdpa_path)) if os.path.exists(sdpa_path) else {}
    flash = sorted(c for c in cases if c.startswith("flash_attention/"))
    if not flash:
        rows.append(("flash attention prefill", "≥ 1.0×", "—", "—", "n/a", "not measured"))
    for c in flash:
        label = c.removeprefix("flash_attention/").removesuffix("/hot")
        kiln_s, torch_s = cases[c]["seconds"], sdpa.get(label)
        if torch_s is None:
            rows.append((f"flash attention `{label}`", "≥ 1.0×", f"{kiln_s * 1e3:.2f} ms", "—", "n/a",
                         "PyTorch not measured"))
            continue
        rows.append((f"flash attention `{label}`", "≥ 1.0×", f"{kiln_s * 1e3:.2f} ms",
                     f"{torch_s * 1e3:.2f} ms (PyTorch {sdpa.get('torch', '?')} SDPA)", f"{torch_s / kiln_s:.2f}×",
                     ""))

    def rounds(stem):
        """The texts of `stem-1.txt`, `stem-2.txt`, … (interleaved rounds)."""
        out, i = [], 1
        while os.path.exists(os.path.join(work, f"{stem}-{i}.txt")):
            out.append(read(os.path.join(work, f"{stem}-{i}.txt")))
            i += 1
        return out

    def best(values):
        values = [v for v in values if v is not None]
        return max(values) if values else None

    pp, tg, i = [], [], 1
    while os.path.exists(os.path.join(work, f"llama-bench-{i}.json")):
        bench = json.loads(read(os.path.join(work, f"llama-bench-{i}.json")))
        pp += [b["avg_ts"] for b in bench if b.get("n_prompt", 0) > 0 and b.get("n_gen", 0) == 0]
        tg += [b["avg_ts"] for b in bench if b.get("n_gen", 0) > 0 and b.get("n_prompt", 0) == 0]
        i += 1
    n_rounds = i - 1

    def prefill_rate(text):
        n_prompt = first_float(r"(\d+) prompt tokens", text)
        ttft = first_float(r"TTFT ([0-9.]+) ms", text)
        return n_prompt / (ttft / 1e3) if n_prompt and ttft else None

    kiln_pp = best(prefill_rate(t) for t in rounds("kiln-prefill"))
    row("prefill tokens/s (~128-token prompt)", "≥ 2×", kiln_pp, best(pp), "llama-bench pp128", "tok/s")
    kiln_tg = best(first_float(r"decode ([0-9.]+) tokens/s", t) for t in rounds("kiln-decode"))
    row("single-stream decode", "≥ 1.2×", kiln_tg, best(tg), "llama-bench tg64", "tok/s")
    kiln_tg_exact = best(first_float(r"decode ([0-9.]+) tokens/s", t) for t in rounds("kiln-decode-exact"))
    row("single-stream decode, `--precision exact`", "(reported)", kiln_tg_exact, best(tg), "llama-bench tg64",
        "tok/s")

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
          f"default model (SmolLM2-135M-Instruct Q4_1 GGUF); Kiln with `--precision auto` (int8 activations "
          f"in the quantised products, llama.cpp's arithmetic) unless a row says otherwise. "
          f"Load average before / after: "
          f"{load_before} / {load_after}. Ratios are Kiln over the peer (for latencies, the peer over Kiln), "
          "so > 1 means Kiln is faster.\n")
    print("| measure | target | Kiln | peer | ratio | note |")
    print("|---|---|--:|--:|--:|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print("\nKernel rows: `kiln bench --device cpu` in the same run, best of its samples; GB/s counts the bytes "
          "the op must read (weights, scales, KV cache), read against the roofline measured at the start of "
          "that bench run (cold cases cycle through copies of the operand larger than the L3).")
    print(f"\nPrefill and decode rows: `llama-bench` and `kiln generate` interleaved in {n_rounds} rounds, "
          "the best of each.")
    print("\nServing rows: 32 requests, ~128-word prompts, 64 output tokens, `ignore_eos`, all sent at once "
          "under the concurrency cap, measured by `kiln-bench-serve` against each server in turn.")
    if analysis:
        print("\n" + analysis.rstrip("\n"))


if __name__ == "__main__":
    main()
