"""Comparing a faulted run with the clean run of the same input: outputs and metrics (pure functions).

What at-least-once allows: a record may appear on an output topic more than once across a restart (those
extra copies are counted and reported, never a failure). What it never allows: a record of the clean run
missing from the faulted run (loss), a record the clean run did not produce, or two different contents under
one idempotency key (after de-duplication by that key both runs must hold identical content).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

Normalized = tuple[str, Any]  # (idempotency key, content to compare)


@dataclass
class OutputIndex:
    """One output topic's records de-duplicated by idempotency key.

    Attributes:
        records: content by key (the first copy seen).
        copies: how many records were read (duplicates included).
        conflicts: keys that came with two different contents.
    """

    records: dict[str, Any] = field(default_factory=dict)
    copies: int = 0
    conflicts: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        """Extra copies beyond one per key (allowed under at-least-once)."""
        return self.copies - len(self.records)


def index(values: Iterable[Any], normalize: Callable[[Any], Normalized | None]) -> OutputIndex:
    """De-duplicates an output by idempotency key, noting conflicting contents (records normalized to None,
    e.g. tombstones, are left out)."""
    out = OutputIndex()
    for value in values:
        found = normalize(value)
        if found is None:
            continue
        key, content = found
        out.copies += 1
        if key not in out.records:
            out.records[key] = content
        elif out.records[key] != content and key not in out.conflicts:
            out.conflicts.append(key)
    return out


@dataclass
class OutputDiff:
    """How one output of the faulted run differs from the clean run's.

    Attributes:
        output: the logical topic.
        expected: distinct keys in the clean run.
        lost: keys of the clean run missing from the faulted run (never allowed).
        unexpected: keys only the faulted run has (never allowed).
        changed: keys whose content differs between the runs (never allowed).
        conflicts: keys with two contents within the faulted run (never allowed).
        duplicates: extra copies in the faulted run (allowed, reported).
        clean_duplicates: extra copies in the clean run (reported).
        changed_fields: for the changed keys, how often each top-level field differed (what to look at).
        changed_sample: a few changed records, only their differing fields, clean and faulted side by side.
    """

    output: str
    expected: int
    lost: list[str]
    unexpected: list[str]
    changed: list[str]
    conflicts: list[str]
    duplicates: int
    clean_duplicates: int
    changed_fields: dict[str, int] = field(default_factory=dict)
    changed_sample: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No loss, nothing extra, no content change, no conflict."""
        return not (self.lost or self.unexpected or self.changed or self.conflicts)

    def summary(self, sample: int = 5) -> dict[str, Any]:
        """A JSON-ready summary with counts and a few sample keys of each problem."""
        data = asdict(self)
        for name in ("lost", "unexpected", "changed", "conflicts"):
            data[name] = {"count": len(data[name]), "sample": sorted(data[name])[:sample]}
        data["ok"] = self.ok
        return data


def diff_outputs(output: str, clean: OutputIndex, faulted: OutputIndex, sample_size: int = 3) -> OutputDiff:
    """Compares the de-duplicated outputs of the clean and the faulted run (`sample_size`: changed records
    shown field by field in the diff)."""
    lost = [k for k in clean.records if k not in faulted.records]
    unexpected = [k for k in faulted.records if k not in clean.records]
    changed = [k for k, v in clean.records.items() if k in faulted.records and faulted.records[k] != v]
    counts: dict[str, int] = {}
    sample: list[dict[str, Any]] = []
    for key in changed:
        before, after = field_diff(clean.records[key], faulted.records[key])
        for name in before:
            counts[name] = counts.get(name, 0) + 1
        if len(sample) < sample_size:
            sample.append({"key": key, "clean": before, "faulted": after})
    return OutputDiff(output, len(clean.records), lost, unexpected, changed, list(faulted.conflicts),
                      faulted.duplicates, clean.duplicates, dict(sorted(counts.items())), sample)


_MISSING = "<missing>"


