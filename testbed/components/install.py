"""`testbed setup`: install the external components this machine lacks.

Toxiproxy: ``go install`` of the pinned server into the active environment's bin/
as ``toxiproxy-server``. RabbitMQ: Debian's rabbitmq-server through apt-get (as root),
with service start-up blocked during the install, since the testbed runs its own node.
Kafka: its pinned jars and their runtime dependencies from Maven Central, copied by
``mvn dependency:copy-dependencies`` (kafka.pom.xml) into the environment's share/.
Jaeger: built from the Go module proxy as a tool of a throwaway module (its go.mod has
a replace directive, so ``go install`` refuses it), into bin/ beside toxiproxy-server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testbed.components.binaries import (
    JAEGER,
    JAEGER_MODULE,
    JAEGER_PACKAGE,
    JAEGER_VERSION,
    JAVA,
    KAFKA_ARTIFACT,
    KAFKA_COMPLETE,
    KAFKA_POM,
    KAFKA_VERSION,
    MAVEN,
    RABBITMQ,
    TOXIPROXY,
    TOXIPROXY_MODULE,
    find_kafka_libs,
    kafka_install_dir,
)
from testbed.errors import ComponentError
from testbed.steps import Step, quiet

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def run_command(argv: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> None:
    """Run an install command; its output is kept (a step's spinner stays one line) and
    its last lines go into the error when it fails."""
    print("+ " + " ".join(argv), flush=True)
    try:
        subprocess.run(argv, check=True, env=env, timeout=timeout, capture_output=True,
                       text=True, errors="replace")
    except subprocess.CalledProcessError as exc:
        said = "\n".join(((exc.stdout or "") + (exc.stderr or "")).strip().splitlines()[-25:])
        raise ComponentError(f"`{' '.join(argv)}` exited {exc.returncode}:\n{said}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ComponentError(f"`{' '.join(argv)}` failed: {exc}") from exc


def require_go(what: str) -> str:
    go = shutil.which("go")
    if go is None:
        raise ComponentError(f"{what} is missing and Go is not installed. Fix: install Go "
                             "(apt-get install golang-go) and rerun `testbed setup`, or put "
                             f"any {what} binary in place yourself")
    return go


def place_binary(built: Path, target: Path) -> Path:
    """Move a built binary to ``target`` atomically: a concurrent reader sees the old file
    or the new one, never half of one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.new")
    shutil.move(built, staged)
    staged.chmod(0o755)
    staged.replace(target)
    return target


def go_install(module: str, built_name: str, target: Path, what: str) -> Path:
    """``go install`` a pinned module from the Go module proxy into ``target``."""
    go = require_go(what)
    with tempfile.TemporaryDirectory(prefix="testbed-gobin-") as gobin:
        env = {**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"}
        run_command([go, "install", module], env=env)
        return place_binary(Path(gobin) / built_name, target)


def go_build(module: str, package: str, target: Path, what: str, ldflags: str = "") -> Path:
    """Build ``package`` of a pinned module as the main module, from its source in the
    module cache: for modules ``go install`` refuses (replace or exclude directives)."""
    go = require_go(what)
    env = {**os.environ, "CGO_ENABLED": "0"}
    print(f"+ {go} mod download -json {module}", flush=True)
    try:
        done = subprocess.run([go, "mod", "download", "-json", module], capture_output=True,
                              text=True, check=True, env=env, timeout=900)
        source = json.loads(done.stdout)["Dir"]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        raise ComponentError(f"cannot download {module} from the Go module proxy: {exc}. "
                             "Fix: check `go env GOPROXY` and that the proxy answers") from exc
    with tempfile.TemporaryDirectory(prefix="testbed-gobuild-") as out:
        built = Path(out) / target.name
        run_command([go, "-C", source, "build", "-trimpath", f"-ldflags={ldflags}", "-o",
                     str(built), package], env=env)
        return place_binary(built, target)


def _go_json(go: str, argv: list[str], env: dict[str, str], what: str) -> dict[str, Any]:
    """Run a ``go`` subcommand that prints JSON and parse it; errors name the fix."""
    print("+ " + " ".join([go, *argv]), flush=True)
    try:
        done = subprocess.run([go, *argv], capture_output=True, text=True, check=True,
                              env=env, timeout=900)
        parsed: dict[str, Any] = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        said = (getattr(exc, "stdout", None) or getattr(exc, "stderr", None) or "").strip()
        raise ComponentError(f"`go {' '.join(argv)}` failed for {what}: {exc} {said[-500:]}."
                             " Fix: check `go env GOPROXY` and that the proxy answers") from exc
    return parsed


def tool_module(go: str, work: str, module: str, version: str, packages: list[str],
                env: dict[str, str], what: str,
                local: Callable[[str], str | None] = lambda _path: None) -> None:
    """Make ``work`` a throwaway module whose tools are ``packages`` of ``module@version``
    (``go get -tool``): for modules ``go install`` refuses because their go.mod has
    replace directives. Those directives are copied first, so the build resolves the
    versions upstream pins; a local-directory one is kept only where ``local`` names a
    published module version for it (``path@version``), else dropped."""
    info = _go_json(go, ["mod", "download", "-json", f"{module}@{version}"], env, what)
    if "GoMod" not in info:
        raise ComponentError(f"cannot download {module}@{version} from the Go module proxy: "
                             f"{info.get('Error', 'no go.mod in the answer')}. Fix: check "
                             "`go env GOPROXY` and that the proxy answers")
    upstream = _go_json(go, ["mod", "edit", "-json", info["GoMod"]], env, what)
    run_command([go, "-C", work, "mod", "init", "testbed.local/gotool"], env=env)
    for replace in upstream.get("Replace") or []:
        old, new = replace["Old"], replace["New"]
        target = (f"{new['Path']}@{new['Version']}" if new.get("Version")
                  else local(old["Path"]))
        if target is None:
            continue  # a directory inside upstream's repository: not reachable here
        old_ref = old["Path"] + (f"@{old['Version']}" if old.get("Version") else "")
        run_command([go, "-C", work, "mod", "edit", f"-replace={old_ref}={target}"], env=env)
    run_command([go, "-C", work, "get", "-tool",
                 *[f"{package}@{version}" for package in packages]], env=env)


def go_build_tool(module: str, version: str, package: str, target: Path, what: str,
                  ldflags: str = "") -> Path:
    """Build ``package`` of ``module@version`` as a tool of a throwaway module."""
    go = require_go(what)
    env = {**os.environ, "CGO_ENABLED": "0"}
    with tempfile.TemporaryDirectory(prefix="testbed-gotool-") as work:
        tool_module(go, work, module, version, [package], env, what)
        built = Path(work) / "bin" / target.name
        run_command([go, "-C", work, "build", "-trimpath", f"-ldflags={ldflags}", "-o",
                     str(built), package], env=env)
        return place_binary(built, target)


def install_jaeger() -> Path:
    """Jaeger v2 (the all-in-one ``jaeger`` binary) beside toxiproxy-server."""
    version_var = f"{JAEGER_MODULE}/internal/version.latestVersion"
    return go_build_tool(JAEGER_MODULE, JAEGER_VERSION, JAEGER_PACKAGE,
                         Path(sys.prefix) / "bin" / "jaeger", "jaeger",
                         ldflags=f"-s -w -X {version_var}={JAEGER_VERSION}")


def install_toxiproxy() -> Path:
    return go_install(TOXIPROXY_MODULE, "server", Path(sys.prefix) / "bin" / "toxiproxy-server",
                      "toxiproxy-server")


def apt_install(package: str, why: str) -> None:
    """apt-get install a Debian package as root, with service start-up blocked (a
    temporary policy-rc.d): the testbed starts its own private instances, and these
    machines have no init system anyway. ``why`` goes into the error when not root."""
    if os.geteuid() != 0:
        raise ComponentError(f"{why}. Fix: as root run `apt-get update && apt-get install "
                             f"-y {package}`, then `testbed doctor`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_command(["apt-get", "update", "-qq"], env=env)
    placed_policy = not POLICY_RC_D.exists()
    if placed_policy:
        POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        run_command(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                    env=env)
    finally:
        if placed_policy:
            POLICY_RC_D.unlink(missing_ok=True)


def install_rabbitmq() -> None:
    apt_install("rabbitmq-server", "rabbitmq-server is missing")


def install_kafka(target: Path | None = None) -> Path:
    """Copy the pinned Kafka jars (with every runtime dependency) into ``target`` with
    Maven. The copy goes to a staging directory renamed into place, and a marker is
    written last, so an interrupted setup is redone rather than taken for whole."""
    target = target or kafka_install_dir()
    why = f"Kafka's jars are missing ({target})"
    if JAVA.find() is None:
        apt_install("openjdk-17-jre-headless", f"{why} and java, which runs them, is missing")
    if MAVEN.find() is None:
        apt_install("maven", f"{why} and mvn, which fetches them from Maven Central, is "
                             "missing (or set $TESTBED_KAFKA_LIBS to a Kafka tarball's libs/)")
    mvn = MAVEN.require()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".libs-", dir=target.parent))
    try:
        run_command([mvn, "-q", "-B", "-f", str(KAFKA_POM), f"-Dkafka.version={KAFKA_VERSION}",
                     "dependency:copy-dependencies", "-DincludeScope=runtime",
                     f"-DoutputDirectory={staging}"])
        if not (staging / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
            raise ComponentError(f"mvn did not fetch {KAFKA_ARTIFACT} into {staging}. Fix: "
                                 "check that Maven Central answers (mvn -B dependency:get "
                                 f"-Dartifact={KAFKA_ARTIFACT})")
        (staging / KAFKA_COMPLETE).write_text(KAFKA_ARTIFACT + "\n")
        if target.exists():  # an incomplete copy from an interrupted setup
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def setup(step: Step = quiet) -> list[str]:
    """Install what is missing; returns what was installed. Each install runs inside
    ``step`` (named with what it waits for: the command line shows it as it goes)."""
    done = []
    if TOXIPROXY.find() is None:
        with step(f"toxiproxy-server: go install {TOXIPROXY_MODULE} (Go module proxy)"):
            done.append(f"toxiproxy-server -> {install_toxiproxy()}")
    if RABBITMQ.find() is None:
        with step("RabbitMQ: apt-get install rabbitmq-server (Debian)"):
            install_rabbitmq()
        done.append("rabbitmq-server (Debian package)")
    if find_kafka_libs() is None:
        with step(f"Kafka {KAFKA_VERSION}: its jars from Maven Central (mvn "
                  "dependency:copy-dependencies)"):
            done.append(f"{KAFKA_ARTIFACT} jars -> {install_kafka()}")
    if JAEGER.find() is None:
        with step(f"Jaeger {JAEGER_VERSION}: go build from the Go module proxy"):
            done.append(f"jaeger {JAEGER_VERSION} -> {install_jaeger()}")
    from testbed.components.tools import install_tools  # they build with go_install

    return done + install_tools(step)
