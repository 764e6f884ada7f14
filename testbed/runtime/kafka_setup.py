"""Bring up a deployment's Kafka: a node of its own, a listener per proxied client, topics.

A node per deployment, not per run (as RabbitMQ is): Kafka fixes its advertised
listeners at boot, and each proxied client needs one advertised at its own proxy
(testbed.components.kafka), so the node must know the deployment's clients before it
starts. It boots in about 3 s. Topics: one per event (the topology's partitions), and
for a consumer with retries a ``<service>.retry`` topic, with dead_letter a
``<service>.dlq`` topic, one partition each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testbed.components.kafka import ClientListener, KafkaNode
from testbed.ports import allocate_port
from testbed.runtime.kafka_access import KafkaAccess, group_topics
from testbed.runtime.lifecycle import Undo
from testbed.services.config import KafkaTarget
from testbed.services.kafka_client import dead_letter_topic, retry_topic
from testbed.topology.model import Topology


@dataclass(frozen=True)
class KafkaDeployment:
    """The node and the listener each proxied link's proxy forwards to."""

    access: KafkaAccess
    listeners: dict[str, ClientListener]  # link name -> the client's listener

    def target(self, service: str, link_name: str, proxied: bool) -> KafkaTarget:
        """Where ``service`` bootstraps: its proxy, or the broker itself when unproxied."""
        bootstrap = (self.listeners[link_name].bootstrap if proxied
                     else self.access.bootstrap)
        return KafkaTarget(bootstrap, self.access.partitions)


def topics_of(topology: Topology) -> dict[str, int]:
    """Topic -> partitions, for everything the topology's services read or write."""
    assert topology.broker is not None
    partitions = topology.broker.partitions
    topics = {s.publishes: partitions for s in topology.services if s.publishes}
    for spec in topology.services:
        if spec.consumes and spec.knobs.consumer_retries:
            topics[retry_topic(spec.name)] = 1
        if spec.consumes and spec.knobs.dead_letter:
            topics[dead_letter_topic(spec.name)] = 1
    return topics


def start_kafka(topology: Topology, run_id: str, home: Path, undo: Undo,
                timings: dict[str, float], timing_key: str) -> KafkaDeployment:
    """Boot the node with a listener per proxied client, create the topics."""
    assert topology.broker is not None
    listeners = {link.name: ClientListener(link.source, allocate_port(run_id),
                                           allocate_port(run_id))
                 for link in topology.proxied_links if link.protocol == "kafka"}
    node = KafkaNode(run_id, home, allocate_port(run_id), allocate_port(run_id),
                     list(listeners.values()))
    undo.push(node.stop)
    timings[timing_key] = node.start()
    for topic, partitions in topics_of(topology).items():
        node.admin.create_topic(topic, partitions)
    consumers = [(s.name, s.consumes, bool(s.knobs.consumer_retries), s.knobs.dead_letter)
                 for s in topology.services if s.consumes]
    access = KafkaAccess(node, topology.broker.partitions,
                         group_topics(consumers, topology.broker.partitions))
    return KafkaDeployment(access, listeners)
