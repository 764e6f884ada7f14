"""A service the user brings: their own program in a topology, under the testbed's contract.

The testbed runs it (a command on the local runtime, an image on the docker runtime),
tells it through TESTBED_* environment variables where it listens and where its
downstream is (through the proxies, so every hop can be faulted), waits for its health
path, and reads its ledger when it offers one. The contract: examples/own-services.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import TopologyError

OWN_ROLES = ("http_stage", "async_consumer")
ENV_PREFIX = "TESTBED_"
OWN_KEYS = {"command", "image", "build", "dockerfile", "health", "ledger", "env"}
# The knobs an own service is told (TESTBED_TIMEOUT_S, _WORK_MS, _PREFETCH), the queue
# policies the broker applies to its queue, and the container's limits. Everything else
# is behaviour inside the testbed's own services, which a user's program must do itself.
OWN_KNOBS = {"timeout_s", "work_ms", "prefetch", "queue_type", "max_length", "overflow",
             "dead_letter", "delivery_limit", "cpus", "memory_mb"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$")


def _argv(path: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v
                                                      for v in value):
        raise TopologyError(path, f"{value!r} is not a command",
                            "give the program and its arguments, e.g. "
                            "[\"./bin/own-service\", \"--verbose\"]")
    return tuple(value)


@dataclass(frozen=True)
class OwnService:
    """How to run, build and check the user's program."""

    command: tuple[str, ...] = ()  # local runtime: the program and its arguments
    image: str | None = None  # docker runtime: the image to run
    build: tuple[str, ...] = ()  # run before the deploy, in ``directory`` (e.g. go build)
    dockerfile: str | None = None  # docker runtime: build ``image`` from this file
    health: str = "/health"  # answers 2xx once the service is ready
    ledger: bool = True  # offers GET /ledger ({"processed": {order_id: n}})
    env: tuple[tuple[str, str], ...] = ()  # more environment for the program
    directory: str = "."  # where command, build and dockerfile are found (the file's folder)

    def __post_init__(self) -> None:
        where = "own"
        if not self.command and not self.image:
            raise TopologyError(where, "neither a command nor an image",
                                "give command = [...] (local runtime) or image = '...' "
                                "(docker runtime), or both")
        if self.image is not None and (not isinstance(self.image, str)
                                       or not _IMAGE.fullmatch(self.image)):
            raise TopologyError(f"{where}.image", f"{self.image!r} is not an image name",
                                "give a local image like 'my-service:latest'")
        if self.dockerfile is not None and self.image is None:
            raise TopologyError(f"{where}.dockerfile", "a Dockerfile builds an image, and "
                                "no image is named", "add image = 'name:tag'")
        if not isinstance(self.health, str) or not self.health.startswith("/"):
            raise TopologyError(f"{where}.health", f"{self.health!r} is not a path",
                                "give the path that answers 2xx when ready, e.g. '/health'")
        if not isinstance(self.ledger, bool):
            raise TopologyError(f"{where}.ledger", f"{self.ledger!r} is not allowed",
                                "give true (it serves GET /ledger) or false")
        for key, _ in self.env:
            if not _ENV_NAME.fullmatch(key) or key.startswith(ENV_PREFIX):
                raise TopologyError(f"{where}.env.{key}", "not a name of yours to set",
                                    f"use a variable name that does not start with "
                                    f"{ENV_PREFIX} (the testbed sets those)")

    def path(self, name: str) -> Path:
        """A file named in the topology, relative to the topology file's folder."""
        return Path(self.directory, name)

    def resolved_command(self) -> list[str]:
        """The command, its program found relative to the topology file when it is a path
        (``./bin/x`` or ``bin/x``); a bare name is looked up on PATH."""
        program, *rest = self.command
        if "/" in program and not Path(program).is_absolute():
            program = str(self.path(program).resolve())
        return [program, *rest]


def own_from_dict(data: Mapping[str, Any], path: str, directory: Path) -> OwnService:
    """An ``[services.own]`` table; paths in it are relative to ``directory``."""
    if not isinstance(data, Mapping):
        raise TopologyError(path, f"expected a table, got {type(data).__name__}",
                            "write it as [services.own] with command/image = ...")
    unknown = sorted(set(data) - OWN_KEYS)
    if unknown:
        raise TopologyError(f"{path}.{unknown[0]}", "unknown key", f"use only {sorted(OWN_KEYS)}")
    env = data.get("env", {})
    if not isinstance(env, Mapping) or not all(isinstance(v, str | int | float)
                                               for v in env.values()):
        raise TopologyError(f"{path}.env", f"{env!r} is not a table of values",
                            "write it as env = { NAME = \"value\" }")
    try:
        return OwnService(
            command=_argv(f"{path}.command", data["command"]) if "command" in data else (),
            image=data.get("image"),
            build=_argv(f"{path}.build", data["build"]) if "build" in data else (),
            dockerfile=data.get("dockerfile"), health=data.get("health", "/health"),
            ledger=data.get("ledger", True),
            env=tuple((str(k), str(v)) for k, v in env.items()), directory=str(directory))
    except TopologyError as exc:
        if exc.field.startswith(path):
            raise
        raise TopologyError(path + exc.field.removeprefix("own"), exc.problem,
                            exc.fix) from None


def check_own(name: str, role: str, changed_knobs: list[str]) -> None:
    """Refuse a role or a knob an own service cannot have, naming why."""
    where = f"services[{name}]"
    if role not in OWN_ROLES:
        raise TopologyError(f"{where}.own", f"a {role} cannot be your own service",
                            "bring an http_stage or an async_consumer; the gateway stays "
                            "the testbed's (it times every order)")
    refused = [k for k in changed_knobs if k not in OWN_KNOBS]
    if refused:
        raise TopologyError(f"{where}.knobs.{refused[0]}",
                            "the testbed's own services do this; your program must do it "
                            "itself", "leave it out: an own service is told timeout_s, "
                            "work_ms and prefetch; queue policies and container limits "
                            "apply as well")
