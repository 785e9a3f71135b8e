"""kiln_ray on a local Ray cluster: two replicas of the default model.

Starts Ray (4 logical CPUs, no dashboard) and Serve on a free local port,
deploys `kiln_ray.app:build_app` with 2 replicas, each a `kiln serve` with a
256MiB KV cache, and drives it with the official `openai` client:

- completions and chat completions, plain and streamed, through Serve;
- load spread: concurrent distinct prompts reach both replicas (the proxy
  names the replica in the `x-kiln-replica` header);
- prefix affinity: prompts sharing a long prefix land on one replica, and
  kiln reports the prefix's tokens as cached there;
- faults: SIGKILL one replica's kiln mid-load; its in-flight streams end
  with an error within seconds, the other replica's finish, Serve replaces
  the replica and both serve again.

Run: KILN_BINARY=path/to/kiln python -m unittest -v deploy/ray/tests/test_ray_serve.py
(with deploy/ray on PYTHONPATH; `deploy/ray/ci.sh` does all of it).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

import openai
import ray
from openai import OpenAI
from ray import serve

from kiln_ray.app import build_app
from kiln_ray.protocol import PID_HEADER, REPLICA_HEADER

KILN_ARGS = ["--kv-cache-memory", "256MiB"]
REPLICAS = 2
APP = "kiln"
TIMEOUT_S = 60.0

_port: int = 0
_client: Optional[OpenAI] = None
_model: str = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _running_replicas() -> int:
    app = serve.status().applications.get(APP)
    if app is None:
        return 0
    deployment = app.deployments.get("KilnReplica")
    if deployment is None:
        return 0
    return sum(n for state, n in deployment.replica_states.items() if state == "RUNNING")


def _wait_for_replicas(count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _running_replicas() >= count and serve.status().applications[APP].status == "RUNNING":
            return
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} KilnReplica replicas running after {timeout_s:.0f}s")


def setUpModule() -> None:
    global _port, _client, _model
    binary = os.environ.get("KILN_BINARY")
    if not binary:
        raise unittest.SkipTest("set KILN_BINARY to the kiln binary")
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    _port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": _port})
    app = build_app({"binary": binary, "args": KILN_ARGS, "num_replicas": REPLICAS, "startup_timeout_s": 120})
    serve.run(app, name=APP, route_prefix="/", blocking=False)
    _wait_for_replicas(REPLICAS, 180)
    _client = OpenAI(
        base_url=f"http://127.0.0.1:{_port}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT_S
    )
    _model = _client.models.list().data[0].id


def tearDownModule() -> None:
    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def client() -> OpenAI:
    assert _client is not None
    return _client


def complete(prompt: str, max_tokens: int = 8) -> tuple[str, str, int]:
    """One plain completion: (replica id, text, cached prompt tokens)."""
    raw = client().completions.with_raw_response.create(
        model=_model, prompt=prompt, max_tokens=max_tokens, temperature=0
    )
    completion = raw.parse()
    details = completion.usage.prompt_tokens_details if completion.usage else None
    cached = int(getattr(details, "cached_tokens", 0) or 0)
    return raw.headers[REPLICA_HEADER], completion.choices[0].text, cached


class T1Endpoints(unittest.TestCase):
    def test_models(self) -> None:
        self.assertTrue(_model)

    def test_completion(self) -> None:
        replica, text, _ = complete("The capital of France is")
        self.assertTrue(replica)
        self.assertTrue(text)

    def test_completion_stream(self) -> None:
        stream = client().completions.create(
            model=_model, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True
        )
        texts = [c.choices[0].text for c in stream if c.choices]
        self.assertGreater(len(texts), 1)
        self.assertTrue("".join(texts))

    def test_chat(self) -> None:
        chat = client().chat.completions.create(
            model=_model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
        )
        self.assertTrue(chat.choices[0].message.content)

    def test_chat_stream(self) -> None:
        stream = client().chat.completions.create(
            model=_model,
            messages=[{"role": "user", "content": "Count to three."}],
            max_tokens=8,
            temperature=0,
            stream=True,
        )
        parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
        self.assertTrue("".join(parts))

    def test_errors_are_openai_errors(self) -> None:
        with self.assertRaises(openai.NotFoundError):
            client().completions.create(model="no-such-model", prompt="x", max_tokens=1)


class T2Spread(unittest.TestCase):
    def test_concurrent_load_reaches_both_replicas(self) -> None:
        prompts = [f"Request {i}: write a word about the number {i * 7919 % 1000}." for i in range(16)]
        with ThreadPoolExecutor(16) as pool:
            replicas = list(pool.map(lambda p: complete(p, max_tokens=16)[0], prompts))
        counts = {r: replicas.count(r) for r in set(replicas)}
        self.assertEqual(len(counts), REPLICAS, f"replicas that served: {counts}")
        self.assertGreaterEqual(min(counts.values()), 3, f"uneven spread: {counts}")


class T3Affinity(unittest.TestCase):
    def test_shared_prefix_sticks_to_one_replica(self) -> None:
        for family in ("alpha", "omega"):
            prefix = " ".join(f"{family} clause {i} of the shared preamble." for i in range(60))
            served = [complete(f"{prefix} Question {q}: what comes next?", max_tokens=1) for q in range(6)]
            replicas = {r for r, _, _ in served}
            self.assertEqual(len(replicas), 1, f"{family}: prefix served by {replicas}")
            # kiln's prefix cache hit on every request after the first.
            for _, _, cached in served[1:]:
                self.assertGreater(cached, 100, f"{family}: {[c for _, _, c in served]}")


@dataclass
class _Stream:
    prompt: str
    replica: str = ""
    pid: int = 0
    started: threading.Event = field(default_factory=threading.Event)
    outcome: str = ""
    error: str = ""
    ended_at: float = 0.0


def _run_stream(s: _Stream) -> None:
    try:
        with client().completions.with_streaming_response.create(
            model=_model,
            prompt=s.prompt,
            max_tokens=400,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        ) as response:
            s.replica = response.headers[REPLICA_HEADER]
            s.pid = int(response.headers[PID_HEADER])
            s.started.set()
            for _ in response.parse():
                pass
        s.outcome = "ok"
    except openai.APIError as e:
        s.outcome = "error"
        s.error = repr(e)
    except Exception as e:  # any other failure is a bug
        s.outcome = "unexpected"
        s.error = repr(e)
    finally:
        s.started.set()
        s.ended_at = time.monotonic()


def _replica_or_error(i: int) -> str:
    try:
        return complete(f"Recovery {i} at {time.time()}", max_tokens=4)[0]
    except openai.APIStatusError as e:
        if e.status_code not in (502, 503):
            raise
        return ""


class T4Faults(unittest.TestCase):
    def test_killed_kiln_fails_its_requests_and_is_replaced(self) -> None:
        streams = [_Stream(f"Story {i}: the {i}th lighthouse keeper") for i in range(6)]
        threads = [threading.Thread(target=_run_stream, args=(s,), daemon=True) for s in streams]
        for t in threads:
            t.start()
        for s in streams:
            self.assertTrue(s.started.wait(TIMEOUT_S), "a stream never started")
        pids = {s.pid for s in streams if s.pid}
        self.assertEqual(len(pids), REPLICAS, f"streams did not reach both replicas: {pids}")
        victim_pid = min(pids)
        victim = next(s.replica for s in streams if s.pid == victim_pid)
        time.sleep(0.5)
        killed_at = time.monotonic()
        os.kill(victim_pid, signal.SIGKILL)

        # Requests right after the kill are served elsewhere or fail cleanly, never hang.
        for i in range(3):
            try:
                replica, _, _ = complete(f"After the fault {i}", max_tokens=4)
                self.assertNotEqual(replica, victim)
            except openai.APIStatusError as e:
                self.assertIn(e.status_code, (502, 503), repr(e))

        for t in threads:
            t.join(TIMEOUT_S * 2)
            self.assertFalse(t.is_alive(), "a stream hung after the fault")
        for s in streams:
            if s.replica == victim:
                self.assertEqual(s.outcome, "error", f"stream on the killed replica: {s.outcome} {s.error}")
                self.assertLess(s.ended_at - killed_at, 10.0, "the failed stream took too long to end")
                self.assertIn("kiln", s.error)
            else:
                self.assertEqual(s.outcome, "ok", f"stream on the healthy replica: {s.error}")
        failed = [s for s in streams if s.replica == victim]
        print(
            f"\n  killed kiln pid {victim_pid} (replica {victim}): {len(failed)} streams failed within "
            f"{max(s.ended_at for s in failed) - killed_at:.1f}s, e.g. {failed[0].error[:160]}",
            file=sys.stderr,
        )

        # Serve notices the failing health check and starts a new replica.
        deadline = time.monotonic() + 120
        while True:
            with ThreadPoolExecutor(8) as pool:
                seen = set(pool.map(_replica_or_error, range(8)))
            if seen == {s for s in seen if s} and len(seen) == REPLICAS and victim not in seen:
                print(
                    f"  replaced: serving from {sorted(seen)} "
                    f"{time.monotonic() - killed_at:.1f}s after the kill",
                    file=sys.stderr,
                )
                break
            self.assertLess(time.monotonic(), deadline, f"no replacement replica: serving {seen}")
            time.sleep(2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
