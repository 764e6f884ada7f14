"""The ``local`` runtime: every service an OS process on 127.0.0.1 (the embedded default).

One LocalRuntime is one run: it owns a run directory, a watchdog, one Toxiproxy server
and (when an async topology needs it) one private RabbitMQ node, shared by all its
deployments (a topology on Kafka gets a Kafka node of its own: kafka_setup.py). With
``tracing=True`` it also runs a private Jaeger and tells every service
it deploys the OTLP endpoint, so each one traces to it. Each deployment gets its own
vhost, proxies (prefixed with its id) and ports. A failed deploy undoes whatever it had
started before re-raising.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testbed.components.binaries import (
    EPMD,
    JAEGER,
    JAVA,
    RABBITMQ,
    TOXIPROXY,
    require_kafka_libs,
)
from testbed.components.jaeger import JaegerPorts, JaegerServer
from testbed.components.process import ManagedProcess
from testbed.components.rabbitmq import RabbitNode
from testbed.components.readiness import http_ok, wait_until
from testbed.components.toxiproxy import ToxiproxyServer
from testbed.errors import TestbedError, TopologyError
from testbed.ports import allocate_port, claim_fixed_port
from testbed.runtime import watchdog
from testbed.runtime.base import (
    BrokerAccess,
    Deployment,
    ProxyEndpoint,
    dead_letter_exchange,
    dead_letter_queue,
    retry_queue,
)
from testbed.runtime.kafka_setup import start_kafka
from testbed.runtime.lifecycle import RunLifecycle, Undo
from testbed.runtime.own import prepare_own
from testbed.services.config import AmqpTarget, ServiceConfig
from testbed.services.contract import contract_environment
from testbed.topology.model import Topology

SERVICE_READY_TIMEOUT_S = 30.0


class LocalService:
    """A service running as a local process; implements the ServiceHandle protocol."""

    def __init__(self, name: str, process: ManagedProcess, port: int,
                 health: str = "/health") -> None:
        self.name = name
        self.process = process
        self.port = port
        self.health = health  # an own service's may be another path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.process.running()

    def start(self) -> None:
        self.process.start()
        self.wait_ready()

    def wait_ready(self, timeout: float = SERVICE_READY_TIMEOUT_S) -> float:
        return wait_until(lambda: http_ok(self.url + self.health), f"service {self.name}",
                          timeout, self.process)

    def stop(self) -> None:
        self.process.stop(grace=3.0)

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        self.process.pause()

    def resume(self) -> None:
        self.process.resume()


def _delete_proxy(server: ToxiproxyServer, name: str) -> None:
    """Remove a deployment's proxy, unless the server died (its proxies died with it)."""
    if server.process.running():
        server.client.delete_proxy(name)


