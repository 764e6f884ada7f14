"""What the k8s runtime creates, as plain manifests (dicts the API takes as they are).

Pure functions, so a unit test can read every label, alias, port and affinity without a
cluster. Names follow the cluster's rules (DNS labels, label values without ':'); what
the containers see follows the docker runtime's plan (same images, same configs, same
host names ``broker``, ``toxiproxy``, ``kafka`` and the services' names, resolved through
``hostAliases`` because the cluster has no DNS).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from testbed.images.build import KAFKA_CONFIG_DIR, SERVICE_COMMAND
from testbed.runtime.docker.containers import (
    AMQP_PORT,
    LABEL_CONTROLLER,
    LABEL_DEPLOYMENT,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_SERVICE,
    LEDGER_DIR,
    MANAGEMENT_PORT,
    SERVICE_CONFIG_PATH,
    SERVICE_PORT,
    TOXIPROXY_API_PORT,
)
from testbed.topology.model import Knobs

LABEL_NAME = "testbed.name"  # the object's own name: a Service's selector picks its pod
PLACEMENTS = ("spread", "pack")
PLACEMENT_ENV = "TESTBED_K8S_PLACEMENT"
HOSTNAME_KEY = "kubernetes.io/hostname"
GRACE_S = 3  # terminationGracePeriodSeconds: a stop() gets as long as `docker stop -t 3`
# A teardown's: not 0, which removes a pod from the API at once and leaves its kill, its
# sandbox and its network to the kubelet afterwards, in the next trial's first seconds
# (the async edge took 100-340 ms for 2.5 s after a deploy, 10 ms after); with a grace
# the pod is gone once the node is done with it.
TEARDOWN_GRACE_S = 1
BROKER = "broker"
CONFIG_DIR = SERVICE_CONFIG_PATH.rsplit("/", 1)[0]
CONFIG_FILE = SERVICE_CONFIG_PATH.rsplit("/", 1)[1]
KAFKA_COMMAND = "/usr/local/bin/testbed-kafka"
BROKER_COMMAND = "/usr/local/bin/testbed-rabbitmq"

Manifest = dict[str, Any]

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Supervised:
    """A command under a small shell loop, so a fault can stop (or SIGKILL, or SIGSTOP)
    it and start it again in the same pod with its files, as ``docker stop`` / ``kill``
    / ``pause`` and ``start`` do to a container: a pod cannot be started again, and a
    new one would start empty, at a new IP. The loop writes the command's pid to
    ``pid_file`` and, once it exited, waits for ``go_file``."""

    command: str
    name: str

    @property
    def pid_file(self) -> str:
        return f"/tmp/testbed-{self.name}.pid"

    @property
    def go_file(self) -> str:
        return f"/tmp/testbed-{self.name}.go"

    def script(self) -> str:
        return (f"trap 'exit 0' TERM; while :; do rm -f {self.go_file}; "
                f"{self.command} & echo $! > {self.pid_file}; wait $!; "
                f"until [ -e {self.go_file} ]; do sleep 0.1; done; done")

    def signal(self, sig: str) -> list[str]:
        """The exec that sends the command a signal (KILL: a crash, TERM: a clean stop,
        STOP / CONT: a freeze and a thaw)."""
        return ["/bin/sh", "-c", f"kill -{sig} $(cat {self.pid_file})"]

    def alive(self) -> list[str]:
        return ["/bin/sh", "-c", f"kill -0 $(cat {self.pid_file}) 2>/dev/null"]

    def resume(self) -> list[str]:
        return ["/bin/sh", "-c", f"touch {self.go_file}"]


KAFKA = Supervised(KAFKA_COMMAND, "kafka")
RABBITMQ = Supervised(BROKER_COMMAND, "rabbitmq")
# The testbed's own service, as its image's CMD runs it: killed, stopped, frozen and
# started again in its pod, its ledger (in the pod's emptyDir) and its IP kept.
SERVICE = Supervised(shlex.join(SERVICE_COMMAND), "service")


# SIGKILL to every process of a pod that shares its PID namespace but PID 1 (the pause
# container) and the exec's own shell: a crash, as ``docker kill`` is one.
KILL_ALL = ["/bin/sh", "-c", 'for p in /proc/[0-9]*; do n=${p#/proc/}; '
            '[ "$n" = 1 ] || [ "$n" = $$ ] || kill -KILL "$n" 2>/dev/null; done; exit 0']


def dns_label(text: str, limit: int = 63) -> str:
    """A DNS-1035 label made of ``text`` (lower case, '-' for anything else, a letter
    first); too long, it is cut and a hash of the whole keeps it unique."""
    label = _NOT_DNS.sub("-", text.lower()).strip("-") or "x"
    if not label[0].isalpha():
        label = "x" + label
    if len(label) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        label = label[:limit - 9].rstrip("-") + "-" + digest
    return label


def label_value(text: str) -> str:
    """A label value (63 characters of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    value = _NOT_LABEL.sub("_", text).strip("_.-")
    if len(value) > 63:
        value = value[:54].rstrip("_.-") + "_" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return value


def namespace_name(run_id: str) -> str:
    """The run's namespace: ``tb-<run id>``."""
    return dns_label(f"tb-{run_id}")


def controller_value(controller: str) -> str:
    """The docker runtime's ``<pid>:<start>`` as a label value (':' is not allowed)."""
    return controller.replace(":", "_", 1)


def controller_of(value: str) -> str:
    """Back from :func:`controller_value` to ``<pid>:<start>``."""
    return value.replace("_", ":", 1)


@dataclass(frozen=True)
class Owner:
    """Who the objects belong to: the run, its controller, and where pods go."""

    run_id: str
    controller: str  # "<pid>:<start>", the docker runtime's controller_label()
    placement: str = "spread"

    @property
    def namespace(self) -> str:
        return namespace_name(self.run_id)

    def labels(self, role: str, deployment: str | None = None,
               service: str | None = None, name: str | None = None) -> dict[str, str]:
        labels = {LABEL_RUN: label_value(self.run_id),
                  LABEL_CONTROLLER: controller_value(self.controller), LABEL_ROLE: role}
        if deployment:
            labels[LABEL_DEPLOYMENT] = label_value(deployment)
        if service:
            labels[LABEL_SERVICE] = label_value(service)
        if name:
            labels[LABEL_NAME] = name
        return labels

    def metadata(self, name: str, role: str, deployment: str | None = None,
                 service: str | None = None) -> Manifest:
        return {"name": name, "namespace": self.namespace,
                "labels": self.labels(role, deployment, service, name),
                "annotations": {LABEL_CONTROLLER: self.controller}}


def namespace_manifest(owner: Owner) -> Manifest:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": owner.namespace, "labels": owner.labels("namespace"),
                         "annotations": {LABEL_CONTROLLER: owner.controller}}}


