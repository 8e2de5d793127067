"""One run of a job suite on a local stack: private topics, the jobs, the recorded input, maybe a fault.

A run is prepared (topics created, stores namespaced, jobs submitted: slow, so several runs can be prepared
in parallel) and then executed: the input is produced in chunks with a pause between them; the fault is
injected after the chunks its `points` name; then the outputs are read until every expected key arrived
(outputs without an expectation once the jobs are idle), and the stores are read once they settle.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tools.chaos.compare import Counters, OutputIndex
from tools.chaos.stores import StoreNamespace, StoreSnapshot, allocate, release, settled_snapshot
from tools.chaos.suite import OutputReader, Persons, Suite, SuiteJob, Topics
from tools.flink_jobs import cancel, num_restarts, operator_metrics, submit, wait_running
from tools.kafka_io import consume, delete_topics, private_topics, produce
from tools.stack import Stack

PARTITIONS = 3  # input partitions: the control stream uses 0 and 1, the hostile corpus 2


@dataclass(frozen=True)
class Item:
    """One input record: value (None is a tombstone), partition, Kafka timestamp and key."""

    value: bytes | None
    partition: int
    timestamp_ms: int
    key: bytes | None = None


@dataclass
class RunContext:
    """What a fault may use and change during a run.

    Attributes:
        stack: the local stack.
        suite: the job suite.
        topics: the run's private topics.
        job_ids: the current job instances, one per suite job (a fault may replace them).
        segments: counters of job instances that ended gracefully (job key, counters).
        feed: produces the next chunk of input now (so that input keeps flowing during an outage).
        log: progress lines.
        events: what happened, with seconds since the start (for the report).
        workdir: where savepoints go.
        namespace: the run's stores (None: the suite writes none).
    """

    stack: Stack
    suite: Suite
    topics: Topics
    job_ids: list[str]
    segments: list[tuple[str, Counters]]
    feed: Callable[[], None]
    log: Callable[[str], None]
    events: list[str] = field(default_factory=list)
    workdir: Path = Path(".")
    started: float = field(default_factory=time.monotonic)
    namespace: StoreNamespace | None = None

    def note(self, text: str) -> None:
        """Logs and records an event."""
        line = f"{time.monotonic() - self.started:6.1f}s {text}"
        self.events.append(line)
        self.log(f"  {line}")

    def counters(self) -> list[tuple[str, Counters]]:
        """Current counters of every running job instance."""
        return [(job.spec.key, operator_metrics(self.stack.ports, jid))
                for job, jid in zip(self.suite.jobs, self.job_ids, strict=True)]

    def resubmit(self, flink_options: list[list[str]]) -> None:
        """Submits the suite's jobs again with `flink run` options per job (e.g. a savepoint), replacing `job_ids`."""
        self.job_ids = submit_all(self.stack, self.suite.jobs, self.topics, self.namespace, flink_options)

    def settled_counters(self, stable_s: float = 12, timeout_s: float = 120) -> list[tuple[str, Counters]]:
        """The jobs' counters once they balance and stayed unchanged for `stable_s` (REST metrics lag ~10 s)."""
        deadline = time.monotonic() + timeout_s
        last, since = self.counters(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(3)
            now = self.counters()
            if now != last or any(self.suite.balance(c) for _, c in now):
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= stable_s:
                break
        return last


class Fault(Protocol):
    """A fault: injected (and recovered from) mid-stream, after the chunks at `points` (fractions)."""

    @property
    def name(self) -> str:
        """What the fault is, in a few words."""
        ...

    @property
    def points(self) -> tuple[float, ...]:
        """When to inject it: after these fractions of the input."""
        ...

    def inject(self, ctx: RunContext) -> None:
        """Injects the fault, keeps input flowing if it can (`ctx.feed`), and recovers."""
        ...


@dataclass
class RunResult:
    """What a run produced.

    Attributes:
        outputs: each output de-duplicated by idempotency key.
        segments: counters per job instance (job key, counters), in order.
        restarts: job restarts (failovers) while the run's input was processed.
        positions: (partition, offset) of every input item, in input order.
        events: what happened when.
        duration_s: wall time of the execution (after preparation).
        stores: the run's Redis and DynamoDB contents at the end (None: the suite writes no store).
    """

    outputs: dict[str, OutputIndex]
    segments: list[tuple[str, Counters]]
    restarts: int
    positions: list[tuple[int, int]]
    events: list[str]
    duration_s: float
    stores: StoreSnapshot | None = None


# Checkpoints every 5 s; under the load of a chaos run on 2 cores (four jobs per run, two runs side by side)
# a checkpoint can outlast its timeout: a few such failures must not fail the job (a restart would count as
# a fault's effect, or break "the job never restarts" on the hostile corpus). Restarts still come only from
# real failures (`numRestarts`).
_CHECKPOINTS = ["--checkpoint-interval", "5s", "--conf", "execution.checkpointing.tolerable-failed-checkpoints=20"]


def job_flags(stack: Stack, job: SuiteJob, topics: Topics, namespace: StoreNamespace | None) -> list[str]:
    """A suite job's flags for one run: its private topics, checkpoints, and its private stores."""
    stores = namespace.flags(stack) if job.stores and namespace is not None else []
    return [*job.flags(topics), *_CHECKPOINTS, *stores]


def submit_all(stack: Stack, jobs: tuple[SuiteJob, ...], topics: Topics, namespace: StoreNamespace | None,
               flink_options: list[list[str]] | None = None) -> list[str]:
    """Submits a run's jobs side by side (`flink run -py` spends most of its time starting up); returns their ids
    in suite order."""
    options = flink_options or [[] for _ in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(submit, stack, job.spec, job_flags(stack, job, topics, namespace), opts, False)
                   for job, opts in zip(jobs, options, strict=True)]
    failed = [e for f in futures if (e := f.exception()) is not None]
    if failed:  # leave nothing running
        for f in futures:
            if f.exception() is None:
                with contextlib.suppress(Exception):
                    cancel(stack.ports, f.result())
        raise failed[0]
    return [f.result() for f in futures]


class Run:
    """One run: `prepare()` (topics, jobs), then `execute(...)`, which always cleans up.

    Args:
        stack: the local stack.
        suite: the jobs to run.
        log: progress lines.
        workdir: where savepoints go.
    """

    def __init__(self, stack: Stack, suite: Suite, log: Callable[[str], None] = print,
                 workdir: Path | None = None) -> None:
        self.stack, self.suite, self.log = stack, suite, log
        self.workdir = workdir or stack.run_dir / "chaos"
        self.topics: Topics = {}
        self.job_ids: list[str] = []
        self.namespace: StoreNamespace | None = None

    def prepare(self) -> Run:
        """Creates the run's private topics (and stores), runs the suite's setup, submits its jobs."""
        self.topics = private_topics(self.stack.ports.bootstrap, *self.suite.topics, partitions=PARTITIONS)
        try:
            if self.suite.setup is not None:
                self.suite.setup(self.stack.ports.bootstrap, self.topics)
            if self.suite.stores:
                self.namespace = allocate(self.stack)
            self.job_ids = submit_all(self.stack, self.suite.jobs, self.topics, self.namespace)
        except BaseException:
            self.cleanup()
            raise
        return self

    def cleanup(self) -> None:
        """Cancels the run's jobs (by id), deletes its topics and stores."""
        self._cleanup(self.job_ids)

    def execute(self, items: list[Item], expected: dict[str, int], fault: Fault | None = None, chunks: int = 6,
                pause_s: float = 1.5, timeout_s: float = 300, stores: StoreSnapshot | None = None) -> RunResult:
        """Produces the input (injecting the fault), reads the outputs and stores, stops the jobs, deletes the
        topics and stores.

        Args:
            items: the input records, in order.
            expected: distinct keys per output to wait for; outputs not named are read once the jobs are idle
                (their counters settled).
            fault: the fault to inject (None: a clean run).
            chunks: the input is produced in this many chunks...
            pause_s: ...with this pause after each.
            timeout_s: the longest wait for the outputs after the last chunk.
            stores: the store contents to wait for (the clean run's), if any.
        """
        if not self.job_ids:
            self.prepare()
        size = -(-len(items) // chunks)
        pending = [items[i:i + size] for i in range(0, len(items), size)]
        positions: list[tuple[int, int]] = []
        bootstrap = self.stack.ports.bootstrap

        def feed() -> None:
            if pending:
                chunk = pending.pop(0)
                positions.extend(produce(bootstrap, self.topics[self.suite.input_topic],
                                         [i.value for i in chunk], [i.key for i in chunk],
                                         partitions=[i.partition for i in chunk],
                                         timestamps=[i.timestamp_ms for i in chunk]))

        ctx = RunContext(self.stack, self.suite, self.topics, self.job_ids, [], feed, self.log,
                         workdir=self.workdir, namespace=self.namespace)
        restarts_before = self._restarts(ctx.job_ids)
        n = len(pending)
        at = sorted({min(n - 1, max(1, round(p * n))) for p in fault.points}) if fault else []
        try:
            while pending:
                feed()
                if fault and at and n - len(pending) >= at[0]:
                    at.pop(0)
                    ctx.note(f"inject {fault.name}")
                    fault.inject(ctx)
                    ctx.note(f"recovered from {fault.name}")
                else:
                    time.sleep(pause_s)
            ctx.note("input produced")
            if any(out.topic not in expected or out.fold is not None for out in self.suite.outputs):
                ctx.settled_counters(timeout_s=timeout_s)
                ctx.note("jobs idle")
            deadline = time.monotonic() + timeout_s  # one wait for all outputs (each gets at least 10 s)
            values = {out.topic: self._read(out, 0 if out.fold else expected.get(out.topic, 0),
                                            max(deadline - time.monotonic(), 10.0))
                      for out in self.suite.outputs}
            merges = self.suite.persons_topic
            persons = Persons.from_merges(self._read_all(self.topics[merges])) if merges else None
            outputs = {out.topic: out.index(values[out.topic], self.topics, persons) for out in self.suite.outputs}
            ctx.note("outputs read")
            snap = settled_snapshot(self.stack, self.namespace, stores) if self.namespace is not None else None
            if snap is not None:
                ctx.note(f"stores read ({len(snap.entries)} entries)")
            segments = ctx.segments + ctx.settled_counters()
            restarts = self._restarts(ctx.job_ids) - (restarts_before if ctx.job_ids == self.job_ids else 0)
            return RunResult(outputs, segments, restarts, positions, ctx.events, time.monotonic() - ctx.started,
                             snap)
        finally:
            self._dump(fault.name if fault else "baseline")
            self._cleanup(ctx.job_ids)

    def _read(self, reader: OutputReader, expected: int, timeout_s: float) -> list[bytes]:
        """Reads an output until `expected` distinct keys arrived (a folded output: until it is quiet)."""
        def key(value: bytes) -> str | None:
            found = reader.normalize(value, self.topics)
            return found[0] if found else None

        return consume(self.stack.ports.bootstrap, self.topics[reader.topic], expected, timeout_s=timeout_s,
                       settle_s=5, key=key)

    def _read_all(self, private_topic: str) -> list[bytes]:
        """Every record of one of the run's topics, read until it is quiet for a few seconds."""
        return consume(self.stack.ports.bootstrap, private_topic, 1 << 62, timeout_s=5)

    def _dump(self, label: str) -> None:
        """Copies every topic of the run to `$TAGSTREAM_CHAOS_DUMP/<label>/<topic>.jsonl` (one record per line,
        as text) when that variable is set: the evidence to replay a failed comparison by hand."""
        root = os.environ.get("TAGSTREAM_CHAOS_DUMP")
        if not root or not self.topics:
            return
        folder = Path(root) / label
        folder.mkdir(parents=True, exist_ok=True)
        for name, private in self.topics.items():
            values = self._read_all(private)
            lines = [(v or b"").decode("utf-8", "backslashreplace").replace("\n", "\\n") for v in values]
            (folder / f"{name}.jsonl").write_text("".join(f"{line}\n" for line in lines))

    def _restarts(self, job_ids: list[str]) -> int:
        return sum(num_restarts(self.stack.ports, jid) for jid in job_ids)

    def _cleanup(self, job_ids: list[str]) -> None:
        for jid in {*job_ids, *self.job_ids}:
            with contextlib.suppress(Exception):  # already gone
                cancel(self.stack.ports, jid)
        if self.topics:
            delete_topics(self.stack.ports.bootstrap, list(self.topics.values()))
        if self.namespace is not None:
            release(self.stack, self.namespace)


def wait_job(ctx: RunContext, timeout_s: float = 300) -> None:
    """Waits until every job of the run is RUNNING again (after a failover)."""
    for jid in ctx.job_ids:
        wait_running(ctx.stack.ports, jid, timeout_s)
