"""The official-image recipes in compose/images keep the contract of the offline images,
so the runtime and the compose files can run either: same command, paths, broker scripts,
pinned versions. (Building them needs a registry; see the docker tests for the refusal.)"""

from __future__ import annotations

import re

import pytest

from testbed.components.binaries import TOXIPROXY_VERSION, rabbitmq_version
from testbed.errors import ComponentError
from testbed.images import recipes
from testbed.images.build import BROKER_COMMAND, BROKER_SBIN, SERVICE_DISTRIBUTIONS
from testbed.images.official import KINDS, REPO_ROOT, base_images, dockerfile
from testbed.runtime.docker import SERVICE_CONFIG_PATH, compose_project
from testbed.runtime.docker.containers import LEDGER_DIR
from testbed.topology import paired


def test_every_base_image_is_official_and_pinned() -> None:
    bases = base_images()
    assert bases["service"].startswith("python:3.11-")
    assert bases["rabbitmq"].startswith("rabbitmq:") and "management" in bases["rabbitmq"]
    assert bases["toxiproxy"] == f"ghcr.io/shopify/toxiproxy:{TOXIPROXY_VERSION.lstrip('v')}"
    for kind, image in bases.items():
        assert ":" in image and not image.endswith(":latest"), kind
        argument = re.search(r"^ARG (\w+)=", dockerfile(kind), re.MULTILINE)
        assert argument is not None and f"FROM ${{{argument[1]}}}" in dockerfile(kind), kind


def test_the_service_recipe_runs_what_the_runtime_configures() -> None:
    text = dockerfile("service")
    assert f'"{SERVICE_CONFIG_PATH}"]' in text and "testbed.services" in text
    assert f"WORKDIR {LEDGER_DIR}" in text
    requirements = (REPO_ROOT / "compose/images/service/requirements.txt").read_text()
    listed = {re.split(r"[<>=]", line)[0] for line in requirements.splitlines()
              if line and not line.startswith("#")}
    assert listed == set(SERVICE_DISTRIBUTIONS)


def test_the_broker_recipe_links_the_scripts_and_runs_the_shared_command() -> None:
    text = dockerfile("rabbitmq")
    assert f"ln -s /opt/rabbitmq/sbin {BROKER_SBIN}" in text
    assert f"testbed/images/files/{BROKER_COMMAND}" in text
    assert f'CMD ["/usr/local/bin/{BROKER_COMMAND}"]' in text
    # The same minor version as the Debian package the local runtime and offline image run.
    tag = base_images()["rabbitmq"].split(":")[1]
    debian = rabbitmq_version()  # e.g. 3.10.8-1.1+deb12u1; None when not installed
    if debian:
        assert tag.split(".")[:2] == debian.split(".")[:2]


def test_compose_builds_from_the_recipes_with_the_repository_as_context() -> None:
    model, _ = compose_project(list(paired()))
    builds = {name: entry["build"] for name, entry in model["services"].items()}
    assert builds, "no build sections"
    for name, build in builds.items():
        assert build["context"] == "../..", name
        assert (REPO_ROOT / build["dockerfile"]).is_file(), name
    assert {b["dockerfile"].split("/")[2] for b in builds.values()} == set(KINDS)


def test_official_recipes_hash_their_inputs_apart_from_offline() -> None:
    official, offline = recipes("official"), recipes("offline")
    assert set(official) == set(KINDS) and set(KINDS) <= set(offline)
    for kind in KINDS:
        assert official[kind].inputs != offline[kind].inputs
        assert official[kind].labels["testbed.source"] == "official"


def test_an_unknown_source_names_the_choices() -> None:
    with pytest.raises(ComponentError, match=r"unknown image source 'cloud'.*offline"):
        recipes("cloud")
