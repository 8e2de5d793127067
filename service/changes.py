"""Tailing one person's records of the `segment-changes` topic.

The segments job produces its change records keyed by person id, so Kafka's default partitioner (murmur2 of
the key, as kafka-python and the Java client compute it) puts all of a person's records on one partition, in
order. A tail consumes only that partition, without a consumer group, from its end (or just after a given
event id, to resume), and keeps the records whose key is the person. An event id is `partition:offset`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner import murmur2


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a (UTF-8) key among `partitions`."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


def parse_event_id(text: str | None) -> tuple[int, int] | None:
    """`partition:offset` -> (partition, offset); None for an absent or unreadable id (start at the end)."""
    if not text:
        return None
    partition, sep, offset = text.strip().partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        return None
    return int(partition), int(offset)


@dataclass(frozen=True)
class Change:
    """One change record of the person.

    Attributes:
        event_id: `partition:offset` (an SSE event id: resume after it with `Last-Event-ID`).
        record: the change record (`docs/segments.md`, "Change events").
    """

    event_id: str
    record: dict[str, Any]


class ChangeTail:
    """A person's change records from now on (or after `last_event_id`).

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: the change topic.
        person_id: the record key to keep.
        last_event_id: resume just after this `partition:offset` (ignored when it names another partition,
            e.g. after the topic was repartitioned).
        options: extra kafka-python consumer options.
    """

    def __init__(self, bootstrap: str, topic: str, person_id: str, last_event_id: str | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        self.person_id = person_id
        self._key = person_id.encode("utf-8")
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                       isolation_level="read_committed", **dict(options or {}))
        try:
            partitions = self._consumer.partitions_for_topic(topic)
            if not partitions:
                raise LookupError(f"Kafka topic {topic!r} does not exist")
            self.partition = TopicPartition(topic, partition_for(person_id, len(partitions)))
            self._consumer.assign([self.partition])
            resume = parse_event_id(last_event_id)
            if resume is not None and resume[0] == self.partition.partition:
                self._consumer.seek(self.partition, resume[1] + 1)
            else:
                self._consumer.seek_to_end(self.partition)
            self.start_offset = self._consumer.position(self.partition)  # fixed now: nothing later is missed
        except BaseException:
            self._consumer.close()
            raise

    def poll(self, timeout_ms: int) -> list[Change]:
        """The person's records that arrived, waiting up to `timeout_ms` for some (on this partition)."""
        changes = []
        for records in self._consumer.poll(timeout_ms=timeout_ms).values():
            for record in records:
                if record.key != self._key or record.value is None:
                    continue
                try:
                    value = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    continue  # not a change record; the job writes JSON only
                changes.append(Change(f"{record.partition}:{record.offset}", value))
        return changes

    def close(self) -> None:
        """Closes the consumer."""
        self._consumer.close()

    def __enter__(self) -> ChangeTail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
