"""Layer 2: runtimes turn topologies into running things. Chosen by name."""

from __future__ import annotations

from typing import Any

from testbed.errors import RuntimeNotFoundError
from testbed.runtime.base import BrokerAccess, Deployment, ProxyEndpoint, Runtime, ServiceHandle

RUNTIMES = ("local", "docker", "k8s")


def get_runtime(name: str = "local", **options: Any) -> Runtime:
    """A new, unopened runtime of the named backend."""
    if name == "local":
        from testbed.runtime.local import LocalRuntime

        return LocalRuntime(**options)
    if name == "docker":
        from testbed.runtime.docker import DockerRuntime

        return DockerRuntime(**options)
    if name == "k8s":
        from testbed.runtime.k8s import K8sRuntime

        return K8sRuntime(**options)
    raise RuntimeNotFoundError(f"unknown runtime {name!r}; available: {', '.join(RUNTIMES)}")


__all__ = ["RUNTIMES", "BrokerAccess", "Deployment", "ProxyEndpoint", "Runtime",
           "ServiceHandle", "get_runtime"]
