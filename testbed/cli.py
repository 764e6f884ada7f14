"""The ``testbed`` command: run, report, up, down, status, doctor, gc, setup, images, demo.

Thin over the layers below: parse, call, print. Errors the testbed raises on purpose
print as one clear line (exit 1); usage errors come from argparse (exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from testbed.control.state import UP_STATE, UpState
from testbed.errors import TestbedError, TopologyError
from testbed.runs import new_run_id, run_dir
from testbed.topology import Topology, build_shape, load_topology

if TYPE_CHECKING:
    from testbed.runtime.sweep import DeadRun


def _parse_ports(pairs: Sequence[str]) -> dict[tuple[str, str], int]:
    ports = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        topology, _, service = key.partition(".")
        if not (topology and service and value.isdigit()):
            raise TopologyError("--port", f"{pair!r} is not TOPOLOGY.SERVICE=PORT",
                                "write it like sync.gateway=8080")
        ports[(topology, service)] = int(value)
    return ports


def _topologies(args: argparse.Namespace) -> list[Topology]:
    if args.topology:
        topologies = [load_topology(Path(args.topology))]
    else:
        topologies = build_shape(args.shape, args.depth)
    fixed = _parse_ports(args.port)
    result = []
    for topology in topologies:
        services = []
        for spec in topology.services:
            port = fixed.pop((topology.name, spec.name), spec.port)
            services.append(replace(spec, port=port))
        result.append(replace(topology, services=tuple(services)))
    if fixed:
        (name, service), _ = next(iter(fixed.items()))
        raise TopologyError("--port", f"there is no service {name}.{service}",
                            "name a service as TOPOLOGY.SERVICE, e.g. sync.gateway")
    return result


class _Stop(Exception):
    """Raised from the SIGTERM handler so `with` blocks tear down in order."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def cmd_up(args: argparse.Namespace) -> int:
    if args.tracing and args.runtime != "local":
        print(f"--tracing: the {args.runtime} runtime does not trace. Fix: leave --tracing "
              "out, or use --runtime local", file=sys.stderr)
        return 2
    if args.toxiproxy_port and args.runtime != "local":
        print(f"--toxiproxy-port: the {args.runtime} runtime runs a Toxiproxy per topology "
              "(their API URLs are printed). Fix: leave it out, or use --runtime local",
              file=sys.stderr)
        return 2
    topologies = _topologies(args)  # validate everything before starting anything
    if args.detach:
        return _up_detached(args)
    from testbed import progress
    from testbed.control.up import UpOptions, keep_up, render
    from testbed.runtime import get_runtime

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    options: dict[str, object] = {}
    if args.tracing:
        options["tracing"] = True
    if args.toxiproxy_port:
        options["toxiproxy_port"] = args.toxiproxy_port

    def ready(state: UpState) -> None:
        print(json.dumps(asdict(state), indent=2) if args.json else render(state))
        print("Press Ctrl-C (or run `testbed down`) to tear down.", flush=True)

    try:
        with get_runtime(args.runtime, run_id=args.run_id or new_run_id(),
                         **options) as runtime:
            jaeger = runtime.jaeger().query_url if args.tracing else None  # type: ignore[attr-defined]
            keep_up(runtime, topologies, UpOptions(args.control_port, args.duration,
                                                   args.log), os.getpid(), ready, jaeger,
                    functools.partial(progress.step, stderr=True))
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("torn down", flush=True)
    return 0


UP_LOG = "up.log"  # `up --detach`'s output, in the run's logs/: gone with the run
UP_TIMEOUT_S = 120.0


def _up_detached(args: argparse.Namespace) -> int:
    from testbed import progress

    run_id = new_run_id()
    argv = [sys.executable, "-m", "testbed.cli", "up", "--run-id", run_id,
            "--runtime", args.runtime]
    argv += ["--topology", args.topology] if args.topology else ["--shape", args.shape,
                                                                  "--depth", str(args.depth)]
    for pair in args.port:
        argv += ["--port", pair]
    if args.tracing:
        argv.append("--tracing")
    for option in ("toxiproxy_port", "control_port"):
        if getattr(args, option):
            argv += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    # The log's home is the run directory, deleted by the teardown, so nothing of it stays
    # after `down`. That directory appears only once the child's runtime makes it (with
    # its record, atomically: made early, gc would take the run for dead), so the output
    # starts beside it and is renamed in once the run is up; the child writes on.
    log = run_dir(run_id) / "logs" / UP_LOG
    early = _early_log(run_id)
    argv += ["--log", str(log)]
    with early.open("wb") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        with progress.step(f"waiting for run {run_id} to come up on the {args.runtime} "
                           f"runtime (up to {UP_TIMEOUT_S:.0f} s)", stderr=True):
            state = _wait_for_up(run_id, child)
            early.rename(log)
    except (TestbedError, OSError) as exc:  # it failed, or was down again at once
        print(early.read_text(errors="replace"), file=sys.stderr)
        if isinstance(exc, TestbedError):
            raise
        raise TestbedError(f"run {run_id} ended as soon as it was up; its output is "
                           "above") from exc
    finally:
        early.unlink(missing_ok=True)  # renamed into the run, or printed
    from testbed.control.up import render

    print(json.dumps(asdict(state), indent=2) if args.json else render(state))
    print(f"Running in the background (log {log}); stop it with `testbed down {run_id}`.")
    return 0


