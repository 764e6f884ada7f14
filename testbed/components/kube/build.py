"""Kubernetes' own binaries, built from the Go module proxy (no release downloads here).

k8s.io/kubernetes is served, but its go.mod points each staging module (k8s.io/api,
k8s.io/apimachinery, ...) at a directory of its repository; a throwaway module maps
every one of them to its published twin at v0.<minor>.<patch>, and then builds the five
node and control-plane commands, and etcd (the datastore the apiserver is tested
against; Debian's etcd-server is 3.4, older than this Kubernetes supports) at the
version Kubernetes pins. One ``go build`` of all six shares the compiled packages.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from testbed.components.install import require_go, run_command, tool_module
from testbed.errors import ComponentError, MissingBinaryError

KUBE_VERSION = "v1.34.2"
STAGING_VERSION = "v0.34.2"  # the staging modules' tag for this release
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
ETCD_VERSION = "v3.6.4"  # what k8s.io/kubernetes v1.34.2 requires
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
                 "kube-proxy")
BINARIES = (*KUBE_COMMANDS, "etcd")
COMPLETE = ".complete"  # written last: a half-finished build is redone
KUBE_BIN_ENV = "TESTBED_KUBE_BIN"  # a directory holding all six binaries


def kube_bin_dir() -> Path:
    """Where `testbed setup --k8s` puts the binaries: in the active environment, one
    directory per pinned version."""
    return Path(sys.prefix) / "share" / "testbed" / f"kubernetes-{KUBE_VERSION}" / "bin"


def find_kube_bin() -> Path | None:
    """The directory of the six binaries, or None when they are not all there."""
    explicit = os.environ.get(KUBE_BIN_ENV)
    directory = Path(explicit) if explicit else kube_bin_dir()
    whole = all(os.access(directory / name, os.X_OK) for name in BINARIES)
    if whole and (explicit or (directory / COMPLETE).is_file()):
        return directory
    return None


def require_kube_bin() -> Path:
    found = find_kube_bin()
    if found is None:
        looked = os.environ.get(KUBE_BIN_ENV) or str(kube_bin_dir())
        raise MissingBinaryError(
            "Kubernetes binaries", looked,
            f"`testbed setup --k8s` (builds k8s.io/kubernetes {KUBE_VERSION} and etcd "
            f"{ETCD_VERSION} from the Go module proxy; about 10 minutes on 2 cores), or set "
            f"${KUBE_BIN_ENV} to a directory with {', '.join(BINARIES)}")
    return found


def _published_staging(path: str) -> str | None:
    """k8s.io/api (a directory of upstream's repository) -> k8s.io/api@v0.34.2."""
    return f"{path}@{STAGING_VERSION}" if path.startswith("k8s.io/") else None


def version_ldflags() -> str:
    """The version the binaries report (the kubelet registers its node with it, and
    the apiserver's compatibility checks read it); a module build has none of its own."""
    major, minor = KUBE_VERSION.removeprefix("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.gitVersion={KUBE_VERSION}", f"-X {package}.gitMajor={major}",
                  f"-X {package}.gitMinor={minor}", f"-X {package}.gitTreeState=clean"]
    return " ".join(flags)


def install_kube(target: Path | None = None) -> Path:
    """Build the six binaries into ``target`` (a staging directory renamed into place,
    then the marker written: an interrupted build is redone, never half used)."""
    target = target or kube_bin_dir()
    what = "the Kubernetes binaries"
    go = require_go(what)
    env = {**os.environ, "CGO_ENABLED": "0"}
    packages = [f"k8s.io/kubernetes/cmd/{name}" for name in KUBE_COMMANDS]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="testbed-kube-") as work:
        tool_module(go, work, "k8s.io/kubernetes", KUBE_VERSION, packages, env, what,
                    local=_published_staging)
        run_command([go, "-C", work, "get", "-tool", f"{ETCD_MODULE}@{ETCD_VERSION}"],
                    env=env)
        out = Path(work) / "bin"
        run_command([go, "-C", work, "build", "-trimpath", f"-ldflags={version_ldflags()}",
                     "-o", f"{out}/", *packages, ETCD_MODULE], env=env, timeout=3600)
        (out / "server").rename(out / "etcd")  # go names the etcd binary by its module
        missing = [name for name in BINARIES if not (out / name).is_file()]
        if missing:
            raise ComponentError(f"the Kubernetes build made no {', '.join(missing)} in {out}")
        (out / COMPLETE).write_text(f"kubernetes {KUBE_VERSION}, etcd {ETCD_VERSION}\n")
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(out), target)
    return target
