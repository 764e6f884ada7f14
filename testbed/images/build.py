"""Image builds for the docker runtime, from one of two sources.

``official`` (where the engine reaches a registry): the Dockerfiles in compose/images/ on
top of official images (see :mod:`testbed.images.official`). ``offline`` (this project's
machines reach no registry): every image made from Debian packages, PyPI and the Go
module proxy, as below. ``auto`` (the default) takes the source already built, else
official when a registry answers, else offline.

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
- ``kafka``: a debootstrap rootfs with Debian's openjdk-17-jre-headless and the Kafka jars
  `testbed setup` copied from Maven Central (the same ones the local runtime runs), imported
  with ``docker import``; its command (files/testbed-kafka) formats the data dir on the first
  start and execs the broker. Without the jars it cannot be built: ``testbed images build``
  says so (the fix: ``testbed setup``); the docker runtime builds the other images and
  refuses only a topology on Kafka, with the same words.

Every image carries the labels ``testbed.image`` (its kind), ``testbed.source`` and
``testbed.inputs`` (a hash of everything that went into it); it is tagged
``testbed/<kind>:<hash>`` and ``:latest`` (the compose files use ``:latest``). A build
happens only when no image carries the current hash, so builds are cached across runs and
redone exactly when an input changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
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

from testbed.components.binaries import TOXIPROXY_MODULE, find_kafka_libs, require_kafka_libs
from testbed.components.docker_engine import engine
from testbed.components.install import apt_install
from testbed.errors import ComponentError, MissingBinaryError
from testbed.runs import state_root
from testbed.steps import Step, logged, quiet

RECIPE_VERSION = "1"  # bump to force every image to be rebuilt
SUITE = "bookworm"
MIRROR = os.environ.get("TESTBED_DEBIAN_MIRROR", "http://deb.debian.org/debian")
REPOSITORY = "testbed"
LABEL_KIND = "testbed.image"
LABEL_INPUTS = "testbed.inputs"
LABEL_SOURCE = "testbed.source"
SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the testbed package
# What the services import from PyPI, pinned to the versions the controller runs with.
SERVICE_DISTRIBUTIONS = ("pika", "requests", "waitress", "tenacity", "pybreaker")
# The services' Kafka client, in the offline python-base only: the official recipes
# (compose/images/service/requirements.txt) have no Kafka image to go with it yet.
KAFKA_CLIENT_DISTRIBUTIONS = ("confluent-kafka",)
PYTHON_PACKAGES = ("python3", "python3-venv", "ca-certificates")
RABBITMQ_PACKAGES = ("rabbitmq-server",)
KAFKA_PACKAGES = ("openjdk-17-jre-headless",)
KAFKA_COMMAND = "testbed-kafka"  # files/testbed-kafka, in /usr/local/bin
KAFKA_LIBS = "/opt/kafka/libs"  # the jars, in the kafka image
KAFKA_CONFIG_DIR = "/etc/kafka"  # server.properties and log4j2.properties, copied in
SERVICE_CONFIG_PATH = "/etc/testbed/service.json"
# The service image's CMD (the k8s runtime runs the same under its pod's loop).
SERVICE_COMMAND = ("python", "-m", "testbed.services", SERVICE_CONFIG_PATH)
VENV = "/opt/testbed/venv"
SOURCE_DIR = "/opt/testbed/src"
BUILD_TIMEOUT_S = 1200
STALE_AFTER_S = 3600.0  # an older build is pruned only after this long
FILES_DIR = Path(__file__).resolve().parent / "files"
BROKER_COMMAND = "testbed-rabbitmq"  # files/testbed-rabbitmq, in /usr/local/bin
# Every broker image links its RabbitMQ scripts here, wherever its base keeps them: the
# runtime (rabbitmqctl) and the compose healthcheck call them by this one path.
BROKER_SBIN = "/opt/testbed/rabbitmq/sbin"
SOURCES = ("auto", "offline", "official")
SOURCE_ENV = "TESTBED_IMAGE_SOURCE"
PIP_PASSTHROUGH = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT", "HTTPS_PROXY",
                   "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")



def _sha(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def service_requirements() -> list[str]:
    """``name==version`` of the services' PyPI dependencies, as installed here."""
    pins = []
    for name in (*SERVICE_DISTRIBUTIONS, *KAFKA_CLIENT_DISTRIBUTIONS):
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
    """One image: its kind, where it comes from, the hash of its inputs, how to build it."""

    kind: str
    source: str  # offline | official
    inputs: str
    build: Callable[[docker.DockerClient, Recipe], None]
    depends: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    # Why it cannot be built here (an input is missing), with the fix; None when it can.
    unavailable: str | None = None

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
        return {LABEL_KIND: self.kind, LABEL_INPUTS: self.inputs, LABEL_SOURCE: self.source}


