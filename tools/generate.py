"""Synthetic clickstream generator: seeded, realistic, with malformed records and redeliveries mixed in.

Library::

    from tools.generate import GeneratorConfig, generate, take
    for value, kind, truth in take(generate(GeneratorConfig(seed=7, users=500, origin_ms=...)), count=10_000):
        ...

CLI: ``python -m tools.generate --help`` (Kafka at a rate, Parquet files, replay; see tools/generate_cli.py).

`generate` is pure (no Kafka or pyarrow import) and deterministic: the same config gives the same bytes.
People (tools/journeys.py) produce valid events in event-time order; each is sent at its event time, or up to
`max_disorder_ms` later for a `disorder_fraction` of them, and records leave in send-time order, so a valid
event is never more than `max_disorder_ms` older than one sent before it. Malformed records
(tools/generate_faults.py) and redeliveries of recently sent events are sent "now" (at the event time of
the event being produced), so their share of all records is `bad_fraction` and `dup_fraction`.

Real time: the simulation's natural rate is `natural_rate()` records per simulated second, usually far below a
Kafka rate, so pacing the output at a fixed rate runs event time ahead of the wall clock. For runs of any
length, give it enough people instead (`for_rate`), leave the origin unset (it becomes the wall clock, rounded
up to a whole second, when the first record is drawn) and send each record when the wall clock reaches its
`sent_ms` (`write_kafka(..., max_lead_ms=0)`, CLI `--realtime`). Runs that differ only in the origin give the
same records at the same offsets from it (only the absolute timestamps in the values differ).

Each record comes with its ground truth:
    seq: its position in the output; sent_ms: its send time (use it as the Kafka record timestamp: it is
    the reference time the contract validator judges `ts` against); person: the true person; key: the
    person's first identifier (a Kafka key that keeps a person's records in one partition);
    valid and duplicate: event_id, type, ts_ms (duplicate also duplicate_of: the seq of the original);
    malformed: reason (the validator's reason code) and fault (which bug produced it).
"""

from __future__ import annotations

import heapq
import math
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

import orjson

from tools.generate_faults import FaultInjector, FaultLimits
from tools.journeys import Draft, JourneyConfig, Population
from udfs.contract import ValidatorConfig

VALID, MALFORMED, DUPLICATE = "valid", "malformed", "duplicate"
KINDS = (VALID, MALFORMED, DUPLICATE)
MAX_RECORD_BYTES = 4 * 1024 * 1024 - 16 * 1024  # under the `events` topic's 4 MiB max.message.bytes