def object_name(deployment: str, part: str) -> str:
    """A deployment's pod / Service name: ``<deployment>-<service or component>``."""
    return dns_label(f"{deployment}-{part}")


def service_manifest(owner: Owner, name: str, role: str, ports: Iterable[int],
                     deployment: str | None = None, service: str | None = None) -> Manifest:
    """A ClusterIP Service in front of the pod of the same name (one port per port)."""
    # Not-ready pods too: traffic reaches a pod whatever its readiness probe says (that
    # only tells the controller when to forward), as on a docker network.
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": owner.metadata(name, role, deployment, service),
            "spec": {"type": "ClusterIP", "selector": {LABEL_NAME: name},
                     "publishNotReadyAddresses": True,
                     "ports": [{"name": f"p{port}", "port": port, "targetPort": port,
                                "protocol": "TCP"} for port in sorted(set(ports))]}}


def config_map(owner: Owner, name: str, deployment: str, files: Mapping[str, str]) -> Manifest:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": owner.metadata(name, "config", deployment), "data": dict(files)}


def host_aliases(addresses: Mapping[str, str]) -> list[Manifest]:
    """/etc/hosts lines for the names the configs use (name -> ClusterIP), one per IP."""
    by_ip: dict[str, list[str]] = {}
    for hostname, ip in sorted(addresses.items()):
        by_ip.setdefault(ip, []).append(hostname)
    return [{"ip": ip, "hostnames": names} for ip, names in sorted(by_ip.items())]


