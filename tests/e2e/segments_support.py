"""Helpers of the segments end-to-end tests: events, reading topics, waiting for conditions."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from kafka import KafkaConsumer

from tools.flink_jobs import operator_metrics
from udfs.topology import Ports


def now_ms() -> int:
    """The wall clock, epoch ms."""
    return time.time_ns() // 1_000_000


def event(event_id: str, user: str, ts_ms: int, etype: str, fields: dict[str, Any] | None = None,
          **props: Any) -> bytes:
    """An `events.valid` record of the user (`ts_ms` set, as ingest does); `fields` adds top-level fields
    (`traits`, `consent`, ...)."""
    return orjson.dumps({"event_id": event_id, "type": etype, "ts": ts_ms, "ts_ms": ts_ms, "channel": "web",
                         "ids": {"user_id": user}, "props": props, **(fields or {})})


class TopicReader:
    """Reads a topic from the start and keeps every record (JSON values, with the key as `_key`)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                      enable_auto_commit=False, group_id=None, isolation_level="read_committed")
        self.records: list[dict] = []

    def until(self, done: Callable[[list[dict]], bool], timeout_s: float = 120) -> list[dict]:
        """Reads on until `done(records)` holds or the timeout passes; returns all records read so far."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(self.records):
            for batch in self.consumer.poll(timeout_ms=500).values():
                self.records.extend(orjson.loads(r.value) | {"_key": r.key.decode()} for r in batch)
        return self.records

    def close(self) -> None:
        self.consumer.close()


def read_until(bootstrap: str, topic: str, done: Callable[[list[dict]], bool], timeout_s: float = 120) -> list[dict]:
    """Reads a topic from the start until `done(records)` holds (or the timeout passes)."""
    reader = TopicReader(bootstrap, topic)
    try:
        return reader.until(done, timeout_s)
    finally:
        reader.close()


def wait_for(check: Callable[[], bool], timeout_s: float = 60) -> bool:
    """Polls `check` every 0.5 s until it holds or the timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return check()


def definitions_read(ports: Ports, job_id: str) -> int:
    """How many definition records the segments job has read (loaded or rejected)."""
    metrics = operator_metrics(ports, job_id)
    return metrics.get("definitions_loaded", 0) + metrics.get("definition_issues", 0)