class LocalRuntime(RunLifecycle):
    """Runs topologies as local processes, with real Toxiproxy and RabbitMQ."""

    name = "local"

    def __init__(self, run_id: str | None = None, tracing: bool = False,
                 toxiproxy_port: int | None = None) -> None:
        super().__init__(run_id)
        self.toxiproxy_port = toxiproxy_port  # fixed API port (`up --toxiproxy-port`)
        self._toxiproxy: ToxiproxyServer | None = None
        self._broker: RabbitNode | None = None
        # Read at each deploy: a deployment made while it is False is not traced.
        self.tracing = tracing
        self._jaeger: JaegerServer | None = None
        self._own_commands: dict[str, dict[str, list[str]]] = {}  # built in the preflight

    # -- lifecycle hooks -------------------------------------------------------------------

    def _spawn_watchdog(self, log_path: Path) -> subprocess.Popen[bytes]:
        return watchdog.spawn(self.run_id, log_path)

    def _close_components(self, problems: list[str]) -> None:
        if self._broker is not None:
            self._broker.stop()
        if self._toxiproxy is not None:
            self._toxiproxy.stop()
        if self._jaeger is not None:
            self._jaeger.stop()

    # -- shared components -----------------------------------------------------------------

    def toxiproxy(self) -> ToxiproxyServer:
        """The run's Toxiproxy server, started on first use."""
        run_dir = self._require_open()
        if self._toxiproxy is None:
            port = (claim_fixed_port(self.toxiproxy_port, self.run_id, "the Toxiproxy API "
                                     "(--toxiproxy-port)")
                    if self.toxiproxy_port else allocate_port(self.run_id))
            server = ToxiproxyServer(self.run_id, run_dir, port)
            try:
                self.timings["toxiproxy_boot_s"] = server.start()
            except BaseException:
                server.stop()
                raise
            self._toxiproxy = server
        return self._toxiproxy

    def broker(self) -> RabbitNode:
        """The run's private RabbitMQ node, booted on first use (about 12 s)."""
        run_dir = self._require_open()
        if self._broker is None:
            ports = [allocate_port(self.run_id) for _ in range(4)]
            node = RabbitNode(self.run_id, run_dir, *ports)
            try:
                self.timings["broker_boot_s"] = node.start()
            except BaseException:
                node.stop()
                raise
            self._broker = node
        return self._broker

    def jaeger(self) -> JaegerServer:
        """The run's private Jaeger (OTLP in, query API out), started on first use."""
        run_dir = self._require_open()
        if self._jaeger is None:
            ports = JaegerPorts(*(allocate_port(self.run_id) for _ in range(4)))
            server = JaegerServer(self.run_id, run_dir, ports)
            try:
                self.timings["jaeger_boot_s"] = server.start()
            except BaseException:
                server.stop()
                raise
            self._jaeger = server
        return self._jaeger

    # -- deploy ----------------------------------------------------------------------------

    def _preflight(self, topology: Topology) -> None:
        """Check binaries before anything starts, so a missing one leaves nothing behind."""
        limited = [s.name for s in topology.services if s.knobs.container_limits]
        if limited:
            raise TopologyError(f"services[{limited[0]}].knobs.cpus/memory_mb",
                                "CPU and memory limits apply to containers",
                                "deploy with the docker runtime (--runtime docker), or "
                                "leave cpus and memory_mb out")
        if topology.proxied_links:
            TOXIPROXY.require()
        if topology.on_kafka:
            JAVA.require()
            require_kafka_libs()
        elif topology.needs_broker:
            RABBITMQ.require()
            EPMD.require()
        if self.tracing:
            JAEGER.require()
        self._own_commands[topology.name] = prepare_own(topology, local=True)

    def _deploy(self, topology: Topology, deployment_id: str, undo: Undo) -> Deployment:
        run_dir = self._require_open()
        started = time.monotonic()
        own_commands = self._own_commands.pop(topology.name, {})
        ports: dict[str, int] = {}
        for spec in topology.services:
            if spec.port is not None:
                ports[spec.name] = claim_fixed_port(spec.port, self.run_id,
                                                    f"service {topology.name}.{spec.name}")
        for spec in topology.services:
            ports.setdefault(spec.name, allocate_port(self.run_id))

        toxiproxy = self.toxiproxy() if topology.proxied_links else None
        kafka = None
        if topology.on_kafka:
            kafka = start_kafka(topology, self.run_id, run_dir / deployment_id, undo,
                                self.timings, f"kafka_{deployment_id}_boot_s")
            broker_access = None
        else:
            broker_access = self._setup_broker(topology, deployment_id, undo)
        otlp_endpoint = self.jaeger().otlp_http_url if self.tracing else None

        proxies: dict[str, ProxyEndpoint] = {}
        for link in topology.proxied_links:
            assert toxiproxy is not None
            listen_port = None
            if link.protocol == "kafka":
                assert kafka is not None  # the broker advertises this client its proxy
                listener = kafka.listeners[link.name]
                upstream, listen_port = listener.upstream, listener.proxy_port
            elif link.protocol == "amqp":
                assert broker_access is not None
                upstream = f"127.0.0.1:{broker_access.address.amqp_port}"
            else:
                upstream = f"127.0.0.1:{ports[link.target]}"
            proxy_name = self.proxy_name(topology, deployment_id, link.name, undo)
            info = toxiproxy.client.create_proxy(
                proxy_name, listen_port or allocate_port(self.run_id), upstream)
            undo.push(functools.partial(_delete_proxy, toxiproxy, proxy_name))
            proxies[link.name] = ProxyEndpoint(link, proxy_name, info.port, upstream)

        services_dir = run_dir / deployment_id
        services: dict[str, LocalService] = {}
        for spec in topology.services:
            config = self._service_config(topology, spec.name, ports, proxies, broker_access,
                                          services_dir)
            to_kafka = topology.amqp_link(spec.name)
            if kafka is not None and to_kafka is not None:
                config = dataclasses.replace(
                    config, kafka=kafka.target(spec.name, to_kafka.name, to_kafka.proxied))
            if otlp_endpoint is not None:
                config = dataclasses.replace(config, otlp_endpoint=otlp_endpoint,
                                             deployment_id=deployment_id)
            log = run_dir / "logs" / f"{deployment_id}.{spec.name}.log"
            if spec.own is not None:  # the user's program, told its config in TESTBED_*
                services_dir.mkdir(parents=True, exist_ok=True)
                env = {**dict(spec.own.env), **contract_environment(config)}
                process = ManagedProcess(
                    f"{deployment_id}.{spec.name}", own_commands[spec.name], self.run_id,
                    log, env=env, cwd=Path(spec.own.directory))
                services[spec.name] = LocalService(spec.name, process, ports[spec.name],
                                                   spec.own.health)
                continue
            config_path = config.write(services_dir / f"{spec.name}.json")
            process = ManagedProcess(
                f"{deployment_id}.{spec.name}",
                [sys.executable, "-m", "testbed.services", str(config_path)],
                self.run_id, log)
            services[spec.name] = LocalService(spec.name, process, ports[spec.name])

        for service in services.values():
            # Traced, a teardown is a SIGTERM: the service then exports the spans it holds.
            undo.push(service.process.kill if otlp_endpoint is None
                      else functools.partial(service.process.stop, 3.0))
            service.process.start()
        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            for future in [pool.submit(s.wait_ready) for s in services.values()]:
                future.result()
        self.timings[f"deploy_{deployment_id}_s"] = time.monotonic() - started

        def teardown() -> None:
            failures = undo.run()
            self._forget(deployment_id)
            if failures:
                raise TestbedError(f"teardown of {deployment_id} failed: {failures}")

        return Deployment(deployment_id, topology, self.name, dict(services), proxies,
                          broker_access, toxiproxy.client if toxiproxy else None, teardown,
                          kafka.access if kafka is not None else None,
                          self.jaeger().query_url if otlp_endpoint is not None else None)

    def _setup_broker(self, topology: Topology, deployment_id: str,
                      undo: Undo) -> BrokerAccess | None:
        if topology.broker is None:
            return None
        node = self.broker()
        admin = node.admin
        vhost = f"{self.run_id}.{deployment_id}"
        admin.create_vhost(vhost)
        # A broker that died takes its vhosts with it (the run's data dir goes at close).
        undo.push(lambda: admin.delete_vhost(vhost) if node.running() else None)
        exchange = topology.broker.exchange
        dead_letters = dead_letter_exchange(exchange)
        admin.declare_exchange(vhost, exchange)
        admin.declare_exchange(vhost, dead_letters, kind="direct")
        queues = []
        for spec in topology.services:
            if spec.consumes:
                admin.declare_queue(vhost, spec.name,
                                    spec.knobs.queue_arguments(spec.name, dead_letters))
                admin.bind(vhost, exchange, spec.name, spec.consumes)
                queues.append(spec.name)
                if spec.knobs.dead_letter:
                    admin.declare_queue(vhost, dead_letter_queue(spec.name))
                    admin.bind(vhost, dead_letters, dead_letter_queue(spec.name), spec.name)
                if spec.knobs.consumer_retries:
                    admin.declare_queue(vhost, retry_queue(spec.name),
                                        spec.knobs.retry_queue_arguments(spec.name))
        return BrokerAccess(node.address, vhost, exchange, tuple(queues), admin, node)

    def _service_config(self, topology: Topology, name: str, ports: dict[str, int],
                        proxies: dict[str, ProxyEndpoint], broker: BrokerAccess | None,
                        directory: Path) -> ServiceConfig:
        spec = topology.service(name)
        downstream_url = None
        link = topology.downstream(name)
        if link is not None:
            port = proxies[link.name].listen_port if link.proxied else ports[link.target]
            downstream_url = f"http://127.0.0.1:{port}"
        amqp = None
        amqp_link = topology.amqp_link(name)
        if amqp_link is not None and broker is not None:
            port = (proxies[amqp_link.name].listen_port if amqp_link.proxied
                    else broker.address.amqp_port)
            amqp = AmqpTarget("127.0.0.1", port, broker.vhost, broker.address.user,
                              broker.address.password, broker.exchange)
        return ServiceConfig(
            name=name, role=spec.role, host="127.0.0.1", port=ports[name], knobs=spec.knobs,
            ledger_path=str(directory / f"{name}.ledger"), downstream_url=downstream_url,
            amqp=amqp, consumes=spec.consumes, publishes=spec.publishes,
            queue=name if spec.consumes else None)
