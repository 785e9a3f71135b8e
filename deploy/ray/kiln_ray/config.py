"""Configuration of one supervised `kiln serve` process."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

# Flags the replica sets itself: each process listens on a free local port.
_MANAGED_FLAGS = ("--host", "--port", "-p")


class ConfigError(ValueError):
    """A configuration value that cannot work."""


@dataclass(frozen=True)
class KilnConfig:
    """How a replica starts and talks to its `kiln serve` process."""

    binary: str = "kiln"
    """Path of the `kiln` binary, or a name looked up on PATH (env KILN_BINARY overrides the default)."""

    args: tuple[str, ...] = ()
    """Flags for `kiln serve`, e.g. ("--kv-cache-memory", "256MiB", "--device", "cuda:0")."""

    startup_timeout_s: float = 300.0
    """How long a new process may take to load the model and answer /health."""

    request_timeout_s: float = 600.0
    """Longest silence from kiln while a request is in flight (read timeout)."""

    health_timeout_s: float = 5.0
    """Timeout of one /health probe."""

    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables added for the process (e.g. RUST_LOG)."""

    threads_from_num_cpus: bool = True
    """Size kiln's CPU thread pool (KILN_NUM_THREADS) to the replica's Ray CPUs
    (`ray_actor_options.num_cpus`, at least 1), unless KILN_NUM_THREADS is set."""

    def __post_init__(self) -> None:
        for arg in self.args:
            name = arg.split("=", 1)[0]
            if name in _MANAGED_FLAGS:
                raise ConfigError(
                    f"`{arg}` is set by kiln_ray (each replica listens on a free local port); "
                    "remove it from args"
                )
        for name in ("startup_timeout_s", "request_timeout_s", "health_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "KilnConfig":
        """Builds a config from `serve run` application args (unknown keys are errors)."""
        known = {
            "binary",
            "args",
            "startup_timeout_s",
            "request_timeout_s",
            "health_timeout_s",
            "extra_env",
            "threads_from_num_cpus",
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown kiln config keys {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = dict(raw)
        if "binary" not in values:
            values["binary"] = os.environ.get("KILN_BINARY", "kiln")
        args = values.get("args", ())
        if isinstance(args, str):
            raise ConfigError("args must be a list of strings, not one string")
        values["args"] = tuple(str(a) for a in _as_sequence(args))
        values["extra_env"] = {str(k): str(v) for k, v in dict(values.get("extra_env", {})).items()}
        for name in ("startup_timeout_s", "request_timeout_s", "health_timeout_s"):
            if name in values:
                values[name] = float(values[name])
        if "threads_from_num_cpus" in values and not isinstance(values["threads_from_num_cpus"], bool):
            raise ConfigError("threads_from_num_cpus must be true or false")
        return cls(**values)

    def resolved_binary(self) -> str:
        """The binary's absolute path, or a clear error when it cannot be found."""
        path = shutil.which(self.binary)
        if path is None:
            raise ConfigError(
                f"kiln binary {self.binary!r} not found (set `binary` in the config or KILN_BINARY)"
            )
        return path

    def command(self) -> list[str]:
        """The full command line of one replica's process."""
        return [self.resolved_binary(), "serve", "--host", "127.0.0.1", "--port", "0", *self.args]


def _as_sequence(value: Any) -> Sequence[Any]:
    if isinstance(value, (list, tuple)):
        return value
    raise ConfigError(f"expected a list, got {type(value).__name__}")