def affinity(owner: Owner, deployment: str | None) -> Manifest:
    """Preferred (anti-)affinity on the node among the deployment's pods (the run's, for
    the broker): ``spread`` puts them on different nodes where it can, ``pack`` on one."""
    selector = {LABEL_RUN: label_value(owner.run_id)}
    if deployment:
        selector[LABEL_DEPLOYMENT] = label_value(deployment)
    term = {"weight": 100, "podAffinityTerm": {
        "labelSelector": {"matchLabels": selector}, "topologyKey": HOSTNAME_KEY}}
    key = "podAntiAffinity" if owner.placement == "spread" else "podAffinity"
    return {key: {"preferredDuringSchedulingIgnoredDuringExecution": [term]}}


def resources(knobs: Knobs | None) -> Manifest:
    """Limits for the cpus / memory_mb knobs, as docker's resource_limits gives them; the
    requests stay 0, as docker reserves nothing, so a small node still schedules them."""
    limits: dict[str, str] = {}
    if knobs is not None and knobs.cpus is not None:
        limits["cpu"] = f"{int(knobs.cpus * 1000)}m"
    if knobs is not None and knobs.memory_mb is not None:
        limits["memory"] = f"{knobs.memory_mb}Mi"
    if not limits:
        return {}
    return {"limits": limits, "requests": {kind: "0" for kind in limits}}


@dataclass(frozen=True)
class PodSpec:
    """One pod to create: what differs between a service, Toxiproxy, Kafka, the broker."""

    name: str
    role: str
    image: str
    ports: tuple[int, ...]
    hostname: str  # its name for itself (the docker runtime's alias)
    aliases: Mapping[str, str]  # host name -> ClusterIP
    deployment: str | None = None
    service: str | None = None
    env: Mapping[str, str] | None = None
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    knobs: Knobs | None = None
    config_map: str | None = None  # mounted at config_dir ...
    config_dir: str = CONFIG_DIR
    config_items: Mapping[str, str] | None = None  # ... key -> file name (None: all keys)
    state_dir: str | None = None  # an emptyDir (a service's ledger directory)
    probe_port: int | None = None  # ready once it accepts here: then the forward starts
    # Its processes are not PID 1 (the pod's pause is): SIGTERM ends them as under
    # docker's init, and kill() can SIGKILL the service from an exec.
    share_pids: bool = False


