"""Sends generated (or replayed) records to Kafka at a controlled rate (kafka-python, imported lazily).

Record timestamps: by default (`time_mode="event"`) each record carries its simulated send time
(`truth["sent_ms"]`), which is the reference the ingest validator checks `ts` against, so the dead-letter
reasons match the ground truth however fast the simulation runs. The simulation usually runs faster than the
wall clock, and a broker rejects timestamps more than `message.timestamp.after.max.ms` ahead of its clock
(1 hour by default since Kafka 4.0). Remedies: raise that on the topic; start the origin in the past; hold
records back so that they are at most `max_lead_ms` ahead (the rate then falls to the simulation's natural
rate once the lead is reached; 0 replays in real time); or `time_mode="wall"` (then the validator
dead-letters events more than a day ahead of the wall clock). For long runs, generate in real time instead:
`write_kafka(generate(config.for_rate(rate)), producer, max_lead_ms=0)` (see tools/generate.py).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tools.generate import Record, take
from udfs.topology import topic as registered_topic

KEY_MODES = ("person", "record", "none")
TIME_MODES = ("event", "wall")
_ID_PRECEDENCE = ("user_id", "device_id", "anonymous_id", "email", "phone")
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
BROKER_MAX_LEAD_MS = 3_600_000  # log.message.timestamp.after.max.ms, default since Kafka 4.0


class TokenBucket:
    """Paces calls to `rate` per second on average, allowing bursts of up to `burst`.

    Args:
        rate: tokens per second; 0 or less means no limit.
        burst: bucket size (default: a tenth of a second's worth, at least 1).
        clock: monotonic seconds. sleep: sleeps seconds (both injectable for tests).
        min_sleep_s: debts smaller than this are carried over rather than slept (sleep is coarse).
    """

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, min_sleep_s: float = 0.002):
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self.clock, self.sleep, self.min_sleep_s = clock, sleep, min_sleep_s
        self.tokens = self.burst
        self.last = clock()

    def acquire(self, n: float = 1.0) -> None:
        """Takes `n` tokens, sleeping as long as needed to keep the average rate."""
        if self.rate <= 0:
            return
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate) - n
        self.last = now
        if self.tokens < 0 and -self.tokens / self.rate >= self.min_sleep_s:
            self.sleep(-self.tokens / self.rate)


def record_key(record: Record, mode: str = "person") -> bytes | None:
    """The Kafka key of a record.

    Args:
        record: a generated or replayed record.
        mode: `person`: the person's first identifier from the ground truth, so all of a person's records
            share a partition (falls back to `record` when there is no truth); `record`: the record's own
            identifier (user_id, then device_id, anonymous_id, email, phone), None when it does not parse;
            `none`: no key (the producer spreads records over partitions).
    """
    if mode == "none":
        return None
    if mode == "person" and record.truth.get("key"):
        return str(record.truth["key"]).encode("utf-8")
    try:
        ids = orjson.loads(record.value).get("ids")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if isinstance(ids, dict):
        for name in _ID_PRECEDENCE:
            if isinstance(ids.get(name), str):
                return str(ids[name]).encode("utf-8")
    return None


@dataclass
class SendStats:
    """What a Kafka run did. Acknowledgements arrive on the producer's thread, hence the lock."""

    sent: int = 0
    acked: int = 0
    failed: int = 0
    bytes: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None
    elapsed_s: float = 0.0
    interrupted: bool = False
    max_lead_ms: int = 0  # how far the record timestamps got ahead of the wall clock
    held_s: float = 0.0  # time spent holding records back to keep within max_lead_ms
    max_lag_ms: int = 0  # when holding back: how far the wall clock got past a record's timestamp
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_ack(self, _metadata: Any) -> None:
        """Producer callback for a delivered record."""
        with self._lock:
            self.acked += 1

    def on_error(self, error: BaseException) -> None:
        """Producer callback for a record that could not be delivered."""
        with self._lock:
            self.failed += 1
            self.errors[type(error).__name__] += 1
            if self.first_error is None:
                self.first_error = f"{type(error).__name__}: {error}"

    def summary(self) -> str:
        """A one-paragraph human summary."""
        rate = self.sent / self.elapsed_s if self.elapsed_s else 0.0
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_kind.items()))
        text = (f"sent {self.sent} records ({kinds}), {self.bytes / 1e6:.1f} MB in {self.elapsed_s:.1f} s "
                f"({rate:.0f}/s); acked {self.acked}, failed {self.failed}")
        if self.max_lead_ms > 0:
            text += f"; timestamps up to {self.max_lead_ms / 60_000:.0f} min ahead of the wall clock"
        if self.held_s:
            text += f" (held back {self.held_s:.1f} s)"
        if self.max_lag_ms:
            text += f"; sent up to {self.max_lag_ms} ms after their timestamps"
        if self.first_error:
            text += f"; first error: {self.first_error}"
            if "InvalidTimestamp" in "".join(self.errors) or self.max_lead_ms > BROKER_MAX_LEAD_MS:
                text += f" -- {LEAD_HINT}"
        return text


