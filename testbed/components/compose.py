"""Docker Compose v2, so the files in compose/ run with ``docker compose up`` here too.

Debian's docker.io has no compose plugin and these machines reach no download site, so
``testbed setup --docker`` builds the pinned release from the Go module proxy (about three
minutes on two cores) into the docker CLI's per-user plugin directory, where ``docker
compose`` finds it. A compose that is already there, of any v2 version, is left alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from testbed.components.install import go_build
from testbed.errors import ComponentError

COMPOSE_VERSION = "v2.40.3"
COMPOSE_MODULE = f"github.com/docker/compose/v2@{COMPOSE_VERSION}"
# The version `docker compose version` prints; unset, a source build says "dev".
COMPOSE_LDFLAGS = f"-s -w -X github.com/docker/compose/v2/internal.Version={COMPOSE_VERSION}"


def plugin_dir() -> Path:
    """Where the docker CLI looks for a user's plugins: $DOCKER_CONFIG/cli-plugins."""
    config = os.environ.get("DOCKER_CONFIG") or os.path.join(Path.home(), ".docker")
    return Path(config) / "cli-plugins"


def install_hint() -> str:
    return (f"`testbed setup --docker` (builds Docker Compose {COMPOSE_VERSION} from the Go "
            f"module proxy into {plugin_dir()})")


def compose_version() -> str | None:
    """The version of ``docker compose``, or None when the CLI has no v2 compose."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        done = subprocess.run([docker, "compose", "version", "--short"], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = done.stdout.strip()
    return version if done.returncode == 0 and version.lstrip("v").startswith("2") else None


def require_compose() -> str:
    """The ``docker compose`` version, or an error naming how to get it."""
    version = compose_version()
    if version is None:
        raise ComponentError("`docker compose` (v2) is not available: the docker CLI has no "
                             f"compose plugin. Fix: {install_hint()}")
    return version


def install_compose() -> Path:
    return go_build(COMPOSE_MODULE, "./cmd", plugin_dir() / "docker-compose", "docker compose",
                    ldflags=COMPOSE_LDFLAGS)


def ensure_compose() -> list[str]:
    """Build and install compose when the docker CLI has none; returns what was done."""
    if shutil.which("docker") is None:
        raise ComponentError("the docker CLI is not installed, so `docker compose` cannot "
                             "run. Fix: `testbed setup --docker` (installs docker.io)")
    if compose_version() is not None:
        return []
    target = install_compose()
    return [f"docker compose {require_compose()} -> {target}"]
