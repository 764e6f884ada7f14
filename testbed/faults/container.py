"""Container faults: a network partition, cutting a service's container off its networks.

Only a container runtime can express it: local processes share the host's loopback, so
a "partition" there is a cut link (``link_down`` on each of the service's links). The
service keeps running and keeps its state, as on the far side of a real partition.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from testbed.faults.base import Fault, FaultSpecError, Verification
from testbed.faults.probes import probe
from testbed.faults.process import find_service
from testbed.runtime.base import Deployment


@runtime_checkable
class Partitionable(Protocol):
    """A service handle that can be cut off its networks (the docker runtime's)."""

    @property
    def url(self) -> str: ...
    def partition(self) -> list[str]: ...
    def heal(self) -> None: ...


class Partition(Fault):
    """Disconnect a service's container from its networks; removal reconnects it."""

    kind = "partition"

    def __init__(self, deployment: Deployment, service: str) -> None:
        super().__init__(f"{deployment.id}/{service}")
        handle = find_service(deployment, service)
        if not isinstance(handle, Partitionable):
            raise FaultSpecError(f"partition of {service}: the {deployment.runtime} runtime "
                                 "has no networks to cut; use the docker runtime, or "
                                 "link_down on the service's links")
        self.handle = handle
        self.networks: list[str] = []

    def inject(self) -> None:
        self.networks = self.handle.partition()

    def remove(self) -> None:
        self.handle.heal()

    def verify(self) -> Verification:
        # Its published port has nothing behind it now: docker's port proxy closes,
        # resets or times out instead of reaching the service.
        seen = probe(int(self.handle.url.rsplit(":", 1)[1]), "http", 2.0)
        return Verification(seen.outcome != "ok", f"cut off {', '.join(self.networks)}; "
                                                  f"its port answers {seen.outcome}")
