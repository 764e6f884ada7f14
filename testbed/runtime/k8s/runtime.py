"""K8sRuntime: the docker runtime's layout as pods on the cluster KUBECONFIG names.

Layout of one run (one K8sRuntime), mirroring the docker runtime:
- one namespace, ``tb-<run id>``, labelled ``testbed.run`` and ``testbed.controller``
  (the controller's pid and start time, as the docker labels have it; ':' is not allowed
  in a label, so the label has ``<pid>_<start>`` and an annotation the exact text).
- one RabbitMQ pod + ClusterIP Service (``broker``) per run, started on first use, for
  the docker runtime's reasons (broker faults hit every deployment of the run; one boot).
  Deployments are isolated by vhost.
- per deployment: a ClusterIP Service and a pod per service, a Toxiproxy pod whose
  Service carries the API port and every proxy's listen port, and a Kafka pod on Kafka
  (advertised listeners ``toxiproxy:<port>``, as plan.KafkaPlan has them).
- no cluster DNS: the Services are created first, and every pod gets ``hostAliases``
  mapping the names the docker configs use (``broker``, ``toxiproxy``, ``kafka``, each
  service's name) to their ClusterIPs, so plan.py's configs work unchanged.
- the controller reaches pods only through ``kubectl port-forward`` on 127.0.0.1: a
  service's HTTP port, Toxiproxy's API and each proxy's port (local port = proxy port),
  the broker's AMQP and management ports, Kafka's DIRECT listener (same number).
A watchdog deletes the namespace when the controller dies (even by SIGKILL), and
`testbed gc` deletes namespaces whose controller is dead.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from testbed.components.kafka import BROKER_JVM, LOG4J2, TOOL_JVM, new_cluster_id
from testbed.components.rabbitmq import BrokerAddress
from testbed.components.readiness import http_ok
from testbed.errors import (
    ComponentError,
    StateError,
    TestbedError,
    TopologyError,
)
from testbed.ports import allocate_port, claim_fixed_port
from testbed.runtime.base import BrokerAccess, Deployment, ProxyEndpoint
from testbed.runtime.docker.containers import (
    AMQP_PORT,
    LABEL_DEPLOYMENT,
    MANAGEMENT_PORT,
    PARALLEL_CALLS,
    SERVICE_PORT,
    TOXIPROXY_API_PORT,
    TOXIPROXY_READY_TIMEOUT_S,
    DockerToxiproxyClient,
)
from testbed.runtime.docker.kafka import require_kafka_image
from testbed.runtime.docker.plan import (
    KAFKA_ALIAS,
    KAFKA_INTERNAL_PORT,
    KafkaPlan,
    controller_label,
    declare_vhost,
    kafka_plan,
    proxy_upstream,
    service_config,
)
from testbed.runtime.k8s.api import Cluster, connect, ensure_images
from testbed.runtime.k8s.cleanup import delete_namespace, spawn_watchdog
from testbed.runtime.k8s.forward import PortForward
from testbed.runtime.k8s.handles import PodBroker, PodKafka, PodService, path_answers
from testbed.runtime.k8s.manifests import (
    BROKER,
    PLACEMENT_ENV,
    PLACEMENTS,
    SERVICE,
    TEARDOWN_GRACE_S,
    Owner,
    broker_pod,
    config_map,
    dns_label,
    kafka_pod,
    label_value,
    namespace_manifest,
    object_name,
    service_manifest,
    service_pod,
    toxiproxy_pod,
)
from testbed.runtime.k8s.pods import Pods, wait_until
from testbed.runtime.kafka_access import KafkaAccess, group_topics
from testbed.runtime.kafka_setup import topics_of
from testbed.runtime.lifecycle import RunLifecycle, Undo
from testbed.services.contract import contract_environment
from testbed.topology.model import Topology

GONE_TIMEOUT_S = 30.0
PATH_TIMEOUT_S = 20.0


class K8sRuntime(RunLifecycle):
    """Runs topologies as pods in a namespace of their own, with real Toxiproxy, RabbitMQ
    and Kafka pods from the docker runtime's images (built when missing, then loaded into
    the testbed cluster)."""

    name = "k8s"

    def __init__(self, run_id: str | None = None, build_missing_images: bool = True,
                 placement: str | None = None) -> None:
        super().__init__(run_id)
        self.build_missing_images = build_missing_images
        chosen = placement or os.environ.get(PLACEMENT_ENV) or "spread"
        if chosen not in PLACEMENTS:
            raise TopologyError("runtime.placement", f"{chosen!r} is no placement",
                                f"give one of {', '.join(PLACEMENTS)} (option placement= or "
                                f"${PLACEMENT_ENV})")
        self.owner = Owner(self.run_id, controller_label(), chosen)
        self._cluster: Cluster | None = None
        self._images: dict[str, str] = {}
        self._broker: PodBroker | None = None
        self._broker_ip: str | None = None
        self._broker_lock = threading.Lock()
        self._forwards: dict[str | None, list[PortForward]] = {}  # by deployment id

    @property
    def placement(self) -> str:
        return self.owner.placement

    @property
    def namespace(self) -> str:
        return self.owner.namespace

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise StateError(f"runtime {self.run_id} is {self.state}; open it first")
        return self._cluster

    # -- lifecycle -----------------------------------------------------------------------

    def _prepare(self) -> None:
        """The cluster first (the cheapest thing to find missing), then the images: built
        when missing (a docker engine builds them) and loaded into the cluster."""
        started = time.monotonic()
        cluster = connect()
        try:
            self._images = self._image_refs()
            ensure_images(list(self._images.values()))
        except BaseException:
            cluster.close()
            raise
        self.timings["images_s"] = time.monotonic() - started
        cluster.call(f"creating namespace {self.namespace}", lambda: (
            cluster.core.create_namespace(namespace_manifest(self.owner))))
        self._cluster = cluster

    def _image_refs(self) -> dict[str, str]:
        from testbed.components.docker_engine import engine

        client = engine()
        try:
            if self.build_missing_images:
                from testbed.images import image_refs

                return image_refs(client)
            from testbed.images import recipes, resolve_source
            from testbed.images.build import current

            plan = {kind: r for kind, r in recipes(resolve_source(client)).items()
                    if r.unavailable is None}
            missing = [r.ref for r in plan.values() if current(client, r) is None]
            if missing:
                raise ComponentError(f"images missing: {', '.join(missing)}. Fix: run "
                                     "`testbed images build`")
            return {kind: r.ref for kind, r in plan.items()}
        finally:
            client.close()

    def _spawn_watchdog(self, log_path: Path) -> subprocess.Popen[bytes]:
        return spawn_watchdog(self.run_id, self.cluster.kubeconfig, log_path)

    def _close_components(self, problems: list[str]) -> None:
        """The broker's forward, then the namespace with whatever is left in it."""
        for forwards in list(self._forwards.values()):
            for forward in forwards:
                forward.close()
        self._forwards.clear()
        if self._broker is not None:
            self._broker.admin.close()
        try:
            delete_namespace(self.cluster, self.namespace)
        except Exception as exc:
            problems.append(f"deleting namespace {self.namespace}: {exc}")
        self.cluster.close()

    def _forward(self, pod: str, ports: dict[int, int],
                 deployment_id: str | None = None) -> PortForward:
        """A port-forward to the pod (local -> pod port), closed with its deployment (the
        run's broker: with the run)."""
        assert self.run_dir is not None
        forward = PortForward(self.cluster.kubeconfig, self.namespace, pod, ports, self.run_id,
                              self.run_dir / "logs")
        with self._lock:
            self._forwards.setdefault(deployment_id, []).append(forward)
        return forward

    def pods(self) -> Pods:
        return Pods(self.cluster, self.namespace)

    def _create_service(self, manifest: dict[str, Any]) -> str:
        """Create a Service; returns its ClusterIP (assigned at creation)."""
        name = manifest["metadata"]["name"]
        created = self.cluster.call(f"creating Service {name}", lambda: (
            self.cluster.core.create_namespaced_service(self.namespace, manifest)))
        ip = getattr(getattr(created, "spec", None), "cluster_ip", None)
        if not ip or ip == "None":
            raise ComponentError(f"Service {name} got no ClusterIP (is the apiserver's "
                                 "--service-cluster-ip-range set?)")
        return str(ip)

    # -- the run's broker ------------------------------------------------------------------

    def broker(self) -> PodBroker:
        """The run's RabbitMQ pod, started on first use (about 10 s)."""
        self._require_open()
        with self._broker_lock:
            if self._broker is None:
                self._broker = self._start_broker()
            return self._broker

    def _start_broker(self) -> PodBroker:
        self._broker_ip = self._create_service(service_manifest(
            self.owner, BROKER, "broker", (AMQP_PORT, MANAGEMENT_PORT)))
        amqp, management = allocate_port(self.run_id), allocate_port(self.run_id)
        address = BrokerAddress("127.0.0.1", amqp, management, f"testbed-{self.run_id}",
                                secrets.token_urlsafe(16))
        pods = self.pods()
        pods.create(broker_pod(self.owner, self._images["rabbitmq"], address.user,
                               address.password))
        forward = self._forward(BROKER, {amqp: AMQP_PORT, management: MANAGEMENT_PORT})
        broker = PodBroker(pods, BROKER, forward, address)
        self.timings["broker_boot_s"] = broker.wait_ready()
        return broker

    # -- deploy ----------------------------------------------------------------------------

    def _preflight(self, topology: Topology) -> None:
        """Refuse what cannot run here before anything is created: names that cannot be
        host names, own services' images, a topology on Kafka without the kafka image."""
        for spec in topology.services:
            if dns_label(spec.name) != spec.name:
                raise TopologyError(f"services[{spec.name}].name", "on the k8s runtime a "
                                    "service's name is its host name (hostAliases), and "
                                    "'_' is not allowed in one", "rename the service without "
                                    "'_', or run it with --runtime docker or local")
        if topology.own_services:
            self._prepare_own(topology)
        require_kafka_image(topology, self._images)

    def _prepare_own(self, topology: Topology) -> None:
        """Own services' images, built or found on the docker engine, then loaded."""
        from testbed.components.docker_engine import engine
        from testbed.runtime.docker.own import prepare_own_images

        client = engine()
        try:
            prepare_own_images(client, topology)
        finally:
            client.close()
        ensure_images([s.own.image for s in topology.own_services
                       if s.own is not None and s.own.image is not None])

    def _deploy(self, topology: Topology, deployment_id: str, undo: Undo) -> Deployment:
        started = time.monotonic()
        host_ports: dict[str, int] = {}
        for spec in topology.services:
            if spec.port is not None:
                host_ports[spec.name] = claim_fixed_port(
                    spec.port, self.run_id, f"service {topology.name}.{spec.name}")
        for spec in topology.services:
            host_ports.setdefault(spec.name, allocate_port(self.run_id))
        undo.push(lambda: self._remove_deployment(deployment_id))

        access = None if topology.on_kafka else self._setup_broker(topology, deployment_id,
                                                                   undo)
        broker_creds = ((access.vhost, access.address.user, access.address.password)
                        if access else None)
        proxy_ports = {link.name: allocate_port(self.run_id) for link in topology.proxied_links}
        kafka = (kafka_plan(topology, allocate_port(self.run_id), proxy_ports)
                 if topology.on_kafka else None)

        # Services first: their ClusterIPs are what the pods' hostAliases name.
        manifests: dict[str, dict[str, Any]] = {
            spec.name: service_manifest(self.owner, object_name(deployment_id, spec.name),
                                        "service", (SERVICE_PORT,), deployment_id, spec.name)
            for spec in topology.services}
        if topology.proxied_links:
            manifests["toxiproxy"] = service_manifest(
                self.owner, object_name(deployment_id, "toxiproxy"), "toxiproxy",
                (TOXIPROXY_API_PORT, *proxy_ports.values()), deployment_id)
        if kafka is not None:
            manifests[KAFKA_ALIAS] = service_manifest(
                self.owner, object_name(deployment_id, KAFKA_ALIAS), "kafka",
                (kafka.port, KAFKA_INTERNAL_PORT,
                 *(c.broker_port for c in kafka.listeners.values())), deployment_id)
        with ThreadPoolExecutor(max_workers=PARALLEL_CALLS) as pool:
            ips = dict(zip(manifests, pool.map(self._create_service, manifests.values()),
                           strict=True))
        if access is not None and self._broker_ip is not None:
            ips[BROKER] = self._broker_ip

        configs = {f"{spec.name}.json": service_config(topology, spec.name, proxy_ports,
                                                       broker_creds, kafka).to_json()
                   for spec in topology.services if spec.own is None}
        config_name = object_name(deployment_id, "config")
        if configs:
            self._create_config(config_map(self.owner, config_name, deployment_id, configs))

        with ThreadPoolExecutor(max_workers=PARALLEL_CALLS) as pool:
            toxiproxy_started = (pool.submit(self._start_toxiproxy, deployment_id, ips,
                                             proxy_ports) if topology.proxied_links else None)
            kafka_started = (pool.submit(self._start_kafka, topology, deployment_id, ips,
                                         kafka) if kafka is not None else None)
            toxiproxy = toxiproxy_started.result() if toxiproxy_started else None
            kafka_access = kafka_started.result() if kafka_started else None
        if toxiproxy is not None:
            undo.push(toxiproxy.close)
        proxies: dict[str, ProxyEndpoint] = {}
        if toxiproxy is not None:
            for link in topology.proxied_links:
                upstream = proxy_upstream(topology, link.name)
                proxy_name = self.proxy_name(topology, deployment_id, link.name, undo)
                info = toxiproxy.create_proxy(proxy_name, proxy_ports[link.name], upstream)
                proxies[link.name] = ProxyEndpoint(link, proxy_name, info.port, upstream)

        # Then the services, all at once (a consumer connects through its proxy as it
        # starts, so the proxies and the topics exist first).
        services = {spec.name: self._service_handle(
            topology, deployment_id, spec.name, ips, config_name,
            host_ports[spec.name], service_config(topology, spec.name, proxy_ports,
                                                  broker_creds, kafka), proxy_ports)
            for spec in topology.services}
        with ThreadPoolExecutor(max_workers=PARALLEL_CALLS) as pool:
            for created in [pool.submit(s.create) for s in services.values()]:
                created.result()
            for ready in [pool.submit(s.wait_ready) for s in services.values()]:
                ready.result()
        self._wait_paths(deployment_id, proxies.values(), ips)
        self.timings[f"deploy_{deployment_id}_s"] = time.monotonic() - started

        def teardown() -> None:
            failures = undo.run()
            self._forget(deployment_id)
            if failures:
                raise TestbedError(f"teardown of {deployment_id} failed: {failures}")

        return Deployment(deployment_id, topology, self.name, dict(services), proxies, access,
                          toxiproxy, teardown, kafka_access)

    def _create_config(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        self.cluster.call(f"creating ConfigMap {name}", lambda: (
            self.cluster.core.create_namespaced_config_map(self.namespace, manifest)))

    def _service_handle(self, topology: Topology, deployment_id: str, name: str,
                        ips: dict[str, str], config_name: str, host_port: int,
                        config: Any, proxy_ports: dict[str, int]) -> PodService:
        own = topology.service(name).own
        spec = topology.service(name)
        if own is not None:
            assert own.image is not None
            manifest = service_pod(self.owner, deployment_id, name, own.image, ips, None,
                                   spec.knobs, {**dict(own.env), **contract_environment(config)})
        else:
            manifest = service_pod(self.owner, deployment_id, name, self._images["service"],
                                   ips, config_name, spec.knobs)
        pod = manifest["metadata"]["name"]
        forward = self._forward(pod, {host_port: SERVICE_PORT}, deployment_id)
        inbound = [partial(path_answers, proxy_ports[link.name], "http")
                   for link in topology.proxied_links if link.target == name]
        return PodService(name, self.pods(), manifest, forward, host_port,
                          own.health if own is not None else "/health", inbound,
                          loop=None if own is not None else SERVICE)

    def _wait_paths(self, deployment_id: str, proxies: Iterable[ProxyEndpoint],
                    ips: dict[str, str]) -> None:
        """Every proxy reaches what is behind it: kube-proxy programs a new Service's
        ClusterIP about a second after its pod is ready, and a caller must not meet the
        gap (a 502 that is no fault's)."""
        started = time.monotonic()
        for proxy in proxies:
            wait_until(partial(path_answers, proxy.listen_port, proxy.link.protocol),
                       f"the path {proxy.link.name} of {deployment_id} through its proxy",
                       PATH_TIMEOUT_S, partial(self._path_diagnosis, deployment_id, proxy, ips))
        self.timings[f"paths_{deployment_id}_s"] = time.monotonic() - started

    def _path_diagnosis(self, deployment_id: str, proxy: ProxyEndpoint,
                        ips: dict[str, str]) -> str:
        """What a path that does not answer goes through: the upstream's ClusterIP, the
        endpoints kube-proxy routes it to, the pod behind, the proxy's forward."""
        host = proxy.upstream.rsplit(":", 1)[0]
        name = BROKER if host == BROKER else object_name(deployment_id, host)
        lines = [f"upstream {proxy.upstream}: Service {name}, ClusterIP {ips.get(host)}"]
        try:
            slices = self.cluster.discovery().list_namespaced_endpoint_slice(
                self.namespace, label_selector=f"kubernetes.io/service-name={name}")
            addresses = sorted(a for item in slices.items for e in item.endpoints or []
                               for a in e.addresses or [])
            lines.append(f"its endpoints: {', '.join(addresses) or 'none'}")
            pod = self.pods().read(name)
            if pod is not None:
                lines.append(f"pod {name}: {pod.status.phase}, IP {pod.status.pod_ip}")
            port = int(proxy.upstream.rsplit(":", 1)[1])
            protocol = proxy.link.protocol
            # from this machine, round the proxy (the testbed's own cluster is this node)
            for what, address in (("the pod", pod.status.pod_ip if pod else None),
                                  ("its ClusterIP", ips.get(host))):
                if address and protocol != "kafka":
                    answers = path_answers(port, protocol, host=address)
                    lines.append(f"{what} at {address}:{port} from this machine: "
                                 f"{'answers' if answers else 'no answer'}")
        except Exception as exc:  # a diagnosis must not hide the error it explains
            lines.append(f"(the cluster did not say more: {type(exc).__name__}: {exc})")
        toxiproxy = object_name(deployment_id, "toxiproxy")
        try:
            proxy_pod = self.pods().read(toxiproxy)
            proxy_ip = proxy_pod.status.pod_ip if proxy_pod is not None else None
            if proxy_ip and proxy.link.protocol != "kafka":
                answers = path_answers(proxy.listen_port, proxy.link.protocol, host=proxy_ip)
                lines.append(f"the proxy's pod at {proxy_ip}:{proxy.listen_port} from this "
                             f"machine (no port-forward): {'answers' if answers else 'no answer'}")
        except Exception as exc:
            lines.append(f"(the proxy's pod did not say: {type(exc).__name__}: {exc})")
        restarts = sum(f.restarts for f in self._forwards.get(deployment_id, [])
                       if f.pod == toxiproxy)
        lines.append(f"the proxy's port-forward restarted {restarts} times")
        return "\n".join(lines)

    def _start_toxiproxy(self, deployment_id: str, ips: dict[str, str],
                         proxy_ports: dict[str, int]) -> DockerToxiproxyClient:
        pods = self.pods()
        manifest = toxiproxy_pod(self.owner, deployment_id, self._images["toxiproxy"], ips,
                                 proxy_ports.values())
        pod = manifest["metadata"]["name"]
        pods.create(manifest)
        started = time.monotonic()
        pods.wait_ready(pod, f"toxiproxy of {deployment_id}", TOXIPROXY_READY_TIMEOUT_S,
                        self._images["toxiproxy"])
        api_port = allocate_port(self.run_id)
        ports = {api_port: TOXIPROXY_API_PORT, **{port: port for port in proxy_ports.values()}}
        self._forward(pod, ports, deployment_id).start()
        proxy = DockerToxiproxyClient("127.0.0.1", api_port)
        wait_until(lambda: http_ok(f"{proxy.url}/version"), f"toxiproxy of {deployment_id}",
                   TOXIPROXY_READY_TIMEOUT_S, lambda: pods.log_tail(pod))
        self.timings[f"toxiproxy_{deployment_id}_s"] = time.monotonic() - started
        return proxy

    def _start_kafka(self, topology: Topology, deployment_id: str,
                     ips: dict[str, str], plan: KafkaPlan) -> KafkaAccess:
        """The deployment's Kafka pod: config from a ConfigMap, ready, topics made."""
        config_name = object_name(deployment_id, "kafka-config")
        self._create_config(config_map(self.owner, config_name, deployment_id, {
            "server.properties": plan.properties(), "log4j2.properties": LOG4J2}))
        client_ports = [c.broker_port for c in plan.listeners.values()]
        manifest = kafka_pod(self.owner, deployment_id, self._images["kafka"], ips, plan.port,
                             [KAFKA_INTERNAL_PORT, *client_ports], config_name,
                             {"TESTBED_KAFKA_CLUSTER_ID": new_cluster_id(),
                              "TESTBED_KAFKA_OPTS": " ".join(BROKER_JVM),
                              "TESTBED_KAFKA_TOOL_OPTS": " ".join(TOOL_JVM)})
        pod = manifest["metadata"]["name"]
        pods = self.pods()
        pods.create(manifest)
        node = PodKafka(pods, pod, self._forward(pod, {plan.port: plan.port}, deployment_id),
                        plan.port)
        self.timings[f"kafka_{deployment_id}_boot_s"] = node.wait_ready()
        for topic, partitions in topics_of(topology).items():
            node.admin.create_topic(topic, partitions)
        consumers = [(s.name, s.consumes, bool(s.knobs.consumer_retries), s.knobs.dead_letter)
                     for s in topology.services if s.consumes]
        return KafkaAccess(node, plan.partitions, group_topics(consumers, plan.partitions))

    def _setup_broker(self, topology: Topology, deployment_id: str,
                      undo: Undo) -> BrokerAccess | None:
        if topology.broker is None:
            return None
        return declare_vhost(topology, self.broker(), f"{self.run_id}.{deployment_id}",
                             undo.push)

    def _remove_deployment(self, deployment_id: str) -> None:
        """Its forwards, then its pods (TEARDOWN_GRACE_S), Services and ConfigMaps, by
        label; returns once the node is done with the pods."""
        with self._lock:
            forwards = self._forwards.pop(deployment_id, [])
        for forward in forwards:
            forward.close()
        selector = f"{LABEL_DEPLOYMENT}={label_value(deployment_id)}"
        core, namespace = self.cluster.core, self.namespace
        deletions: list[tuple[str, Callable[[], Any]]] = [
            ("pods", lambda: core.delete_collection_namespaced_pod(
                namespace, label_selector=selector,
                grace_period_seconds=TEARDOWN_GRACE_S)),
            ("Services", lambda: core.delete_collection_namespaced_service(
                namespace, label_selector=selector)),
            ("ConfigMaps", lambda: core.delete_collection_namespaced_config_map(
                namespace, label_selector=selector)),
        ]
        for what, call in deletions:
            self.cluster.call(f"deleting the {what} of {deployment_id}", call, ok=(404,))
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while self._left(selector):
            if time.monotonic() > deadline:
                raise ComponentError(f"pods of {deployment_id} still there "
                                     f"{GONE_TIMEOUT_S:.0f} s after their deletion")
            time.sleep(0.1)

    def _left(self, selector: str) -> bool:
        found = self.cluster.call("listing pods", lambda: self.cluster.core.list_namespaced_pod(
            self.namespace, label_selector=selector), ok=(404,))
        return bool(getattr(found, "items", None))
