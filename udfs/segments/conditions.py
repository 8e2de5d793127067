"""Compiled conditions: each node answers, for one person and one parameter binding, "does it hold at `t`?"
and "when may that answer next change?" in O(log n) from the person's evidence, without rescans.

A condition's value at `t` depends only on evidence at or before `t` (causality), which is what lets the
engine re-evaluate any past time exactly when a late event arrives. `next_change(t)` returns a time `> t`
at which the value may change (never skipping a real change), or None when nothing can change by time
alone; for the common shapes it is the exact exit time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

from udfs.segments.config import format_duration
from udfs.segments.matching import (
    MISSING,
    Ev,
    Match,
    check_predicate,
    describe_predicate,
    distinct_value,
    micro_units,
)
from udfs.segments.timelines import ConsentTimeline, TraitTimeline
from udfs.segments.windows import PresenceIntervals, Series

Key = tuple[Any, ...]
UNBOUND: Key = ()


class Store:
    """A person's evidence for one leaf condition and one parameter binding."""

    __slots__ = ("done", "intervals", "slots")

    def __init__(self, n_slots: int) -> None:
        self.slots: list[Series | None] = [None] * n_slots
        self.intervals: PresenceIntervals | None = None
        self.done: Series | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as a tuple of the fields (the person's state is pickled on every write)."""
        return _store, (self.slots, self.intervals, self.done)

    def empty(self) -> bool:
        """Whether no evidence is left."""
        for series in self.slots:
            if series is not None and len(series):
                return False
        return (self.intervals is None or not len(self.intervals)) and (self.done is None or not len(self.done))


def _store(slots: list[Series | None], intervals: PresenceIntervals | None, done: Series | None) -> Store:
    """Inverse of `Store.__reduce__`."""
    store = Store.__new__(Store)
    store.slots, store.intervals, store.done = slots, intervals, done
    return store


class Ctx(Protocol):
    """What conditions read from a person's state."""

    stores: dict[str, dict[Key, Store]]
    first_seen: int
    traits: TraitTimeline
    consent: ConsentTimeline


class Slot(NamedTuple):
    """One event filter of a leaf; `fields`: the props bound to the segment's parameters (None: unbound)."""

    match: Match
    fields: tuple[str, ...] | None

    @property
    def text(self) -> str:
        """Human-readable filter, with bound fields as `field={field}`."""
        if not self.fields:
            return self.match.text
        bound = ", ".join(f"{f}={{{f}}}" for f in self.fields)
        text = self.match.text
        return text[:-1] + f", {bound}]" if text.endswith("]") else f"{text}[{bound}]"


def _earliest(*times: int | None) -> int | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


class Node:
    """A condition over one person's evidence, for one parameter binding."""

    __slots__ = ()

    def value(self, ctx: Ctx, key: Key, t: int) -> bool:
        """Whether the condition holds at `t`."""
        raise NotImplementedError

    def next_change(self, ctx: Ctx, key: Key, t: int) -> int | None:
        """A time `> t` at which the value may change, or None."""
        raise NotImplementedError

    def explain(self, ctx: Ctx, key: Key, t: int, out: list[dict[str, Any]], limit: int) -> None:
        """Appends the evidence of each leaf at `t`."""
        for child in self.children():
            child.explain(ctx, key, t, out, limit)

    def children(self) -> tuple[Node, ...]:
        """Direct sub-conditions."""
        return ()

    def walk(self) -> Iterator[Node]:
        """This node and all nodes below it."""
        yield self
        for child in self.children():
            yield from child.walk()

    def text(self) -> str:
        """Human-readable form."""
        raise NotImplementedError


class Leaf(Node):
    """A condition over evidence that the engine feeds event by event.

    Attributes:
        id: canonical text; equal leaves of different definitions share one store per person.
        slots: the event filters whose matches are evidence.
        reach: how far back evidence can matter (ms); evidence older than horizon - reach is evicted.
    """

    __slots__ = ("id", "reach", "slots")

    def __init__(self, lid: str, slots: tuple[Slot, ...], reach: int) -> None:
        self.id = lid
        self.slots = slots
        self.reach = reach

    def bound(self) -> bool:
        """Whether some filter binds the segment's parameters."""
        return any(s.fields is not None for s in self.slots)

    def store(self, ctx: Ctx, key: Key) -> Store | None:
        """The store holding this leaf's per-binding data for `key`."""
        per_key = ctx.stores.get(self.id)
        return None if per_key is None else per_key.get(key)

    def series(self, ctx: Ctx, key: Key, i: int) -> Series | None:
        """The evidence of filter `i` for the binding `key`."""
        per_key = ctx.stores.get(self.id)
        if per_key is None:
            return None
        store = per_key.get(key if self.slots[i].fields is not None else UNBOUND)
        return None if store is None else store.slots[i]

    def ingest(self, ctx: Ctx, i: int, key: Key, ev: Ev) -> list[Key] | None:
        """Adds an event matched by filter `i` under `key`.

        Returns:
            None if the event is not evidence after all (e.g. no numeric value), `[]` when every binding may
            be affected, else the affected bindings.
        """
        store = self._store_for(ctx, key)
        series = store.slots[i]
        if series is None:
            series = store.slots[i] = self._new_series(i)
        series.add(ev.ts, ev.id)
        return [] if key == UNBOUND else [key]

    def _store_for(self, ctx: Ctx, key: Key) -> Store:
        per_key = ctx.stores.get(self.id)
        if per_key is None:
            per_key = ctx.stores[self.id] = {}
        store = per_key.get(key)
        if store is None:
            store = per_key[key] = Store(len(self.slots))
        return store

    def _new_series(self, i: int) -> Series:
        return Series()

    def evict(self, store: Store, horizon: int) -> None:
        """Forgets evidence that cannot matter at or after `horizon`."""
        for series in store.slots:
            if series is not None:
                series.evict_through(horizon - self.reach)

    def leaf_info(self, value: Any, ids: list[str]) -> dict[str, Any]:
        """The explanation record of this leaf."""
        return {"condition": self.text(), "value": value, "event_ids": ids}


class WindowLeaf(Leaf):
    """count / sum / distinct of matching events in the sliding window `(t - width, t]`, compared `>= need`.

    `sum` values are exact integer millionths (`micro_units`); `gt` thresholds are compiled to `gte + 1`.
    """

    __slots__ = ("agg", "field", "need", "shown", "width")

    def __init__(self, lid: str, agg: str, slot: Slot, width: int, need: int, field: str | None,
                 shown: str) -> None:
        super().__init__(lid, (slot,), width)
        self.agg = agg
        self.width = width
        self.need = need
        self.field = field
        self.shown = shown

    def _new_series(self, i: int) -> Series:
        return Series(weighted=self.agg == "sum")

    def ingest(self, ctx: Ctx, i: int, key: Key, ev: Ev) -> list[Key] | None:
        """Adds the event (with its value for sum / distinct)."""
        if self.agg == "count":
            return super().ingest(ctx, i, key, ev)
        raw = ev.props.get(self.field) if self.field else None
        store = self._store_for(ctx, key)
        if self.agg == "sum":
            amount = micro_units(raw)
            if amount is None:
                return None
            series = store.slots[0]
            if series is None:
                series = store.slots[0] = Series(weighted=True)
            series.add(ev.ts, ev.id, amount)
        else:
            value = distinct_value(raw)
            if value is None:
                return None
            series = store.slots[0]
            if series is None:
                series = store.slots[0] = Series()
                store.intervals = PresenceIntervals(self.width)
            series.add(ev.ts, ev.id)
            assert store.intervals is not None
            store.intervals.add(ev.ts, value)
        return [] if key == UNBOUND else [key]

    def measure(self, store: Store, t: int) -> int:
        """The aggregate at `t` (count, micro-unit sum or distinct count)."""
        series = store.slots[0]
        assert series is not None
        lo = t - self.width + 1
        if self.agg == "count":
            return series.count(lo, t)
        if self.agg == "sum":
            return series.total(lo, t)
        assert store.intervals is not None
        return store.intervals.covering(t)

    def value(self, ctx: Ctx, key: Key, t: int) -> bool:
        store = self._lookup(ctx, key)
        return store is not None and self.measure(store, t) >= self.need

    def _lookup(self, ctx: Ctx, key: Key) -> Store | None:
        per_key = ctx.stores.get(self.id)
        if per_key is None:
            return None
        store = per_key.get(key if self.slots[0].fields is not None else UNBOUND)
        return None if store is None or store.slots[0] is None else store

    def next_change(self, ctx: Ctx, key: Key, t: int) -> int | None:
        store = self._lookup(ctx, key)
        if store is None:
            return None
        series = store.slots[0]
        assert series is not None
        if self.agg == "distinct":
            assert store.intervals is not None
            drop = store.intervals.drop_time(t, self.need)
            return drop if drop is not None else store.intervals.next_start(t)
        if self.agg == "count":
            drop = series.count_drop_time(t, self.width, self.need)
        else:
            drop = series.sum_drop_time(t, self.width, self.need)
        return drop if drop is not None else series.first_after(t)

    def evict(self, store: Store, horizon: int) -> None:
        super().evict(store, horizon)
        if store.intervals is not None:
            store.intervals.evict_through(horizon)

    def explain(self, ctx: Ctx, key: Key, t: int, out: list[dict[str, Any]], limit: int) -> None:
        store = self._lookup(ctx, key)
        if store is None:
            out.append(self.leaf_info(0, []))
            return
        measured: Any = self.measure(store, t)
        if self.agg == "sum":
            measured = measured // 1_000_000 if measured % 1_000_000 == 0 else measured / 1_000_000
        assert store.slots[0] is not None
        out.append(self.leaf_info(measured, store.slots[0].newest_ids(t - self.width + 1, t, limit)))

    def text(self) -> str:
        what = self.slots[0].text
        inner = what if self.agg == "count" else f"{self.field} of {what}"
        return f"{self.agg}({inner}) {self.shown} within {format_duration(self.width)}"


class AbsentLeaf(Leaf):
    """No matching event in `(t - width, t]`, for a person first seen at least `seen_for` before `t`."""

    __slots__ = ("seen_for", "width")

    def __init__(self, lid: str, slot: Slot, width: int, seen_for: int) -> None:
        super().__init__(lid, (slot,), width)
        self.width = width
        self.seen_for = seen_for

    def value(self, ctx: Ctx, key: Key, t: int) -> bool:
        if ctx.first_seen + self.seen_for > t:
            return False
        series = self.series(ctx, key, 0)
        return series is None or not series.count(t - self.width + 1, t)

    def next_change(self, ctx: Ctx, key: Key, t: int) -> int | None:
        seen = ctx.first_seen + self.seen_for
        series = self.series(ctx, key, 0)
        last = series.latest(t) if series is not None else None
        return _earliest(seen if seen > t else None,
                         last + self.width if last is not None and last + self.width > t else None,
                         series.first_after(t) if series is not None else None)

    def explain(self, ctx: Ctx, key: Key, t: int, out: list[dict[str, Any]], limit: int) -> None:
        series = self.series(ctx, key, 0)
        ids = series.newest_ids(t - self.width + 1, t, limit) if series is not None else []
        last = series.latest(t) if series is not None else None
        info = self.leaf_info(len(ids), ids)
        info["last_match_ts"] = last
        info["first_seen_ts"] = ctx.first_seen
        out.append(info)

    def text(self) -> str:
        seen = f", seen for {format_duration(self.seen_for)}" if self.seen_for else ""
        return f"no {self.slots[0].text} within {format_duration(self.width)}{seen}"


class SequenceLeaf(Leaf):
    """Steps in strictly increasing event time, first to last within `span` (`last - first < span`).

    Holds for `hold` after each completion: a completion at the last step's time `c` holds on `[c, c + hold)`.
    """

    __slots__ = ("hold", "per_key_done", "span")

    def __init__(self, lid: str, steps: tuple[Slot, ...], span: int, hold: int) -> None:
        super().__init__(lid, steps, span + hold)
        self.span = span
        self.hold = hold
        self.per_key_done = self.bound()

    def _done(self, ctx: Ctx, key: Key) -> Series | None:
        store = self.store(ctx, key if self.per_key_done else UNBOUND)
        return None if store is None else store.done

    def value(self, ctx: Ctx, key: Key, t: int) -> bool:
        done = self._done(ctx, key)
        return done is not None and done.count(t - self.hold + 1, t) > 0

    def next_change(self, ctx: Ctx, key: Key, t: int) -> int | None:
        done = self._done(ctx, key)
        if done is None:
            return None
        drop = done.count_drop_time(t, self.hold, 1)
        return drop if drop is not None else done.first_after(t)

    def ingest(self, ctx: Ctx, i: int, key: Key, ev: Ev) -> list[Key] | None:
        """Adds a step event and re-derives the completions it can affect (last steps in
        `[ts, ts + span)`; none but its own when events arrive in time order)."""
        super().ingest(ctx, i, key, ev)
        if not self.per_key_done:
            targets = [UNBOUND]
        elif key != UNBOUND:
            targets = [key]
        else:
            targets = [k for k in ctx.stores.get(self.id, {}) if k != UNBOUND]
        for target in targets:
            self._rederive(ctx, target, ev.ts, ev.ts + self.span - 1)
        return [] if key == UNBOUND else [key]

    def _rederive(self, ctx: Ctx, key: Key, lo: int, hi: int) -> None:
        last = self.series(ctx, key, len(self.slots) - 1)
        if last is None:
            return
        store = self._store_for(ctx, key)
        if store.done is None:
            store.done = Series()
        for ts, event_id in last.between(lo, hi):
            if self._completes(ctx, key, ts):
                if not store.done.contains(ts, event_id):
                    store.done.add(ts, event_id)
            else:
                store.done.remove(ts, event_id)

    def _completes(self, ctx: Ctx, key: Key, end: int) -> bool:
        """Whether the steps before the last can be placed before `end` (greedy: latest possible each)."""
        prev = end
        for i in range(len(self.slots) - 2, -1, -1):
            series = self.series(ctx, key, i)
            found = series.latest_before(prev, end - self.span) if series is not None else None
            if found is None:
                return False
            prev = found
        return True

    def evict(self, store: Store, horizon: int) -> None:
        for series in store.slots:
            if series is not None:
                series.evict_through(horizon - self.span)
        if store.done is not None:
            store.done.evict_through(horizon - self.hold)

    def explain(self, ctx: Ctx, key: Key, t: int, out: list[dict[str, Any]], limit: int) -> None:
        done = self._done(ctx, key)
        lo = t - self.hold + 1
        if done is None:
            out.append(self.leaf_info(0, []))
            return
        out.append(self.leaf_info(done.count(lo, t), done.newest_ids(lo, t, limit)))

    def text(self) -> str:
        steps = " then ".join(s.text for s in self.slots)
        return (f"sequence({steps}) within {format_duration(self.span)}, "
                f"held {format_duration(self.hold)}")


class NotFollowedByLeaf(Leaf):
    """A trigger event with no `absent` event in `[trigger, trigger + grace]`: enters at trigger + grace,
    exits at trigger + grace + hold or at the next `absent` event, whichever is first.

    At `t` it holds iff some trigger `a` has `t - grace - hold < a <= t - grace` and no absent event in
    `[a, t]`.
    """

    __slots__ = ("grace", "hold")

    def __init__(self, lid: str, trigger: Slot, absent: Slot, grace: int, hold: int) -> None:
        super().__init__(lid, (trigger, absent), grace + hold)
        self.grace = grace
        self.hold = hold

    def _range(self, ctx: Ctx, key: Key, t: int) -> tuple[Series | None, int, int]:
        triggers = self.series(ctx, key, 0)
        absents = self.series(ctx, key, 1)
        lo = t - self.grace - self.hold + 1
        blocker = absents.latest(t) if absents is not None else None
        if blocker is not None:
            lo = max(lo, blocker + 1)
        return triggers, lo, t - self.grace

    def value(self, ctx: Ctx, key: Key, t: int) -> bool:
        triggers, lo, hi = self._range(ctx, key, t)
        return triggers is not None and triggers.count(lo, hi) > 0

    def next_change(self, ctx: Ctx, key: Key, t: int) -> int | None:
        triggers, lo, hi = self._range(ctx, key, t)
        if triggers is None:
            return None
        pending = triggers.first_after(hi)
        entry = pending + self.grace if pending is not None else None
        newest = triggers.latest(hi)
        if newest is None or newest < lo:
            return entry
        absents = self.series(ctx, key, 1)
        return _earliest(entry, newest + self.grace + self.hold,
                         absents.first_after(t) if absents is not None else None)

    def explain(self, ctx: Ctx, key: Key, t: int, out: list[dict[str, Any]], limit: int) -> None:
        triggers, lo, hi = self._range(ctx, key, t)
        ids = triggers.newest_ids(lo, hi, limit) if triggers is not None and lo <= hi else []
        absents = self.series(ctx, key, 1)
        info = self.leaf_info(len(ids), ids)
        info["blocking_event_ids"] = absents.newest_ids(t - self.reach + 1, t, limit) if absents else []
        out.append(info)

    def text(self) -> str:
        trigger, absent = (s.text for s in self.slots)
        return (f"{trigger} not followed by {absent} within {format_duration(self.grace)}, "
                f"held {format_duration(self.hold)}")


class TraitLeaf(Leaf):
    """A predicate on the latest value of a profile trait."""

    __slots__ = ("name", "op", "operand")

    def __init__(self, lid: str, name: str, op: str, operand: Any) -> None:
        super().__init__(lid, (), 0)
        self.name = name
        self.op = op
        self.operand = operand

    def value(self, ctx: Ctx, key: Key, t: int) -> bool:
        current = ctx.traits.value_at(self.name, t, ctx.consent)
        return check_predicate(self.op, self.operand, MISSING if current is None else current)

    def next_change(self, ctx: Ctx, key: Key, t: int) -> int | None:
        return ctx.traits.next_change(self.name, t)

    def explain(self, ctx: Ctx, key: Key, t: int, out: list[dict[str, Any]], limit: int) -> None:
        out.append({"condition": self.text(), "value": ctx.traits.value_at(self.name, t, ctx.consent)})

    def text(self) -> str:
        return "trait " + describe_predicate(self.name, self.op, self.operand)


class AllNode(Node):
    """Every sub-condition holds."""

    __slots__ = ("items",)

    def __init__(self, items: tuple[Node, ...]) -> None:
        self.items = items

    def children(self) -> tuple[Node, ...]:
        return self.items

    def value(self, ctx: Ctx, key: Key, t: int) -> bool:
        for item in self.items:  # noqa: SIM110 (a plain loop is faster than all() on a generator here)
            if not item.value(ctx, key, t):
                return False
        return True

    def next_change(self, ctx: Ctx, key: Key, t: int) -> int | None:
        best = None
        for item in self.items:
            nxt = item.next_change(ctx, key, t)
            if nxt is not None and (best is None or nxt < best):
                best = nxt
        return best

    def text(self) -> str:
        return "(" + " and ".join(item.text() for item in self.items) + ")"


class AnyNode(AllNode):
    """At least one sub-condition holds."""

    __slots__ = ()

    def value(self, ctx: Ctx, key: Key, t: int) -> bool:
        for item in self.items:  # noqa: SIM110
            if item.value(ctx, key, t):
                return True
        return False

    def text(self) -> str:
        return "(" + " or ".join(item.text() for item in self.items) + ")"


class NotNode(Node):
    """The sub-condition does not hold."""

    __slots__ = ("item",)

    def __init__(self, item: Node) -> None:
        self.item = item

    def children(self) -> tuple[Node, ...]:
        return (self.item,)

    def value(self, ctx: Ctx, key: Key, t: int) -> bool:
        return not self.item.value(ctx, key, t)

    def next_change(self, ctx: Ctx, key: Key, t: int) -> int | None:
        return self.item.next_change(ctx, key, t)

    def text(self) -> str:
        return f"not {self.item.text()}"


class LiveNode(Node):
    """A parameterized tag's binding is live while some filter that binds it has evidence in its reach."""

    __slots__ = ("entries",)

    def __init__(self, entries: tuple[tuple[Leaf, int], ...]) -> None:
        self.entries = entries

    def value(self, ctx: Ctx, key: Key, t: int) -> bool:
        for leaf, i in self.entries:
            series = leaf.series(ctx, key, i)
            if series is not None and series.count(t - leaf.reach + 1, t):
                return True
        return False

    def next_change(self, ctx: Ctx, key: Key, t: int) -> int | None:
        times: list[int | None] = []
        for leaf, i in self.entries:
            series = leaf.series(ctx, key, i)
            if series is None:
                continue
            last = series.latest(t)
            if last is not None and last + leaf.reach > t:
                times.append(last + leaf.reach)
            times.append(series.first_after(t))
        return _earliest(*times)

    def explain(self, ctx: Ctx, key: Key, t: int, out: list[dict[str, Any]], limit: int) -> None:
        return None

    def text(self) -> str:
        return "live"


class RefNode(Node):
    """A reference to another segment, inlined: the same binding when both segments have the same
    parameters, else "some binding of it holds"."""

    __slots__ = ("bound", "item", "name", "sources")

    def __init__(self, name: str, item: Node, bound: bool, sources: tuple[str, ...]) -> None:
        self.name = name
        self.item = item
        self.bound = bound
        self.sources = sources

    def children(self) -> tuple[Node, ...]:
        return (self.item,)

    def keys(self, ctx: Ctx) -> set[Key]:
        """The bindings the referenced segment has evidence for."""
        found: set[Key] = set()
        for lid in self.sources:
            found.update(k for k in ctx.stores.get(lid, {}) if k != UNBOUND)
        return found

    def value(self, ctx: Ctx, key: Key, t: int) -> bool:
        if self.bound:
            return self.item.value(ctx, key, t)
        return any(self.item.value(ctx, k, t) for k in self.keys(ctx))

    def next_change(self, ctx: Ctx, key: Key, t: int) -> int | None:
        if self.bound:
            return self.item.next_change(ctx, key, t)
        return _earliest(*(self.item.next_change(ctx, k, t) for k in self.keys(ctx)))

    def explain(self, ctx: Ctx, key: Key, t: int, out: list[dict[str, Any]], limit: int) -> None:
        if self.bound:
            self.item.explain(ctx, key, t, out, limit)
            return
        out.append({"condition": self.text(), "value": sorted(
            (list(k) for k in self.keys(ctx) if self.item.value(ctx, k, t)), key=repr)[:limit]})

    def text(self) -> str:
        return f"segment {self.name}" if self.bound else f"some segment {self.name}"