LEAD_HINT = ("brokers refuse record timestamps over message.timestamp.after.max.ms (1 h by default) ahead of "
             "their clock: raise it on the topic, start --origin in the past, pass --max-lead 50m, or use "
             "--kafka-time wall")


def make_producer(bootstrap: str, topic: str = "events", linger_ms: int = 20, batch_bytes: int = 256 * 1024,
                  compression: str | None = None, **extra: Any) -> Any:
    """A kafka-python producer able to send the largest records the topic takes (4 MiB for `events`)."""
    from kafka import KafkaProducer

    try:
        max_request = int(registered_topic(topic).config.get("max.message.bytes", DEFAULT_MAX_REQUEST_BYTES))
    except KeyError:
        max_request = DEFAULT_MAX_REQUEST_BYTES
    config: dict[str, Any] = {"bootstrap_servers": bootstrap, "client_id": "tagstream-generate",
                              "acks": "all", "linger_ms": linger_ms, "batch_size": batch_bytes,
                              "max_request_size": max_request, "compression_type": compression}
    config.update(extra)
    return KafkaProducer(**config)


def write_kafka(records: Iterable[Record], producer: Any, topic: str = "events", rate: float = 0.0,
                count: int | None = None, duration_s: float | None = None, key_mode: str = "person",
                time_mode: str = "event", burst: float | None = None,
                max_lead_ms: int | None = None, progress: Callable[[SendStats], None] | None = None,
                progress_every_s: float = 5.0, warn: Callable[[str], None] | None = None,
                clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                sleep: Callable[[float], None] = time.sleep) -> SendStats:
    """Sends records to a topic at a rate until they run out, `count` or `duration_s` is reached, or Ctrl-C.

    Args:
        records: e.g. `generate(config)` or `read_parquet(path)`.
        producer: a KafkaProducer (see :func:`make_producer`) or anything with its `send`/`flush`.
        topic: the topic.
        rate: records per second (token bucket); 0 sends as fast as possible.
        count: stop after this many records. duration_s: stop after this much wall time.
        key_mode: see :func:`record_key`.
        time_mode: `event`: the record timestamp is `truth["sent_ms"]` (when known); `wall`: the producer's
            clock.
        burst: token-bucket size (default: a tenth of a second of `rate`).
        max_lead_ms: with `time_mode="event"`, hold each record until its timestamp is at most this far
            ahead of the wall clock (None: never hold). 0 with `rate=0` sends in real time: each record when
            the wall clock reaches its timestamp (see `GeneratorConfig.for_rate`).
        progress: called with the running stats every `progress_every_s` seconds.
        warn: called once when record timestamps get more than an hour ahead of the wall clock.
        clock, wall, sleep: monotonic seconds, epoch seconds and sleep; injectable for tests.

    Returns:
        The stats; the producer is flushed but not closed.
    """
    if key_mode not in KEY_MODES or time_mode not in TIME_MODES:
        raise ValueError(f"key_mode must be one of {KEY_MODES}, time_mode one of {TIME_MODES}")
    stats = SendStats()
    bucket = TokenBucket(rate, burst, clock=clock, sleep=sleep)
    start = clock()
    next_report = start + progress_every_s
    try:
        for record in take(records, count, duration_s, clock):
            bucket.acquire()
            sent_ms = record.truth.get("sent_ms") if time_mode == "event" else None
            if sent_ms is not None:
                lead = sent_ms - int(wall() * 1000)
                while max_lead_ms is not None and lead > max_lead_ms:  # the clock may read short after sleep
                    sleep((lead - max_lead_ms) / 1000)
                    stats.held_s += (lead - max_lead_ms) / 1000
                    lead = sent_ms - int(wall() * 1000)
                if lead > BROKER_MAX_LEAD_MS >= stats.max_lead_ms and warn is not None:
                    warn(f"record timestamps are now over an hour ahead of the wall clock; {LEAD_HINT}")
                stats.max_lead_ms = max(stats.max_lead_ms, lead)
                if max_lead_ms is not None:
                    stats.max_lag_ms = max(stats.max_lag_ms, -lead)
            future = producer.send(topic, value=record.value, key=record_key(record, key_mode),
                                   timestamp_ms=sent_ms)
            future.add_callback(stats.on_ack)
            future.add_errback(stats.on_error)
            stats.sent += 1
            stats.bytes += len(record.value)
            stats.by_kind[record.kind] += 1
            if progress is not None and clock() >= next_report:
                stats.elapsed_s = clock() - start
                progress(stats)
                next_report += progress_every_s
    except KeyboardInterrupt:
        stats.interrupted = True
    finally:
        producer.flush()
        stats.elapsed_s = clock() - start
    return stats


def replay_parquet(path: str | Path, producer: Any, **options: Any) -> SendStats:
    """Replays a Parquet file (see tools/parquet_io.py) to Kafka; `options` as for :func:`write_kafka`."""
    from tools.parquet_io import read_parquet

    return write_kafka(read_parquet(path), producer, **options)
