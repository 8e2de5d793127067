"""The job suite a chaos scenario runs: jobs (tools.flink_jobs JobSpecs), their topics, output readers.

A suite is data: extend `SUITES` with the sessions, identity and segments jobs as they land (their
topics, flags and output readers with an idempotency key each); the scenarios need no change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tools.chaos.compare import Counters, Normalized
from tools.flink_jobs import JOBS, JobSpec
from udfs.contract import REASONS

Topics = dict[str, str]  # logical topic name -> the run's private topic


@dataclass(frozen=True)
class SuiteJob:
    """A job of the suite and how to point it at a run's private topics.

    Attributes:
        spec: the deployable job.
        flags: extra job flags for the run's topics (and its consumer group).
    """

    spec: JobSpec
    flags: Callable[[Topics], list[str]]


@dataclass(frozen=True)
class OutputReader:
    """How to read and compare one output topic.

    Attributes:
        topic: the logical topic name.
        normalize: (raw value, the run's topics) -> (idempotency key, content); removes what legitimately
            differs between runs (wall-clock stamps, private topic names).
    """

    topic: str
    normalize: Callable[[bytes, Topics], Normalized]


@dataclass(frozen=True)
class Suite:
    """The jobs a scenario runs, end to end.

    Attributes:
        name: suite name.
        input_topic: the logical topic the recorded input is written to.
        topics: every logical topic the suite uses (private copies are made per run).
        jobs: the jobs, submitted in order.
        outputs: the outputs compared between runs.
        balance: problems with one job instance's counters (empty when they reconcile).
        expected: distinct keys per output for the input's ground truth (how long to wait for a clean run).
    """

    name: str
    input_topic: str
    topics: tuple[str, ...]
    jobs: tuple[SuiteJob, ...]
    outputs: tuple[OutputReader, ...]
    balance: Callable[[Counters], list[str]]
    expected: Callable[[list[dict[str, Any]]], dict[str, int]]


def _job(key: str) -> JobSpec:
    return next(j for j in JOBS if j.key == key)


def _valid_event(raw: bytes, topics: Topics) -> Normalized:
    event = orjson.loads(raw)
    return str(event["event_id"]), event


def _dead_letter(raw: bytes, topics: Topics) -> Normalized:
    record = orjson.loads(raw)
    record.pop("dead_lettered_at", None)  # wall clock
    logical = {private: name for name, private in topics.items()}
    origin = record.get("origin") or {}
    origin["topic"] = logical.get(str(origin.get("topic")), origin.get("topic"))
    topic, partition, offset = str(record["dlq_id"]).rsplit(":", 2)
    record["dlq_id"] = f"{logical.get(topic, topic)}:{partition}:{offset}"
    return record["dlq_id"], record


def _ingest_balance(c: Counters) -> list[str]:
    problems = []
    if c.get("records_in", 0) != c.get("valid", 0) + c.get("duplicates", 0) + c.get("dead_lettered", 0):
        problems.append(f"records_in {c.get('records_in')} != valid {c.get('valid')} + duplicates "
                        f"{c.get('duplicates')} + dead_lettered {c.get('dead_lettered')}")
    by_reason = sum(c.get(f"dead_lettered_{r}", 0) for r in REASONS)
    if by_reason != c.get("dead_lettered", 0):
        problems.append(f"dead_lettered {c.get('dead_lettered')} != sum per reason {by_reason}")
    return problems


def _ingest_expected(truths: list[dict[str, Any]]) -> dict[str, int]:
    valid = {t["event_id"] for t in truths if "event_id" in t and "reason" not in t}
    return {"events.valid": len(valid), "events.dlq": sum(1 for t in truths if "reason" in t)}


INGEST = Suite(
    name="ingest",
    input_topic="events",
    topics=("events", "events.valid", "events.dlq"),
    jobs=(SuiteJob(_job("ingest"), lambda t: ["--input-topic", t["events"], "--valid-topic", t["events.valid"],
                                               "--dlq-topic", t["events.dlq"], "--group-id", t["events"]]),),
    outputs=(OutputReader("events.valid", _valid_event), OutputReader("events.dlq", _dead_letter)),
    balance=_ingest_balance,
    expected=_ingest_expected,
)

SUITES: dict[str, Suite] = {INGEST.name: INGEST}
