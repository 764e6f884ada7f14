"""Reading a topology from a mapping or a TOML file, with errors that name the field."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testbed.errors import TopologyError
from testbed.topology.model import BrokerSpec, LinkSpec, ServiceSpec, Topology, knobs_from_dict
from testbed.topology.own import own_from_dict

_TOP_KEYS = {"name", "shape", "entry", "services", "links", "broker"}
_SERVICE_KEYS = {"name", "role", "knobs", "consumes", "publishes", "port", "own"}
_LINK_KEYS = {"source", "target", "protocol", "proxied"}


def _only(path: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    if not isinstance(data, Mapping):
        raise TopologyError(path, f"expected a table, got {type(data).__name__}",
                            "write it as a table of key = value")
    unknown = sorted((set(data) - allowed), key=str)
    if unknown:
        raise TopologyError(f"{path}.{unknown[0]}", "unknown key",
                            f"use only {sorted(allowed)}")


def _required(path: str, data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise TopologyError(f"{path}.{key}", "missing", f"add {key} = ...")
    return data[key]


def _array(path: str, value: Any) -> list[Any]:
    """A TOML array of tables ([[services]]) arrives as a list; anything else is a mistake."""
    if not isinstance(value, list):
        raise TopologyError(path, f"expected an array of tables, got {type(value).__name__}",
                            f"write each entry as its own [[{path}]] table")
    return value


def topology_from_dict(data: Mapping[str, Any], directory: Path = Path(".")) -> Topology:
    """Build and validate a Topology from plain data (parsed TOML or JSON); an own
    service's paths are relative to ``directory`` (the topology file's folder)."""
    _only("topology", data, _TOP_KEYS)
    services = []
    for index, raw in enumerate(_array("services", _required("topology", data, "services"))):
        path = f"services[{index}]"
        _only(path, raw, _SERVICE_KEYS)
        knobs_raw = raw.get("knobs", {})
        _only(f"{path}.knobs", knobs_raw, set(knobs_raw) if isinstance(knobs_raw, Mapping)
              else set())
        knobs = knobs_from_dict(dict(knobs_raw), f"{path}.knobs")
        services.append(ServiceSpec(
            name=_required(path, raw, "name"), role=_required(path, raw, "role"),
            knobs=knobs, consumes=raw.get("consumes"), publishes=raw.get("publishes"),
            port=raw.get("port"),
            own=own_from_dict(raw["own"], f"{path}.own", directory) if "own" in raw else None))
    links = []
    for index, raw in enumerate(_array("links", data.get("links", []))):
        path = f"links[{index}]"
        _only(path, raw, _LINK_KEYS)
        links.append(LinkSpec(_required(path, raw, "source"), _required(path, raw, "target"),
                              _required(path, raw, "protocol"), raw.get("proxied", True)))
    broker = None
    if "broker" in data:
        _only("broker", data["broker"], {"exchange", "kind", "partitions"})
        broker = BrokerSpec(**data["broker"])
    return Topology(name=_required("topology", data, "name"),
                    shape=_required("topology", data, "shape"),
                    entry=_required("topology", data, "entry"),
                    services=tuple(services), links=tuple(links), broker=broker)


def load_topology(path: Path) -> Topology:
    """Read a TOML topology file."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise TopologyError("file", f"cannot read {path}: {exc.strerror}",
                            "give the path of an existing TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError("file", f"{path} is not valid TOML ({exc})",
                            "fix the syntax at the position shown") from exc
    return topology_from_dict(data, path.parent.resolve())
