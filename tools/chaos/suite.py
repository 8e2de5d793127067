"""The job suites a chaos scenario runs: jobs (tools.flink_jobs JobSpecs), their topics, output readers.

A suite is data: its jobs with the flags that point them at a run's private topics (and private stores),
and the outputs compared between runs, each read with its idempotency key. `ingest` is the ingest job
alone; `pipeline` is the whole suite of tools.flink_jobs.JOBS (ingest -> identity -> sessions, segments)
with Redis and DynamoDB (tools/chaos/stores.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from tools.chaos.compare import Counters, Normalized, OutputIndex, index
from tools.flink_jobs import JOBS, JobSpec
from udfs.contract import REASONS
from udfs.segments.reference import net_intervals
from udfs.sessions.records import Output
from udfs.sessions.reference import final_sessions

Topics = dict[str, str]  # logical topic name -> the run's private topic


@dataclass(frozen=True)
class SuiteJob:
    """A job of the suite and how to point it at a run's private topics.

    Attributes:
        spec: the deployable job.
        flags: extra job flags for the run's topics (and its consumer group).
        stores: the job writes Redis and DynamoDB (each run gives it its own; tools/chaos/stores.py).
    """

    spec: JobSpec
    flags: Callable[[Topics], list[str]]
    stores: bool = False


@dataclass(frozen=True)
class OutputReader:
    """How to read and compare one output topic.

    Attributes:
        topic: the logical topic name.
        normalize: (raw value, the run's topics) -> (idempotency key, content); removes what legitimately
            differs between runs (wall-clock stamps, private topic names). Records it returns None for
            (tombstones) are not compared.
        fold: turns the normalized records, in the order read, into what a consumer of the topic ends up with
            (e.g. the final sessions), compared instead of the records themselves; None: the records are.
    """

    topic: str
    normalize: Callable[[bytes, Topics], Normalized | None]
    fold: Callable[[list[Normalized]], list[Normalized]] | None = None
    resolve: Callable[[list[Normalized], Persons], list[Normalized]] | None = None

    def index(self, values: list[bytes], topics: Topics, persons: Persons | None = None) -> OutputIndex:
        """The records read, normalized (and folded, and resolved with the run's `persons`), de-duplicated
        by key."""
        found = [f for v in values if (f := self.normalize(v, topics)) is not None]
        if self.fold is not None:
            found = self.fold(found)
        if self.resolve is not None:
            found = self.resolve(found, persons or Persons())
        return index(found, lambda f: f)


@dataclass(frozen=True)
class Persons:
    """Where a run's person ids ended: each absorbed person's survivor, from the run's `person-merges`.

    Which person ids the identity job announces on the way depends on the order its stages saw their
    messages (a linking event handled before an earlier event of its other identifier mints a person that a
    `survivor_rekey` merges back); a restore replays in another order. Where every event ends does not
    (docs/identity.md: the final persons are a function of the events). Consumers follow the merges, so the
    harness compares each run's outputs resolved through that run's own merges.

    Attributes:
        pointer: absorbed person -> the survivor of the latest merge (by `ts`) that absorbed it, unless a
            later merge named it survivor (a re-key that swapped the two).
    """

    pointer: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_merges(cls, values: Sequence[bytes | None]) -> Persons:
        """Reads `person-merges` values (only kind `merge` moves a person; tombstones skipped)."""
        merges = [r for v in values if v is not None and (r := orjson.loads(v)).get("kind") == "merge"]
        pointer: dict[str, str] = {}
        for m in sorted(merges, key=lambda r: (r.get("ts", 0), r.get("idempotency_key", ""))):
            pointer[m["absorbed"]] = m["survivor"]
            pointer.pop(m["survivor"], None)
        return cls(pointer)

    def root(self, person: str) -> str:
        """The person `person` ended in (itself when never absorbed)."""
        seen = {person}
        while person in self.pointer and self.pointer[person] not in seen:
            person = self.pointer[person]
            seen.add(person)
        return person

    def absorbed(self, person: str) -> bool:
        """Whether `person` was merged into another one in this run."""
        return self.root(person) != person


@dataclass(frozen=True)
class Suite:
    """The jobs a scenario runs, end to end.

    Attributes:
        name: suite name.
        input_topic: the logical topic the recorded input is written to.
        topics: every logical topic the suite uses (private copies are made per run).
        jobs: the jobs, submitted in order.
        outputs: the outputs compared between runs.
        balance: problems with one job instance's counters (empty when they reconcile; the counters of
            every job of the suite are given, so a check must only look at its own names).
        expected: distinct keys per output for the input's ground truth (how long to wait for a clean run);
            outputs it does not name are read once the clean run's jobs are idle.
        setup: prepares a run's private topics before its jobs start (e.g. segment definitions).
        compared_metric: which `<job>.<counter>` totals must equal the clean run's (see
            `compare.metric_problems`); all by default.
        across: checks between the jobs' counter totals (`<job>.<counter>`) of a run without restarts.
        bounded_metric: which totals stay at most the clean run's after a restart (None: `compared_metric`).
        persons_topic: the topic whose merge records resolve person ids (:class:`Persons`) before comparing;
            its own records are not compared (which person ids a run mints on the way depends on the order).
    """

    name: str
    input_topic: str
    topics: tuple[str, ...]
    jobs: tuple[SuiteJob, ...]
    outputs: tuple[OutputReader, ...]
    balance: Callable[[Counters], list[str]]
    expected: Callable[[list[dict[str, Any]]], dict[str, int]]
    setup: Callable[[str, Topics], None] | None = None
    compared_metric: Callable[[str], bool] = lambda name: True
    across: Callable[[Counters], list[str]] = lambda totals: []
    bounded_metric: Callable[[str], bool] | None = None
    persons_topic: str | None = None

    @property
    def stores(self) -> bool:
        """Whether a job of the suite writes Redis and DynamoDB."""
        return any(job.stores for job in self.jobs)


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
    problems: list[str] = []
    if "records_in" not in c:
        return problems  # another job's counters
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

def _by_key(field: str) -> Callable[[bytes | None, Topics], Normalized | None]:
    """Reader of JSON change records whose idempotency key is the field `field` (tombstones skipped)."""
    def normalize(raw: bytes | None, topics: Topics) -> Normalized | None:
        if raw is None:
            return None
        record = orjson.loads(raw)
        return str(record[field]), record
    return normalize


def _profile_change(raw: bytes | None, topics: Topics) -> Normalized | None:
    """A `profiles` change record: one per (person, event that changed it); folded by :func:`_final_profiles`."""
    if raw is None:
        return None
    record = orjson.loads(raw)
    return f"{record['person_id']}:{record['event_id']}", record


def _session_record(raw: bytes | None, topics: Topics) -> Normalized | None:
    """A `sessions` record by session id (tombstones skipped); folded by :func:`_final_sessions`."""
    if raw is None:
        return None
    record = orjson.loads(raw)
    return str(record.get("session_id")), record


# What legitimately differs between two runs' final session records: the record kind and its idempotency
# key and version (a session closed on time in one run may be closed by a correction in the other: versions
# count changes, which depend on how a restart interleaved the input partitions) and what a correction says
# it replaced and why.
_SESSION_BOOKKEEPING = ("kind", "key", "version", "replaces", "cause")


def _final_sessions(records: list[Normalized]) -> list[Normalized]:
    """The sessions a consumer ends up with (`udfs.sessions.reference.final_sessions`: the latest record per
    session id; a correction removes the ids it replaces), by person and session, without bookkeeping.

    Intermediate records (`open`, `update`, and a session whose start a late event moved) depend on the
    order of arrival, which a restart changes; the final sessions do not (docs/sessions.md).
    """
    final = final_sessions(Output(str(r.get("kind")), key, r) for key, r in records)
    return [(f"{r.get('person_id')}:{sid}", {k: v for k, v in r.items() if k not in _SESSION_BOOKKEEPING})
            for sid, r in final.items()]


def _segment_change(raw: bytes | None, topics: Topics) -> Normalized | None:
    """A `segment-changes` record by person (tombstones skipped); folded by :func:`_memberships`."""
    if raw is None:
        return None
    record = orjson.loads(raw)
    return str(record.get("person_id")), record


def _memberships(records: list[Normalized]) -> list[Normalized]:
    """Each person's tag membership intervals as a consumer derives them from the change records
    (`udfs.segments.reference.net_intervals`: retracted changes and retractions dropped, the rest paired).

    Whether a change was a correction, and what a retraction cancelled, depends on when the job's watermark
    passed (a restart resets it); the resulting memberships do not. A person whose records do not pair up
    (an enter while in, an exit while out) yields an `invalid` entry, which differs from the clean run's.
    At-least-once copies of a change (same idempotency key) count once.
    """
    by_person: dict[str, dict[str, dict[str, Any]]] = {}
    for person, record in records:  # at-least-once copies share the key: keep one
        by_person.setdefault(person, {}).setdefault(str(record.get("key")), record)
    out: list[Normalized] = []
    for person, changes in by_person.items():
        try:
            intervals = net_intervals(changes.values())
        except AssertionError as err:
            out.append((f"{person}:invalid", str(err)))
            continue
        out += [(f"{person}:{tag}", [list(i) for i in spans]) for tag, spans in intervals.items()]
    return out


def _identified(raw: bytes | None, topics: Topics) -> Normalized | None:
    """An `events.identified` record: the event and the person it was annotated with."""
    if raw is None:
        return None
    record = orjson.loads(raw)
    return str(record.get("event_id")), str(record.get("person_id"))


def _final_person(records: list[Normalized], persons: Persons) -> list[Normalized]:
    """Each event's final person: its annotation resolved through the run's merges (copies of an event that
    end in one person are one record; copies ending in two persons conflict)."""
    return [(event_id, persons.root(str(person))) for event_id, person in records]


def _survivors_only(records: list[Normalized], persons: Persons) -> list[Normalized]:
    """Drops what a consumer keeps under a person id the run merged into another: the survivor holds it (a
    merge folds the absorbed person's open sessions and segment evidence into the survivor, which must then
    equal the clean run's); leftovers under the absorbed id (its closed sessions, its memberships until the
    merge) are announced by the merge record and depend on the order, like the merge itself."""
    # keys are `<person id>:<...>`; the identity job's person ids (`p-<hex>`) contain no colon
    return [(key, content) for key, content in records if not persons.absorbed(key.split(":", 1)[0])]


# A profile record's bookkeeping: its version orders writes within a run, and which event changed the profile
# last (`event_id`, `updated_ts`, `changed`) depends on the order; the profile itself does not (a CRDT).
_PROFILE_BOOKKEEPING = ("kind", "version", "updated_ts", "changed", "event_id")


def _final_profiles(records: list[Normalized], persons: Persons) -> list[Normalized]:
    """The profile a consumer keeps per final person: the latest record (by version) of each person the run
    did not merge away, without bookkeeping."""
    latest: dict[str, dict[str, Any]] = {}
    for _, record in records:
        person = str(record.get("person_id"))
        if persons.absorbed(person):
            continue
        if person not in latest or record.get("version", 0) >= latest[person].get("version", 0):
            latest[person] = record
    return [(person, {k: v for k, v in r.items() if k not in _PROFILE_BOOKKEEPING}) for person, r in latest.items()]


def _late_event(raw: bytes | None, topics: Topics) -> Normalized | None:
    """An `events.late` record by its key (`<job>:<event id>`): which event a job refused and why; the
    watermark it was refused at (and the text quoting it) depends on timing, not compared."""
    if raw is None:
        return None
    record = orjson.loads(raw)
    return str(record["key"]), {k: record.get(k) for k in ("job", "reason", "event_id", "ts_ms")}


def _pipeline_balance(c: Counters) -> list[str]:
    problems = _ingest_balance(c)
    if "events_in" in c and c.get("unreadable_events", 0):
        problems.append(f"identity: {c['unreadable_events']} unreadable events on events.valid")
    return problems


def _pipeline_across(t: Counters) -> list[str]:
    """The identity job read every valid event exactly once (without restarts, at-least-once adds no copy)."""
    if t.get("identity.events_in") != t.get("ingest.valid"):
        return [f"identity.events_in {t.get('identity.events_in')} != ingest.valid {t.get('ingest.valid')}"]
    return []


def _pipeline_setup(bootstrap: str, topics: Topics) -> None:
    """Publishes the example segment definitions to the run's (new, empty) definitions topic."""
    from tools.segments_cli import plan, publish
    from udfs.segments.definitions import EXAMPLES_DIR

    publish(bootstrap, topics["segment-definitions"], plan({}, sorted(EXAMPLES_DIR.glob("*.yaml")), prune=False))


