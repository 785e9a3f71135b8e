"""Prefix-cache-affine request routing for the kiln replica deployment.

Ray Serve runs one router per DeploymentHandle, in the process that holds the
handle (here: each ingress replica). The router sees the `ProxyRequest` the
ingress passes to `KilnReplica.forward`, so it can read the prompt prefix.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from typing import Any, List, Optional

from ray.serve.request_router import (
    PendingRequest,
    ReplicaID,
    ReplicaResult,
    RequestRouter,
    RunningReplica,
)

from kiln_ray.prefix import MAX_PREFIX_CHARS, prefix_keys
from kiln_ray.protocol import ProxyRequest

logger = logging.getLogger("ray.serve")


class PrefixAffinityRouter(RequestRouter):
    """Sends a prompt to the replica that most recently served its longest known prefix.

    Prefixes are remembered at 64, 128, 256, ... characters (see
    `kiln_ray.prefix.prefix_keys`), newest owner wins, least recently used
    forgotten beyond `max_entries`. Affinity yields to load: when the preferred
    replica has more than `imbalance_threshold` requests more in flight than
    the least-loaded one, or is full, the least-loaded replica is chosen.
    Requests without a prefix go to the least-loaded replica.

    Options (`request_router_kwargs`): imbalance_threshold (default 8),
    max_entries (default 100000), max_prefix_chars (default 8192).
    """

    imbalance_threshold: int = 8
    max_entries: int = 100_000
    max_prefix_chars: int = MAX_PREFIX_CHARS

    def initialize_state(
        self,
        imbalance_threshold: int = 8,
        max_entries: int = 100_000,
        max_prefix_chars: int = MAX_PREFIX_CHARS,
        **kwargs: object,
    ) -> None:
        if kwargs:
            raise ValueError(f"unknown PrefixAffinityRouter options {sorted(kwargs)}")
        if imbalance_threshold < 0 or max_entries < 1 or max_prefix_chars < 1:
            raise ValueError("imbalance_threshold must be >= 0, max_entries and max_prefix_chars >= 1")
        self.imbalance_threshold = imbalance_threshold
        self.max_entries = max_entries
        self.max_prefix_chars = max_prefix_chars

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Prefix key -> replica that most recently served it, oldest first.
        self._owners: "OrderedDict[int, ReplicaID]" = OrderedDict()

    async def choose_replicas(
        self,
        candidate_replicas: List[RunningReplica],
        pending_request: Optional[PendingRequest] = None,
    ) -> List[List[RunningReplica]]:
        request = _proxy_request(pending_request)
        candidates = list(candidate_replicas)
        if request is not None and request.avoid:
            kept = [r for r in candidates if r.replica_id.unique_id not in request.avoid]
            candidates = kept or candidates
        random.shuffle(candidates)  # ties between equally loaded replicas
        if pending_request is not None:
            # When every rank is full, back off before the next try.
            pending_request.routing_context.should_backoff = True
        preferred = self._preferred(request, candidates)
        if preferred is None:
            return [candidates]
        others = [r for r in candidates if r.replica_id != preferred.replica_id]
        return [[preferred], others] if others else [[preferred]]

    def on_request_routed(
        self,
        pending_request: PendingRequest,
        replica_id: ReplicaID,
        result: ReplicaResult,
    ) -> None:
        request = _proxy_request(pending_request)
        if request is None or not request.prefix:
            return
        owners = self._owners
        for key in prefix_keys(request.prefix, self.max_prefix_chars):
            owners[key] = replica_id
            owners.move_to_end(key)
        while len(owners) > self.max_entries:
            owners.popitem(last=False)

    def _preferred(
        self, request: Optional[ProxyRequest], candidates: List[RunningReplica]
    ) -> Optional[RunningReplica]:
        if request is None or not request.prefix:
            return None
        by_id = {r.replica_id: r for r in candidates}
        owners = self._owners
        preferred: Optional[RunningReplica] = None
        for key in prefix_keys(request.prefix, self.max_prefix_chars):
            owner = owners.get(key)
            if owner is not None and owner in by_id:
                preferred = by_id[owner]
        if preferred is None:
            return None
        loads = {r.replica_id: self.replica_queue_len_cache.get(r.replica_id) for r in candidates}
        own = loads[preferred.replica_id]
        known = [n for n in loads.values() if n is not None]
        if own is not None and known and own - min(known) > self.imbalance_threshold:
            return None
        return preferred


def _proxy_request(pending_request: Optional[PendingRequest]) -> Optional[ProxyRequest]:
    if pending_request is None:
        return None
    for arg in pending_request.args:
        if isinstance(arg, ProxyRequest):
            return arg
    value = pending_request.kwargs.get("request")
    return value if isinstance(value, ProxyRequest) else None
