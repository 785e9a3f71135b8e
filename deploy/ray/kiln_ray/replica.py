"""The replica deployment: one supervised `kiln serve` process per replica."""

from __future__ import annotations

import logging
from typing import AsyncIterator, Optional, Union

import httpx
import ray
from ray import serve
from ray.serve import Deployment
from ray.serve.config import RequestRouterConfig

from kiln_ray.config import KilnConfig
from kiln_ray.process import KilnProcess
from kiln_ray.protocol import ProxyRequest, ResponseHead, error_body, sse_error_event

logger = logging.getLogger("ray.serve")

ROUTER_CLASS = "kiln_ray.router.PrefixAffinityRouter"

# Headers that describe one hop, not the response.
_HOP_HEADERS = frozenset(
    {"connection", "content-length", "transfer-encoding", "keep-alive", "date", "server"}
)


class KilnReplicaServer:
    """Starts `kiln serve` on a free local port and relays requests to it.

    Serve calls `check_health` every `health_check_period_s`: it fails once the
    process has exited or /health stops answering 200, and Serve then replaces
    the replica (a new actor, a new process). Requests in flight when the
    process dies end with a 502 (or an error event in a stream) at once.
    """

    async def __init__(self, config: KilnConfig) -> None:  # type: ignore[misc]  # Serve awaits it
        self._config = config
        self._replica = serve.get_replica_context().replica_id.unique_id
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        self._process = KilnProcess(config, num_cpus=cpus)
        await self._process.start()
        self._client = httpx.AsyncClient(
            base_url=self._process.url,
            timeout=httpx.Timeout(config.request_timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )

    async def check_health(self) -> None:
        await self._process.check_health(self._client)

    def __del__(self) -> None:
        process: Optional[KilnProcess] = getattr(self, "_process", None)
        if process is not None:
            process.stop()

    async def forward(self, request: ProxyRequest) -> AsyncIterator[Union[ResponseHead, bytes]]:
        """Yields a `ResponseHead`, then the body: whole, or chunk by chunk for SSE."""
        if self._process.exit_code() is not None:
            yield self._head(503, retryable=True)
            yield error_body(503, self._died("before the request was sent"))
            return
        upstream = self._client.build_request(
            request.method, request.path, content=request.body, headers=list(request.headers)
        )
        try:
            response = await self._client.send(upstream, stream=True)
        except httpx.ConnectError as e:
            yield self._head(503, retryable=True)
            yield error_body(503, self._failure("could not connect", e))
            return
        except httpx.TimeoutException as e:
            yield self._head(504)
            yield error_body(504, self._failure("timed out", e))
            return
        except httpx.HTTPError as e:
            yield self._head(502)
            yield error_body(502, self._failure("lost the request", e))
            return
        try:
            headers = tuple((k, v) for k, v in response.headers.items() if k.lower() not in _HOP_HEADERS)
            is_sse = response.headers.get("content-type", "").startswith("text/event-stream")
            if not is_sse:
                try:
                    body = await response.aread()
                except httpx.HTTPError as e:
                    status = 504 if isinstance(e, httpx.TimeoutException) else 502
                    yield self._head(status)
                    yield error_body(status, self._failure("failed while answering", e))
                    return
                yield self._head(response.status_code, headers)
                yield body
                return
            yield self._head(response.status_code, headers)
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            except httpx.HTTPError as e:
                status = 504 if isinstance(e, httpx.TimeoutException) else 502
                yield sse_error_event(status, self._failure("failed mid-stream", e))
        finally:
            await response.aclose()

    def _head(
        self, status: int, headers: tuple[tuple[str, str], ...] = (), retryable: bool = False
    ) -> ResponseHead:
        if not headers:
            headers = (("content-type", "application/json"),)
        return ResponseHead(status, headers, self._replica, self._process.pid, retryable)

    def _failure(self, what: str, error: Exception) -> str:
        code = self._process.exit_code()
        if code is not None:
            return self._died("while the request was in flight")
        return f"kiln on replica {self._replica} {what}: {error!r}"

    def _died(self, when: str) -> str:
        return (
            f"kiln on replica {self._replica} exited (status {self._process.exit_code()}) {when}; "
            "Ray Serve is replacing the replica, retry the request"
        )


KilnReplica: Deployment = serve.deployment(
    name="KilnReplica",
    max_ongoing_requests=64,
    health_check_period_s=2,
    health_check_timeout_s=10,
    graceful_shutdown_timeout_s=30,
    ray_actor_options={"num_cpus": 1},
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16},
    # A dotted path, as in a config file (the stubs only know the dict form).
    request_router_config=RequestRouterConfig(request_router_class=ROUTER_CLASS),  # type: ignore[arg-type]
)(KilnReplicaServer)