def _early_log(run_id: str) -> Path:
    """Where a detached up's output goes until its run directory exists: in the runs
    directory (the same filesystem, for the rename), under a name no run has."""
    runs = run_dir(run_id).parent
    runs.mkdir(parents=True, exist_ok=True)
    return runs / f".up-{run_id}.log"


def _wait_for_up(run_id: str, child: subprocess.Popen[bytes]) -> UpState:
    """The run's state once it is up; an error when the child ends first, or (the child
    stopped) after UP_TIMEOUT_S."""
    state_file = run_dir(run_id) / UP_STATE
    deadline = time.monotonic() + UP_TIMEOUT_S
    while time.monotonic() < deadline:
        if state_file.exists():
            with contextlib.suppress(ValueError, KeyError, TypeError):  # half written
                return UpState.read(state_file)
        if child.poll() is not None:
            raise TestbedError(f"`testbed up` exited with code {child.returncode} before "
                               "it was up; its output is above")
        time.sleep(0.2)
    child.terminate()
    raise TestbedError(f"`testbed up` did not come up within {UP_TIMEOUT_S:.0f} s; "
                       "its output is above")


def cmd_down(args: argparse.Namespace) -> int:
    from testbed import progress
    from testbed.control.client import running_ups

    runs = running_ups()
    targets = list(runs) if args.all or not args.run_id else [args.run_id]
    if args.run_id and args.run_id not in runs:
        raise TestbedError(f"no running `testbed up` with run id {args.run_id}; "
                           f"running: {sorted(runs) or 'none'}")
    if not args.all and not args.run_id and len(runs) > 1:
        raise TestbedError(f"several runs are up ({', '.join(sorted(runs))}); name one, "
                           "or pass --all")
    for run_id in targets:
        pid = runs[run_id].pid
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        with progress.step(f"waiting for run {run_id} to tear down (controller pid {pid}, "
                           "up to 60 s)", stderr=True):
            while run_dir(run_id).exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        if run_dir(run_id).exists():
            raise TestbedError(f"run {run_id} did not tear down within 60 s; "
                               "run `testbed gc` to force it")
        print(f"run {run_id} is down")
    if not targets:
        print("nothing is up")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from testbed.control.up import render_status, statuses

    found = statuses()
    if args.json:
        print(json.dumps([asdict(status) for status in found], indent=2))
        return 0
    dead = _dead_runs()
    if not found and not dead:
        print("nothing is up")
    for status in found:
        print(render_status(status))
    _print_dead_runs(dead)
    return 0


def _dead_runs() -> list[DeadRun]:
    """Runs whose controller died, with what they left (files, processes, ports, the
    engine's objects): `status` shows a leak before anyone runs gc."""
    from testbed.runtime.docker import dead_run_objects
    from testbed.runtime.k8s import dead_run_namespaces
    from testbed.runtime.sweep import dead_runs

    return dead_runs(dead_run_objects(), dead_run_namespaces())


def _print_dead_runs(dead: list[DeadRun]) -> None:
    from testbed.runtime.sweep import render_dead_run

    for run in dead:
        print(render_dead_run(run))


