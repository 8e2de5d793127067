"""Small Kafka helpers for tests and the chaos harness: private topics, producing raw bytes, reading back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Hashable

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


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Deletes topics (best effort: errors are ignored)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics(topics)
    except Exception:  # cleanup only
        pass
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, values: list[bytes | None], keys: list[bytes | None] | None = None,
            partitions: list[int] | None = None, timestamps: list[int | None] | None = None
            ) -> list[tuple[int, int]]:
    """Produces raw values (in order per partition, None is a tombstone) and waits for all acknowledgements.

    Args:
        bootstrap: broker address.
        topic: target topic.
        values: record values.
        keys: record keys (default none).
        partitions: explicit partition per record (default: the producer's partitioner).
        timestamps: record timestamps, epoch ms (default: the producer's clock).

    Returns:
        The (partition, offset) each record was written at, in input order.
    """
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 << 20, linger_ms=5,
                             enable_idempotence=True)
    try:
        futures = [producer.send(topic, value=value, key=keys[i] if keys else None,
                                 partition=partitions[i] if partitions else None,
                                 timestamp_ms=timestamps[i] if timestamps else None)
                   for i, value in enumerate(values)]
        producer.flush(timeout=60)
        written = [f.get(timeout=60) for f in futures]
    finally:
        producer.close()
    return [(m.partition, m.offset) for m in written]


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 120, settle_s: float = 3,
            key: Callable[[bytes], Hashable] | None = None) -> list[bytes]:
    """Reads committed records from the start until `expected` arrived (then a short settle for extras).

    Args:
        bootstrap: broker address.
        topic: topic to read.
        expected: how many records (or distinct keys, with `key`) to wait for.
        timeout_s: give up waiting (and return what arrived) after this long.
        settle_s: keep reading this long after `expected` is reached, to catch extras.
        key: counts distinct `key(value)` instead of records (duplicates then do not count; records it maps to
            None, e.g. tombstones, not at all).
    """
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, isolation_level="read_committed",
                             fetch_max_bytes=16 << 20, max_partition_fetch_bytes=8 << 20)
    values: list[bytes] = []
    seen: set[Hashable] = set()
    deadline = time.monotonic() + timeout_s
    settle_until = None
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in records)
                if key is not None:
                    seen.update(key(r.value) for r in records)
                    seen.discard(None)
            if (len(seen) if key is not None else len(values)) >= expected:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
    finally:
        consumer.close()
    return values
