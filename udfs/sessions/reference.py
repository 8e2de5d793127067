"""Batch reference sessionization, and helpers to replay a stream through the `Sessionizer`.

Used by the unit tests and meant for the later check against Flink SQL running in the JVM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from udfs.sessions.aggregate import event_time
from udfs.sessions.model import PersonState
from udfs.sessions.records import CORRECTION, LATE, Output
from udfs.sessions.sessionizer import Sessionizer


@dataclass(frozen=True)
class RefSession:
    """A session of the batch reference: first and last event time, and its event ids in time order."""

    start_ms: int
    last_ms: int
    event_ids: tuple[str, ...]


def reference_sessions(events: Iterable[Mapping[str, Any]], gap_ms: int, *,
                       max_duration_ms: int | None = None,
                       day_of: Callable[[int], str | None] | None = None) -> list[RefSession]:
    """Sessionizes one person's events in batch: the simplest correct definition.

    Events are de-duplicated by event_id, sorted by (ts_ms, event_id), and a new session starts at an event
    more than `gap_ms` after the previous one (and, when given, more than `max_duration_ms` after the
    session's start, or on another `day_of` day).

    The gap edge matches Flink. Flink's session windows (DataStream `EventTimeSessionWindows`, SQL `SESSION`
    window TVF through `SessionUnsliceAssigner` -> table-runtime `SessionWindowAssigner`, and the legacy
    `GROUP BY SESSION`) give each row the window [ts, ts + gap) and merge windows that
    `TimeWindow.intersects`, which is `start <= other.end && end >= other.start`: windows that merely touch
    merge ("or if this window is just after or before the given window", and Flink's own tests merge
    [0,1) with [1,2)). So two events exactly `gap` apart are in the SAME session, and `gap + 1` ms apart
    are in different ones; window_start is the first row time and window_end = last row time + gap.
    Checked with PyFlink 2.2.1 (`SESSION(TABLE t PARTITION BY p, DESCRIPTOR(ts), INTERVAL '10' SECOND)`):
    rows at 0 s and 10 s form one window [0 s, 20 s); a row at 20.001 s opens another.

    One streaming caveat: Flink fires a session window when the watermark reaches last + gap - 1 and, with
    zero allowed lateness, drops it, so a row at exactly last + gap arriving after that watermark starts a
    new session there. The `Sessionizer` closes at watermark >= last + gap instead (the first watermark at
    which no on-time row can still join), so it agrees with the batch rule above. A JVM comparison should
    use watermarks lagging the data (bounded out-of-orderness) or batch mode.
    """
    unique: dict[str, Mapping[str, Any]] = {}
    for event in events:
        unique.setdefault(str(event["event_id"]), event)
    ordered = sorted(unique.values(), key=lambda e: (event_time(e), str(e["event_id"])))
    sessions: list[RefSession] = []
    current_day: str | None = None
    for event in ordered:
        ts, event_id = event_time(event), str(event["event_id"])
        day = day_of(ts) if day_of else None
        last = sessions[-1] if sessions else None
        if (last is None or ts - last.last_ms > gap_ms or day != current_day
                or (max_duration_ms is not None and ts - last.start_ms > max_duration_ms)):
            sessions.append(RefSession(ts, ts, (event_id,)))
        else:
            sessions[-1] = RefSession(last.start_ms, ts, (*last.event_ids, event_id))
        current_day = day
    return sessions


def make_event(event_id: str, ts_ms: int, etype: str = "page_view", *, channel: str | None = "web",
               **props: Any) -> dict[str, Any]:
    """Returns a minimal valid `events.valid` record (with `ts_ms`), for tests and replays."""
    event: dict[str, Any] = {"event_id": event_id, "type": etype, "ts": ts_ms, "ts_ms": ts_ms,
                             "ids": {"anonymous_id": "a-1"}, "props": props}
    if channel is not None:
        event["channel"] = channel
    return event


def replay(sessionizer: Sessionizer, state: PersonState,
           deliveries: Iterable[tuple[Mapping[str, Any] | None, int]],
           final_time: int | None = None) -> tuple[PersonState, list[Output]]:
    """Feeds (event, watermark) pairs to the sessionizer; a None event only advances time to the watermark.

    Returns:
        The final state and all outputs in order (after `advance(final_time)` when given).
    """
    outputs: list[Output] = []
    for event, watermark in deliveries:
        step = (sessionizer.advance(state, watermark) if event is None
                else sessionizer.on_event(state, event, watermark))
        state = step.state
        outputs.extend(step.outputs)
    if final_time is not None:
        step = sessionizer.advance(state, final_time)
        state = step.state
        outputs.extend(step.outputs)
    return state, outputs


def final_sessions(outputs: Iterable[Output]) -> dict[str, Mapping[str, Any]]:
    """Applies session records in order, as a consumer would: the latest record per session id wins and a
    correction removes the sessions it replaces. Returns session id -> latest record."""
    latest: dict[str, Mapping[str, Any]] = {}
    for output in outputs:
        if output.kind == LATE:
            continue
        if output.kind == CORRECTION:
            for replaced in output.record["replaces"]:
                latest.pop(replaced["session_id"], None)
        latest[output.record["session_id"]] = output.record
    return latest
