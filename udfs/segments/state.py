"""A person's state in the segments job: evidence, person-level timelines, and what was emitted per tag.

Plain Python objects (picklable) that the Flink wrapper keeps in one keyed ValueState per person.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Any, NamedTuple

from udfs.segments.conditions import Key, Store
from udfs.segments.matching import Ev
from udfs.segments.timelines import ConsentTimeline, TraitTimeline

NEG_INF = -(1 << 62)
POS_INF = 1 << 62


class Point(NamedTuple):
    """One emitted change: at `ts` the tag entered (`enter`) or exited; `key` is its idempotency key."""

    ts: int
    enter: bool
    key: str
    version: str

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled with every state write: built by tuple.__new__ (C) instead of the generated __new__
        return tuple.__new__, (Point, tuple(self))


class Instance:
    """One tag of one segment for one person: the emitted timeline and the scheduled next change.

    Attributes:
        key: the parameter binding.
        tag / params: rendered tag and binding.
        points: emitted changes at or after the lateness horizon (older ones folded into `base`).
        base / base_entered: value and entry time before the first kept point.
        scheduled: next time the value changes by time alone (None: never); `exact` when it is a real
            change rather than a bound from `max_flip_steps`.
        queued: time of this tag's earliest entry in the person's timer heap.
        retracted: `(ts, enter)` -> how many emitted records for it were retracted (keeps keys unique).
        written: what the stores last got: `(True, entered_at, expires_at, version)`, or None when absent.
    """

    __slots__ = ("base", "base_entered", "exact", "key", "params", "points", "queued", "retracted",
                 "scheduled", "tag", "written")

    def __init__(self, key: Key, tag: str, params: dict[str, Any]) -> None:
        self.key = key
        self.tag = tag
        self.params = params
        self.points: list[Point] = []
        self.base = False
        self.base_entered: int | None = None
        self.scheduled: int | None = None
        self.exact = True
        self.queued: int | None = None
        self.retracted: dict[tuple[int, bool], int] = {}
        self.written: tuple[bool, int | None, int | None, str] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as one tuple of the fields (the person's state is pickled on every write)."""
        return _instance, (self.key, self.tag, self.params, self.points, self.base, self.base_entered,
                           self.scheduled, self.exact, self.queued, self.retracted, self.written)

    def value_before(self, t: int) -> bool:
        """The emitted value just before `t`."""
        i = bisect_left(self.points, (t,))
        return self.points[i - 1].enter if i else self.base

    @property
    def active(self) -> bool:
        """The emitted value now."""
        return self.points[-1].enter if self.points else self.base

    @property
    def entered_at(self) -> int | None:
        """Entry time of the current membership (None when not a member)."""
        if not self.active:
            return None
        return self.points[-1].ts if self.points else self.base_entered

    def between(self, a: int, b: int) -> list[Point]:
        """Emitted points with `a <= ts <= b`."""
        return [p for p in self.points[bisect_left(self.points, (a,)):] if p.ts <= b]

    def replace(self, a: int, b: int, points: list[Point]) -> None:
        """Replaces the emitted points in `[a, b]`."""
        lo = bisect_left(self.points, (a,))
        hi = bisect_left(self.points, (b + 1,))
        self.points[lo:hi] = points

    def prune(self, horizon: int) -> None:
        """Folds points before `horizon` into the base value."""
        k = bisect_left(self.points, (horizon,))
        if k:
            last = self.points[k - 1]
            self.base = last.enter
            self.base_entered = last.ts if last.enter else None
            del self.points[:k]
        if self.retracted:
            self.retracted = {k2: n for k2, n in self.retracted.items() if k2[0] >= horizon}

    def idle(self) -> bool:
        """Whether nothing about this tag needs remembering."""
        return (not self.points and not self.base and self.scheduled is None and not self.retracted
                and self.written is None)


