"""DockerRuntime: every service, the broker and Toxiproxy in containers.

Layout of one run (one DockerRuntime):
- one broker container per run, on a network of its own and attached (alias ``broker``)
  to every async deployment's network. Per run, not per deployment, for the same reason
  as the local runtime: broker faults hit every deployment of a run, and the paired
  experiments rely on the sync side not noticing while the async side does; it also saves
  the ~10 s broker boot per deployment. Deployments are isolated by vhost, as locally.
- per deployment: a private bridge network, one container per service (alias = the
  service's name, listening on 0.0.0.0:8080 inside), and one Toxiproxy container (alias
  ``toxiproxy``). Toxiproxy is per deployment, not per run, because a container's
  published ports are fixed when it is created and a deployment's proxies are only known
  when it is deployed; its listen ports inside equal the published ports on the host,
  so one number names a proxy everywhere.
- a deployment on Kafka gets a Kafka container of its own instead (alias ``kafka``, see
  kafka.py and plan.KafkaPlan), as the local runtime gives it a node of its own: each
  proxied client has a listener advertised as ``toxiproxy:<its proxy port>``, so every
  connection it makes crosses its proxy; the testbed's listener is published on the host.
- on the host, every published port binds 127.0.0.1 only: services' HTTP ports, the
  broker's AMQP and management ports, Kafka's testbed listener, Toxiproxy's API and every
  proxy's listen port, so probes, samplers and the load generator work from the host as
  with the local runtime.

Every container and network carries the labels ``testbed.run`` and ``testbed.controller``
(pid and start time of the controlling process), so :func:`collect_docker_garbage` can
tell an orphan from a live run without any state file. A watchdog process (like the
local runtime's) removes the run's objects when the controller dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.networks import Network

from testbed.components.docker_engine import engine
from testbed.components.kafka import BROKER_JVM, LOG4J2, TOOL_JVM, new_cluster_id
from testbed.components.rabbitmq import BrokerAddress
from testbed.components.readiness import http_ok
from testbed.errors import (
    ComponentError,
    StateError,
    TestbedError,
)
from testbed.images.build import KAFKA_CONFIG_DIR
from testbed.ports import allocate_port, claim_fixed_port
from testbed.runtime.base import (
    BrokerAccess,
    Deployment,
    ProxyEndpoint,
)
from testbed.runtime.docker.cleanup import remove_network, remove_run_objects, spawn_watchdog
from testbed.runtime.docker.containers import (
    AMQP_PORT,
    LABEL_CONTROLLER,
    LABEL_DEPLOYMENT,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_SERVICE,
    MANAGEMENT_PORT,
    PARALLEL_CALLS,
    SERVICE_CONFIG_PATH,
    SERVICE_PORT,
    TOXIPROXY_API_PORT,
    TOXIPROXY_READY_TIMEOUT_S,
    ContainerBroker,
    ContainerSet,
    DockerService,
    DockerToxiproxyClient,
    docker_call,
    tar_files,
    tar_one,
    wait_ready,
)
from testbed.runtime.docker.kafka import ContainerKafka, require_kafka_image
from testbed.runtime.docker.own import prepare_own_images
from testbed.runtime.docker.plan import (
    KAFKA_ALIAS,
    KafkaPlan,
    controller_label,
    declare_vhost,
    kafka_plan,
    proxy_upstream,
    resource_limits,
    service_config,
)
from testbed.runtime.kafka_access import KafkaAccess, group_topics
from testbed.runtime.kafka_setup import topics_of
from testbed.runtime.lifecycle import RunLifecycle, Undo
from testbed.services.config import ServiceConfig
from testbed.services.contract import contract_environment
from testbed.topology.model import Topology


class DockerRuntime(RunLifecycle):
    """Runs topologies as containers on private bridge networks, with real Toxiproxy and
    RabbitMQ containers; images come from ``testbed images build`` (built when missing)."""

    name = "docker"

    def __init__(self, run_id: str | None = None, build_missing_images: bool = True) -> None:
        super().__init__(run_id)
        self.build_missing_images = build_missing_images
        self._client: docker.DockerClient | None = None
        self._images: dict[str, str] = {}
        self._broker: ContainerBroker | None = None
        self._broker_network: Network | None = None
        self._broker_lock = threading.Lock()
        self._controller = controller_label()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            raise StateError(f"runtime {self.run_id} is {self.state}; open it first")
        return self._client

    def _prepare(self) -> None:
        """Find the engine and the images (built when missing, unless told not to)."""
        client = engine()
        if self.build_missing_images:
            from testbed.images import image_refs

            started = time.monotonic()
            self._images = image_refs(client)
            self.timings["images_s"] = time.monotonic() - started
        else:
            from testbed.images import recipes, resolve_source
            from testbed.images.build import current

            plan = {kind: r for kind, r in recipes(resolve_source(client)).items()
                    if r.unavailable is None}  # the kafka image without jars: _preflight
            missing = [r.ref for r in plan.values() if current(client, r) is None]
            if missing:
                raise ComponentError(f"images missing: {', '.join(missing)}. Fix: run "
                                     "`testbed images build`")
            self._images = {kind: r.ref for kind, r in plan.items()}
        self._client = client

    def _spawn_watchdog(self, log_path: Path) -> subprocess.Popen[bytes]:
        return spawn_watchdog(self.run_id, log_path)

    def _close_components(self, problems: list[str]) -> None:
        """The broker, and whatever is still labelled with the run (anything a failure
        left); the engine connection last."""
        if self._broker is not None:
            self._broker.admin.close()
        try:
            remove_run_objects(self.client, self.run_id)
        except Exception as exc:
            problems.append(f"removing containers/networks: {exc}")
        self.client.close()

    def labels(self, role: str, deployment: str | None = None,
               service: str | None = None) -> dict[str, str]:
        labels = {LABEL_RUN: self.run_id, LABEL_CONTROLLER: self._controller, LABEL_ROLE: role}
        if deployment:
            labels[LABEL_DEPLOYMENT] = deployment
        if service:
            labels[LABEL_SERVICE] = service
        return labels

    # -- the run's broker ------------------------------------------------------------------

    def broker(self) -> ContainerBroker:
        """The run's RabbitMQ container, started on first use (about 10 s)."""
        self._require_open()
        with self._broker_lock:
            if self._broker is None:
                self._broker = self._start_broker()
            return self._broker

    def _start_broker(self) -> ContainerBroker:
        client = self.client
        network_name = f"tb-{self.run_id}-broker"
        self._broker_network = docker_call(f"create network {network_name}", lambda: (
            client.networks.create(network_name, driver="bridge",
                                   labels=self.labels("network"))))
        amqp, management = allocate_port(self.run_id), allocate_port(self.run_id)
        address = BrokerAddress("127.0.0.1", amqp, management, f"testbed-{self.run_id}",
                                secrets.token_urlsafe(16))
        container = docker_call("create the broker container", lambda: client.containers.run(
            self._images["rabbitmq"], name=f"tb-{self.run_id}-broker", hostname="broker",
            detach=True, init=True, labels=self.labels("broker"), network=network_name,
            environment={"TESTBED_BROKER_USER": address.user,
                         "TESTBED_BROKER_PASSWORD": address.password},
            ports={f"{AMQP_PORT}/tcp": ("127.0.0.1", amqp),
                   f"{MANAGEMENT_PORT}/tcp": ("127.0.0.1", management)}))
        broker = ContainerBroker(container, address)
        self.timings["broker_boot_s"] = broker.wait_ready()
        return broker

    # -- deploy ----------------------------------------------------------------------------

    def _preflight(self, topology: Topology) -> None:
        """Own services' images built or found; a topology on Kafka needs the kafka image,
        which needs Kafka's jars: say so before anything is created."""
        prepare_own_images(self.client, topology)
        require_kafka_image(topology, self._images)

    def _deploy(self, topology: Topology, deployment_id: str, undo: Undo) -> Deployment:
        started = time.monotonic()
        client = self.client
        prefix = f"tb-{self.run_id}-{deployment_id}"
        host_ports: dict[str, int] = {}
        for spec in topology.services:
            if spec.port is not None:
                host_ports[spec.name] = claim_fixed_port(
                    spec.port, self.run_id, f"service {topology.name}.{spec.name}")
        for spec in topology.services:
            host_ports.setdefault(spec.name, allocate_port(self.run_id))

        network = docker_call(f"create network {prefix}", lambda: client.networks.create(
            prefix, driver="bridge", labels=self.labels("network", deployment_id)))
        undo.push(lambda: remove_network(network))  # gone already (a watchdog, gc): done
        containers = ContainerSet()
        undo.push(containers.remove_all)  # before the network goes (the stack runs backwards)

        access = (None if topology.on_kafka
                  else self._setup_broker(topology, deployment_id, network, undo))
        broker_creds = ((access.vhost, access.address.user, access.address.password)
                        if access else None)
        proxy_ports = {link.name: allocate_port(self.run_id) for link in topology.proxied_links}
        kafka = (kafka_plan(topology, allocate_port(self.run_id), proxy_ports)
                 if topology.on_kafka else None)
        # Each engine call takes tens of milliseconds: create Toxiproxy, Kafka and every
        # service container at once, then the proxies, then start the services together
        # (a consumer connects through its proxy as it starts, so the proxies and the
        # topics exist first).
        with ThreadPoolExecutor(max_workers=PARALLEL_CALLS) as pool:
            toxiproxy_started = (pool.submit(self._start_toxiproxy, prefix, deployment_id,
                                             network, proxy_ports, containers)
                                 if topology.proxied_links else None)
            kafka_started = (pool.submit(self._start_kafka, topology, prefix, deployment_id,
                                         network, kafka, containers)
                             if kafka is not None else None)
            created = {spec.name: pool.submit(
                self._create_service, topology, prefix, deployment_id, spec.name,
                service_config(topology, spec.name, proxy_ports, broker_creds, kafka), network,
                host_ports[spec.name], containers) for spec in topology.services}
            toxiproxy = toxiproxy_started.result() if toxiproxy_started else None
            kafka_access = kafka_started.result() if kafka_started else None
            services = {name: future.result() for name, future in created.items()}
        proxies: dict[str, ProxyEndpoint] = {}
        if toxiproxy is not None:
            for link in topology.proxied_links:
                upstream = proxy_upstream(topology, link.name)
                proxy_name = self.proxy_name(topology, deployment_id, link.name, undo)
                info = toxiproxy.create_proxy(proxy_name, proxy_ports[link.name], upstream)
                proxies[link.name] = ProxyEndpoint(link, proxy_name, info.port, upstream)
        with ThreadPoolExecutor(max_workers=PARALLEL_CALLS) as pool:
            for future in [pool.submit(docker_call, f"start of {s.container.name}",
                                       s.container.start) for s in services.values()]:
                future.result()
            for future in [pool.submit(s.wait_ready) for s in services.values()]:
                future.result()
        self.timings[f"deploy_{deployment_id}_s"] = time.monotonic() - started

        def teardown() -> None:
            failures = undo.run()
            if toxiproxy is not None:
                toxiproxy.close()
            self._forget(deployment_id)
            if failures:
                raise TestbedError(f"teardown of {deployment_id} failed: {failures}")

        return Deployment(deployment_id, topology, self.name, dict(services), proxies, access,
                          toxiproxy, teardown, kafka_access)

    def _create_service(self, topology: Topology, prefix: str, deployment_id: str,
                        name: str, config: ServiceConfig, network: Network, host_port: int,
                        containers: ContainerSet) -> DockerService:
        client = self.client
        own = topology.service(name).own
        # An own service gets its image and the contract's environment, not a config file.
        image = own.image if own is not None else self._images["service"]
        environment = ({**dict(own.env), **contract_environment(config)}
                       if own is not None else None)
        container = docker_call(f"create container {prefix}-{name}", lambda: (
            client.containers.create(
                image, name=f"{prefix}-{name}", hostname=name, init=True,
                labels=self.labels("service", deployment_id, name),
                network=network.name, networking_config=self._aliases(network, name),
                ports={f"{SERVICE_PORT}/tcp": ("127.0.0.1", host_port)},
                environment=environment, stop_signal="SIGTERM",
                **resource_limits(config.knobs))))
        containers.add(container)
        if own is not None:
            return DockerService(name, container, host_port, own.health)
        archive = tar_one(SERVICE_CONFIG_PATH, config.to_json().encode())
        docker_call(f"copy config into {container.name}",
                     lambda: container.put_archive("/", archive))
        return DockerService(name, container, host_port)

    def _aliases(self, network: Network, alias: str) -> dict[str, Any]:
        """Attach a container to the network under an alias (its peers' name for it)."""
        return {str(network.name): self.client.api.create_endpoint_config(aliases=[alias])}

    def _start_toxiproxy(self, prefix: str, deployment_id: str, network: Network,
                         proxy_ports: dict[str, int],
                         containers: ContainerSet) -> DockerToxiproxyClient:
        client = self.client
        api_port = allocate_port(self.run_id)
        ports: dict[str, Any] = {f"{TOXIPROXY_API_PORT}/tcp": ("127.0.0.1", api_port)}
        for port in proxy_ports.values():
            ports[f"{port}/tcp"] = ("127.0.0.1", port)
        container = docker_call(f"create container {prefix}-toxiproxy", lambda: (
            client.containers.create(
                self._images["toxiproxy"], name=f"{prefix}-toxiproxy", hostname="toxiproxy",
                labels=self.labels("toxiproxy", deployment_id), network=network.name,
                networking_config=self._aliases(network, "toxiproxy"), ports=ports)))
        containers.add(container)
        docker_call(f"start of {container.name}", container.start)
        proxy = DockerToxiproxyClient("127.0.0.1", api_port)
        seconds = wait_ready(container, lambda: http_ok(f"{proxy.url}/version"),
                             f"toxiproxy of {deployment_id}", TOXIPROXY_READY_TIMEOUT_S)
        self.timings[f"toxiproxy_{deployment_id}_s"] = seconds
        return proxy

    def _start_kafka(self, topology: Topology, prefix: str, deployment_id: str,
                     network: Network, plan: KafkaPlan,
                     containers: ContainerSet) -> KafkaAccess:
        """The deployment's Kafka container: config copied in, started, ready, topics
        made (the testbed creates them: auto.create.topics.enable is off)."""
        assert topology.broker is not None
        client = self.client
        container = docker_call(f"create container {prefix}-kafka", lambda: (
            client.containers.create(
                self._images["kafka"], name=f"{prefix}-kafka", hostname=KAFKA_ALIAS, init=True,
                labels=self.labels("kafka", deployment_id), network=network.name,
                networking_config=self._aliases(network, KAFKA_ALIAS),
                ports={f"{plan.port}/tcp": ("127.0.0.1", plan.port)},
                environment={"TESTBED_KAFKA_CLUSTER_ID": new_cluster_id(),
                             "TESTBED_KAFKA_OPTS": " ".join(BROKER_JVM),
                             "TESTBED_KAFKA_TOOL_OPTS": " ".join(TOOL_JVM)},
                stop_signal="SIGTERM")))
        containers.add(container)
        archive = tar_files({f"{KAFKA_CONFIG_DIR}/server.properties": plan.properties().encode(),
                             f"{KAFKA_CONFIG_DIR}/log4j2.properties": LOG4J2.encode()})
        docker_call(f"copy config into {container.name}",
                    lambda: container.put_archive("/", archive))
        node = ContainerKafka(container, plan.port)
        self.timings[f"kafka_{deployment_id}_boot_s"] = node.start()
        for topic, partitions in topics_of(topology).items():
            node.admin.create_topic(topic, partitions)
        consumers = [(s.name, s.consumes, bool(s.knobs.consumer_retries), s.knobs.dead_letter)
                     for s in topology.services if s.consumes]
        return KafkaAccess(node, plan.partitions, group_topics(consumers, plan.partitions))

    def _setup_broker(self, topology: Topology, deployment_id: str, network: Network,
                      undo: Undo) -> BrokerAccess | None:
        if topology.broker is None:
            return None
        broker = self.broker()
        docker_call("attach the broker to the deployment network",
                     lambda: network.connect(broker.container, aliases=["broker"]))

        def detach() -> None:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                network.disconnect(broker.container, force=True)

        undo.push(detach)
        return declare_vhost(topology, broker, f"{self.run_id}.{deployment_id}", undo.push)
