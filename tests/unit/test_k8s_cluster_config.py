"""What the testbed's cluster components are told, read without starting any: every
listener on loopback, the node reached by its Hostname, nothing left to a default that
would bind all interfaces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.components.kube.build import _published_staging, version_ldflags
from testbed.components.kube.cluster import Cluster, require_kubeconfig
from testbed.components.kube.config import (
    COMPONENTS,
    ClusterPorts,
    Layout,
    cni_config,
    command_lines,
    containerd_config,
    kubelet_config,
    proxy_config,
)
from testbed.components.kube.images import normalized
from testbed.errors import ComponentError

PORTS = ClusterPorts(api=26443, etcd_client=22379, etcd_peer=22380, kubelet=20250,
                     kubelet_healthz=20248, proxy_healthz=20256, proxy_metrics=20249)


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_every_component_listens_on_loopback_only(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    argv = command_lines(layout, PORTS, tmp_path / "bin", "/usr/bin/containerd")
    assert list(argv) == list(COMPONENTS)
    api = argv["kube-apiserver"]
    assert _flag(api, "--bind-address") == "127.0.0.1"
    assert _flag(api, "--etcd-servers") == "http://127.0.0.1:22379"
    assert _flag(api, "--kubelet-preferred-address-types") == "Hostname"
    etcd = argv["etcd"]
    for flag in ("--listen-client-urls", "--listen-peer-urls"):
        assert _flag(etcd, flag).startswith("http://127.0.0.1:")
    for name in ("kube-controller-manager", "kube-scheduler"):
        assert _flag(argv[name], "--secure-port") == "0"  # they serve nothing
    kubelet = kubelet_config(layout, PORTS)
    assert (kubelet["address"], kubelet["healthzBindAddress"]) == ("127.0.0.1", "127.0.0.1")
    assert kubelet["readOnlyPort"] == 0
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    proxy = proxy_config(layout, PORTS)
    assert proxy["bindAddress"] == "127.0.0.1"
    assert proxy["healthzBindAddress"].startswith("127.0.0.1:")
    assert proxy["metricsBindAddress"].startswith("127.0.0.1:")
    assert proxy["nodePortAddresses"] == ["127.0.0.1/32"]


def test_the_node_keeps_its_files_under_the_cluster_home(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    text = containerd_config(layout)
    assert f'address = "{tmp_path}/containerd/containerd.sock"' in text
    assert f'root = "{tmp_path}/containerd/root"' in text
    assert "SystemdCgroup = false" in text and "docker.io/testbed/pause" in text
    bridge = cni_config(layout)["plugins"][0]
    assert bridge["hairpinMode"] is True and bridge["ipam"]["dataDir"].startswith(str(tmp_path))
    assert kubelet_config(layout, PORTS)["podLogsDir"].startswith(str(tmp_path))
    argv = command_lines(layout, PORTS, tmp_path / "bin", "containerd")["kubelet"]
    assert _flag(argv, "--root-dir").startswith(str(tmp_path))


def test_staging_modules_map_to_their_published_twins() -> None:
    assert _published_staging("k8s.io/api") == "k8s.io/api@v0.34.2"
    assert _published_staging("github.com/other/thing") is None
    assert "-X k8s.io/component-base/version.gitVersion=v1.34.2" in version_ldflags()


def test_image_refs_are_named_as_containerd_keeps_them() -> None:
    assert normalized("testbed/service:abc") == "docker.io/testbed/service:abc"
    assert normalized("busybox:1") == "docker.io/library/busybox:1"
    assert normalized("registry.example:5000/x/y:1") == "registry.example:5000/x/y:1"


def test_no_cluster_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("TESTBED_K8S_HOME", str(tmp_path / "none"))
    with pytest.raises(ComponentError, match="testbed setup --k8s"):
        require_kubeconfig()
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ComponentError, match="no such file"):
        require_kubeconfig()
    home = tmp_path / "made"
    home.mkdir()
    (home / "cluster.json").write_text(PORTS.to_json())
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("TESTBED_K8S_HOME", str(home))
    with pytest.raises(ComponentError, match=r"not running .*kube-apiserver"):
        require_kubeconfig()
    assert Cluster(home).ports() == PORTS
    assert json.loads(PORTS.to_json())["api"] == 26443