def broker_command_text() -> str:
    return (FILES_DIR / BROKER_COMMAND).read_text()


def kafka_jars() -> list[str]:
    """``name:size`` of every Kafka jar `testbed setup` copied (empty when there are
    none): what the kafka image's hash covers (the names carry the versions)."""
    libs = find_kafka_libs()
    if libs is None:
        return []
    return [f"{jar.name}:{jar.stat().st_size}" for jar in sorted(libs.glob("*.jar"))]


def kafka_recipe() -> Recipe:
    jars = kafka_jars()
    unavailable = None
    if not jars:
        try:
            require_kafka_libs()
        except MissingBinaryError as exc:
            unavailable = (f"the kafka image needs Kafka's jars: {exc}. Fix: `testbed setup`, "
                           "then `testbed images build`")
    return Recipe("kafka", "offline",
                  _sha("kafka", RECIPE_VERSION, SUITE, MIRROR, *KAFKA_PACKAGES, KAFKA_LIBS,
                       (FILES_DIR / KAFKA_COMMAND).read_text(), *(jars or ["no jars"])),
                  _build_kafka, unavailable=unavailable)


def recipes(source: str = "offline") -> dict[str, Recipe]:
    """Every image of ``source`` with the hash of its current inputs (cheap: hashes files,
    builds none). The runtime needs the kinds service, rabbitmq and toxiproxy, and kafka
    for a topology on Kafka (offline only: the official recipes have none yet)."""
    if source == "official":
        from testbed.images import official

        return {kind: Recipe(kind, "official",
                             _sha(kind, RECIPE_VERSION, "official", *official.recipe_inputs(kind),
                                  *(broker_command_text(),) if kind == "rabbitmq" else (),
                                  *(source_hash(),) if kind == "service" else ()),
                             _build_official)
                for kind in official.KINDS}
    if source != "offline":
        raise ComponentError(f"unknown image source {source!r}: use one of {', '.join(SOURCES)}")
    base_inputs = _sha("python-base", RECIPE_VERSION, SUITE, MIRROR, *PYTHON_PACKAGES,
                       *service_requirements())
    base = Recipe("python-base", "offline", base_inputs, _build_python_base)
    service = Recipe("service", "offline",
                     _sha("service", RECIPE_VERSION, base.inputs, source_hash()),
                     _build_service, depends=("python-base",))
    rabbitmq = Recipe("rabbitmq", "offline",
                      _sha("rabbitmq", RECIPE_VERSION, SUITE, MIRROR, *RABBITMQ_PACKAGES,
                           broker_command_text(), BROKER_SBIN), _build_rabbitmq)
    toxiproxy = Recipe("toxiproxy", "offline",
                       _sha("toxiproxy", RECIPE_VERSION, TOXIPROXY_MODULE), _build_toxiproxy)
    return {r.kind: r for r in (base, service, rabbitmq, toxiproxy, kafka_recipe())}


def current(client: docker.DockerClient, recipe: Recipe) -> Image | None:
    """The image built from exactly these inputs, if there is one."""
    try:
        image = client.images.get(recipe.ref)
    except docker.errors.ImageNotFound:
        return None
    return image if image.labels.get(LABEL_INPUTS) == recipe.inputs else None


def resolve_source(client: docker.DockerClient, requested: str | None = None) -> str:
    """``offline`` or ``official``: as asked (argument, else $TESTBED_IMAGE_SOURCE); for
    ``auto`` (the default), the source whose images are already built, else official when
    the engine reaches a registry and offline when it does not (true on this project's
    machines)."""
    wanted = requested or os.environ.get(SOURCE_ENV) or "auto"
    if wanted not in SOURCES:
        raise ComponentError(f"unknown image source {wanted!r} (from --source or ${SOURCE_ENV})"
                             f": use one of {', '.join(SOURCES)}")
    if wanted != "auto":
        return wanted
    for source in ("official", "offline"):
        with contextlib.suppress(ComponentError):
            if all(current(client, r) is not None for r in recipes(source).values()
                   if r.unavailable is None):
                return source
    from testbed.images.official import registry_problem

    with contextlib.suppress(ComponentError):  # no recipes outside a checkout: offline
        if registry_problem(client) is None:
            return "official"
    return "offline"


