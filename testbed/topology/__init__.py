"""Layer 1: declarative, validated descriptions of the systems under test."""

from testbed.topology.builders import (
    ORDER_PLACED,
    Paired,
    async_pipeline,
    build_shape,
    paired,
    sync_chain,
)
from testbed.topology.loader import load_topology, topology_from_dict
from testbed.topology.model import (
    BROKER,
    BrokerSpec,
    Knobs,
    LinkSpec,
    ServiceSpec,
    Topology,
)

__all__ = [
    "BROKER",
    "ORDER_PLACED",
    "BrokerSpec",
    "Knobs",
    "LinkSpec",
    "Paired",
    "ServiceSpec",
    "Topology",
    "async_pipeline",
    "build_shape",
    "load_topology",
    "paired",
    "sync_chain",
    "topology_from_dict",
]
