"""The ``testbed`` command: run, report, up, down, status, doctor, gc, setup, images, demo.

Thin over the layers below: parse, call, print. Errors the testbed raises on purpose
print as one clear line (exit 1); usage errors come from argparse (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from testbed.errors import TestbedError, TopologyError
from testbed.runs import known_runs, new_run_id, run_dir
from testbed.topology import Topology, build_shape, load_topology

UP_STATE = "up.json"


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
    topologies = _topologies(args)  # validate everything before starting anything
    if args.detach:
        return _up_detached(args)
    from testbed.runtime import get_runtime

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        options = {"tracing": True} if args.tracing else {}
        with get_runtime(args.runtime, run_id=args.run_id or new_run_id(),
                         **options) as runtime:
            endpoints = {}
            for topology in topologies:
                deployment = runtime.deploy(topology)
                endpoints[topology.name] = deployment.endpoints()
            state = {"run_id": runtime.run_id, "pid": os.getpid(), "endpoints": endpoints}
            if args.tracing:
                state["jaeger"] = runtime.jaeger().query_url  # type: ignore[attr-defined]
            (run_dir(runtime.run_id) / UP_STATE).write_text(json.dumps(state))
            _print_endpoints(state)
            print("Press Ctrl-C (or run `testbed down`) to tear down.", flush=True)
            deadline = time.monotonic() + args.duration if args.duration else None
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("torn down", flush=True)
    return 0


def _print_endpoints(state: dict[str, object]) -> None:
    print(f"run {state['run_id']} is up (controller pid {state['pid']})")
    endpoints = state["endpoints"]
    assert isinstance(endpoints, dict)
    for topology, services in endpoints.items():
        for service, url in services.items():
            print(f"  {topology}.{service:14} {url}")
    for topology, services in endpoints.items():
        print(f"Send an order to {topology}: curl -s -X POST {services['gateway']}/orders "
              "-H 'Content-Type: application/json' -d '{\"order_id\": \"o-1\"}'")
    if state.get("jaeger"):
        print(f"Traces (Jaeger's query API): {state['jaeger']}/api/traces?service=gateway")
    sys.stdout.flush()


def _up_detached(args: argparse.Namespace) -> int:
    run_id = new_run_id()
    argv = [sys.executable, "-m", "testbed.cli", "up", "--run-id", run_id,
            "--runtime", args.runtime]
    argv += ["--topology", args.topology] if args.topology else ["--shape", args.shape,
                                                                  "--depth", str(args.depth)]
    for pair in args.port:
        argv += ["--port", pair]
    if args.tracing:
        argv.append("--tracing")
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"testbed-up-{run_id}.log"
    with log.open("wb") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    state_file = run_dir(run_id) / UP_STATE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if state_file.exists():
            _print_endpoints(json.loads(state_file.read_text()))
            print(f"Running in the background (log {log}); stop it with "
                  f"`testbed down {run_id}`.")
            return 0
        if child.poll() is not None:
            print(log.read_text(), file=sys.stderr)
            return 1
        time.sleep(0.2)
    child.terminate()
    raise TestbedError(f"`testbed up` did not come up within 120 s; see {log}")


def _up_runs() -> dict[str, dict[str, object]]:
    found = {}
    for directory, record in known_runs():
        state = directory / UP_STATE
        if record is not None and record.controller_alive() and state.exists():
            found[record.run_id] = json.loads(state.read_text())
    return found


def cmd_down(args: argparse.Namespace) -> int:
    runs = _up_runs()
    targets = list(runs) if args.all or not args.run_id else [args.run_id]
    if args.run_id and args.run_id not in runs:
        raise TestbedError(f"no running `testbed up` with run id {args.run_id}; "
                           f"running: {sorted(runs) or 'none'}")
    if not args.all and not args.run_id and len(runs) > 1:
        raise TestbedError(f"several runs are up ({', '.join(sorted(runs))}); name one, "
                           "or pass --all")
    for run_id in targets:
        pid = int(str(runs[run_id]["pid"]))
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
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
    runs = _up_runs()
    if not runs:
        print("nothing is up")
    for state in runs.values():
        _print_endpoints(state)
    return 0


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
    missing = [f.component for f in findings if not f.ok]
    if missing:
        print(f"\n{len(missing)} component(s) missing: {', '.join(missing)}. "
              "Run `testbed setup` to install them.", file=sys.stderr)
        return 1
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from testbed.runtime.docker import collect_docker_garbage
    from testbed.runtime.sweep import collect_garbage

    report = collect_garbage()
    docker_objects = collect_docker_garbage()
    if report.empty() and not docker_objects:
        print("nothing to collect")
    for item in docker_objects:
        print(f"removed docker {item}")
    for run_id in report.runs:
        print(f"removed run directory {run_id}")
    for process in report.processes:
        print(f"killed process {process}")
    if report.ports:
        print(f"released {len(report.ports)} port reservation(s)")
    return 1 if args.check and not (report.empty() and not docker_objects) else 0


def cmd_setup(args: argparse.Namespace) -> int:
    from testbed.components.install import setup

    installed = setup()
    if args.docker:
        from testbed.components.compose import ensure_compose
        from testbed.components.docker_engine import ensure_engine
        from testbed.images import build_images

        installed += ensure_engine()
        installed += ensure_compose()
        installed += [f"image {ref}" for ref in build_images(log=print)]
    print("\n".join(f"installed {item}" for item in installed) or "everything is installed")
    return cmd_doctor(args)


def cmd_images(args: argparse.Namespace) -> int:
    from testbed.images import images_main

    return images_main(args.rest)


def cmd_demo(args: argparse.Namespace) -> int:
    from testbed.demo import render, run_demo

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

    from testbed.runtime import get_runtime
    from testbed.scenario.calibrate import measure, save_calibration

    print(f"calibrating the model on the {args.runtime} runtime: 14 short trials (~2.5 min)")
    with get_runtime(args.runtime) as runtime:
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
    up.add_argument("--run-id", help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="tear down what `testbed up` started")
    down.add_argument("run_id", nargs="?")
    down.add_argument("--all", action="store_true")
    down.set_defaults(func=cmd_down)

    sub.add_parser("status", help="list runs that are up").set_defaults(func=cmd_status)
    sub.add_parser("doctor", help="check the external components").set_defaults(
        func=cmd_doctor)
    gc = sub.add_parser("gc", help="remove what dead runs left behind")
    gc.add_argument("--check", action="store_true",
                    help="exit 1 when there was anything to remove (a leak, after a suite)")
    gc.set_defaults(func=cmd_gc)
    setup = sub.add_parser("setup", help="install missing components")
    setup.add_argument("--docker", action="store_true",
                       help="also the Docker engine and the offline images (docker runtime)")
    setup.set_defaults(func=cmd_setup)
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