def image_refs(client: docker.DockerClient | None = None,
               source: str | None = None) -> dict[str, str]:
    """kind -> image reference for the runtime, building whatever is missing or stale.
    An image that cannot be built here (the kafka image without Kafka's jars) is left
    out: the runtime refuses only what needs it."""
    client = client or engine()
    source = resolve_source(client, source)
    build_images(client=client, source=source, skip_unavailable=True)
    return {kind: r.ref for kind, r in recipes(source).items() if r.unavailable is None}


@contextlib.contextmanager
def _build_lock(step: Step = quiet) -> Iterator[None]:
    """One builder at a time on this machine (pytest-xdist workers open runtimes at once);
    a wait for another one is a step of its own."""
    path = state_root() / "images.lock"
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with step(f"waiting for another process's image build ({path})"):
                fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_images(force: bool = False, client: docker.DockerClient | None = None,
                 log: Callable[[str], None] | None = None,
                 source: str | None = None, skip_unavailable: bool = False,
                 step: Step | None = None) -> list[str]:
    """Build every image whose inputs changed (all of them with ``force``); returns the
    references of the images built now. Idempotent and safe to call from many processes.
    An image whose inputs are missing here is an error naming the fix, or with
    ``skip_unavailable`` a line in the log (after the others are built). Each build runs
    inside ``step`` (the command line's spinner), by default two lines in the log."""
    say = log or (lambda _: None)
    building = step or logged(say)
    client = client or engine()
    source = resolve_source(client, source)
    if source == "official":
        from testbed.images.official import registry_problem

        problem = registry_problem(client) if not all(
            current(client, r) for r in recipes(source).values()
            if r.unavailable is None) or force else None
        if problem:
            raise ComponentError(f"official images cannot be built: {problem}. Fix: build "
                                 "them offline with `testbed images build --source offline` "
                                 f"(or unset ${SOURCE_ENV})")
    built: list[str] = []
    with _build_lock(building):
        plan = recipes(source)
        unavailable = [r for r in plan.values() if r.unavailable is not None]
        for kind, recipe in plan.items():
            if recipe.unavailable is not None:
                continue
            if not force and current(client, recipe) is not None:
                say(f"cached  {recipe.ref}")
                client.images.get(recipe.ref).tag(f"{REPOSITORY}/{kind}", "latest")
                continue
            with building(f"build   {recipe.ref}"):
                recipe.build(client, recipe)
                client.images.get(recipe.ref).tag(f"{REPOSITORY}/{kind}", "latest")
            built.append(recipe.ref)
        _prune_stale(client, plan, say)
    for recipe in unavailable:
        if not skip_unavailable:
            raise ComponentError(recipe.unavailable or recipe.kind)
        say(f"skip    {recipe.kind}: {recipe.unavailable}")
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
        recipe = plan.get(kind)
        if recipe is None or recipe.unavailable is not None or \
                image.labels.get(LABEL_SOURCE, "offline") != recipe.source:
            continue  # another kind, or the other source's build: not ours to judge
        if image.labels.get(LABEL_INPUTS) != recipe.inputs:
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


