"""The k8s runtime's cluster: a real single-node Kubernetes built and run here.

build.py makes the binaries (k8s.io/kubernetes and etcd from the Go module proxy),
pki.py its certificates and tokens, config.py what each component is told, cluster.py
starts and stops them, images.py loads the offline images into its containerd.
`testbed setup --k8s` calls :func:`setup_cluster`; `testbed k8s ...` :func:`k8s_main`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from testbed.steps import Step, quiet

DEBIAN_PACKAGES = {"containerd": "containerd", "runc": "runc", "iptables": "iptables",
                   "conntrack": "conntrack", "/usr/lib/cni/bridge": "containernetworking-plugins"}


def _missing_packages() -> list[str]:
    return [package for program, package in DEBIAN_PACKAGES.items()
            if not (Path(program).exists() if program.startswith("/") else shutil.which(program))]


def setup_cluster(step: Step = quiet) -> list[str]:
    """Install, build, create and start the cluster, and load the images into it; what
    was done, one line each (with the seconds it took)."""
    import docker

    from testbed.components.install import apt_install
    from testbed.components.kube.build import KUBE_VERSION, find_kube_bin, install_kube
    from testbed.components.kube.cluster import Cluster
    from testbed.components.kube.images import load_missing, load_pause_image
    from testbed.images import image_refs

    done = []
    missing = _missing_packages()
    if missing:
        with step(f"k8s node: apt-get install {' '.join(missing)} (Debian)"):
            for package in missing:
                apt_install(package, f"{package} is missing (the k8s node runs on it)")
        done.append(f"{' '.join(missing)} (Debian packages)")
    if find_kube_bin() is None:
        with step(f"Kubernetes {KUBE_VERSION} and etcd: go build from the Go module proxy "
                  "(about 10 minutes on 2 cores)"):
            started = time.monotonic()
            target = install_kube()
        done.append(f"kubernetes {KUBE_VERSION} -> {target} "
                    f"({time.monotonic() - started:.0f} s)")
    cluster = Cluster()
    if not cluster.exists():
        with step(f"k8s cluster: certificates, tokens and configs in {cluster.home}"):
            cluster.create()
    if not cluster.running():
        with step("k8s cluster: containerd, etcd, apiserver, controller manager, scheduler, "
                  "kubelet, kube-proxy"):
            timings = cluster.start()
        done.append("k8s cluster started: " + ", ".join(f"{name} {seconds:.1f} s"
                                                         for name, seconds in timings.items()))
    client = docker.from_env()
    with step("k8s cluster: the pause image and the testbed's images into its containerd"):
        load_pause_image(cluster, client)
        loaded = load_missing(cluster, image_refs(client).values())
        done += [f"image {ref} (into the k8s cluster)" for ref in loaded]
    return done
