"""Readers that see probe effects: Redis keyspace notifications (tagstream, naive) and a Kafka topic (twin).

The Redis reader subscribes to the keyspace channel of each probe's key before the probe is sent (the
bench enables `notify-keyspace-events` on its own Redis); on every notification it checks the probe's field
and records when it appeared (latency) and when it disappeared (exit). A sweep every 250 ms catches
anything a notification missed.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from tools.bench.load import Probe, now_ms

SWEEP_S = 0.25


class RedisProbeReader:
    """Watches probe fields in Redis on a thread.

    Args:
        redis_url: the Redis URL (its db is the one watched).
        field: the hash field whose presence means "the probe's effect is readable".
        give_up_s: a probe not seen (or not gone) after this long stops being watched.
    """

    def __init__(self, redis_url: str, field: str, give_up_s: float = 120.0) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.db = int(self.client.connection_pool.connection_kwargs.get("db", 0))
        self.client.config_set("notify-keyspace-events", "Kgh")
        self.field = field
        self.give_up_ms = int(give_up_s * 1000)
        self._new: queue.SimpleQueue[Probe] = queue.SimpleQueue()
        self._watched: dict[str, Probe] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="probe-reader", daemon=True)
        self._pubsub: Any = self.client.pubsub(ignore_subscribe_messages=True)

    def start(self) -> None:
        """Starts the reader thread."""
        self._thread.start()

    def expect(self, probe: Probe) -> None:
        """Watches a probe (call before sending it)."""
        self._new.put(probe)
        time.sleep(0.002)  # let the reader subscribe before the probe can arrive (it takes far longer anyway)

    def stop(self) -> None:
        """Stops the reader."""
        self._stop.set()
        self._thread.join()
        self._pubsub.close()

    def _channel(self, key: str) -> str:
        return f"__keyspace@{self.db}__:{key}"

    def _loop(self) -> None:
        next_sweep = time.monotonic() + SWEEP_S
        while not self._stop.is_set():
            while not self._new.empty():
                probe = self._new.get()
                channel = self._channel(probe.key)
                self._watched[channel] = probe
                self._pubsub.subscribe(channel)
            if not self._watched:
                time.sleep(0.01)
                continue
            message = self._pubsub.get_message(timeout=0.02)
            while message is not None:
                channel = message["channel"]
                channel = channel.decode() if isinstance(channel, bytes) else channel
                if channel in self._watched:
                    self._check([channel], now_ms())
                message = self._pubsub.get_message(timeout=0.0)
            if time.monotonic() >= next_sweep:
                self._check(list(self._watched), now_ms())
                next_sweep = time.monotonic() + SWEEP_S

    def _check(self, channels: list[str], seen_ms: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for channel in channels:
            pipe.hexists(self._watched[channel].key, self.field)
        done = []
        for channel, present in zip(channels, pipe.execute(), strict=True):
            probe = self._watched[channel]
            if present and probe.entered_ms is None:
                probe.entered_ms = seen_ms
            elif not present and probe.entered_ms is not None:
                probe.exited_ms = seen_ms
                done.append(channel)
            elif seen_ms - probe.sent_ms > self.give_up_ms:
                done.append(channel)
        for channel in done:
            del self._watched[channel]
        if done:
            self._pubsub.unsubscribe(*done)


class KafkaProbeReader:
    """Sees probes in an output topic (the twin writes to Kafka): the first record keyed by a probe's key.

    Args:
        bootstrap: broker. topic: the output topic, read from its end at start.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                      enable_auto_commit=False, group_id=None, fetch_max_wait_ms=10)
        self._watched: dict[str, Probe] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="twin-probe-reader", daemon=True)

    def start(self) -> None:
        """Starts reading (after the first assignment, so nothing sent afterwards is missed)."""
        while not self.consumer.assignment():
            self.consumer.poll(timeout_ms=200)
        self.consumer.seek_to_end()
        self._thread.start()

    def expect(self, probe: Probe) -> None:
        """Watches a probe (call before sending it)."""
        with self._lock:
            self._watched[probe.key] = probe

    def stop(self) -> None:
        """Stops the reader."""
        self._stop.set()
        self._thread.join()
        self.consumer.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for records in self.consumer.poll(timeout_ms=50).values():
                seen = now_ms()
                with self._lock:
                    for record in records:
                        key = record.key.decode() if record.key else ""
                        probe = self._watched.pop(key, None)
                        if probe is not None:
                            probe.entered_ms = seen
