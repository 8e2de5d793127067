"""Paced producers: the JVM load producer (bulk events) and a kafka-python probe sender.

kafka-python reaches about 3.6K records/s from one process on this 2-core machine (measured, idle broker,
350-byte records) while a load step needs up to 20K+/s, so bulk load comes from `LoadProducer.java`, compiled
once with `javac` and run against the stack's own Kafka client jars. Probes are few (tens per second) and
are sent from Python so that their send time is known exactly.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tools.bench.workload import probe_event

JAVA_SOURCE = Path(__file__).resolve().parent / "LoadProducer.java"


def compiled(kafka_jars: Path, classes: Path) -> Path:
    """Compiles `LoadProducer.java` once into `classes` (again when the source is newer): starting the JVM
    from source compiles on every run, which takes over a minute on a saturated machine."""
    target = classes / "LoadProducer.class"
    if not target.exists() or target.stat().st_mtime < JAVA_SOURCE.stat().st_mtime:
        classes.mkdir(parents=True, exist_ok=True)
        subprocess.run(["javac", "-nowarn", "-cp", f"{kafka_jars}/*", "-d", str(classes), str(JAVA_SOURCE)],
                       check=True, capture_output=True, text=True)
    return classes


def now_ms() -> int:
    """The wall clock in epoch ms."""
    return time.time_ns() // 1_000_000


class LoadProducer:
    """One run of `LoadProducer.java` in a child process.

    Args:
        kafka_jars: the directory of the stack's Kafka jars (`Stack.layout.jars / "kafka"`).
        bootstrap: broker. topic: target topic. templates: template file (see `workload`).
        rate: records per second (0: as fast as possible). seconds: how long to send.
        prefix: event id prefix (unique per run and step). max_records: stop after this many.
    """

    def __init__(self, kafka_jars: Path, bootstrap: str, topic: str, templates: Path, rate: float, seconds: float,
                 prefix: str, max_records: int | None = None) -> None:
        classes = compiled(kafka_jars, templates.parent / "classes")
        args = ["java", "-Xmx512m", "-cp", f"{classes}:{kafka_jars}/*", "LoadProducer", bootstrap, topic,
                str(templates), str(rate), str(seconds), prefix]
        if max_records is not None:
            args.append(str(max_records))
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_started(self) -> int:
        """Blocks until the producer sends its first record; returns that moment (epoch ms)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith('{"started_ms"'):
                return int(orjson.loads(line)["started_ms"])
        raise RuntimeError(f"load producer failed (exit {self.process.wait()}): {self.process.stderr.read()[-2000:]}"
                           if self.process.stderr else "load producer failed")

    @property
    def pid(self) -> int:
        """The producer's process id (for CPU/RSS sampling)."""
        return self.process.pid

    def result(self, timeout_s: float = 600) -> dict[str, Any]:
        """Waits for the producer; returns its summary (sent, acked, failed, elapsed_s, rate)."""
        out, err = self.process.communicate(timeout=timeout_s)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if self.process.returncode != 0 or not lines:
            raise RuntimeError(f"load producer failed (exit {self.process.returncode}): {err[-2000:]}")
        result = orjson.loads(lines[-1])
        result["rate"] = result["sent"] / result["elapsed_s"] if result["elapsed_s"] else 0.0
        return result


@dataclass
class Probe:
    """One probe: its number, Redis key (or Kafka key), send time and when its effect was seen."""

    n: int
    key: str
    sent_ms: int
    entered_ms: int | None = None
    exited_ms: int | None = None
    phase: str = ""

    @property
    def latency_ms(self) -> int | None:
        """Send to readable in the store."""
        return None if self.entered_ms is None else self.entered_ms - self.sent_ms

    def exit_error_ms(self, window_ms: int) -> int | None:
        """Seen gone minus the exact exit time (event time = send time + the window)."""
        return None if self.exited_ms is None else self.exited_ms - (self.sent_ms + window_ms)


@dataclass
class ProbeSender:
    """Sends probe events at a steady rate on a thread; `expect` announces each probe to a reader first.

    Args:
        bootstrap: broker. topic: where probes go (the pipeline's input).
        run: run id (probe user ids and event ids). rate: probes per second.
        key_of: probe number -> the key the reader watches.
        expect: called with each probe before it is sent (the reader subscribes).
    """

    bootstrap: str
    topic: str
    run: str
    rate: float
    key_of: Callable[[int], str]
    expect: Callable[[Probe], None]
    probes: list[Probe] = field(default_factory=list)
    phase: str = ""
    _next: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, phase: str) -> None:
        """Starts sending probes tagged with `phase` (a load step's name)."""
        from kafka import KafkaProducer

        self.phase = phase
        self._stop.clear()
        self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks=1, linger_ms=0)
        self._thread = threading.Thread(target=self._loop, name="probe-sender", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops sending (probes already sent stay tracked by the reader)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._producer.flush()
        self._producer.close()

    def _loop(self) -> None:
        interval = 1.0 / self.rate
        deadline = time.monotonic()
        while not self._stop.is_set():
            n = self._next
            self._next += 1
            user = self.run
            sent = now_ms()
            probe = Probe(n, self.key_of(n), sent, phase=self.phase)
            self.expect(probe)
            self.probes.append(probe)
            self._producer.send(self.topic, value=probe_event(user, n, sent), key=f"probe-{n}".encode())
            deadline += interval
            self._stop.wait(max(0.0, deadline - time.monotonic()))
