"""Getting a user's own services ready to run: their build step, and their program found.

Runs before anything of the deploy starts, so a failed build or a missing program leaves
nothing running (the runtimes call it from their preflight).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from testbed.errors import ComponentError, TopologyError
from testbed.topology.model import ServiceSpec, Topology
from testbed.topology.own import OwnService

BUILD_TIMEOUT_S = 600.0  # a first `go build` fetches modules


def run_build(name: str, own: OwnService) -> None:
    """The service's build command, in the topology file's folder; its output is in the
    error when it fails."""
    if not own.build:
        return
    try:
        done = subprocess.run(list(own.build), cwd=own.directory, capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise TopologyError(f"services[{name}].own.build", f"cannot run {own.build[0]!r}: "
                            f"{exc.strerror}", "install it, or fix the build command") from exc
    except subprocess.TimeoutExpired as exc:
        raise ComponentError(f"the build of {name} ({' '.join(own.build)}) did not finish "
                             f"within {BUILD_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise ComponentError(f"the build of {name} failed (exit {done.returncode}): "
                             f"{' '.join(own.build)} in {own.directory}\n{output}")


def require_program(name: str, own: OwnService) -> list[str]:
    """The command to start, with its program checked: a clear error rather than a
    service that never became ready."""
    if not own.command:
        raise TopologyError(f"services[{name}].own.command", "no command to run on the local "
                            "runtime", "give command = [...], or deploy with --runtime "
                            "docker (it runs own.image)")
    argv = own.resolved_command()
    program = argv[0]
    found = program if "/" in program else shutil.which(program)
    if found is None or not os.access(found, os.X_OK) or Path(found).is_dir():
        raise TopologyError(f"services[{name}].own.command", f"{program} is not an executable "
                            "program", "build it first (own.build runs before the deploy), "
                            "or fix the path (relative paths start at the topology file)")
    return argv


def prepare_own(topology: Topology, local: bool) -> dict[str, list[str]]:
    """Build every own service; on the local runtime, each one's command to start."""
    commands: dict[str, list[str]] = {}
    for spec in topology.own_services:
        own = _own(spec)
        run_build(spec.name, own)
        if local:
            commands[spec.name] = require_program(spec.name, own)
    return commands


def _own(spec: ServiceSpec) -> OwnService:
    assert spec.own is not None
    return spec.own