def cmd_doctor(args: argparse.Namespace) -> int:
    from testbed.components.compose import compose_version, install_hint
    from testbed.components.docker_engine import info
    from testbed.doctor import examine, render

    findings = examine()
    print(render(findings))
    engine = info()
    print("docker engine (docker runtime only): "
          + (f"ok, {engine.version} (API {engine.api_version}, {engine.storage_driver})"
             if engine else "not answering; `testbed setup --docker` installs "
             "docker.io and starts dockerd"))
    compose = compose_version()
    print("docker compose (compose/ files only): "
          + (f"ok, {compose}" if compose else f"missing; {install_hint()}"))
    from testbed.components.kube.cluster import describe_cluster

    print(f"k8s cluster (k8s runtime only): {describe_cluster()}")
    from testbed.components.tools import TOXIPROXY_CLI, VEGETA

    for tool in (TOXIPROXY_CLI, VEGETA):  # for "Using it with other tools" only
        print(f"{tool.name} (other tools, optional): "
              + ("ok" if tool.find() else f"missing; {tool.install_hint}"))
    missing = [f.component for f in findings if not f.ok]
    if missing:
        print(f"\n{len(missing)} component(s) missing: {', '.join(missing)}. "
              "Run `testbed setup` to install them.", file=sys.stderr)
        return 1
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from testbed.runtime.docker import collect_docker_garbage
    from testbed.runtime.k8s import collect_k8s_garbage
    from testbed.runtime.sweep import collect_garbage

    remove = not args.check  # --check: the same finding, nothing removed
    report = collect_garbage(remove=remove)
    docker_objects = collect_docker_garbage(remove=remove)
    k8s_objects = collect_k8s_garbage(remove=remove)  # no cluster configured: none
    if report.empty() and not docker_objects and not k8s_objects:
        print("nothing to collect")
        return 0
    verbs = (("removed", "killed", "released") if remove
             else ("would remove", "would kill", "would release"))
    for item in docker_objects:
        print(f"{verbs[0]} docker {item}")
    for item in k8s_objects:
        print(f"{verbs[0]} k8s {item}")
    for run_id in report.runs:
        print(f"{verbs[0]} run directory {run_id}")
    for process in report.processes:
        print(f"{verbs[1]} process {process}")
    if report.ports:
        print(f"{verbs[2]} {len(report.ports)} port reservation(s): "
              f"{', '.join(map(str, sorted(report.ports)))}")
    if not remove:
        print("`testbed gc` removes them")
        return 1
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    from testbed import progress
    from testbed.components.install import setup

    installed = setup(progress.step)
    if args.docker or args.k8s:
        from testbed.components.compose import ensure_compose
        from testbed.components.docker_engine import ENGINE_START_TIMEOUT_S, ensure_engine
        from testbed.images import build_images

        with progress.step("Docker engine: waiting for one to answer (starting dockerd if "
                           f"none does, up to {ENGINE_START_TIMEOUT_S:.0f} s)"):
            installed += ensure_engine()
        with progress.step("Docker Compose v2 (built from the Go module proxy if the docker "
                           "CLI has none)"):
            installed += ensure_compose()
        installed += [f"image {ref}" for ref in build_images(log=progress.say,
                                                             step=progress.step)]
    if args.k8s:
        from testbed.components.kube import setup_cluster

        installed += setup_cluster(progress.step)
    print("\n".join(f"installed {item}" for item in installed) or "everything is installed")
    return cmd_doctor(args)


def cmd_k8s(args: argparse.Namespace) -> int:
    """The cluster `testbed setup --k8s` made: how it is, start it again, stop it (pods,
    components, the bridge and iptables chains it left), remove it (its files too)."""
    from testbed import progress
    from testbed.components.kube.cluster import Cluster, describe_cluster

    cluster = Cluster()
    if args.action == "status":
        print(describe_cluster())
        for state in cluster.components():
            print(f"  {state.name:24} {'pid ' + str(state.pid) if state.pid else 'down'}")
        return 0 if cluster.running() else 1
    if args.action == "start":
        with progress.step("k8s cluster: starting what is down"):
            timings = cluster.start()
        print(", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
              or "already running")
        return 0
    with progress.step(f"k8s cluster: {args.action} ({cluster.home})"):
        problems = cluster.stop() if args.action == "stop" else cluster.remove()
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"k8s cluster {'stopped' if args.action == 'stop' else 'removed'}")
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    from testbed.images import images_main

    return images_main(args.rest)


def cmd_demo(args: argparse.Namespace) -> int:
    from testbed import progress
    from testbed.demo import render, run_demo

    with progress.step(f"demo: the paired topology (depth {args.depth}) up, {args.orders} "
                       "orders through both, then down"):
        rows = run_demo(args.orders, args.depth)
    print(render(rows))
    bad = [r for r in rows if r.missing or r.duplicates]
    if bad:
        print(f"\n{len(bad)} service(s) lost or doubled orders", file=sys.stderr)
        return 1
    print(f"\nevery service of both topologies processed all {args.orders} orders once")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from testbed.suite import SuiteRun, run_suite

    return run_suite(SuiteRun(everything=args.all, workers=args.workers,
                              report_dir=Path(args.report_dir), runtime=args.runtime,
                              select=args.k, files=tuple(Path(f) for f in args.files)))


