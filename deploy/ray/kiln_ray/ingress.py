"""The ingress deployment: HTTP in, prompt prefix out to the replica router."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any, AsyncIterator, Optional, Union, cast

from ray import serve
from ray.serve import Deployment
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from kiln_ray.prefix import MAX_PREFIX_CHARS, prompt_text
from kiln_ray.protocol import (
    PID_HEADER,
    REPLICA_HEADER,
    ProxyRequest,
    ResponseHead,
    error_body,
    sse_error_event,
)

logger = logging.getLogger("ray.serve")

ROUTES = {
    ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
}
_FORWARDED_HEADERS = ("content-type", "authorization", "accept")


class KilnIngressServer:
    """Serve's HTTP ingress: proxies the OpenAI endpoints to `KilnReplica`.

    It reads the JSON body once to find the prompt, so the handle's router
    (`PrefixAffinityRouter`) can route on it, and turns failures of a replica
    into OpenAI-style errors: a JSON body with 502/503/504 before the response
    began, an `error` event inside a stream after. A request that never reached
    kiln (its process had exited) is retried once on another replica.
    """

    def __init__(self, replicas: DeploymentHandle, retries: int = 1, timeout_s: float = 600.0) -> None:
        self._replicas = replicas.options(stream=True)
        self._retries = retries
        self._timeout_s = timeout_s

    async def __call__(self, http: Request) -> Response:
        path = http.url.path.rstrip("/") or "/"
        if http.method == "GET" and path == "/health":
            return Response(b'{"status":"ok"}', media_type="application/json")
        if (http.method, path) not in ROUTES:
            return _error(404, f"no route {http.method} {path}")
        body = await http.body()
        parsed = _json(body)
        stream = bool(parsed.get("stream")) if isinstance(parsed, dict) else False
        request = ProxyRequest(
            method=http.method,
            path=path,
            body=body,
            headers=tuple((k, http.headers[k]) for k in _FORWARDED_HEADERS if k in http.headers),
            stream=stream,
            prefix=prompt_text(parsed)[:MAX_PREFIX_CHARS],
        )
        opened = await self._open(request)
        if isinstance(opened, Response):
            return opened
        head, chunks = opened
        headers = {k: v for k, v in head.headers}
        headers[REPLICA_HEADER] = head.replica
        if head.pid is not None:
            headers[PID_HEADER] = str(head.pid)
        if not stream or not headers.get("content-type", "").startswith("text/event-stream"):
            try:
                content = b"".join([c async for c in chunks if isinstance(c, bytes)])
            except Exception as e:  # the replica's actor died between head and body
                return _error(502, f"replica {head.replica} failed while answering: {e!r}")
            headers.pop("content-type", None)
            return Response(
                content,
                status_code=head.status,
                headers=headers,
                media_type=dict(head.headers).get("content-type", "application/json"),
            )
        return StreamingResponse(_relay(chunks, head.replica), status_code=head.status, headers=headers)

    async def _open(
        self, request: ProxyRequest
    ) -> Union[Response, tuple[ResponseHead, DeploymentResponseGenerator]]:
        avoid: frozenset[str] = frozenset()
        for attempt in range(self._retries + 1):
            chunks = cast(
                DeploymentResponseGenerator, self._replicas.forward.remote(_with_avoid(request, avoid))
            )
            try:
                head = await asyncio.wait_for(chunks.__anext__(), timeout=self._timeout_s)
            except asyncio.TimeoutError:
                chunks.cancel()
                return _error(504, f"no response from a kiln replica within {self._timeout_s:.0f}s")
            except Exception as e:  # the replica's actor died or is being replaced
                logger.warning("kiln replica failed: %r", e)
                return _error(503, f"the kiln replica serving this request failed: {e!r}; retry the request")
            if not isinstance(head, ResponseHead):
                chunks.cancel()
                return _error(502, "malformed reply from a kiln replica")
            if head.retryable and attempt < self._retries:
                chunks.cancel()
                avoid = avoid | {head.replica}
                logger.warning("replica %s could not take the request; retrying elsewhere", head.replica)
                continue
            return head, chunks
        raise AssertionError("unreachable")


async def _relay(chunks: DeploymentResponseGenerator, replica: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            if isinstance(chunk, bytes):
                yield chunk
    except Exception as e:  # the replica's actor died mid-stream
        yield sse_error_event(502, f"replica {replica} failed mid-stream: {e!r}")


def _with_avoid(request: ProxyRequest, avoid: frozenset[str]) -> ProxyRequest:
    return dataclasses.replace(request, avoid=avoid) if avoid else request


def _json(body: bytes) -> Optional[Any]:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None  # kiln answers 400 with the details


def _error(status: int, message: str) -> Response:
    return Response(error_body(status, message), status_code=status, media_type="application/json")


KilnIngress: Deployment = serve.deployment(
    name="KilnIngress",
    num_replicas=1,
    max_ongoing_requests=1024,
    ray_actor_options={"num_cpus": 0},
)(KilnIngressServer)
