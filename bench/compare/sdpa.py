"""PyTorch CPU `scaled_dot_product_attention`, timed on the shapes of Kiln's
`flash_attention` benchmark cases (causal, f32, grouped-query heads).

Usage: sdpa.py THREADS  — prints one JSON object: case label -> best seconds.
"""

import json
import sys
import time

import torch
import torch.nn.functional as F

# (case label as in Kiln's bench, heads, KV heads, head dim, prompt length)
CASES = [
    ("f32/smollm2-135m/prefill_512", 9, 3, 64, 512),
    ("f32/smollm2-135m/prefill_2k", 9, 3, 64, 2048),
    ("f32/llama3-8b/prefill_512", 32, 8, 128, 512),
    ("f32/llama3-8b/prefill_2k", 32, 8, 128, 2048),
]


def best_time(fn, min_samples=3, budget_s=2.0):
    fn()  # warm-up: first-call allocation and kernel selection
    best, spent, n = float("inf"), 0.0, 0
    while n < min_samples or (spent < budget_s and n < 50):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent, n = min(best, dt), spent + dt, n + 1
    return best


def main():
    torch.set_num_threads(int(sys.argv[1]))
    torch.manual_seed(0)
    out = {}
    with torch.inference_mode():
        for label, h, hkv, d, s in CASES:
            q = torch.randn(1, h, s, d)
            k = torch.randn(1, hkv, s, d)
            v = torch.randn(1, hkv, s, d)
            out[label] = best_time(
                lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            )
    out["torch"] = torch.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