# Event time moves only with the input in chaos runs (--no-idle-clock): the idle clock follows the wall
# clock, which differs between the clean and the faulted run. For the same reason a partition of the
# sessions and segments jobs' input counts as idle only after 30 s of silence (--idle-timeout, default 1 s):
# with 1 s, the pause between input chunks or a stall (an outage's backpressure) marked partitions idle, and
# whichever partition resumed first moved the watermark alone, so events of the others became late in one
# run and not in the other (segment memberships differed even between runs without a restart).
#
# The control stream replays two hours of event time in a minute or two of wall clock (~70x): a record the
# identity job delays by a few checkpoints (a linking event's loop hops, each committed with a checkpoint)
# arrives minutes of event time behind its partition, beyond the jobs' allowed lateness (5 and 10 min), and
# which records that hits depends on checkpoint timing. In real time the same delay is seconds. The chaos
# jobs' lateness therefore covers the whole input (--lateness 3h): every event is placed, and the final
# sessions and memberships do not depend on arrival order (docs/sessions.md, docs/segments.md).
_EVENT_TIME = ["--no-idle-clock", "--idle-timeout", "30s", "--lateness", "3h"]
PIPELINE = Suite(
    name="pipeline",
    input_topic="events",
    topics=("events", "events.valid", "events.dlq", "identity-loop", "events.identified", "person-merges",
            "profiles", "erasures", "sessions", "sessions.handoff", "events.late", "segment-changes",
            "segment-definitions", "segments.handoff"),
    jobs=(
        INGEST.jobs[0],
        SuiteJob(_job("identity"), lambda t: [
            "--input-topic", t["events.valid"], "--loop-topic", t["identity-loop"],
            "--topic", f"identified={t['events.identified']}", "--topic", f"merges={t['person-merges']}",
            "--topic", f"review={t['person-merges']}", "--topic", f"profiles={t['profiles']}",
            "--topic", f"erasures={t['erasures']}", "--group-id", t["events.valid"] + ".identity"], stores=True),
        SuiteJob(_job("sessions"), lambda t: [
            "--events-topic", t["events.identified"], "--merges-topic", t["person-merges"],
            "--sessions-topic", t["sessions"], "--late-topic", t["events.late"],
            "--handoff-topic", t["sessions.handoff"], "--group-id", t["events.valid"] + ".sessions",
            *_EVENT_TIME], stores=True),
        SuiteJob(_job("segments"), lambda t: [
            "--input-topic", t["events.identified"], "--definitions-topic", t["segment-definitions"],
            "--changes-topic", t["segment-changes"], "--late-topic", t["events.late"],
            "--merges-topic", t["person-merges"], "--handoff-topic", t["segments.handoff"],
            "--group-id", t["events.valid"] + ".segments", *_EVENT_TIME], stores=True),
    ),
    outputs=(*INGEST.outputs, OutputReader("events.identified", _identified, resolve=_final_person),
             OutputReader("profiles", _profile_change, resolve=_final_profiles),
             OutputReader("erasures", _by_key("idempotency_key")),
             OutputReader("sessions", _session_record, _final_sessions, _survivors_only),
             OutputReader("segment-changes", _segment_change, _memberships, _survivors_only),
             OutputReader("events.late", _late_event)),
    persons_topic="person-merges",
    balance=_pipeline_balance,
    expected=_ingest_expected,
    setup=_pipeline_setup,
    # Counters that do not depend on the order the jobs saw their input (the identity job's loop messages,
    # merges on the way and store outcomes do; sessions and segments count corrections and timers).
    compared_metric=lambda name: name.startswith("ingest.") or name in ("identity.events_in", "identity.identified"),
    across=_pipeline_across,
    bounded_metric=lambda name: name.startswith("ingest."),  # the others also count at-least-once copies
)

SUITES: dict[str, Suite] = {INGEST.name: INGEST, PIPELINE.name: PIPELINE}
