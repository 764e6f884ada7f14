"""Images from official base images, for machines that reach a container registry.

The recipes are the Dockerfiles in ``compose/images/<kind>/`` (python slim, rabbitmq with
management, ghcr.io/shopify/toxiproxy), built with the repository root as their context,
so ``docker compose build`` and ``testbed images build --source official`` make the same
images. They keep the offline images' contract (paths, command, broker scripts under
``/opt/testbed/rabbitmq/sbin``), so the runtime and the compose files take either.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import docker
import docker.errors

from testbed.errors import ComponentError

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPE_DIR = REPO_ROOT / "compose" / "images"
KINDS = ("service", "rabbitmq", "toxiproxy")
PROBE_TIMEOUT_S = 10


def recipe_dir() -> Path:
    """Where the Dockerfiles are; they live in the repository, not in an installed wheel."""
    if not (RECIPE_DIR / "service" / "Dockerfile").is_file():
        raise ComponentError(f"the official-image recipes are not at {RECIPE_DIR} (they ship "
                             "with the repository, not the package). Fix: run from a checkout "
                             "of the project, or use `testbed images build --source offline`")
    return RECIPE_DIR


def dockerfile(kind: str) -> str:
    return (recipe_dir() / kind / "Dockerfile").read_text()


def base_images() -> dict[str, str]:
    """kind -> the official image its recipe starts from (the ARG default before FROM)."""
    found = {}
    for kind in KINDS:
        match = re.search(r"^ARG \w+=(\S+)\s*$", dockerfile(kind), re.MULTILINE)
        if match is None:
            raise ComponentError(f"{recipe_dir() / kind / 'Dockerfile'} names no base image "
                                 "in an `ARG NAME=image` line before FROM")
        found[kind] = match.group(1)
    return found


def recipe_inputs(kind: str) -> list[str]:
    """What an official build of ``kind`` depends on besides the package source."""
    directory = recipe_dir() / kind
    return [f"{p.relative_to(directory)}\0{p.read_text()}"
            for p in sorted(directory.iterdir()) if p.is_file()]


def registry_problem(client: docker.DockerClient) -> str | None:
    """None when the engine reaches the registry of the service's base image, else why not.
    Asks the engine itself (its proxy and mirror settings apply), which fails at once when
    DNS or the network is missing."""
    image = base_images()["service"]
    saved, client.api.timeout = client.api.timeout, PROBE_TIMEOUT_S
    try:
        client.api.inspect_distribution(image)
    except (docker.errors.DockerException, OSError) as exc:
        return f"the engine cannot reach the registry of {image}: {exc}"
    finally:
        client.api.timeout = saved
    return None


def build_context(work: Path, kind: str) -> str:
    """Lay out the repository-root context the recipe expects (the package and the
    recipes only) in ``work``; returns the Dockerfile path inside it."""
    from testbed.images.build import SOURCE_ROOT

    shutil.copytree(SOURCE_ROOT, work / "testbed",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(recipe_dir(), work / "compose" / "images")
    return f"compose/images/{kind}/Dockerfile"
