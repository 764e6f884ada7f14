"""Offline image builds: no registry is reachable here, so every image is made from
Debian packages, PyPI and the Go module proxy.

- ``python-base``: a debootstrap (minbase) bookworm rootfs with python3 and a venv holding
  the services' dependencies from PyPI, imported with ``docker import``. Slow (about a
  minute), so it is its own image and rarely changes.
- ``service``: FROM python-base, plus a copy of the testbed source. It changes with every
  edit of the code, so it is a cheap ``docker build`` layer (seconds) on top of the base.
- ``rabbitmq``: a debootstrap rootfs with Debian's rabbitmq-server (the same 3.10.8 the
  local runtime uses) and the management plugin on, imported with ``docker import``. Kept
  apart from the service image so neither carries the other's runtime (Erlang or Python)
  and a code edit never rebuilds the broker.
- ``toxiproxy``: FROM scratch around a static toxiproxy-server built with Go.

Every image carries the labels ``testbed.image`` (its kind) and ``testbed.inputs`` (a hash
of everything that went into it); it is tagged ``testbed/<kind>:<hash>`` and ``:latest``
(the compose files use ``:latest``). A build happens only when no image carries the
current hash, so builds are cached across runs and redone exactly when an input changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import docker
import docker.errors
from docker.models.images import Image

from testbed.components.binaries import TOXIPROXY_MODULE
from testbed.components.docker_engine import engine
from testbed.components.install import apt_install
from testbed.errors import ComponentError
from testbed.runs import state_root

RECIPE_VERSION = "1"  # bump to force every image to be rebuilt
SUITE = "bookworm"
MIRROR = os.environ.get("TESTBED_DEBIAN_MIRROR", "http://deb.debian.org/debian")
REPOSITORY = "testbed"
LABEL_KIND = "testbed.image"
LABEL_INPUTS = "testbed.inputs"
SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the testbed package
# What the services import from PyPI, pinned to the versions the controller runs with.
SERVICE_DISTRIBUTIONS = ("pika", "requests", "waitress", "tenacity", "pybreaker")
PYTHON_PACKAGES = ("python3", "python3-venv", "ca-certificates")
RABBITMQ_PACKAGES = ("rabbitmq-server",)
SERVICE_CONFIG_PATH = "/etc/testbed/service.json"
VENV = "/opt/testbed/venv"
SOURCE_DIR = "/opt/testbed/src"
BUILD_TIMEOUT_S = 1200
STALE_AFTER_S = 3600.0  # an older build is pruned only after this long
PIP_PASSTHROUGH = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT", "HTTPS_PROXY",
                   "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")

RABBITMQ_ENTRYPOINT = """\
#!/bin/sh
# Write the broker's config from the environment, then become the broker (PID 2 under
# docker-init). TESTBED_BROKER_USER/PASSWORD: a per-run user (guest is refused from any
# non-loopback peer, and a published port is one).
set -e
mkdir -p /etc/rabbitmq
cat > /etc/rabbitmq/rabbitmq.conf <<CONF
listeners.tcp.default = 5672
management.tcp.port = 15672
default_user = ${TESTBED_BROKER_USER:-testbed}
default_pass = ${TESTBED_BROKER_PASSWORD:-testbed}
loopback_users = none
collect_statistics_interval = 250
log.console = true
log.console.level = warning
log.file = false
CONF
# Compose mounts the topology's vhost, user, exchanges and queues here; the controller
# declares them through the management API instead.
if [ -f /etc/testbed/definitions.json ]; then
  echo "load_definitions = /etc/testbed/definitions.json" >> /etc/rabbitmq/rabbitmq.conf
