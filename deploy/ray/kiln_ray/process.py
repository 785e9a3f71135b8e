"""Start, watch and stop one `kiln serve` process."""

from __future__ import annotations

import asyncio
import collections
import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Deque, Optional

import httpx

from kiln_ray.config import KilnConfig

logger = logging.getLogger("ray.serve")

# `kiln serve` prints this line once it listens, e.g.
# "kiln: serving SmolLM2-135M-Instruct.Q4_1 on http://127.0.0.1:38559 (OpenAI API at /v1)".
_SERVING = re.compile(r"serving .* on (http://[^\s:]+:\d+)")
_PR_SET_PDEATHSIG = 1


class KilnStartError(RuntimeError):
    """The process exited or did not become healthy in time."""


def _parent_death_signal() -> Optional[Callable[[], None]]:
    """A pre-exec hook: the child gets SIGTERM when the replica's process dies (Linux).

    prctl is resolved here, in the parent: the hook itself only calls it, so
    the forked child takes no loader or import locks.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class KilnProcess:
    """One `kiln serve` child: its log is forwarded to the replica's logger."""

    def __init__(self, config: KilnConfig, num_cpus: Optional[float] = None) -> None:
        """`num_cpus`: the CPUs Ray gave the replica, for KILN_NUM_THREADS."""
        self._config = config
        self._num_cpus = num_cpus
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._url: Optional[str] = None
        self._tail: Deque[str] = collections.deque(maxlen=40)

    @property
    def pid(self) -> int:
        return self._require_proc().pid

    @property
    def url(self) -> str:
        if self._url is None:
            raise KilnStartError("kiln has not started listening")
        return self._url

    def exit_code(self) -> Optional[int]:
        """None while running, else the exit status (negative: killed by that signal)."""
        return self._require_proc().poll()

    def log_tail(self) -> str:
        return "\n".join(self._tail)

    async def start(self) -> None:
        """Spawns the process and waits until its /health answers 200."""
        command = self._config.command()
        env = {**os.environ, **self._config.extra_env}
        if self._config.threads_from_num_cpus and self._num_cpus and "KILN_NUM_THREADS" not in env:
            env["KILN_NUM_THREADS"] = str(max(1, int(self._num_cpus)))
        logger.info(
            "starting %s (KILN_NUM_THREADS=%s)", " ".join(command), env.get("KILN_NUM_THREADS", "all cores")
        )
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_parent_death_signal(),
        )
        threading.Thread(target=self._pump_log, name=f"kiln-log-{self._proc.pid}", daemon=True).start()
        deadline = time.monotonic() + self._config.startup_timeout_s
        async with httpx.AsyncClient(timeout=self._config.health_timeout_s) as client:
            while time.monotonic() < deadline:
                code = self._proc.poll()
                if code is not None:
                    raise KilnStartError(f"kiln exited with status {code} while starting:\n{self.log_tail()}")
                if self._url is not None:
                    try:
                        if (await client.get(f"{self._url}/health")).status_code == 200:
                            logger.info("kiln (pid %d) is healthy at %s", self._proc.pid, self._url)
                            return
                    except httpx.TransportError:
                        pass
                await asyncio.sleep(0.1)
        self.stop()
        raise KilnStartError(
            f"kiln was not healthy after {self._config.startup_timeout_s:.0f}s:\n{self.log_tail()}"
        )

    async def check_health(self, client: httpx.AsyncClient) -> None:
        """Raises when the process has exited or /health does not answer 200."""
        code = self.exit_code()
        if code is not None:
            raise RuntimeError(f"kiln (pid {self.pid}) exited with status {code}")
        try:
            response = await client.get(f"{self.url}/health", timeout=self._config.health_timeout_s)
        except httpx.HTTPError as e:
            raise RuntimeError(f"kiln (pid {self.pid}) /health failed: {e!r}") from e
        if response.status_code != 200:
            raise RuntimeError(f"kiln (pid {self.pid}) /health answered {response.status_code}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM (kiln drains in-flight requests), then SIGKILL after `grace_s`."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _pump_log(self) -> None:
        proc = self._require_proc()
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            self._tail.append(line)
            logger.info("[kiln %d] %s", proc.pid, line)
            if self._url is None:
                match = _SERVING.search(line)
                if match:
                    self._url = match.group(1)
        logger.warning("kiln (pid %d) exited with status %s", proc.pid, proc.wait())

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise KilnStartError("kiln was not started")
        return self._proc
