"""Historical events for the segments backfill: validated like the ingest job does, cut at the run's end
(`as_of`), and put in event-time order (pure Python; `jobs/segments_backfill.py` reads the Parquet files).

The live job reads `events.valid`, which the ingest job has validated (`udfs/contract.py`); history from
files has not been, so the same validator runs here and every rejected record is counted by reason instead
of reaching the engine. Events after `as_of` belong to the live run and are left out (counted). Sorting by
event time means no event of the history is late, whatever the files' order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from udfs.contract import EventValidator, Rejected

EMPTY = "empty_value"
AFTER_AS_OF = "after_as_of"


@dataclass
class History:
    """Prepared history.

    Attributes:
        events: `(event JSON with ts_ms, ts_ms)` in event-time order (ties: event id).
        read: records read.
        skipped: records left out by reason: the validator's reasons, `empty_value`, `after_as_of`.
    """

    events: list[tuple[bytes, int]] = field(default_factory=list)
    read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line for the operator: counts read, kept and skipped by reason."""
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items())) or "none"
        return f"{self.read} records read, {len(self.events)} events kept, skipped: {reasons}"


def prepare_history(values: Iterable[bytes | str | None], as_of_ms: int,
                    validator: EventValidator | None = None) -> History:
    """Validates raw event values and keeps those at or before `as_of_ms`, in event-time order.

    Args:
        values: raw records (the `value` column of a Parquet file: bytes or text).
        as_of_ms: the end of the history (epoch ms); also the reference of the validator's future-time bound.
        validator: the event contract's validator (default: a new one).
    """
    validator = validator or EventValidator()
    history = History()
    kept: list[tuple[int, str, bytes]] = []
    for value in values:
        history.read += 1
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value or b"")
        if not raw:
            history.skipped[EMPTY] += 1
            continue
        checked = validator.check(raw, as_of_ms)
        if isinstance(checked, Rejected):
            history.skipped[checked.reason] += 1
        elif checked.ts_ms > as_of_ms:
            history.skipped[AFTER_AS_OF] += 1
        else:
            kept.append((checked.ts_ms, checked.event_id, checked.to_json()))
    kept.sort(key=lambda k: (k[0], k[1]))
    history.events = [(raw, ts) for ts, _, raw in kept]
    return history
