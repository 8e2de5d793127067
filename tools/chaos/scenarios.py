"""Chaos scenarios: the same recorded input run clean and with a fault, compared; and the hostile corpus.

The clean run (the baseline) is made once per harness and shared by its scenarios: the input is the same
recorded bytes, timestamps and partitions, so the baseline's outputs are what every faulted run must
produce (after de-duplication by idempotency key). Runs are prepared (topics, jobs) in parallel up front
because `flink run -py` is slow; faults are injected one scenario at a time, and restarts are counted only
while a run's own input flows.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from tools.chaos import compare
from tools.chaos.corpus import DUPLICATE, VALID, Case, hostile_corpus
from tools.chaos.faults import KillTaskManager, RescaleFromSavepoint, RestartKafka, ServiceOutage
from tools.chaos.runner import PARTITIONS, Fault, Item, Run, RunResult
from tools.chaos.stores import comparable
from tools.chaos.suite import Suite
from tools.generate import GeneratorConfig, Record, generate, take
from tools.stack import Stack
from udfs.contract import parse_event_time

CORPUS = "hostile-corpus"
CORPUS_PARTITION = PARTITIONS - 1


def fault_scenarios(outage_s: float = 30.0, kills: int = 3) -> dict[str, Fault]:
    """The fault scenarios by name (`outage_s`: Redis and DynamoDB outages; `kills`: TaskManager kills)."""
    points = tuple(round((i + 1) / (kills + 1), 2) for i in range(kills))
    return {"taskmanager-kill": KillTaskManager(points=points),
            "redis-outage": ServiceOutage("redis", outage_s),
            "dynamodb-outage": ServiceOutage("dynamodb", outage_s),
            "kafka-restart": RestartKafka(),
            "savepoint-rescale": RescaleFromSavepoint()}


ALL_SCENARIOS = (*fault_scenarios(), CORPUS)


def control_input(count: int, seed: int = 7, now_ms: int | None = None) -> tuple[list[Item], list[dict[str, Any]]]:
    """The recorded control stream: generated records (with ground truth) as input items.

    Event times start two hours before now (record timestamps must stay within the broker's accepted range);
    a person's records share a partition (0 or 1).
    """
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    config = GeneratorConfig(seed=seed, users=2000, origin_ms=(now - 2 * 3600_000) // 60_000 * 60_000)
    records: list[Record] = list(take(generate(config), count))
    items = [Item(r.value, zlib.crc32(str(r.truth.get("key")).encode()) % CORPUS_PARTITION, r.truth["sent_ms"])
             for r in records]
    return items, [r.truth for r in records]


@dataclass
class Outcome:
    """One scenario's result (what the report shows)."""

    scenario: str
    ok: bool
    duration_s: float
    restarts: int
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Harness:
    """Runs scenarios of one suite on one stack against one recorded control stream.

    Args:
        stack: the local stack (up).
        suite: the jobs.
        items: the control stream.
        truths: its ground truth (tells how many outputs the clean run must reach).
        log: progress lines.
        chunks: input chunks per run; pause_s: pause after each; timeout_s: longest wait for outputs.
    """

    def __init__(self, stack: Stack, suite: Suite, items: list[Item], truths: list[dict[str, Any]],
                 log: Callable[[str], None] = print, chunks: int = 8, pause_s: float = 2.0,
                 timeout_s: float = 300) -> None:
        self.stack, self.suite, self.items, self.truths, self.log = stack, suite, items, truths, log
        self.chunks, self.pause_s, self.timeout_s = chunks, pause_s, timeout_s
        self._baseline: RunResult | None = None
        self._lock = threading.Lock()

    def prepare(self, count: int) -> list[Run]:
        """Prepares `count` runs (topics and jobs) in parallel."""
        runs = [Run(self.stack, self.suite, self.log) for _ in range(count)]
        with ThreadPoolExecutor(max_workers=min(count, 3) or 1) as pool:
            futures = [pool.submit(run.prepare) for run in runs]
        failed = [e for f in futures if (e := f.exception()) is not None]
        if failed:  # a run that failed cleaned itself up; the others are not used
            for run in runs:
                run.cleanup()
            raise failed[0]
        return runs

    def baseline(self, run: Run | None = None) -> RunResult:
        """The clean run (made once; other threads wait for it)."""
        with self._lock:
            return self._baseline_locked(run)

    def _baseline_locked(self, run: Run | None) -> RunResult:
        if self._baseline is None:
            self.log("baseline: clean run")
            self._baseline = (run or Run(self.stack, self.suite, self.log)).execute(
                self.items, self.suite.expected(self.truths), None, self.chunks, self.pause_s, self.timeout_s)
        return self._baseline

    def baseline_outcome(self) -> Outcome:
        """The clean run checked against the input's ground truth and the metrics' balance."""
        base = self.baseline()
        expected = self.suite.expected(self.truths)
        problems = [f"{name}: {len(base.outputs[name].records)} distinct keys, ground truth {want}"
                    for name, want in expected.items() if len(base.outputs[name].records) != want]
        problems += compare.metric_problems(base.segments, base.segments, False, self.suite.balance,
                                            across=self.suite.across)
        if base.restarts:
            problems.append(f"the clean run restarted {base.restarts} times")
        outputs = {n: {"distinct": len(o.records), "duplicates": o.duplicates} for n, o in base.outputs.items()}
        if base.stores is not None:
            outputs["stores"] = {"distinct": len(base.stores.entries), "duplicates": 0}
        return Outcome("baseline", not problems, base.duration_s, base.restarts, outputs,
                       compare.totals(base.segments), problems, base.events)

    def run_fault(self, name: str, fault: Fault, run: Run | None = None) -> Outcome:
        """Runs the input with the fault and compares with the baseline."""
        base = self.baseline()
        self.log(f"{name}: run with {fault.name}")
        expected = {n: len(o.records) for n, o in base.outputs.items()}
        got = (run or Run(self.stack, self.suite, self.log)).execute(
            self.items, expected, fault, self.chunks, self.pause_s, self.timeout_s, base.stores)
        diffs = [compare.diff_outputs(n, base.outputs[n], got.outputs[n]) for n in base.outputs]
        if base.stores is not None and got.stores is not None:
            diffs.append(compare.diff_outputs("stores", *comparable(base.stores, got.stores)))
        problems = [f"{d.output}: lost {len(d.lost)}, unexpected {len(d.unexpected)}, changed {len(d.changed)}, "
                    f"conflicting {len(d.conflicts)}" for d in diffs if not d.ok]
        problems += compare.metric_problems(base.segments, got.segments, got.restarts > 0, self.suite.balance,
                                            self.suite.compared_metric, self.suite.across, self.suite.bounded_metric)
        return Outcome(name, not problems, got.duration_s, got.restarts, {d.output: d.summary() for d in diffs},
                       compare.totals(got.segments), problems, got.events)

    def run_corpus(self, cases: list[Case], now_ms: int, run: Run | None = None) -> Outcome:
        """Runs the hostile corpus interleaved with the control stream (corpus on its own partition)."""
        self.log(f"{CORPUS}: {len(cases)} hostile records interleaved with the control stream")
        hostile = [Item(c.value, CORPUS_PARTITION, now_ms, f"hostile-{i}".encode()) for i, c in enumerate(cases)]
        items = _interleave(self.items, hostile)
        corpus_ids = {c.event_id for c in cases if c.expect in (VALID, DUPLICATE)}
        dead = sum(1 for c in cases if c.expect not in (VALID, DUPLICATE))
        truth = self.suite.expected(self.truths)
        expected = {"events.valid": truth["events.valid"] + len(corpus_ids), "events.dlq": truth["events.dlq"] + dead}
        got = (run or Run(self.stack, self.suite, self.log)).execute(
            items, expected, None, self.chunks, self.pause_s, self.timeout_s)
        base = self.baseline()
        hostile_pos = [pos for item, pos in zip(items, got.positions, strict=True)
                       if item.partition == CORPUS_PARTITION]
        valid, dlq = got.outputs["events.valid"], got.outputs["events.dlq"]
        split_valid = _split(valid, lambda key: key in corpus_ids)
        split_dlq = _split(dlq, lambda key: key.split(":")[-2] == str(CORPUS_PARTITION))
        expectations = [_expectation(i, c, pos) for i, (c, pos) in enumerate(zip(cases, hostile_pos, strict=True))]
        problems = compare.corpus_problems(expectations, split_valid[0], split_dlq[0], lambda r: r["reason"])
        control = [compare.diff_outputs("events.valid (control)", base.outputs["events.valid"], split_valid[1]),
                   compare.diff_outputs("events.dlq (control)", base.outputs["events.dlq"], split_dlq[1])]
        problems += [f"{d.output}: lost {len(d.lost)}, unexpected {len(d.unexpected)}, changed {len(d.changed)}"
                     for d in control if not d.ok]
        if got.restarts:
            problems.append(f"the job restarted {got.restarts} times on hostile input")
        problems += [p for _, seg in got.segments for p in compare.reconcile_problems(seg, self.suite.balance)]
        counts: dict[str, int] = {}
        for c in cases:
            counts[c.expect] = counts.get(c.expect, 0) + 1
        return Outcome(CORPUS, not problems, got.duration_s, got.restarts, {d.output: d.summary() for d in control},
                       compare.totals(got.segments), problems[:50], got.events,
                       {"cases": len(cases), "by_outcome": counts, "problem_count": len(problems)})


def _interleave(control: list[Item], hostile: list[Item]) -> list[Item]:
    """Spreads the hostile items evenly between the control items (orders within each kept)."""
    total = len(control) + len(hostile)
    out, c, h = [], 0, 0
    for i in range(total):
        if h < len(hostile) and (c >= len(control) or h * total <= i * len(hostile)):
            out.append(hostile[h])
            h += 1
        else:
            out.append(control[c])
            c += 1
    return out


def _split(out: compare.OutputIndex, mine: Callable[[str], bool]) -> tuple[compare.OutputIndex, compare.OutputIndex]:
    """Splits an output index by key: (keys where `mine`, the rest); copies are apportioned per key."""
    parts = (compare.OutputIndex(), compare.OutputIndex())
    for key, content in out.records.items():
        part = parts[0] if mine(key) else parts[1]
        part.records[key] = content
        part.copies += 1
    for key in out.conflicts:
        (parts[0] if mine(key) else parts[1]).conflicts.append(key)
    parts[1].copies += out.duplicates  # duplicates are not attributed; report them with the control stream
    return parts


def _expectation(i: int, case: Case, position: tuple[int, int]) -> compare.Expectation:
    content = None
    if case.expect == VALID and case.value is not None:
        content = orjson.loads(case.value)
        content["ts_ms"] = parse_event_time(content["ts"])
    partition, offset = position
    return compare.Expectation(f"#{i} {case.family}", case.expect, f"events:{partition}:{offset}", case.event_id,
                               content)


def run_scenarios(stack: Stack, suite: Suite, names: list[str], items: list[Item], truths: list[dict[str, Any]],
                  faults: dict[str, Fault], corpus_scale: int = 100, log: Callable[[str], None] = print,
                  on_outcome: Callable[[list[Outcome]], object] = lambda done: None,
                  **harness_options: Any) -> list[Outcome]:
    """Runs the baseline and the named scenarios; returns their outcomes (baseline first).

    The baseline and the corpus runs (both without a fault) are prepared in parallel and run side by side;
    then the fault scenarios run one after the other, each prepared when the previous one is cleaned up (a
    run of the pipeline suite holds four jobs: the TaskManager's slots hold two runs at a time).
    """
    harness = Harness(stack, suite, items, truths, log, **harness_options)
    with_corpus = CORPUS in names
    fault_names = [n for n in names if n != CORPUS]
    runs = harness.prepare(1 + int(with_corpus))
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        baseline_run, corpus_run = runs.pop(0), runs.pop(0) if with_corpus else None
        def clean() -> Outcome:
            harness.baseline(baseline_run)
            return harness.baseline_outcome()

        base = pool.submit(_guarded, "baseline", clean)
        if with_corpus:
            now_ms = int(time.time() * 1000)
            cases = hostile_corpus(now_ms, corpus_scale)
            corpus = pool.submit(_guarded, CORPUS, lambda: harness.run_corpus(cases, now_ms, corpus_run))
        outcomes.append(base.result())
        if with_corpus:
            outcomes.append(corpus.result())
    on_outcome(outcomes)
    for name in fault_names:
        outcomes.append(_guarded(name, partial(harness.run_fault, name, faults[name])))
        on_outcome(outcomes)
    return outcomes


def _guarded(name: str, fn: Callable[[], Outcome]) -> Outcome:
    """Runs a scenario; a crash of the harness itself becomes a failed outcome."""
    start = time.monotonic()
    try:
        return fn()
    except Exception as err:  # report and go on with the next scenario
        return Outcome(name, False, time.monotonic() - start, -1, problems=[f"{type(err).__name__}: {err}"])
