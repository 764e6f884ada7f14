"""Is the testbed itself still standing? Toxiproxy and the broker are the instruments of
an experiment: when one dies mid-run (not by a planned fault), every number after that
measures the testbed, so the trial stops with an aborted verdict instead of hanging on a
drain that cannot come or reporting a broken instrument as a finding."""

from __future__ import annotations

import socket
import time

from testbed.errors import ExperimentAborted, TestbedError
from testbed.runtime.base import Deployment

CHECK_TIMEOUT_S = 2.0
GRACE_S = 3.0  # a component must stay down this long to count (no abort on a blip)


def infrastructure_problem(deployment: Deployment) -> str | None:
    """What of the deployment's Toxiproxy and broker is down, or None when both answer."""
    problems = []
    if deployment.toxiproxy is not None:
        try:
            deployment.toxiproxy.version()
        except (TestbedError, OSError) as exc:
            problems.append(f"Toxiproxy does not answer ({exc})")
    broker = deployment.broker
    if broker is not None:
        address = broker.address
        try:
            running = broker.control.running()
        except (TestbedError, OSError):
            running = False
        if not running:
            problems.append("the broker (RabbitMQ) is not running")
        else:
            try:
                socket.create_connection((address.host, address.amqp_port),
                                         CHECK_TIMEOUT_S).close()
            except OSError as exc:
                problems.append(f"the broker does not accept AMQP connections on "
                                f"{address.host}:{address.amqp_port} ({exc})")
    if deployment.kafka is not None and not deployment.kafka.control.running():
        problems.append("the broker (Kafka) is not running")
    return "; ".join(problems) or None


def require_infrastructure(deployment: Deployment, when: str,
                           grace_s: float = GRACE_S) -> None:
    """Raise ExperimentAborted when Toxiproxy or the broker stays down for ``grace_s``."""
    deadline = time.monotonic() + grace_s
    while (problem := infrastructure_problem(deployment)) is not None:
        if time.monotonic() >= deadline:
            raise ExperimentAborted(problem, when)
        time.sleep(0.25)
