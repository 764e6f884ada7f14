"""What each component of the testbed's cluster is told: files and command lines.

Pure functions of the cluster's home, ports and pki, so a test can read them without
starting anything. Every listener binds 127.0.0.1: the apiserver, etcd, the kubelet
(the apiserver reaches it by the node's Hostname address, ``localhost``), kube-proxy's
health and metrics; the controller manager and the scheduler serve nothing. Pods get
addresses from a bridge of the cluster's own (CNI bridge + host-local), Services from
10.96.0.0/16 through kube-proxy's iptables rules; there is no cluster DNS.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testbed.components.kube.pki import NODE_NAME, Pki

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # the first address of SERVICE_CIDR: the apiserver's own
# host-local hands addresses out in turn, so a pod's IP comes back only after the whole
# range: in a /24 the k8s tier reused IPs after ~250 pods, and a path to a pod at a
# reused IP once stayed dead for 20 s (twice: CI and here; its Service, endpoints and pod
# were right). 65,000 addresses before one comes back.
POD_CIDR = "10.244.0.0/16"
BRIDGE = "tbk8s0"
PAUSE_IMAGE = "docker.io/testbed/pause:3.10"
CNI_BIN = "/usr/lib/cni"  # Debian's containernetworking-plugins
COMPONENTS = ("containerd", "etcd", "kube-apiserver", "kube-controller-manager",
              "kube-scheduler", "kubelet", "kube-proxy")  # the order they start in


@dataclass(frozen=True)
class ClusterPorts:
    """The cluster's loopback ports, chosen free at set-up and kept in cluster.json."""

    api: int
    etcd_client: int
    etcd_peer: int
    kubelet: int
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class Layout:
    """Where a cluster keeps what: everything under one home directory."""

    home: Path

    @property
    def pki(self) -> Pki:
        return Pki(self.home / "pki")

    @property
    def containerd_socket(self) -> Path:
        return self.home / "containerd" / "containerd.sock"

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"  # the admin's: what KUBECONFIG names

    def kubeconfig_of(self, who: str) -> Path:
        return self.home / "kubeconfigs" / f"{who}.json"

    def config(self, name: str) -> Path:
        return self.home / "config" / name

    def log(self, component: str) -> Path:
        return self.home / "logs" / f"{component}.log"


def kubeconfig(server: str, ca: Path, token: str, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "testbed",
        "clusters": [{"name": "testbed", "cluster": {"server": server,
                                                      "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": user}}],
    }


def containerd_config(layout: Layout) -> str:
    root = layout.home / "containerd"
    return f'''version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{layout.containerd_socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # No oom_score_adj below containerd's own: these machines deny lowering it (no
  # CAP_SYS_RESOURCE), and the kubelet asks -998 for every sandbox.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{layout.home / 'cni'}"
'''


def cni_config(layout: Layout) -> dict[str, Any]:
    """One bridge for the node's pods; hairpin so a pod reaches itself through its
    Service (kube-proxy's DNAT can pick the caller's own pod); the firewall plugin so
    forwarded pod traffic passes a FORWARD chain whose policy is DROP."""
    return {
        "cniVersion": "0.4.0", "name": "testbed-k8s",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(layout.home / "cni-ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            # Docker sets the FORWARD chain's policy to DROP; this accepts what the pods
            # send (and its replies), rule by pod, removed with the pod.
            {"type": "firewall", "backend": "iptables"},
        ],
    }


def kubelet_config(layout: Layout, ports: ClusterPorts) -> dict[str, Any]:
    pki = layout.pki
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": "127.0.0.1", "port": ports.kubelet, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": ports.kubelet_healthz,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "cgroupDriver": "cgroupfs",  # containerd's runc runs without systemd here
        "failSwapOn": False,
        "failCgroupV1": False,  # these machines mount cgroup v1 (v2 only as "unified")
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(pki.path("ca.crt"))}},
        "authorization": {"mode": "AlwaysAllow"},  # only the CA's clients get this far
        "podLogsDir": str(layout.home / "pod-logs"),
        "resolvConf": "/etc/resolv.conf",
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%",
                         "imagefs.available": "2%", "nodefs.inodesFree": "2%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
    }


def proxy_config(layout: Layout, ports: ClusterPorts) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig_of("proxy"))},
        "mode": "iptables", "hostnameOverride": NODE_NAME, "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
        "clusterCIDR": POD_CIDR, "nodePortAddresses": ["127.0.0.1/32"],
        # Leave the machine's conntrack sysctls as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
    }


