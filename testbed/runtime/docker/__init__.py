"""The ``docker`` runtime: every service, the broker and Toxiproxy in containers.

containers.py  services, the broker and Toxiproxy as handles, readiness and log tails
kafka.py       a deployment's Kafka node in a container (KafkaControl)
plan.py        what a topology becomes: service configs, broker objects, proxy upstreams
runtime.py     DockerRuntime (the Runtime protocol): networks, containers, teardown
cleanup.py     removing a run's objects: teardown, the watchdog, `testbed gc`
compose.py     the same plan as compose files, for `docker compose up` by hand
"""

from testbed.runtime.docker.cleanup import (
    collect_docker_garbage,
    dead_run_objects,
    remove_run_objects,
)
from testbed.runtime.docker.compose import compose_project, write_compose
from testbed.runtime.docker.containers import (
    LABEL_RUN,
    SERVICE_CONFIG_PATH,
    TOXIPROXY_API_PORT,
    wait_ready,
)
from testbed.runtime.docker.runtime import DockerRuntime

__all__ = ["LABEL_RUN", "SERVICE_CONFIG_PATH", "TOXIPROXY_API_PORT", "DockerRuntime",
           "collect_docker_garbage", "compose_project", "dead_run_objects",
           "remove_run_objects", "wait_ready", "write_compose"]
