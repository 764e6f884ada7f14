"""The Kafka clients' settings that decide timings, in one place: the services configure
librdkafka with them (kafka_client.py) and the model (testbed.model.kafka) reads the
same numbers, so neither can drift from the other. No confluent-kafka import here."""

from __future__ import annotations

import zlib

SESSION_TIMEOUT_MS = 6000  # group.min.session.timeout.ms's default: the shortest allowed
HEARTBEAT_MS = 1000
# An idle fetch waits this long at the broker. A fetch with data returns at once, but a
# seek must wait for the fetch in flight: on average half of this (measured: E3 on
# Kafka took ~100 ms per attempt at the poison with a 50 ms backoff).
FETCH_WAIT_MS = 100


def partition_of(key: str, partitions: int) -> int:
    """Where a keyed message goes: librdkafka's ``consistent`` partitioner (CRC-32)."""
    return zlib.crc32(key.encode()) % partitions
