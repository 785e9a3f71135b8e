"""What the ingress and the replicas exchange, and OpenAI-style errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class ProxyRequest:
    """One HTTP request for a replica's kiln process.

    `prefix` is the prompt text the router matches on (empty when the body has
    none); `avoid` names replicas that already failed this request before it
    reached kiln, so a retry goes elsewhere.
    """

    method: str
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...]
    stream: bool
    prefix: str = ""
    avoid: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ResponseHead:
    """First item a replica yields: status and headers, then body chunks follow."""

    status: int
    headers: tuple[tuple[str, str], ...]
    replica: str
    pid: Optional[int]
    retryable: bool = False
    """True when kiln never received the request (safe to send to another replica)."""


REPLICA_HEADER = "x-kiln-replica"
PID_HEADER = "x-kiln-pid"

_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


def error_body(status: int, message: str) -> bytes:
    """An OpenAI-style error object, as kiln itself writes them."""
    return json.dumps(
        {
            "error": {
                "code": status,
                "message": message,
                "param": None,
                "type": _TYPES.get(status, "InternalServerError"),
            }
        }
    ).encode()


def sse_error_event(status: int, message: str) -> bytes:
    """The same error as one server-sent event, for a stream that already began.

    OpenAI clients raise on an event with an `error` member; no `[DONE]` follows.
    """
    return b"data: " + error_body(status, message) + b"\n\n"
