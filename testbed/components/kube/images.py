"""Images for the testbed's cluster: the same offline builds the docker runtime runs,
copied from the Docker engine into the cluster's containerd (no registry here), and a
pause image built offline from a 30-line Go program (pause/main.go)."""

from __future__ import annotations

import fcntl
import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

import docker
import docker.errors

from testbed.components.install import require_go, run_command
from testbed.components.kube.cluster import Cluster, is_own_cluster, require_kubeconfig
from testbed.components.kube.config import PAUSE_IMAGE
from testbed.errors import ComponentError

PAUSE_SOURCE = Path(__file__).with_name("pause")
NAMESPACE = "k8s.io"  # containerd's namespace for the kubelet's images
STALE_PREFIX = "docker.io/testbed/"  # the testbed's own images, as containerd names them


def normalized(ref: str) -> str:
    """The name containerd keeps an image under (docker's short form made whole)."""
    first, _, rest = ref.partition("/")
    if not rest:
        return f"docker.io/library/{ref}"
    return ref if ("." in first or ":" in first or first == "localhost") else f"docker.io/{ref}"


def _ctr(cluster: Cluster, *args: str) -> list[str]:
    return ["ctr", "--address", str(cluster.layout.containerd_socket), "-n", NAMESPACE, *args]


def loaded(cluster: Cluster) -> set[str]:
    done = subprocess.run(_ctr(cluster, "images", "ls", "-q"), capture_output=True, text=True,
                          timeout=30, check=False)
    if done.returncode != 0:
        raise ComponentError(f"cannot list the cluster's images: {done.stderr.strip()}. Fix: "
                             "`testbed setup --k8s` (is its containerd running?)")
    return set(done.stdout.split())


def load(cluster: Cluster, client: docker.DockerClient, refs: list[str]) -> None:
    """``docker save`` each image straight into ``ctr images import``."""
    for ref in refs:
        _load_one(cluster, client, ref)


def _load_one(cluster: Cluster, client: docker.DockerClient, ref: str) -> None:
    try:
        stream = client.api.get_image(ref)
    except docker.errors.DockerException as exc:
        raise ComponentError(f"cannot read {ref} from the Docker engine: {exc}. Fix: "
                             "`testbed images build`") from exc
    with subprocess.Popen(_ctr(cluster, "images", "import", "-"), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as importer:
        assert importer.stdin is not None
        try:
            for chunk in stream:
                importer.stdin.write(chunk)
        except (docker.errors.DockerException, OSError) as exc:
            importer.kill()
            raise ComponentError(f"copying {ref} into the cluster failed: {exc}") from exc
        out, _ = importer.communicate(timeout=300)  # closes its stdin: the end of the image
    if importer.returncode != 0:
        said = out.decode(errors="replace")
        raise ComponentError(f"ctr images import of {ref} failed: {said[-500:]}")


def ensure_images(refs: Iterable[str]) -> None:
    """The docker images named in the cluster (loaded when missing). A cluster of the
    user's (KUBECONFIG elsewhere) must have them already: its nodes pull as they do."""
    if not is_own_cluster(require_kubeconfig()):
        return
    load_missing(Cluster(), refs)


def load_missing(cluster: Cluster, refs: Iterable[str]) -> list[str]:
    """Load the images the cluster lacks (older tags of theirs removed); those loaded.
    One loader at a time (two pytest workers open their runtimes together): the second
    finds the images there."""
    wanted = {normalized(ref): ref for ref in refs}
    with (cluster.home / "images.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = loaded(cluster)
        missing = sorted(ref for name, ref in wanted.items() if name not in have)
        if missing:
            load(cluster, docker.from_env(), missing)
        prune_stale(cluster, set(wanted))
    return missing


def prune_stale(cluster: Cluster, current: set[str]) -> None:
    """Earlier builds of the images just wanted (a source change makes a new tag of the
    same repository): gone from containerd as `testbed images build` removes them from
    the engine. Other repositories are left alone."""
    repositories = {name.rsplit(":", 1)[0] for name in current}
    stale = [name for name in loaded(cluster)
             if name.startswith(STALE_PREFIX) and name not in current
             and name.rsplit(":", 1)[0] in repositories and name != PAUSE_IMAGE]
    if stale:
        subprocess.run(_ctr(cluster, "images", "rm", *stale), capture_output=True,
                       timeout=60, check=False)


def build_pause_image(client: docker.DockerClient) -> str:
    """The sandbox image, FROM scratch with the static pause binary; its ref."""
    go = require_go("the pause image")
    with tempfile.TemporaryDirectory(prefix="testbed-pause-") as work:
        binary = Path(work) / "pause"
        run_command([go, "-C", str(PAUSE_SOURCE), "build", "-trimpath", "-ldflags=-s -w",
                     "-o", str(binary), "."], env={**os.environ, "CGO_ENABLED": "0"})
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            tar.add(binary, "pause")
            dockerfile = b'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n'
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            tar.addfile(info, io.BytesIO(dockerfile))
        context.seek(0)
        ref = PAUSE_IMAGE.removeprefix("docker.io/")
        try:
            client.images.build(fileobj=context, custom_context=True, tag=ref, rm=True)
        except docker.errors.DockerException as exc:
            raise ComponentError(f"building the pause image failed: {exc}") from exc
    return ref


def load_pause_image(cluster: Cluster, client: docker.DockerClient) -> None:
    if PAUSE_IMAGE not in loaded(cluster):
        load(cluster, client, [build_pause_image(client)])