def pod_manifest(owner: Owner, spec: PodSpec) -> Manifest:
    """A bare pod: never restarted by the kubelet (the testbed restarts it, as a fault
    wants), images only from the node (no registry here), no service account token."""
    container: Manifest = {
        "name": spec.role, "image": spec.image, "imagePullPolicy": "Never",
        "ports": [{"containerPort": port, "protocol": "TCP"} for port in spec.ports],
    }
    if spec.env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    if spec.command is not None:
        container["command"] = list(spec.command)
    if spec.args is not None:
        container["args"] = list(spec.args)
    if spec.probe_port is not None:
        container["readinessProbe"] = {"tcpSocket": {"port": spec.probe_port},
                                       "periodSeconds": 1, "failureThreshold": 1,
                                       "timeoutSeconds": 1}
    limits = resources(spec.knobs)
    if limits:
        container["resources"] = limits
    volumes: list[Manifest] = []
    mounts: list[Manifest] = []
    if spec.config_map is not None:
        source: Manifest = {"name": spec.config_map}
        if spec.config_items is not None:
            source["items"] = [{"key": k, "path": v} for k, v in spec.config_items.items()]
        volumes.append({"name": "config", "configMap": source})
        mounts.append({"name": "config", "mountPath": spec.config_dir, "readOnly": True})
    if spec.state_dir is not None:
        volumes.append({"name": "state", "emptyDir": {}})
        mounts.append({"name": "state", "mountPath": spec.state_dir})
    if mounts:
        container["volumeMounts"] = mounts
    pod_spec: Manifest = {
        "restartPolicy": "Never", "automountServiceAccountToken": False,
        "enableServiceLinks": False, "terminationGracePeriodSeconds": GRACE_S,
        "hostname": spec.hostname, "affinity": affinity(owner, spec.deployment),
        "containers": [container],
    }
    if spec.share_pids:
        pod_spec["shareProcessNamespace"] = True
    aliases = {h: ip for h, ip in spec.aliases.items() if h != spec.hostname}
    if aliases:
        pod_spec["hostAliases"] = host_aliases(aliases)
    if volumes:
        pod_spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": owner.metadata(spec.name, spec.role, spec.deployment, spec.service),
            "spec": pod_spec}


# -- the pods of a run, as the docker runtime has its containers ----------------------------

def service_pod(owner: Owner, deployment: str, service: str, image: str,
                aliases: Mapping[str, str], config_map: str | None, knobs: Knobs,
                env: Mapping[str, str] | None = None) -> Manifest:
    """A service's pod: its config from the deployment's ConfigMap (key ``<service>.json``)
    at the path the image reads, the service under the SERVICE loop; an own service gets
    the contract's environment instead, and its image's own command (it may have no
    shell for a loop)."""
    return pod_manifest(owner, PodSpec(
        name=object_name(deployment, service), role="service", image=image,
        ports=(SERVICE_PORT,), hostname=dns_label(service), aliases=aliases,
        deployment=deployment, service=service, env=env, knobs=knobs, config_map=config_map,
        command=("/bin/sh", "-c", SERVICE.script()) if config_map else None,
        config_items={f"{service}.json": CONFIG_FILE} if config_map else None,
        state_dir=LEDGER_DIR if config_map else None, probe_port=SERVICE_PORT,
        share_pids=True))


def toxiproxy_pod(owner: Owner, deployment: str, image: str, aliases: Mapping[str, str],
                  proxy_ports: Iterable[int]) -> Manifest:
    return pod_manifest(owner, PodSpec(
        name=object_name(deployment, "toxiproxy"), role="toxiproxy", image=image,
        ports=(TOXIPROXY_API_PORT, *sorted(proxy_ports)), hostname="toxiproxy",
        aliases=aliases, deployment=deployment, probe_port=TOXIPROXY_API_PORT))


def kafka_pod(owner: Owner, deployment: str, image: str, aliases: Mapping[str, str],
              direct_port: int, ports: Iterable[int], config_map: str,
              env: Mapping[str, str]) -> Manifest:
    return pod_manifest(owner, PodSpec(
        name=object_name(deployment, "kafka"), role="kafka", image=image,
        ports=tuple(sorted({direct_port, *ports})), hostname="kafka", aliases=aliases,
        deployment=deployment, env=env, command=("/bin/sh", "-c", KAFKA.script()),
        config_map=config_map, config_dir=KAFKA_CONFIG_DIR, probe_port=direct_port))


def broker_pod(owner: Owner, image: str, user: str, password: str) -> Manifest:
    return pod_manifest(owner, PodSpec(
        name=BROKER, role="broker", image=image, ports=(AMQP_PORT, MANAGEMENT_PORT),
        hostname=BROKER, aliases={}, command=("/bin/sh", "-c", RABBITMQ.script()),
        env={"TESTBED_BROKER_USER": user, "TESTBED_BROKER_PASSWORD": password},
        probe_port=AMQP_PORT))
