"""Layer 2: runtimes turn topologies into running things. Chosen by name."""

from __future__ import annotations

from typing import Any

from testbed.errors import RuntimeNotFoundError
from testbed.runtime.base import BrokerAccess, Deployment, ProxyEndpoint, Runtime, ServiceHandle

RUNTIMES = ("local", "docker")


def get_runtime(name: str = "local", **options: Any) -> Runtime:
    """A new, unopened runtime of the named backend."""
    if name == "local":
        from testbed.runtime.local import LocalRuntime

        return LocalRuntime(**options)
    if name == "docker":
        from testbed.runtime.docker import DockerRuntime

        return DockerRuntime(**options)
    raise RuntimeNotFoundError(f"unknown runtime {name!r}; available: {', '.join(RUNTIMES)}")


__all__ = ["RUNTIMES", "BrokerAccess", "Deployment", "ProxyEndpoint", "Runtime",
           "ServiceHandle", "get_runtime"]