def cmd_calibrate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from testbed import progress
    from testbed.runtime import get_runtime
    from testbed.scenario.calibrate import measure, save_calibration

    with progress.step(f"calibrating the model on the {args.runtime} runtime: 14 short "
                       "trials (~2.5 min)"), get_runtime(args.runtime) as runtime:
        calibration, raw = measure(runtime, Path(args.report_dir))
    path = save_calibration(calibration, raw, args.runtime)
    for name, value in asdict(calibration).items():
        print(f"  {name:<20} {value:g}")
    print(f"saved: {path} (the model and `testbed predict` use it from now on)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import time
    from dataclasses import replace

    from testbed.analysis.hypotheses import format_number
    from testbed.scenario.predict import SIMULATED, load_for_model, parse_settings, predict

    scenario, own = load_for_model(Path(args.file))  # its load may be beyond a real trial's
    what_if = replace(own, rate=args.rate, duration_s=args.duration,
                      knobs=parse_settings(args.set, scenario))
    started = time.monotonic()
    results, judged, written = predict(scenario, Path(args.report_dir), what_if, args.seed)
    print(f"{SIMULATED} by the model (no trial was run): {scenario.title}")
    for name, result in results.items():
        print(f"  {name}: {len(result.requests):,} orders over "
              f"{result.meta['model']['simulated_s']:,.0f} simulated seconds")
    for hypotheses in judged.values():
        print(f"\n{hypotheses.title}")
        for v in hypotheses.verdicts:
            model = "never" if v.measured is None else format_number(v.measured) if \
                isinstance(v.measured, int | float) else str(v.measured)
            said = "n/a" if v.predicted is None else format_number(v.predicted) if \
                isinstance(v.predicted, int | float) else str(v.predicted)
            print(f"  {v.name}: model {model}; the file predicts {said} "
                  f"({v.tolerance_text or 'exact'}): {'agrees' if v.passed else 'DIFFERS'}")
    print(f"\nreport ({SIMULATED}): {written.index} in {time.monotonic() - started:.1f} s")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from testbed.report.suite_report import write_reports

    report_dir = Path(args.report_dir)
    if not (report_dir / "verdicts").exists() and not (args.stability or args.agreement):
        raise TestbedError(f"no saved results under {report_dir}/ (verdicts/ is missing): "
                           "run the suite first with `testbed run`, or give --report-dir")
    if args.stability:
        from testbed.report.history import (
            HISTORY_FILE,
            load_history,
            stability,
            stability_markdown,
        )

        text = stability_markdown(stability(load_history(report_dir / HISTORY_FILE),
                                            args.stability), args.stability)
        (report_dir / "stability.md").write_text(text)
        print(text)
        return 0 if "FLIPPED" not in text else 1
    if args.agreement:
        from testbed.report.agreement import agreement, agreement_markdown
        from testbed.report.history import HISTORY_FILE, load_history

        text = agreement_markdown(agreement(load_history(report_dir / HISTORY_FILE),
                                            args.agreement), args.agreement)
        (report_dir / "agreement.md").write_text(text)
        print(text)
        return 0
    written = write_reports(report_dir)
    print(f"rebuilt {len(written.experiments)} experiment reports; suite page "
          f"{written.index}, summary {written.summary}, JUnit {written.junit}")
    if args.trend:
        for regression in written.regressions:
            print(f"REGRESSION: {regression}")
        print(f"{len(written.regressions)} regression(s) against the history")
        return 1 if written.regressions else 0
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="testbed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="bring a topology up and keep it up until Ctrl-C")
    up.add_argument("--shape", choices=["sync", "async", "paired"], default="paired")
    up.add_argument("--depth", type=int, default=3, help="services behind the gateway, 1-5")
    up.add_argument("--topology", help="a TOML topology file instead of --shape")
    up.add_argument("--port", action="append", default=[], metavar="TOPOLOGY.SERVICE=PORT",
                    help="fix a service's port, e.g. sync.gateway=8080 (repeatable)")
    up.add_argument("--runtime", default="local")
    up.add_argument("--detach", action="store_true", help="run in the background")
    up.add_argument("--duration", type=float, default=0,
                    help="tear down by itself after this many seconds")
    up.add_argument("--tracing", action="store_true",
                    help="local runtime: trace every service to a private Jaeger (its "
                         "query API's URL is printed)")
    up.add_argument("--toxiproxy-port", type=int, metavar="PORT",
                    help="fix the Toxiproxy API's port (local runtime), e.g. 8474")
    up.add_argument("--control-port", type=int, metavar="PORT",
                    help="fix the controller API's port (testbed.chaostoolkit finds it "
                         "either way)")
    up.add_argument("--json", action="store_true",
                    help="print the run's addresses as JSON (up.json's content)")
    up.add_argument("--run-id", help=argparse.SUPPRESS)
    up.add_argument("--log", help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="tear down what `testbed up` started")
    down.add_argument("run_id", nargs="?")
    down.add_argument("--all", action="store_true")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="list runs that are up, their addresses, faults "
                                           "and toxics the testbed did not add")
    status.add_argument("--json", action="store_true",
                        help="everything as JSON: addresses, proxies, faults, toxics")
    status.set_defaults(func=cmd_status)
    sub.add_parser("doctor", help="check the external components").set_defaults(
        func=cmd_doctor)
    gc = sub.add_parser("gc", help="remove what dead runs left behind (processes, run "
                                   "directories, port reservations, docker objects)")
    gc.add_argument("--check", action="store_true",
                    help="remove nothing: list what gc would remove, exit 1 if there is "
                         "anything (a leak check, after a suite)")
    gc.set_defaults(func=cmd_gc)
    setup = sub.add_parser("setup", help="install missing components")
    setup.add_argument("--docker", action="store_true",
                       help="also the Docker engine and the offline images (docker runtime)")
    setup.add_argument("--k8s", action="store_true",
                       help="also build and start the testbed's single-node Kubernetes "
                            "cluster, with the images loaded (k8s runtime; implies --docker)")
    setup.set_defaults(func=cmd_setup)
    k8s = sub.add_parser("k8s", help="the testbed's own Kubernetes cluster: status, start, "
                                     "stop, remove")
    k8s.add_argument("action", choices=["status", "start", "stop", "remove"])
    k8s.set_defaults(func=cmd_k8s)
    images = sub.add_parser("images", help="offline images for the docker runtime: "
                                           "`images build [--force]`, `images list`",
                            add_help=False)
    images.add_argument("rest", nargs=argparse.REMAINDER)
    images.set_defaults(func=cmd_images)

    run = sub.add_parser("run", help="run scenario files, the flagship experiments or "
                                     "(--all) the catalog, and write the reports")
    run.add_argument("files", nargs="*", metavar="FILE.toml",
                     help="scenario files to run (default: the flagship experiments)")
    run.add_argument("--all", action="store_true", help="every experiment and scenario "
                     "file, not only the flagship")
    run.add_argument("-n", "--workers", type=int, default=1,
                     help="parallel workers (1: one experiment at a time; a second one, or "
                          "a Kafka JVM beside it, is load its tolerances were not sized "
                          "for on a 2-core machine)")
    run.add_argument("--report-dir", default="reports")
    run.add_argument("--runtime", default="local")
    run.add_argument("-k", help="only experiments matching this pytest -k expression")
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="rebuild the reports from saved results "
                                           "(--trend: compare with the history)")
    report.add_argument("--report-dir", default="reports")
    report.add_argument("--trend", action="store_true",
                        help="flag regressions against reports/history.csv (exit 1)")
    report.add_argument("--stability", type=int, metavar="N",
                        help="verdicts and spread of the measured numbers over the last N "
                             "runs of the history (writes stability.md; exit 1 on a flip)")
    report.add_argument("--agreement", type=int, metavar="N",
                        help="the model against the measurements over the last N runs of "
                             "the history (writes agreement.md: experiments/MODEL.md's table)")
    report.set_defaults(func=cmd_report)

    calibrate = sub.add_parser("calibrate", help="measure the model's machine constants "
                               "on a runtime (short real trials)")
    calibrate.add_argument("--runtime", default="local")
    calibrate.add_argument("--report-dir", default="reports/calibration",
                           help="where the calibration trials are kept")
    calibrate.set_defaults(func=cmd_calibrate)

    predict = sub.add_parser("predict", help="simulate a scenario file with the model "
                             "(what-if at any scale; nothing is started)")
    predict.add_argument("file", metavar="FILE.toml")
    predict.add_argument("--rate", type=float, help="orders/s for the whole load")
    predict.add_argument("--duration", type=float, help="seconds of load")
    predict.add_argument("--set", action="append", default=[], metavar="SERVICE.KNOB=V",
                         help="change a knob of a service (repeatable)")
    predict.add_argument("--seed", type=int, default=1)
    predict.add_argument("--report-dir", default="reports/predicted")
    predict.set_defaults(func=cmd_predict)

    demo = sub.add_parser("demo", help="paired topology, the same orders through both")
    demo.add_argument("--orders", type=int, default=20)
    demo.add_argument("--depth", type=int, default=3)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except TestbedError as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
