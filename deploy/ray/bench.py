"""Throughput of kiln behind Ray Serve with 1 and 2 replicas, and of kiln alone.

    PYTHONPATH=deploy/ray python deploy/ray/bench.py --binary path/to/kiln

Each case sends `--rounds` waves of `--concurrency` completions with distinct
prompts, `--max-tokens` output tokens each (`ignore_eos`, so every request
generates exactly that many), after one warm-up wave, and prints output
tokens per second over the whole run and the 1-minute load average at the
start of each case.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass

import httpx
import ray
from ray import serve

from kiln_ray.config import KilnConfig
from kiln_ray.ingress import KilnIngress
from kiln_ray.process import KilnProcess
from kiln_ray.replica import KilnReplica


@dataclass
class Result:
    case: str
    tokens: int
    seconds: float
    load: float

    def line(self) -> str:
        return (
            f"{self.case:<24} {self.tokens:>6} tokens in {self.seconds:6.2f}s = "
            f"{self.tokens / self.seconds:7.1f} tok/s (load average {self.load:.2f} at start)"
        )


async def _one(client: httpx.AsyncClient, base: str, prompt: str, max_tokens: int) -> int:
    r = await client.post(
        f"{base}/v1/completions",
        json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True},
    )
    r.raise_for_status()
    return int(r.json()["usage"]["completion_tokens"])


async def _waves(base: str, args: argparse.Namespace, case: str) -> Result:
    async with httpx.AsyncClient(timeout=600) as client:

        async def wave(tag: str) -> int:
            prompts = [
                f"{tag} {i}: a short story about harbour number {i * 37 % 101}"
                for i in range(args.concurrency)
            ]
            return sum(await asyncio.gather(*(_one(client, base, p, args.max_tokens) for p in prompts)))

        await wave("warm-up")
        load = os.getloadavg()[0]
        t0 = time.monotonic()
        tokens = 0
        for r in range(args.rounds):
            tokens += await wave(f"{case} round {r}")
        return Result(case, tokens, time.monotonic() - t0, load)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kiln_args(args: argparse.Namespace) -> list[str]:
    return ["--kv-cache-memory", args.kv_cache_memory]


async def _direct(args: argparse.Namespace) -> Result:
    """One `kiln serve` on all cores, no Ray: the baseline."""
    process = KilnProcess(KilnConfig(binary=args.binary, args=tuple(_kiln_args(args))))
    await process.start()
    try:
        return await _waves(process.url, args, f"kiln alone, {os.cpu_count()} cores")
    finally:
        process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--binary", default=os.environ.get("KILN_BINARY", "kiln"))
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kv-cache-memory", default="256MiB")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--cores",
        type=int,
        default=os.cpu_count() or 1,
        help="split over the replicas (num_cpus, KILN_NUM_THREADS)",
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of every case, in A B C C B A order against drift"
    )
    args = parser.parse_args()

    cases: list[int] = [0, *args.replicas]  # 0: kiln alone, without Ray
    order = [c for r in range(args.repeats) for c in (cases if r % 2 == 0 else cases[::-1])]
    results: dict[int, list[Result]] = {c: [] for c in cases}
    ray.init(
        address="local",
        num_cpus=args.cores + 1,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = KilnConfig(binary=args.binary, args=tuple(_kiln_args(args)))
        for n in order:
            if n == 0:
                result = asyncio.run(_direct(args))
            else:
                cpus = max(1, args.cores // n)
                replica = KilnReplica.options(
                    num_replicas=n, autoscaling_config=None, ray_actor_options={"num_cpus": cpus}
                )
                serve.run(KilnIngress.bind(replica.bind(config)), name="kiln", route_prefix="/")
                result = asyncio.run(_waves(f"http://127.0.0.1:{port}", args, f"Ray Serve, {n} x {cpus} CPU"))
                serve.delete("kiln")
            results[n].append(result)
            print(result.line(), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    print(
        f"\n{args.concurrency} concurrent requests x {args.rounds} rounds, {args.max_tokens} tokens each "
        f"(ignore_eos), {args.cores} cores; output tok/s per run, best last:"
    )
    for n in cases:
        runs = results[n]
        rates = ", ".join(f"{r.tokens / r.seconds:.1f} (load {r.load:.1f})" for r in runs)
        best = max(r.tokens / r.seconds for r in runs)
        print(f"  {runs[0].case:<24} {rates}; best {best:.1f}")


if __name__ == "__main__":
    main()
