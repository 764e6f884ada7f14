"""`testbed setup`: install the external components this machine lacks.

Toxiproxy: ``go install`` of the pinned server into the active environment's bin/
as ``toxiproxy-server``. RabbitMQ: Debian's rabbitmq-server through apt-get (as root),
with service start-up blocked during the install, since the testbed runs its own node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from testbed.components.binaries import RABBITMQ, TOXIPROXY, TOXIPROXY_MODULE
from testbed.errors import ComponentError

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def run_command(argv: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> None:
    print("+ " + " ".join(argv), flush=True)
    try:
        subprocess.run(argv, check=True, env=env, timeout=timeout)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
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


def setup() -> list[str]:
    """Install what is missing; returns what was installed."""
    done = []
    if TOXIPROXY.find() is None:
        done.append(f"toxiproxy-server -> {install_toxiproxy()}")
    if RABBITMQ.find() is None:
        install_rabbitmq()
        done.append("rabbitmq-server (Debian package)")
    return done
