"""PyTorch/cuBLAS baselines for `kiln bench --device cuda`, timed on the same
GPU in the same run (ci/gpu-check.sh calls this).

Prints a Markdown table: device-to-device copy bandwidth (the memory roof),
bf16 GEMM 8192^3 (the compute roof), cuBLAS fp16 GEMM at the int4 shapes
(m = 1, 4, 16; what Marlin-style int4 kernels are compared with), and
scaled_dot_product_attention with the flash backend at the prefill shapes of
the kiln bench (causal, SmolLM2-135M and Llama-3-8B head layouts).
"""

import sys

import torch
import torch.nn.functional as F


def time_ms(fn, iters=50, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / iters)
    return best


def main():
    if not torch.cuda.is_available():
        print("torch sees no CUDA device")
        return 1
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    print()
    print("| baseline | shape | time | rate |")
    print("|---|---|---|---|")

    n = 1 << 28  # 1 GiB of f32
    a = torch.empty(n, dtype=torch.float32, device=dev)
    b = torch.empty_like(a)
    t = time_ms(lambda: b.copy_(a), iters=20)
    print(f"| device copy (read + write) | 1 GiB | {t:.3f} ms | {2 * 4 * n / t / 1e6:.0f} GB/s |")
    del a, b

    m = 8192
    x = torch.randn(m, m, dtype=torch.bfloat16, device=dev)
    y = torch.randn(m, m, dtype=torch.bfloat16, device=dev)
    t = time_ms(lambda: x @ y, iters=10)
    print(f"| cuBLAS bf16 GEMM | 8192³ | {t:.3f} ms | {2 * m**3 / t / 1e9:.0f} TFLOP/s |")
    del x, y

    for (nn, k) in [(4096, 4096), (14336, 4096), (4096, 14336)]:
        w = torch.randn(nn, k, dtype=torch.float16, device=dev)
        for mm in (1, 4, 16):
            xx = torch.randn(mm, k, dtype=torch.float16, device=dev)
            t = time_ms(lambda: F.linear(xx, w))
            gbs = 2 * nn * k / t / 1e6
            print(f"| cuBLAS fp16 GEMM (int4 baseline) | m={mm} n={nn} k={k} | {t * 1e3:.1f} µs | {gbs:.0f} GB/s of weights |")
        del w

    shapes = [("smollm2-135m", 9, 3, 64), ("llama3-8b", 32, 8, 128)]
    for dtype in (torch.float16, torch.bfloat16):
        for name, h, hk, d in shapes:
            for l in (512, 2048):
                q = torch.randn(1, h, l, d, dtype=dtype, device=dev)
                k = torch.randn(1, hk, l, d, dtype=dtype, device=dev)
                v = torch.randn(1, hk, l, d, dtype=dtype, device=dev)
                k = k.repeat_interleave(h // hk, dim=1)
                v = v.repeat_interleave(h // hk, dim=1)
                try:
                    from torch.nn.attention import SDPBackend, sdpa_kernel

                    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                        t = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
                except Exception as e:  # noqa: BLE001
                    print(f"| SDPA flash {dtype} | {name} prefill {l} | failed: {e} | |")
                    continue
                flops = 4 * h * d * (l * (l + 1) // 2)
                print(f"| SDPA flash {str(dtype).replace('torch.', '')} causal | {name} prefill {l} | {t * 1e3:.1f} µs | {flops / t / 1e9:.1f} TFLOP/s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