def write_configs(layout: Layout, ports: ClusterPorts) -> None:
    """Every file the components read, from the pki already in place."""
    server = f"https://127.0.0.1:{ports.api}"
    pki = layout.pki
    from testbed.components.kube.pki import IDENTITIES

    for who, (user, _groups) in IDENTITIES.items():
        path = layout.kubeconfig_of(who)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(kubeconfig(server, pki.path("ca.crt"), pki.token(who),
                                              user), indent=1))
        path.chmod(0o600)
    layout.kubeconfig.write_text(layout.kubeconfig_of("admin").read_text())
    layout.kubeconfig.chmod(0o600)
    layout.config("containerd.toml").parent.mkdir(parents=True, exist_ok=True)
    layout.config("containerd.toml").write_text(containerd_config(layout))
    layout.config("kubelet.json").write_text(json.dumps(kubelet_config(layout, ports), indent=1))
    layout.config("kube-proxy.json").write_text(json.dumps(proxy_config(layout, ports),
                                                           indent=1))
    (layout.home / "cni").mkdir(parents=True, exist_ok=True)
    (layout.home / "cni" / "10-testbed.conflist").write_text(
        json.dumps(cni_config(layout), indent=1))


def command_lines(layout: Layout, ports: ClusterPorts, bin_dir: Path,
                  containerd: str) -> dict[str, list[str]]:
    """Each component's argv, by name."""
    pki = layout.pki
    etcd_peer = f"http://127.0.0.1:{ports.etcd_peer}"
    etcd_client = f"http://127.0.0.1:{ports.etcd_client}"
    return {
        "containerd": [containerd, "--config", str(layout.config("containerd.toml"))],
        "etcd": [str(bin_dir / "etcd"), "--name", "testbed",
                 "--data-dir", str(layout.home / "etcd"),
                 "--listen-client-urls", etcd_client, "--advertise-client-urls", etcd_client,
                 "--listen-peer-urls", etcd_peer, "--initial-advertise-peer-urls", etcd_peer,
                 "--initial-cluster", f"testbed={etcd_peer}",
                 "--unsafe-no-fsync",  # a throwaway test cluster: speed over durability
                 "--log-level", "warn"],
        "kube-apiserver": [
            str(bin_dir / "kube-apiserver"), "--bind-address", "127.0.0.1",
            "--secure-port", str(ports.api), "--etcd-servers", etcd_client,
            "--tls-cert-file", str(pki.path("apiserver.crt")),
            "--tls-private-key-file", str(pki.path("apiserver.key")),
            "--client-ca-file", str(pki.path("ca.crt")),
            "--token-auth-file", str(pki.path("tokens.csv")),
            "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(pki.path("sa.pub")),
            "--service-account-signing-key-file", str(pki.path("sa.key")),
            "--kubelet-client-certificate", str(pki.path("kubelet-client.crt")),
            "--kubelet-client-key", str(pki.path("kubelet-client.key")),
            "--kubelet-preferred-address-types", "Hostname",
            # The apiserver listens on loopback only: no endpoint for pods to reach it.
            "--endpoint-reconciler-type", "none", "--profiling=false"],
        "kube-controller-manager": [
            str(bin_dir / "kube-controller-manager"),
            "--kubeconfig", str(layout.kubeconfig_of("controller-manager")),
            "--secure-port", "0", "--leader-elect=false",
            "--service-account-private-key-file", str(pki.path("sa.key")),
            "--root-ca-file", str(pki.path("ca.crt")),
            "--service-cluster-ip-range", SERVICE_CIDR, "--profiling=false"],
        "kube-scheduler": [
            str(bin_dir / "kube-scheduler"), "--kubeconfig", str(layout.kubeconfig_of("scheduler")),
            "--secure-port", "0", "--leader-elect=false", "--profiling=false"],
        "kubelet": [
            str(bin_dir / "kubelet"), "--config", str(layout.config("kubelet.json")),
            "--kubeconfig", str(layout.kubeconfig_of("kubelet")),
            "--root-dir", str(layout.home / "kubelet"),
            "--cert-dir", str(layout.home / "kubelet-pki"),
            "--hostname-override", NODE_NAME],
        "kube-proxy": [str(bin_dir / "kube-proxy"), "--config",
                       str(layout.config("kube-proxy.json"))],
    }