def field_diff(clean: Any, faulted: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The top-level fields in which two record contents differ, each side's values (`<missing>` where a side
    lacks the field); contents that are not mappings compare as one field `.`."""
    if not (isinstance(clean, dict) and isinstance(faulted, dict)):
        return ({".": clean}, {".": faulted}) if clean != faulted else ({}, {})
    names = sorted(n for n in clean.keys() | faulted.keys()
                   if clean.get(n, _MISSING) != faulted.get(n, _MISSING))
    return ({n: clean.get(n, _MISSING) for n in names}, {n: faulted.get(n, _MISSING) for n in names})


Counters = dict[str, int]


def reconcile_problems(counters: Counters, balance: Callable[[Counters], list[str]]) -> list[str]:
    """The suite's balance check on one job instance's counters (e.g. records_in = valid + ...)."""
    return balance(counters) if counters else ["no metrics read"]


Segments = list[tuple[str, Counters]]  # (job key, counters) per job instance


def totals(segments: Segments) -> Counters:
    """Sums counters per job over job instances, as `<job key>.<counter>`."""
    out: Counters = {}
    for job, counters in segments:
        for name, value in counters.items():
            out[f"{job}.{name}"] = out.get(f"{job}.{name}", 0) + value
    return out


def metric_problems(clean: Segments, segments: Segments, restarted: bool,
                    balance: Callable[[Counters], list[str]],
                    compared: Callable[[str], bool] = lambda name: True,
                    across: Callable[[Counters], list[str]] = lambda totals: [],
                    bounded: Callable[[str], bool] | None = None) -> list[str]:
    """Checks the faulted run's counters against the clean run's.

    Counters are not part of Flink state: after a failover they restart from zero and count again what is
    replayed from the checkpoint. So: every job instance (a submission, or the attempt running at the end)
    must balance by itself; without restarts the instances add up exactly to the clean run's counters (a
    stop-with-savepoint drains, so job 1 + job 2 = clean); after a restart the last attempt saw only a tail
    of the input, so each of its counters is at most the clean run's.

    Args:
        clean: the clean run's counters per job instance.
        segments: the faulted run's counters per job instance, in order.
        restarted: whether the faulted run's jobs restarted (failover).
        balance: the suite's balance check of one job instance.
        compared: which `<job>.<counter>` totals must match the clean run's (others depend on the order in
            which a job saw its input, e.g. the identity job's loop messages, and are only reported).
        across: checks between the jobs' totals (e.g. the identity job read every valid event), applied
            when nothing restarted (a restart resets counters).
        bounded: which totals stay at most the clean run's after a restart (default: `compared`). Only a
            job reading the recorded input qualifies: a job downstream of an at-least-once sink also counts
            the extra copies its input got.
    """
    problems = [f"{job} instance {i}: {p}" for i, (job, seg) in enumerate(segments)
                for p in reconcile_problems(seg, balance)]
    got, base = totals(segments), totals(clean)
    names = sorted(n for n in set(got) | set(base) if compared(n))
    if not restarted:
        problems += [f"{k}: {got.get(k, 0)} != clean {base.get(k, 0)}" for k in names
                     if got.get(k, 0) != base.get(k, 0)]
        problems += across(got)
    else:
        problems += [f"{k}: {got.get(k, 0)} > clean {base.get(k, 0)} after a restart" for k in names
                     if (bounded or compared)(k) and got.get(k, 0) > base.get(k, 0)]
    return problems


@dataclass(frozen=True)
class Expectation:
    """What one hostile input record must lead to.

    Attributes:
        label: for messages (family and position).
        expect: `valid`, `duplicate` or a dead-letter reason.
        dlq_key: the dead-letter record's key its position gives (dead-lettered cases).
        event_id: the accepted or repeated event id.
        content: the accepted event as `events.valid` must carry it (valid cases).
    """

    label: str
    expect: str
    dlq_key: str
    event_id: str | None = None
    content: Any = None


def corpus_problems(cases: list[Expectation], valid: OutputIndex, dead: OutputIndex,
                    reason_of: Callable[[Any], str]) -> list[str]:
    """Checks each hostile record's outcome: dead-lettered with its reason, accepted unchanged, or dropped.

    Args:
        cases: the expectations, in input order.
        valid: the accepted events of the corpus only, by event id.
        dead: the dead-letter records of the corpus only, by key.
        reason_of: reads the reason of a dead-letter record.
    """
    problems: list[str] = []
    dead_keys = {c.dlq_key for c in cases if c.expect not in ("valid", "duplicate")}
    valid_ids = {c.event_id for c in cases if c.expect in ("valid", "duplicate")}
    for case in cases:
        if case.expect == "valid":
            got = valid.records.get(str(case.event_id))
            if got is None:
                problems.append(f"{case.label}: valid event {case.event_id!r} missing")
            elif got != case.content:
                problems.append(f"{case.label}: valid event {case.event_id!r} changed")
        elif case.expect == "duplicate":
            if case.dlq_key in dead.records:
                problems.append(f"{case.label}: duplicate was dead-lettered")
        elif case.dlq_key not in dead.records:
            problems.append(f"{case.label}: expected dead letter ({case.expect}) missing")
        elif (reason := reason_of(dead.records[case.dlq_key])) != case.expect:
            problems.append(f"{case.label}: dead-lettered as {reason}, expected {case.expect}")
    problems += [f"unexpected dead letter {k}" for k in dead.records if k not in dead_keys]
    problems += [f"unexpected valid event {k!r}" for k in valid.records if k not in valid_ids]
    problems += [f"conflicting copies of {k!r}" for k in valid.conflicts + dead.conflicts]
    return problems