fi
exec /usr/lib/rabbitmq/bin/rabbitmq-server
"""


def _sha(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def service_requirements() -> list[str]:
    """``name==version`` of the services' PyPI dependencies, as installed here."""
    pins = []
    for name in SERVICE_DISTRIBUTIONS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def source_files() -> list[Path]:
    """The testbed source copied into the service image (no caches, no bytecode)."""
    return sorted(p for p in SOURCE_ROOT.rglob("*") if p.is_file()
                  and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"))


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(str(path.relative_to(SOURCE_ROOT)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class Recipe:
    """One image: its kind, the hash of its inputs, and how to build it."""

    kind: str
    inputs: str
    build: Callable[[docker.DockerClient, Recipe], None]
    depends: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return self.inputs[:16]

    @property
    def ref(self) -> str:
        return f"{REPOSITORY}/{self.kind}:{self.tag}"

    @property
    def latest(self) -> str:
        return f"{REPOSITORY}/{self.kind}:latest"

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL_KIND: self.kind, LABEL_INPUTS: self.inputs}


def recipes() -> dict[str, Recipe]:
    """Every image with the hash of its current inputs (cheap: hashes files, builds none)."""
    base_inputs = _sha("python-base", RECIPE_VERSION, SUITE, MIRROR, *PYTHON_PACKAGES,
                       *service_requirements())
    base = Recipe("python-base", base_inputs, _build_python_base)
    service = Recipe("service", _sha("service", RECIPE_VERSION, base.inputs, source_hash()),
                     _build_service, depends=("python-base",))
    rabbitmq = Recipe("rabbitmq", _sha("rabbitmq", RECIPE_VERSION, SUITE, MIRROR,
                                       *RABBITMQ_PACKAGES, RABBITMQ_ENTRYPOINT),
                      _build_rabbitmq)
    toxiproxy = Recipe("toxiproxy", _sha("toxiproxy", RECIPE_VERSION, TOXIPROXY_MODULE),
                       _build_toxiproxy)
    return {r.kind: r for r in (base, service, rabbitmq, toxiproxy)}


def current(client: docker.DockerClient, recipe: Recipe) -> Image | None:
    """The image built from exactly these inputs, if there is one."""
    try:
        image = client.images.get(recipe.ref)
    except docker.errors.ImageNotFound:
        return None
    return image if image.labels.get(LABEL_INPUTS) == recipe.inputs else None


def image_refs(client: docker.DockerClient | None = None) -> dict[str, str]:
    """kind -> image reference for the runtime, building whatever is missing or stale."""
    build_images(client=client)
    return {kind: r.ref for kind, r in recipes().items()}


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One builder at a time on this machine (pytest-xdist workers open runtimes at once)."""
    path = state_root() / "images.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_images(force: bool = False, client: docker.DockerClient | None = None,
                 log: Callable[[str], None] | None = None) -> list[str]:
    """Build every image whose inputs changed (all of them with ``force``); returns the
    references of the images built now. Idempotent and safe to call from many processes."""
    say = log or (lambda _: None)
    client = client or engine()
    built: list[str] = []
    with _build_lock():
        plan = recipes()
        for kind, recipe in plan.items():
            if not force and current(client, recipe) is not None:
                say(f"cached  {recipe.ref}")
                client.images.get(recipe.ref).tag(f"{REPOSITORY}/{kind}", "latest")
                continue
            say(f"build   {recipe.ref} ...")
            started = time.monotonic()
            recipe.build(client, recipe)
            client.images.get(recipe.ref).tag(f"{REPOSITORY}/{kind}", "latest")
            seconds = time.monotonic() - started
            say(f"built   {recipe.ref} in {seconds:.1f} s")
            built.append(recipe.ref)
        _prune_stale(client, plan, say)
    return built


def _prune_stale(client: docker.DockerClient, plan: dict[str, Recipe],
                 say: Callable[[str], None]) -> None:
    """Drop older builds of our images (a source edit would otherwise pile them up), once
    they are an hour old: a session started before the edit may still create containers
    from its build (docker only refuses to remove images that containers already use)."""
    cutoff = time.time() - STALE_AFTER_S
    for image in client.images.list(filters={"label": LABEL_KIND}):
        kind = image.labels.get(LABEL_KIND, "")
        created = datetime.fromisoformat(str(image.attrs.get("Created", ""))[:19] + "+00:00")
        if created.timestamp() > cutoff:
            continue
        if kind in plan and image.labels.get(LABEL_INPUTS) != plan[kind].inputs:
            try:
                client.images.remove(image.id, noprune=False)
                say(f"removed stale {kind} image {image.short_id}")
            except docker.errors.APIError:
                pass  # still used by a container (another run): leave it


# -- helpers -------------------------------------------------------------------------------

def _run(argv: list[str], what: str, env: dict[str, str] | None = None,
         timeout: float = BUILD_TIMEOUT_S) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ComponentError(f"{what}: `{' '.join(argv)}` failed: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise ComponentError(f"{what}: `{' '.join(argv[:6])} ...` exited {done.returncode}:\n"
                             f"{tail}")


@contextlib.contextmanager
def _workdir(kind: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"testbed-image-{kind}-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _require_root_tools() -> str:
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.access(debootstrap, os.X_OK) and os.geteuid() == 0:
        # As `testbed setup` does for docker.io: a fresh machine (CI) gets it by itself.
        apt_install("debootstrap", "debootstrap is missing")
    if not os.access(debootstrap, os.X_OK):
        raise ComponentError("debootstrap is missing (the offline images start from a Debian "
                             "rootfs). Fix: as root `apt-get install -y debootstrap`, then "
                             "`testbed images build`")
    if os.geteuid() != 0:
        raise ComponentError("building a Debian rootfs needs root (debootstrap, chroot). Fix: "
                             "run `testbed images build` as root once; later runs use the "
                             "cached images")
    return debootstrap


def _debootstrap(root: Path, packages: tuple[str, ...], what: str) -> None:
    debootstrap = _require_root_tools()
    cache = state_root() / "debootstrap-cache"  # .debs kept between builds: rebuilds are fast
    cache.mkdir(parents=True, exist_ok=True)
    _run([debootstrap, "--variant=minbase", f"--include={','.join(packages)}",
          f"--cache-dir={cache}", SUITE, str(root), MIRROR], what)


def _slim(root: Path) -> None:
    """Drop what a container never needs: package caches, docs, man pages, locales."""
    for relative in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc",
                     "usr/share/man", "usr/share/info", "usr/share/locale"):
        target = root / relative
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


def _import_rootfs(client: docker.DockerClient, root: Path, recipe: Recipe,
                   changes: list[str]) -> None:
    tarball = root.parent / "rootfs.tar"
    _run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."],
         f"packing the {recipe.kind} rootfs")
    labels = [f"LABEL {key}={value}" for key, value in recipe.labels.items()]
    try:
        client.api.import_image_from_file(str(tarball), repository=f"{REPOSITORY}/{recipe.kind}",
                                          tag=recipe.tag, changes=[*changes, *labels])
    except docker.errors.APIError as exc:
        raise ComponentError(f"docker import of the {recipe.kind} rootfs failed: {exc}") from exc
    finally:
        tarball.unlink(missing_ok=True)


def host_ca_bundle() -> str:
    """The CA bundle this machine trusts (an explicit PIP_CERT / SSL_CERT_FILE first)."""
    for variable in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(variable)
        if value and os.path.isfile(value):
            return value
    return "/etc/ssl/certs/ca-certificates.crt"


def _docker_build(client: docker.DockerClient, context: Path, recipe: Recipe) -> None:
    try:
        client.images.build(path=str(context), tag=recipe.ref, labels=recipe.labels, rm=True,
                            forcerm=True, pull=False, network_mode="none")
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        log = ""
        if isinstance(exc, docker.errors.BuildError):
            log = "".join(str(chunk.get("stream", chunk.get("error", "")))
                          for chunk in exc.build_log)[-2000:]
        raise ComponentError(f"docker build of the {recipe.kind} image failed: {exc}\n{log}"
                             ) from exc


# -- recipes -------------------------------------------------------------------------------

def _build_python_base(client: docker.DockerClient, recipe: Recipe) -> None:
    with _workdir(recipe.kind) as work:
        root = work / "rootfs"
        _debootstrap(root, PYTHON_PACKAGES, "debootstrap of the python base")
        _run(["chroot", str(root), "python3", "-m", "venv", VENV], "creating the venv")
        # The host's CA bundle, for the pip run only: where TLS to PyPI is intercepted, the
        # host trusts the interceptor and the fresh rootfs does not.
        (root / "tmp/host-ca.pem").write_bytes(Path(host_ca_bundle()).read_bytes())
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
               **{k: v for k, v in os.environ.items() if k in PIP_PASSTHROUGH}}
        _run(["chroot", str(root), f"{VENV}/bin/pip", "install", "--no-cache-dir",
              "--disable-pip-version-check", "--no-compile", "--cert", "/tmp/host-ca.pem",
              *service_requirements()],
             "pip install of the service dependencies (is PyPI reachable?)", env=env)
        (root / "tmp/host-ca.pem").unlink()
        _slim(root)
        _import_rootfs(client, root, recipe, [
            f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV PYTHONUNBUFFERED=1",
            'CMD ["python3"]',
        ])


def _build_service(client: docker.DockerClient, recipe: Recipe) -> None:
    base = recipes()["python-base"]
    with _workdir(recipe.kind) as work:
        shutil.copytree(SOURCE_ROOT, work / "testbed",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (work / "Dockerfile").write_text(
            f"FROM {base.ref}\n"
            f"COPY testbed {SOURCE_DIR}/testbed\n"
            f"ENV PYTHONPATH={SOURCE_DIR} PYTHONDONTWRITEBYTECODE=1\n"
            "WORKDIR /var/lib/testbed\n"
            f'CMD ["python", "-m", "testbed.services", "{SERVICE_CONFIG_PATH}"]\n')
        _docker_build(client, work, recipe)


def _build_rabbitmq(client: docker.DockerClient, recipe: Recipe) -> None:
    with _workdir(recipe.kind) as work:
        root = work / "rootfs"
        _debootstrap(root, RABBITMQ_PACKAGES, "debootstrap of the rabbitmq rootfs")
        (root / "etc/rabbitmq").mkdir(parents=True, exist_ok=True)
        (root / "etc/rabbitmq/enabled_plugins").write_text("[rabbitmq_management].\n")
        entry = root / "usr/local/bin/testbed-rabbitmq"
        entry.write_text(RABBITMQ_ENTRYPOINT)
        entry.chmod(0o755)
        _slim(root)
        _import_rootfs(client, root, recipe, [
            "ENV HOME=/var/lib/rabbitmq",
            # The start script then execs the VM instead of babysitting it: signals reach
            # the broker directly (docker stop is a graceful broker shutdown).
            "ENV NOTIFY_SOCKET=/run/no-systemd.sock",
            "ENV LANG=C.UTF-8",
            "EXPOSE 5672 15672",
            'CMD ["/usr/local/bin/testbed-rabbitmq"]',
        ])


def _build_toxiproxy(client: docker.DockerClient, recipe: Recipe) -> None:
    go = shutil.which("go") or ("/usr/local/go/bin/go"
                                if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if go is None:
        raise ComponentError("the toxiproxy image needs Go to build a static toxiproxy-server. "
                             "Fix: apt-get install golang-go, then `testbed images build`")
    with _workdir(recipe.kind) as work:
        env = {**os.environ, "GOBIN": str(work), "CGO_ENABLED": "0"}
        _run([go, "install", "-trimpath", "-ldflags=-s -w", TOXIPROXY_MODULE],
             "go install of toxiproxy-server (is the Go module proxy reachable?)", env=env)
        (work / "server").rename(work / "toxiproxy-server")
        (work / "Dockerfile").write_text(
            "FROM scratch\n"
            "COPY toxiproxy-server /toxiproxy-server\n"
            "EXPOSE 8474\n"
            'ENTRYPOINT ["/toxiproxy-server"]\n'
            'CMD ["-host", "0.0.0.0", "-port", "8474"]\n')
        _docker_build(client, work, recipe)


def describe(client: docker.DockerClient | None = None) -> list[str]:
    """One line per image: kind, reference, and whether it is built (for doctor/CLI)."""
    client = client or engine()
    lines = []
    for recipe in recipes().values():
        image = current(client, recipe)
        state = f"built {image.attrs.get('Size', 0) / 1e6:.0f} MB" if image else "NOT BUILT"
        lines.append(f"{recipe.kind:12} {recipe.ref:40} {state}")
    return lines
