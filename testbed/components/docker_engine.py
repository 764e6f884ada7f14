"""The Docker engine: find one that answers, or install Debian's docker.io and start dockerd.

The docker runtime, ``testbed images build``, ``testbed setup`` and ``testbed doctor`` all
go through :func:`engine`, so "no engine" is one clear error everywhere, naming the fix.
The setup path exists because this project's machines have a docker CLI but no engine and
no registry: Debian's docker.io is the engine we can always get.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from testbed.components.install import apt_install
from testbed.errors import ComponentError
from testbed.runs import state_root

DOCKERD_CANDIDATES = ("/usr/sbin/dockerd", "/usr/bin/dockerd")
ENGINE_START_TIMEOUT_S = 60.0

FIX = ("Fix: run `testbed setup` (as root: installs Debian's docker.io and starts dockerd), "
       "or start an engine yourself (`dockerd > dockerd.log 2>&1 &`) and check `docker info`")


class EngineUnavailableError(ComponentError):
    """No Docker engine answers; the message says how to get one."""


@dataclass(frozen=True)
class EngineInfo:
    """What ``testbed doctor`` reports about the engine."""

    version: str
    api_version: str
    storage_driver: str
    root_dir: str


def _connect(timeout: float = 10.0) -> docker.DockerClient:
    client = docker.from_env(timeout=int(max(timeout, 1)))
    client.ping()
    return client


def engine(timeout: float = 10.0) -> docker.DockerClient:
    """A client of an engine that answers (DOCKER_HOST or the default socket), or a clear
    EngineUnavailableError."""
    try:
        return _connect(timeout)
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        installed = find_dockerd()
        state = (f"dockerd is installed at {installed} but not running" if installed
                 else "dockerd is not installed")
        raise EngineUnavailableError(f"no Docker engine answers at {where} ({state}; "
                                     f"{type(exc).__name__}: {exc}). {FIX}") from exc


def engine_answers(timeout: float = 5.0) -> bool:
    try:
        _connect(timeout).close()
    except docker.errors.DockerException:
        return False
    return True


def info() -> EngineInfo | None:
    """The engine's version and storage, or None when no engine answers (for doctor)."""
    try:
        client = _connect(5.0)
    except docker.errors.DockerException:
        return None
    try:
        version = client.version()
        details = client.info()
        return EngineInfo(str(version.get("Version", "?")), str(version.get("ApiVersion", "?")),
                          str(details.get("Driver", "?")), str(details.get("DockerRootDir", "?")))
    finally:
        client.close()


def find_dockerd() -> str | None:
    for candidate in (shutil.which("dockerd"), *DOCKERD_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def install_docker_io() -> None:
    """apt-get install docker.io, with service start-up blocked (we start dockerd ourselves:
    these machines have no init system to do it)."""
    try:
        apt_install("docker.io", "dockerd is not installed")
    except ComponentError as exc:
        raise EngineUnavailableError(str(exc)) from exc


def dockerd_log() -> Path:
    return state_root() / "dockerd.log"


def start_dockerd(timeout: float = ENGINE_START_TIMEOUT_S) -> float:
    """Start dockerd in the background (its own session: it outlives this process, like
    a system service) and wait until it answers; returns the seconds it took."""
    dockerd = find_dockerd()
    if dockerd is None:
        raise EngineUnavailableError(f"dockerd is not installed. {FIX}")
    log_path = dockerd_log()
    started = time.monotonic()
    with log_path.open("ab") as log:
        proc = subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = started + timeout
    while time.monotonic() < deadline:
        if engine_answers(2.0):
            return time.monotonic() - started
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
    if proc.poll() is None:
        proc.kill()
    raise EngineUnavailableError(f"dockerd ({dockerd}) did not answer within {timeout:.0f} s "
                                 f"(exit code {proc.poll()}); last lines of {log_path}:\n{tail}"
                                 "\nFix: read the log above (storage driver, iptables and "
                                 "cgroup problems show there), then start dockerd again")


def ensure_engine() -> list[str]:
    """Make an engine answer: install docker.io if needed, start dockerd if needed.
    Returns what was done (empty when an engine already answered)."""
    if engine_answers():
        return []
    done = []
    if find_dockerd() is None:
        install_docker_io()
        done.append("docker.io (Debian package)")
    seconds = start_dockerd()
    done.append(f"dockerd started in {seconds:.1f} s (log: {dockerd_log()})")
    return done
