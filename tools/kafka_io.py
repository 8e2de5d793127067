"""Small Kafka helpers for end-to-end tests: private topics, producing raw bytes, reading until a count."""

from __future__ import annotations

import time
import uuid

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic


def private_topics(bootstrap: str, *names: str, partitions: int = 2) -> dict[str, str]:
    """Creates fresh topics (suffixed with a random id) so that reruns never see old records."""
    suffix = uuid.uuid4().hex[:8]
    mapping = {name: f"{name}.{suffix}" for name in names}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, partitions, 1, topic_configs={"max.message.bytes": str(4 << 20)})
                             for t in mapping.values()])
    finally:
        admin.close()
    return mapping


def produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes | None] | None = None) -> None:
    """Produces raw values (in order per key) and waits until all are acknowledged."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 << 20, linger_ms=5)
    try:
        for i, value in enumerate(values):
            producer.send(topic, value=value, key=keys[i] if keys else None)
        producer.flush(timeout=60)
    finally:
        producer.close()


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 120, settle_s: float = 3) -> list[bytes]:
    """Reads committed records from the start until `expected` arrived (then a short settle for extras)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, isolation_level="read_committed",
                             fetch_max_bytes=16 << 20, max_partition_fetch_bytes=8 << 20)
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    settle_until = None
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in records)
            if len(values) >= expected:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
    finally:
        consumer.close()
    return values
