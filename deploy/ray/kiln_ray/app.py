"""The Serve application: `serve run kiln_ray.app:build_app` or `serve run serve_config.yaml`."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from ray.serve import Application

from kiln_ray.config import ConfigError, KilnConfig
from kiln_ray.ingress import KilnIngress
from kiln_ray.replica import KilnReplica


def build_app(args: Optional[Mapping[str, Any]] = None) -> Application:
    """Builds ingress + replicas from application args.

    Keys: those of `KilnConfig` (binary, args, startup_timeout_s,
    request_timeout_s, health_timeout_s, extra_env, threads_from_num_cpus),
    `retries` (how often the ingress resends a request that never reached
    kiln, default 1) and `num_replicas` (a fixed replica count instead of
    autoscaling).
    Deployment options (replicas, autoscaling, resources) come from the
    decorators or the config file's `deployments` section.
    """
    values = dict(args or {})
    retries = int(values.pop("retries", 1))
    if retries < 0:
        raise ConfigError("retries must be >= 0")
    num_replicas = values.pop("num_replicas", None)
    # The binary is looked up by each replica, on its own node: the node that
    # runs `serve run` need not have it.
    config = KilnConfig.from_dict(values)
    replica = KilnReplica
    if num_replicas is not None:
        if int(num_replicas) < 1:
            raise ConfigError("num_replicas must be >= 1")
        replica = KilnReplica.options(num_replicas=int(num_replicas), autoscaling_config=None)
    return KilnIngress.bind(replica.bind(config), retries=retries, timeout_s=config.request_timeout_s)