def _instance(key: Key, tag: str, params: dict[str, Any], points: list[Point], base: bool,
              base_entered: int | None, scheduled: int | None, exact: bool, queued: int | None,
              retracted: dict[tuple[int, bool], int], written: tuple[bool, int | None, int | None, str] | None
              ) -> Instance:
    """Inverse of `Instance.__reduce__`."""
    instance = Instance.__new__(Instance)
    instance.key, instance.tag, instance.params, instance.points = key, tag, params, points
    instance.base, instance.base_entered, instance.scheduled, instance.exact = base, base_entered, scheduled, exact
    instance.queued, instance.retracted, instance.written = queued, retracted, written
    return instance


class PersonState:
    """Everything the segments core keeps for one person.

    Attributes:
        person_id: the key.
        catalog_version: the definition set this state was last reconciled with.
        frontier: event time up to which changes were emitted.
        watermark: highest watermark seen (the lateness horizon is `watermark - allowed_lateness_ms`).
        first_seen: time of the person's earliest event.
        seen: event id -> time, for de-duplication (as long as the event is retained).
        history: raw events per type, in time order, for hot reload and consent re-evaluation.
        unconsented: `(ts, type, id)` of retained events made while consent was denied (dropped at the
            horizon).
        consent / traits: person-level timelines.
        stores: leaf id -> binding -> evidence.
        instances: segment name -> binding -> emitted timeline.
        active_from: segment name -> event time from which a hot-reloaded definition applies.
        heap: `(time, seq, segment, binding)` scheduled changes (stale entries are skipped).
        members: segment -> bindings of the tags currently held.
        decisions: slot -> the placement decision last written.
        view_written: whether a current-state view was ever written for the person.
        version: version of the last store writes: `max(previous + 1, frontier * 1000)`, so it grows
            strictly per person (the store guard skips versions not above the stored one) and follows
            event time (a fresh state after erasure or loss still writes above the old versions).
    """

    def __init__(self, person_id: str, catalog_version: str, default_consent: bool) -> None:
        self.person_id = person_id
        self.catalog_version = catalog_version
        self.frontier = NEG_INF
        self.watermark = NEG_INF
        self.first_seen = POS_INF
        self.seen: dict[str, int] = {}
        self.history: dict[str, list[tuple[int, str, Ev]]] = {}
        self.unconsented: list[tuple[int, str, str]] = []
        self.consent = ConsentTimeline(default_consent)
        self.traits = TraitTimeline()
        self.stores: dict[str, dict[Key, Store]] = {}
        self.instances: dict[str, dict[Key, Instance]] = {}
        self.active_from: dict[str, int] = {}
        self.heap: list[tuple[int, int, str, Key]] = []
        self.members: dict[str, dict[Key, None]] = {}
        self.decisions: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self.evicted_at = NEG_INF
        self.view_written = False
        self.version = 0

    def remember(self, ev: Ev) -> None:
        """Adds a raw event to the history and the de-duplication index."""
        self.seen[ev.id] = ev.ts
        insort(self.history.setdefault(ev.type, []), (ev.ts, ev.id, ev))

    def retained(self) -> list[Ev]:
        """Every retained raw event in `(ts, id)` order."""
        rows = [row for rows in self.history.values() for row in rows]
        rows.sort(key=lambda r: (r[0], r[1]))
        return [r[2] for r in rows]

    def forget(self, etype: str, ts: int, event_id: str) -> None:
        """Drops one raw event from the history."""
        rows = self.history.get(etype, [])
        i = bisect_left(rows, (ts, event_id))
        if i < len(rows) and rows[i][1] == event_id:
            del rows[i]
            self.seen.pop(event_id, None)

    def next_version(self) -> int:
        """A store-write version above every earlier one of this person."""
        self.version = max(self.version + 1, self.frontier * 1000)
        return self.version

    def horizon(self, lateness: int) -> int:
        """Events before this time are late; nothing before it can change any more."""
        return self.watermark - lateness if self.watermark > NEG_INF else NEG_INF
