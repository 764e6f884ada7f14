"""`testbed up` and `testbed status`: keep topologies up for other tools, and say where.

The `up` process deploys, serves the controller's API (control/api.py), writes up.json
and prints every address; it removes the faults injected through the API before the
deployments go. `status` reads the up.json of every live run, asks each Toxiproxy for
its toxics and lists the ones the testbed did not add (a toxiproxy-cli leftover).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testbed.components.toxiproxy import ToxicInfo, ToxiproxyClient
from testbed.control.api import ControlServer, make_app
from testbed.control.client import call, running_ups
from testbed.control.controller import Controller
from testbed.control.state import UpState, describe, shared_toxiproxy
from testbed.errors import TestbedError
from testbed.ports import allocate_port, claim_fixed_port
from testbed.runs import run_dir
from testbed.runtime.base import Runtime
from testbed.steps import Step, quiet
from testbed.topology import Topology


@dataclass(frozen=True)
class UpOptions:
    control_port: int | None = None
    duration_s: float = 0.0  # 0: until Ctrl-C, SIGTERM or `testbed down`
    log: str | None = None  # `up --detach`: where the output goes


def keep_up(runtime: Runtime, topologies: list[Topology], options: UpOptions,
            pid: int, ready: Callable[[UpState], None],
            jaeger_url: str | None = None, step: Step = quiet) -> None:
    """Deploy, serve the API, tell ``ready`` the state, wait; faults off before the end
    (the runtime's close tears the deployments down)."""
    deployments = {}
    for topology in topologies:
        broker = (f", its {topology.broker.kind} broker" if topology.broker is not None
                  else "")
        with step(f"{topology.name}: waiting for Toxiproxy{broker} and "
                  f"{len(topology.services)} services to be ready ({runtime.name} runtime)"):
            deployments[topology.name] = runtime.deploy(topology)
    controller = Controller(deployments)
    port = (claim_fixed_port(options.control_port, runtime.run_id, "the controller's API "
                             "(--control-port)") if options.control_port
            else allocate_port(runtime.run_id))
    views = {name: describe(d) for name, d in deployments.items()}
    state = UpState(runtime.run_id, pid, runtime.name, f"http://127.0.0.1:{port}", views,
                    jaeger_url=jaeger_url, toxiproxy_url=shared_toxiproxy(views),
                    log=options.log)
    server = ControlServer(make_app(controller, lambda: state), port).start()
    try:
        state.write(run_dir(runtime.run_id))
        ready(state)
        deadline = time.monotonic() + options.duration_s if options.duration_s else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        server.close()
        problems = controller.remove_all()
        if problems:
            print("faults that could not be removed (the teardown removes the proxies "
                  "and services anyway): " + "; ".join(problems), flush=True)


def render(state: UpState) -> str:
    """What `up` and `status` print: every address another tool needs."""
    lines = [f"run {state.run_id} is up on the {state.runtime} runtime "
             f"(controller pid {state.pid})",
             f"  controller API   {state.control_url}   (testbed.chaostoolkit uses it)"]
    if state.toxiproxy_url:
        lines.append(f"  Toxiproxy API    {state.toxiproxy_url}   "
                     f"(toxiproxy-cli -h {state.toxiproxy_url.removeprefix('http://')} list)")
    if state.jaeger_url:
        lines.append(f"  Jaeger query     {state.jaeger_url}/api/traces?service=gateway")
    for view in state.topologies.values():
        own = f" (your own: {', '.join(view.own)})" if view.own else ""
        lines.append(f"{view.name}{own}:")
        lines.append(f"  place orders     POST {view.orders_url}")
        for service, url in view.services.items():
            lines.append(f"  {service:<16} {url}")
        if view.toxiproxy_url and view.toxiproxy_url != state.toxiproxy_url:
            lines.append(f"  Toxiproxy API    {view.toxiproxy_url}")
        for proxy in view.proxies:
            lines.append(f"  proxy {proxy.name:<28} {proxy.listen} -> {proxy.upstream}")
        if view.broker is not None and view.broker.kind == "rabbitmq":
            lines.append(f"  AMQP             {view.broker.amqp_url}")
            lines.append(f"  management       {view.broker.management_url} "
                         f"(vhost {view.broker.vhost})")
        elif view.broker is not None:
            lines.append(f"  Kafka bootstrap  {view.broker.bootstrap}")
    first = next(iter(state.topologies.values()), None)
    if first is not None:
        lines.append(f"Send an order: curl -s -X POST {first.orders_url} -H "
                     "'Content-Type: application/json' -d '{\"order_id\": \"o-1\"}'")
    return "\n".join(lines)


# -- status --------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunStatus:
    """A live run: its state, the faults its controller injected, and the toxics found
    on its proxies that the testbed did not add."""

    state: UpState
    faults: list[dict[str, Any]]
    foreign_toxics: list[ToxicInfo]
    disabled_proxies: list[str]
    problem: str | None = None  # a controller or Toxiproxy that did not answer


def _toxiproxies(state: UpState) -> set[str]:
    return {v.toxiproxy_url for v in state.topologies.values() if v.toxiproxy_url}


def run_status(state: UpState) -> RunStatus:
    problems = []
    try:
        faults = list(call(state, "GET", "/faults", timeout_s=5.0))
    except TestbedError as exc:
        faults, problems = [], [str(exc)]
    foreign: list[ToxicInfo] = []
    disabled: list[str] = []
    for url in sorted(_toxiproxies(state)):
        host, _, port = url.removeprefix("http://").rpartition(":")
        client = ToxiproxyClient(host, int(port))
        try:
            foreign += [t for t in client.toxic_infos() if not t.testbeds]
            disabled += [name for name, p in client.proxies().items() if not p.enabled]
        except TestbedError as exc:
            problems.append(f"Toxiproxy at {url}: {exc}")
        finally:
            client.close()
    return RunStatus(state, faults, foreign, disabled, "; ".join(problems) or None)


def statuses() -> list[RunStatus]:
    return [run_status(state) for state in running_ups().values()]


def render_status(status: RunStatus) -> str:
    lines = [render(status.state)]
    for fault in status.faults:
        lines.append(f"  fault {fault['id']} (through the controller): "
                     f"{fault['description']}")
    own_cuts = {p.name for f in status.faults if f["fault"] in ("link_down", "amqp_link_cut")
                for p in status.state.topologies[f["topology"]].proxies
                if p.link == f["target"]}
    for toxic in status.foreign_toxics:
        attrs = ", ".join(f"{k}={v}" for k, v in toxic.attributes.items())
        lines.append(f"  NOT THE TESTBED'S: toxic {toxic.name!r} ({toxic.type} {attrs}, "
                     f"{toxic.stream}, toxicity {toxic.toxicity:g}) on proxy {toxic.proxy}")
    for proxy in status.disabled_proxies:
        if proxy not in own_cuts:
            lines.append(f"  NOT THE TESTBED'S: proxy {proxy} is disabled (its link is down)")
    if status.problem:
        lines.append(f"  (could not read everything: {status.problem})")
    return "\n".join(lines)
