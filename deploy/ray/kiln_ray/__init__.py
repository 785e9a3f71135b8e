"""Multi-replica serving of `kiln serve` on Ray Serve.

`build_app` (also the `serve run` entry point `kiln_ray.app:build_app`) wires an
ingress deployment, which reads each request's prompt, to a replica deployment
that supervises one `kiln serve` process per replica. The handle between them
routes with `PrefixAffinityRouter`: a prompt whose prefix a replica served
recently goes back to that replica (its KV blocks are cached there), otherwise
to the least-loaded replica.
"""

from kiln_ray.config import KilnConfig

__all__ = ["KilnConfig"]