class Record(NamedTuple):
    """One generated record: the raw value bytes, its kind and its ground truth."""

    value: bytes
    kind: str
    truth: dict[str, Any]


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything the output depends on.

    Attributes:
        seed: the random seed.
        users: number of person slots (people who ask to be erased are replaced).
        origin_ms: event time of the start, epoch ms; None means the wall clock when `generate` starts
            (rounded up to a whole second: see `resolved()`).
        bad_fraction: share of malformed records among all records.
        dup_fraction: share of redeliveries (exact copies of a recently sent valid record).
        max_disorder_ms: the most a valid event is sent after its event time.
        disorder_fraction: share of valid events sent late (by up to `max_disorder_ms`).
        dup_lookback: a redelivery repeats one of this many most recently sent valid records.
        max_event_bytes: the validator's size limit (malformed `too_large` records exceed it).
        max_record_bytes: the largest record produced (the topic's limit).
        journey: how people behave.
    """

    seed: int = 0
    users: int = 1000
    origin_ms: int | None = None
    bad_fraction: float = 0.01
    dup_fraction: float = 0.01
    max_disorder_ms: int = 3000
    disorder_fraction: float = 0.2
    dup_lookback: int = 200
    max_event_bytes: int = ValidatorConfig().max_event_bytes
    max_record_bytes: int = MAX_RECORD_BYTES
    journey: JourneyConfig = field(default_factory=JourneyConfig)

    def __post_init__(self) -> None:
        if min(self.bad_fraction, self.dup_fraction) < 0 or self.bad_fraction + self.dup_fraction >= 1:
            raise ValueError("bad_fraction and dup_fraction must be >= 0 and add up to less than 1")
        if not 0 <= self.disorder_fraction <= 1 or self.max_disorder_ms < 0 or self.dup_lookback < 1:
            raise ValueError("disorder_fraction must be in [0, 1], max_disorder_ms >= 0, dup_lookback >= 1")
        if self.origin_ms is not None and self.origin_ms < ValidatorConfig().min_ts_ms:
            raise ValueError("origin_ms is before the earliest event time the contract accepts (2000-01-01)")
        if self.max_record_bytes <= self.max_event_bytes:
            raise ValueError("max_record_bytes must exceed max_event_bytes")

    def resolved(self, now_ms: int | None = None) -> GeneratorConfig:
        """This config with the origin fixed: `now_ms` (or the wall clock) rounded up to a whole second.

        Whole seconds keep runs comparable: events at the same offsets from the origin (CRM syncs fall on
        whole seconds).
        """
        if self.origin_ms is not None:
            return self
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        return replace(self, origin_ms=-(-now // 1000) * 1000)

    def natural_rate(self) -> float:
        """Records (all kinds) per simulated second, from the origin on (estimated, within a few %)."""
        return self.users * self.journey.events_per_person_s() / (1 - self.bad_fraction - self.dup_fraction)

    def for_rate(self, rate: float) -> GeneratorConfig:
        """This config with the fewest people whose natural rate is at least `rate` records per second."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        return replace(self, users=math.ceil(rate * self.users / self.natural_rate()))

    def as_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict (for Parquet metadata and logs)."""
        return asdict(self)


def generate(config: GeneratorConfig) -> Iterator[Record]:
    """Yields records forever (slice with :func:`take` or `itertools.islice`).

    Args:
        config: the generator settings; an unset origin becomes the wall clock now.

    Yields:
        Records in send order (non-decreasing `truth["sent_ms"]`).
    """
    cfg = config.resolved()
    assert cfg.origin_ms is not None

    def stream(name: str) -> random.Random:  # independent streams: the fault mix leaves the journeys alone
        return random.Random(f"tagstream:{cfg.seed}:{name}")

    population = Population(stream("journeys"), cfg.users, cfg.origin_ms, cfg.journey)
    faults = FaultInjector(stream("faults"), FaultLimits(cfg.max_event_bytes, cfg.max_record_bytes))
    mix, late = stream("mix"), stream("disorder")
    extra_p = cfg.bad_fraction + cfg.dup_fraction
    pending: list[tuple[int, int, bytes, str, dict[str, Any]]] = []  # (sent_ms, order, value, kind, truth)
    recent: deque[Record] = deque(maxlen=cfg.dup_lookback)
    order = seq = 0

    for draft in population:
        while pending and pending[0][0] <= draft.ts_ms:  # nothing later can be sent before these
            sent_ms, _, value, kind, partial = heapq.heappop(pending)
            record = Record(value, kind, {"seq": seq, "sent_ms": sent_ms, **partial})
            seq += 1
            if kind == VALID:
                recent.append(record)
            yield record
        delay = int(late.random() * (cfg.max_disorder_ms + 1)) if late.random() < cfg.disorder_fraction else 0
        value = orjson.dumps(draft.event)
        heapq.heappush(pending, (draft.ts_ms + delay, order, value, VALID, _valid_truth(draft)))
        order += 1
        while mix.random() < extra_p:
            if mix.random() * extra_p < cfg.bad_fraction:
                value, fault = faults.make(draft.event, draft.ts_ms)
                partial = {"person": draft.person, "key": draft.key, "reason": fault.reason,
                           "fault": fault.name}
                heapq.heappush(pending, (draft.ts_ms, order, value, MALFORMED, partial))
            elif recent:
                original = mix.choice(recent)
                partial = {k: v for k, v in original.truth.items() if k not in ("seq", "sent_ms")}
                partial["duplicate_of"] = original.truth["seq"]
                heapq.heappush(pending, (draft.ts_ms, order, original.value, DUPLICATE, partial))
            order += 1


def _valid_truth(draft: Draft) -> dict[str, Any]:
    event = draft.event
    return {"person": draft.person, "key": draft.key, "event_id": event["event_id"], "type": event["type"],
            "ts_ms": draft.ts_ms}


def take(records: Iterable[Record], count: int | None = None, duration_s: float | None = None,
         clock: Callable[[], float] = time.monotonic) -> Iterator[Record]:
    """Passes records through until `count` records or `duration_s` seconds of wall time (None: no limit)."""
    if count is not None and count <= 0:
        return
    deadline = None if duration_s is None else clock() + duration_s
    for n, record in enumerate(records, 1):
        if deadline is not None and clock() >= deadline:
            return
        yield record
        if n == count:
            return


if __name__ == "__main__":
    from tools.generate_cli import main

    sys.exit(main())
