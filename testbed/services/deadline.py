"""Deadline propagation for the sync chain: the caller says when it will stop waiting.

The load generator sends ``X-Request-Deadline`` (Unix time, seconds) with every order.
A hop whose ``deadline`` knob is on answers 504 at once for an order with less time
left than ``deadline_reserve_ms`` (0: only when the caller has already given up, having
waited past its deadline for a worker), and gives the downstream call only the time that
is left, passing the deadline on. Without it a saturated hop
serves its queue in order, long after the callers left: all of its work is wasted.
Every process reads the same host clock (containers too), so absolute times compare.
"""

from __future__ import annotations

import math
import time

from testbed.services.reply import Environ

HEADER = "X-Request-Deadline"
_ENVIRON_KEY = "HTTP_" + HEADER.upper().replace("-", "_")


def header(timeout_s: float) -> dict[str, str]:
    """The header a caller that waits ``timeout_s`` from now sends."""
    return forward(time.time() + timeout_s)


def forward(deadline: float) -> dict[str, str]:
    """The header that passes a deadline on to the next hop."""
    return {HEADER: f"{deadline:.3f}"}


def read(environ: Environ) -> float | None:
    """The request's deadline, or None when it carries none (or an unreadable one)."""
    try:
        deadline = float(environ.get(_ENVIRON_KEY, ""))
    except ValueError:
        return None
    return deadline if math.isfinite(deadline) else None


def remaining(deadline: float) -> float:
    return deadline - time.time()
