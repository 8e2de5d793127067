"""Samplers that run beside a load step: consumer-group lag (Kafka admin), CPU and RSS of processes (/proc),
checkpoint statistics (Flink REST), the machine's load average."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from tools.bench.stats import summary
from tools.flink_jobs import rest
from udfs.topology import Ports

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Sampler:
    """Calls `sample()` every `interval_s` seconds on a thread until stopped; subclasses keep the samples."""

    interval_s = 1.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)
        self.start_s, self.start_wall = time.monotonic(), time.time()

    def start(self) -> Self:
        """Starts sampling (the first sample at once)."""
        self.start_s, self.start_wall = time.monotonic(), time.time()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops sampling after a last sample."""
        self._stop.set()
        self._thread.join()
        self.sample(time.monotonic() - self.start_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a missed sample is not worth failing the run for
                self.sample(time.monotonic() - self.start_s)
            self._stop.wait(self.interval_s)

    def sample(self, t: float) -> None:
        """Takes one sample at `t` seconds since the start."""
        raise NotImplementedError


class LagSampler(Sampler):
    """Committed offsets and end offsets of consumer groups, i.e. their lag, over time.

    Args:
        bootstrap: broker.
        groups: consumer group -> the topic it reads.
    """

    def __init__(self, bootstrap: str, groups: dict[str, str]) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer

        super().__init__()
        self.groups = groups
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tagstream-bench")
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        self.samples: dict[str, list[tuple[float, int, int]]] = {g: [] for g in groups}  # (t, committed, end)

    def sample(self, t: float) -> None:
        from kafka import TopicPartition

        for group, topic in self.groups.items():
            partitions = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
            ends = self.consumer.end_offsets(partitions)
            committed = self.admin.list_group_offsets({group: None}).get(group) or {}
            done = sum(committed[tp].offset for tp in partitions if tp in committed and committed[tp].offset >= 0)
            self.samples[group].append((t, done, sum(ends.values())))

    def stop(self) -> None:
        super().stop()
        self.admin.close()
        self.consumer.close()

    def lag(self, group: str) -> list[tuple[float, float]]:
        """(t, lag in records) of a group."""
        return [(t, float(end - done)) for t, done, end in self.samples[group]]

    def committed(self, group: str) -> list[tuple[float, float]]:
        """(t, committed offsets summed over partitions) of a group."""
        return [(t, float(done)) for t, done, _ in self.samples[group]]


def _proc_tree(pid: int) -> list[int]:
    """The process and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_rss(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and resident bytes of a process and its descendants; (0, 0) if gone."""
    cpu, rss = 0.0, 0
    for member in _proc_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        rss += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return cpu, rss


class ProcSampler(Sampler):
    """CPU and RSS of named processes (each with its descendants: Python workers in process mode).

    Args:
        pids: process name -> a callable returning its pid (None when it is not running).
    """

    interval_s = 2.0

    def __init__(self, pids: dict[str, Callable[[], int | None]]) -> None:
        super().__init__()
        self.pids = pids
        self.samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in pids}  # (t, cpu s, rss)

    def sample(self, t: float) -> None:
        for name, pid_of in self.pids.items():
            pid = pid_of()
            if pid is not None:
                cpu, rss = cpu_rss(pid)
                if rss:
                    self.samples[name].append((t, cpu, rss))

    def summary(self) -> dict[str, dict[str, float]]:
        """Per process: average CPU % of one core over the sampled time, and peak RSS in MB."""
        out = {}
        for name, points in self.samples.items():
            if len(points) < 2:
                continue
            elapsed = points[-1][0] - points[0][0]
            out[name] = {"cpu_pct": round(100 * (points[-1][1] - points[0][1]) / elapsed, 1) if elapsed else 0.0,
                         "rss_mb": round(max(p[2] for p in points) / 2**20, 1)}
        return out


def checkpoint_stats(ports: Ports, job_id: str) -> dict[str, Any]:
    """A job's checkpoint counts and the durations and sizes of its completed checkpoints (Flink REST)."""
    data = rest(ports, f"/jobs/{job_id}/checkpoints")
    history = [c for c in data.get("history", []) if c.get("status") == "COMPLETED"]
    latest = (data.get("latest") or {}).get("completed") or {}
    return {"counts": data.get("counts", {}),
            "duration_ms": summary([float(c["end_to_end_duration"]) for c in history]),
            "latest_state_size_bytes": latest.get("state_size"),
            "latest_checkpointed_size_bytes": latest.get("checkpointed_size"),
            "latest_path": latest.get("external_path"),
            "restored": (data.get("latest") or {}).get("restored")}


def initialization_s(ports: Ports, job_id: str) -> float | None:
    """The longest INITIALIZING -> RUNNING time of any subtask (state restore happens then), from Flink REST."""
    longest = None
    for vertex in rest(ports, f"/jobs/{job_id}")["vertices"]:
        for subtask in rest(ports, f"/jobs/{job_id}/vertices/{vertex['id']}/subtasktimes").get("subtasks", []):
            stamps = subtask.get("timestamps", {})
            if stamps.get("INITIALIZING") and stamps.get("RUNNING"):
                took = (stamps["RUNNING"] - stamps["INITIALIZING"]) / 1000
                longest = took if longest is None else max(longest, took)
    return longest


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]