def _docker_build(client: docker.DockerClient, context: Path, recipe: Recipe,
                  dockerfile: str = "Dockerfile", offline: bool = True) -> None:
    """``docker build``; an offline recipe gets no network at all (nothing may leak in)."""
    try:
        client.images.build(path=str(context), dockerfile=dockerfile, tag=recipe.ref,
                            labels=recipe.labels, rm=True, forcerm=True, pull=not offline,
                            **({"network_mode": "none"} if offline else {}))
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
    base = recipes("offline")["python-base"]
    with _workdir(recipe.kind) as work:
        shutil.copytree(SOURCE_ROOT, work / "testbed",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (work / "Dockerfile").write_text(
            f"FROM {base.ref}\n"
            f"COPY testbed {SOURCE_DIR}/testbed\n"
            f"ENV PYTHONPATH={SOURCE_DIR} PYTHONDONTWRITEBYTECODE=1\n"
            "WORKDIR /var/lib/testbed\n"
            f"CMD {json.dumps(list(SERVICE_COMMAND))}\n")
        _docker_build(client, work, recipe)


def _build_rabbitmq(client: docker.DockerClient, recipe: Recipe) -> None:
    with _workdir(recipe.kind) as work:
        root = work / "rootfs"
        _debootstrap(root, RABBITMQ_PACKAGES, "debootstrap of the rabbitmq rootfs")
        (root / "etc/rabbitmq").mkdir(parents=True, exist_ok=True)
        (root / "etc/rabbitmq/enabled_plugins").write_text("[rabbitmq_management].\n")
        entry = root / "usr/local/bin" / BROKER_COMMAND
        shutil.copyfile(FILES_DIR / BROKER_COMMAND, entry)
        entry.chmod(0o755)
        link = root / BROKER_SBIN.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/usr/lib/rabbitmq/bin")
        _slim(root)
        _import_rootfs(client, root, recipe, [
            "ENV HOME=/var/lib/rabbitmq",
            # The start script then execs the VM instead of babysitting it: signals reach
            # the broker directly (docker stop is a graceful broker shutdown).
            "ENV NOTIFY_SOCKET=/run/no-systemd.sock",
            "ENV LANG=C.UTF-8",
            "EXPOSE 5672 15672",
            f'CMD ["/usr/local/bin/{BROKER_COMMAND}"]',
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


def _build_kafka(client: docker.DockerClient, recipe: Recipe) -> None:
    libs = require_kafka_libs()  # MissingBinaryError naming `testbed setup`
    with _workdir(recipe.kind) as work:
        root = work / "rootfs"
        _debootstrap(root, KAFKA_PACKAGES, "debootstrap of the kafka rootfs")
        _require_java(root)
        target = root / KAFKA_LIBS.lstrip("/")
        target.mkdir(parents=True)
        for jar in sorted(libs.glob("*.jar")):
            shutil.copyfile(jar, target / jar.name)
        (root / KAFKA_CONFIG_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
        entry = root / "usr/local/bin" / KAFKA_COMMAND
        shutil.copyfile(FILES_DIR / KAFKA_COMMAND, entry)
        entry.chmod(0o755)
        _slim(root)
        _import_rootfs(client, root, recipe, [
            "ENV LANG=C.UTF-8",
            "WORKDIR /var/lib/kafka",
            f'CMD ["/usr/local/bin/{KAFKA_COMMAND}"]',
        ])
    _check_java_runs(client, recipe)


def _require_java(root: Path) -> None:
    """The rootfs has a Java (debootstrap installs what it can resolve and can leave
    openjdk out on a mirror without it): refuse before the image is imported."""
    javas = [str(j.relative_to(root)) for j in sorted(root.glob("usr/lib/jvm/*/bin/java"))]
    if not javas or not os.path.lexists(root / "usr/bin/java"):
        raise ComponentError(
            "the kafka image's rootfs has no java after debootstrap of "
            f"{', '.join(KAFKA_PACKAGES)} from {MIRROR} (found {javas}). Fix: point "
            "$TESTBED_DEBIAN_MIRROR at a bookworm mirror that carries openjdk-17-jre-headless, "
            "then `testbed images build` (the Kafka jars come from `testbed setup`)")


def _check_java_runs(client: docker.DockerClient, recipe: Recipe) -> None:
    """`java -version` in the new image; a failure removes the image, so the next build
    does not take it for a good one."""
    try:
        client.containers.run(recipe.ref, ["java", "-version"], remove=True,
                              network_mode="none", stdout=True, stderr=True)
    except docker.errors.DockerException as exc:
        with contextlib.suppress(docker.errors.DockerException):
            client.images.remove(recipe.ref, force=True)
        raise ComponentError(f"the kafka image runs no java (`java -version` failed: {exc}). "
                             "Fix: rebuild it with `testbed images build --force`; if that "
                             "fails again, check $TESTBED_DEBIAN_MIRROR serves bookworm's "
                             "openjdk-17-jre-headless") from exc


def _build_official(client: docker.DockerClient, recipe: Recipe) -> None:
    from testbed.images.official import build_context

    with _workdir(recipe.kind) as work:
        dockerfile = build_context(work, recipe.kind)
        _docker_build(client, work, recipe, dockerfile=dockerfile, offline=False)


def describe(client: docker.DockerClient | None = None, source: str | None = None) -> list[str]:
    """One line per image: kind, reference, and whether it is built (for doctor/CLI)."""
    client = client or engine()
    source = resolve_source(client, source)
    lines = [f"image source: {source}"]
    for recipe in recipes(source).values():
        image = current(client, recipe)
        state = f"built {image.attrs.get('Size', 0) / 1e6:.0f} MB" if image else "NOT BUILT"
        if recipe.unavailable is not None:
            state = f"CANNOT BUILD: {recipe.unavailable}"
        lines.append(f"{recipe.kind:12} {recipe.ref:40} {state}")
    return lines
