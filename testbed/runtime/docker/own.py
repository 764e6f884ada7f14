"""A user's own service on the docker runtime: their image, built from their Dockerfile
when they give one, run under the same TESTBED_* contract as on the local runtime."""

from __future__ import annotations

import docker
import docker.errors

from testbed.errors import ComponentError, TopologyError
from testbed.runtime.own import prepare_own
from testbed.topology.model import Topology
from testbed.topology.own import OwnService


def build_image(client: docker.DockerClient, name: str, own: OwnService) -> None:
    """``docker build`` of own.dockerfile, its folder the context (offline: the file must
    not need a registry, e.g. FROM scratch with a static binary)."""
    assert own.image is not None and own.dockerfile is not None
    path = own.path(own.dockerfile)
    if not path.is_file():
        raise TopologyError(f"services[{name}].own.dockerfile", f"{path} does not exist",
                            "give the Dockerfile's path, relative to the topology file")
    try:
        client.images.build(path=str(path.parent), dockerfile=path.name, tag=own.image,
                            rm=True, forcerm=True, labels={"testbed.own": name})
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        said = "".join(str(line.get("stream", line.get("error", "")))
                       for line in getattr(exc, "build_log", []))[-1500:]
        raise ComponentError(f"docker build of {own.image} for {name} failed: {exc}\n"
                             f"{said}") from exc


def prepare_own_images(client: docker.DockerClient, topology: Topology) -> None:
    """Run each own service's build, build its image when a Dockerfile is given, and check
    the image is there: before anything of the deploy exists."""
    prepare_own(topology, local=False)
    for spec in topology.own_services:
        own = spec.own
        assert own is not None
        if own.image is None:
            raise TopologyError(f"services[{spec.name}].own.image", "no image to run on the "
                                "docker runtime", "give image = 'name:tag' (and dockerfile "
                                "= 'Dockerfile' to have it built), or use --runtime local")
        if own.dockerfile is not None:
            build_image(client, spec.name, own)
            continue
        try:
            client.images.get(own.image)
        except docker.errors.ImageNotFound as exc:
            raise TopologyError(f"services[{spec.name}].own.image", f"no image {own.image} "
                                "on this engine (no registry is reached)",
                                "build it first (docker build -t ...), or give own.dockerfile "
                                "so the testbed builds it") from exc
