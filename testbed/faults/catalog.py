"""Building faults by name, as a fault spec in a file or on a command line would say it.

Everything is checked before anything is touched: an unknown name, an unknown target
or an impossible parameter raises FaultSpecError naming what is wrong and what is known.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from testbed.faults.base import Fault, FaultSpecError
from testbed.faults.network import TOXICS, LinkDown, ToxicFault
from testbed.faults.process import CrashLoop, KillService, PauseService, RestartService
from testbed.runtime.base import Deployment

NETWORK = (*TOXICS, "link_down")
PROCESS: dict[str, Callable[..., Fault]] = {
    "kill": KillService, "pause": PauseService, "restart": RestartService,
    "crash_loop": CrashLoop}
FAULTS = (*NETWORK, *PROCESS)


def make_fault(deployment: Deployment, name: str, target: str, **params: Any) -> Fault:
    """A fault by name: network faults target a link, process faults a service."""
    if name in TOXICS:
        stream = params.pop("stream", "downstream")
        toxicity = params.pop("toxicity", 1.0)
        return ToxicFault(deployment, target, name, params, stream, toxicity)
    if name == "link_down":
        _no_params(name, params)
        return LinkDown(deployment, target)
    if name in PROCESS:
        if name != "crash_loop":
            _no_params(name, params)
        try:
            return PROCESS[name](deployment, target, **params)
        except TypeError as exc:
            raise FaultSpecError(f"{name}: {exc}") from exc
    raise FaultSpecError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")


def _no_params(name: str, params: dict[str, Any]) -> None:
    if params:
        raise FaultSpecError(f"{name} takes no parameters, got {sorted(params)}")
