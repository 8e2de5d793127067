"""The segments core: a person's state and events in, new state and JSON-ready outputs out.

The Flink KeyedProcessFunction (keyed by person id) is a thin wrapper: it keeps one `PersonState` per key,
calls `on_event` for each event with the current watermark, `advance` when the event-time timer it
registered at the returned `next_wakeup` fires, and `apply_definitions` (or nothing: the next call does it
lazily) after a definition update. See docs/segments.md.

Semantics in one paragraph: a tag's membership is a pure function of event time and the person's
(de-duplicated, consented) events. The engine materializes it up to the person's clock (`frontier`),
emitting an entry or exit at the exact millisecond membership changes; a late event re-evaluates the
affected tags from its own time and emits corrections (and retractions of changes that turned out wrong).
"""

from __future__ import annotations

import hashlib
import heapq
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

from udfs.segments.compiler import Catalog, Segment
from udfs.segments.conditions import UNBOUND, Key
from udfs.segments.config import SegmentsConfig
from udfs.segments.matching import Ev, bind_key
from udfs.segments.placements import ActiveTag
from udfs.segments.records import (
    Outputs,
    change_key,
    change_record,
    dynamo_delete,
    dynamo_put,
    late_record,
    redis_delete,
    redis_update,
    retraction_record,
    tag_view,
    view_record,
)
from udfs.segments.state import NEG_INF, Instance, PersonState, Point

ALL = None  # "every binding of the segment"
Affected = dict[str, set[Key] | None]


class _Run:
    """Bookkeeping of one call."""

    __slots__ = ("cause", "clock", "detail", "dirty", "event", "out", "refresh")

    def __init__(self) -> None:
        self.out = Outputs()
        self.event: Ev | None = None
        self.cause: str | None = None
        self.detail: dict[str, Any] = {}
        self.clock = NEG_INF
        self.dirty: dict[tuple[str, Key], Instance] = {}
        self.refresh = False


def person_id_of(event: Mapping[str, Any], config: SegmentsConfig | None = None) -> str | None:
    """The wrapper's key selector: the `person_id` the identity job resolved, else one derived like the
    identity job does (`p-` + 32 hex of SHA-256 of `type:value`) from the first identifier of
    `config.person_id_types` the event carries, so no raw identifier ends up in a store key."""
    resolved = event.get("person_id")
    if isinstance(resolved, str) and resolved:
        return resolved
    ids = event.get("ids") or {}
    for id_type in (config or SegmentsConfig()).person_id_types:
        value = ids.get(id_type)
        if isinstance(value, str) and value:
            return "p-" + hashlib.sha256(f"{id_type}:{value}".encode()).hexdigest()[:32]
    return None


class Engine:
    """Evaluates one compiled catalog for many persons (holds no per-person data)."""

    def __init__(self, catalog: Catalog, config: SegmentsConfig | None = None,
                 _known: dict[str, Catalog] | None = None) -> None:
        self.catalog = catalog
        self.config = config or SegmentsConfig()
        self._known = _known if _known is not None else {}
        self._known[catalog.version] = catalog
        while len(self._known) > 16:
            del self._known[next(iter(self._known))]

    def with_catalog(self, catalog: Catalog) -> Engine:
        """An engine for a new definition set (hot reload); it remembers the previous sets so persons are
        reconciled precisely (only changed definitions and new conditions are re-evaluated)."""
        return Engine(catalog, self.config, self._known)

    def new_state(self, person_id: str) -> PersonState:
        """Empty state of a person never seen."""
        return PersonState(person_id, self.catalog.version, self.config.default_consent)

    # ------------------------------------------------------------------ public API
    def on_event(self, state: PersonState, event: Mapping[str, Any],
                 watermark: int | None = None) -> tuple[PersonState, Outputs, int | None]:
        """Applies one event of the person.

        Args:
            state: the person's state (mutated and returned).
            event: a valid event (`ts_ms` set by ingest, else `ts` is parsed).
            watermark: the operator's current watermark (None before the first one).

        Returns:
            The state, the outputs, and the next event time at which a tag can change by time alone (the
            wrapper registers one event-time timer there and calls `advance`), or None.
        """
        run = _Run()
        ev = Ev.from_event(event)
        self._observe(state, watermark)
        if ev.ts < state.horizon(self.config.allowed_lateness_ms):
            run.out.late.append(late_record(state.person_id, event, ev.ts, state.watermark, self.config))
            return state, run.out, self.next_wakeup(state)
        if ev.id in state.seen:
            run.out.duplicates += 1
            return state, run.out, self.next_wakeup(state)
        self._sync(state, run, None)
        if ev.ts > state.frontier:
            self._advance_to(state, run, ev.ts - 1)
        if ev.type == "erase":
            return self._erase(state, run, ev)
        run.event = ev
        run.clock = state.frontier
        end = max(state.frontier, ev.ts)
        affected = self._record(state, run, ev)
        for name, keys in affected.items():
            for key in self._bindings(state, name, keys):
                self._reconcile(state, run, name, key, ev.ts, end)
        run.event = None
        # changes due by time at exactly `end` in tags the event did not touch
        self._advance_to(state, run, end)
        self._evict(state)
        return state, self._finish(state, run), self.next_wakeup(state)

    def advance(self, state: PersonState, time: int,
                watermark: int | None = None) -> tuple[PersonState, Outputs, int | None]:
        """Emits every change due by time alone up to and including `time` (timer callback, or a
        processing-time advance of an idle person)."""
        run = _Run()
        self._observe(state, watermark)
        self._sync(state, run, None)
        if time > state.frontier:
            self._advance_to(state, run, time)
        self._evict(state)
        return state, self._finish(state, run), self.next_wakeup(state)

    def apply_definitions(self, state: PersonState,
                          at: int | None = None) -> tuple[PersonState, Outputs, int | None]:
        """Reconciles a person with this engine's catalog (hot reload).

        Added and changed definitions are evaluated at once against the retained history; removed ones exit.
        The changes happen at `max(person clock + 1 ms, at)` (`at` defaults to `catalog.updated_at`): strictly
        after everything already evaluated for the person.
        """
        run = _Run()
        self._sync(state, run, at)
        self._evict(state)
        return state, self._finish(state, run), self.next_wakeup(state)

    def next_wakeup(self, state: PersonState) -> int | None:
        """The next event time at which some tag changes by time alone (None: nothing pending)."""
        heap = state.heap
        while heap:
            time, _, name, key = heap[0]
            inst = state.instances.get(name, {}).get(key)
            if inst is not None and inst.scheduled == time:
                return time
            heapq.heappop(heap)
            if inst is not None:
                self._requeue(state, inst, name, time)
        return None

    def view(self, state: PersonState) -> dict[str, Any]:
        """The person's whole current-state view as one document (tags with entry and expiry, placement
        decisions); the outputs carry it incrementally."""
        tags = {}
        for name, keys in state.members.items():
            for key in keys:
                inst = state.instances[name][key]
                tags[inst.tag] = self._tag_view(name, inst)
        consent = state.consent.allowed(state.frontier)
        return view_record(state.person_id, state.frontier, consent, tags, self._decide(state))

    def _tag_view(self, name: str, inst: Instance) -> dict[str, Any]:
        seg = self.catalog.segments.get(name)
        return tag_view(name, seg.version if seg else "", inst.params, inst.entered_at, self._expiry(inst))

    def _decide(self, state: PersonState) -> dict[str, dict[str, Any]]:
        """Placement decisions from the current tags of the segments placements refer to."""
        active: dict[str, list[ActiveTag]] = {}
        for name in self.catalog.placement_segments:
            for key in state.members.get(name, ()):
                inst = state.instances[name][key]
                active.setdefault(name, []).append(ActiveTag(inst.tag, name, inst.params, inst.entered_at or 0))
        return {p.slot: p.decide(active) for p in self.catalog.placements.values()}

    # ------------------------------------------------------------------ event intake
    def _observe(self, state: PersonState, watermark: int | None) -> None:
        if watermark is not None and watermark > state.watermark:
            state.watermark = watermark

    def _record(self, state: PersonState, run: _Run, ev: Ev) -> Affected:
        """Adds the event to the history, timelines and evidence; returns the affected segment bindings."""
        cat = self.catalog
        affected: Affected = {}
        state.remember(ev)
        if ev.ts < state.first_seen:
            state.first_seen = ev.ts
            _mark_all(affected, cat.first_seen_segments)
        purpose = (ev.consent or {}).get(self.config.consent_purpose)
        rebuilt = False
        if isinstance(purpose, bool):
            state.consent.add(ev.ts, purpose)
            run.refresh = True
            _mark_all(affected, cat.segments)
            if self._has_later(state, ev):
                self._rebuild(state)
                rebuilt = True
        allowed = state.consent.allowed(ev.ts)
        if not allowed:
            state.unconsented.append((ev.ts, ev.type, ev.id))
        if ev.traits:
            state.traits.add(ev.ts, ev.id, ev.traits)
            _mark_all(affected, cat.trait_segments)
        if allowed and not rebuilt:
            self._ingest(state, ev, None, affected)
        return affected

    def _has_later(self, state: PersonState, ev: Ev) -> bool:
        for rows in state.history.values():
            i = bisect_left(rows, (ev.ts,))
            if any(row[1] != ev.id for row in rows[i:]):
                return True
        return False

    def _ingest(self, state: PersonState, ev: Ev, only: set[str] | None, affected: Affected | None) -> None:
        """Feeds the event to every leaf whose filter accepts it (indexed by event type)."""
        deps = self.catalog.deps
        bound: dict[tuple[str, ...], Key | None] = {}
        index = self.catalog.routes.get(ev.type) if self.catalog.routes else None
        for _, match, pairs in index.candidates(ev.props) if index is not None else ():
            if not match.accepts(ev):
                continue
            for leaf, i in pairs:
                if only is not None and leaf.id not in only:
                    continue
                fields = leaf.slots[i].fields
                if fields is None:
                    key: Key | None = UNBOUND
                elif fields in bound:
                    key = bound[fields]
                else:
                    key = bound[fields] = bind_key(ev, fields)
                if key is None:
                    continue
                touched = leaf.ingest(state, i, key, ev)
                if touched is None or affected is None:
                    continue
                for name, per_binding in deps.get((leaf.id, i), ()):
                    if per_binding and key != UNBOUND:
                        keys = affected.setdefault(name, set())
                        if keys is not ALL:
                            keys.add(key)
                    else:
                        affected[name] = ALL

    def _replay(self, state: PersonState, only: set[str] | None) -> None:
        """Feeds the retained, consented history to some leaves (all when `only` is None)."""
        for ev in state.retained():
            if state.consent.allowed(ev.ts):
                self._ingest(state, ev, only, None)

    def _rebuild(self, state: PersonState) -> None:
        """Re-derives all evidence from the history (after a consent change reaching back in time)."""
        state.stores.clear()
        self._replay(state, None)
        state.unconsented = [(ev.ts, ev.type, ev.id) for ev in state.retained()
                             if not state.consent.allowed(ev.ts)]

    def _bindings(self, state: PersonState, name: str, keys: set[Key] | None) -> list[Key]:
        if keys is not ALL:
            return sorted(keys, key=repr)
        seg = self.catalog.segments.get(name)
        found = set(state.instances.get(name, {}))
        if seg is not None:
            if not seg.params:
                found.add(UNBOUND)
            for lid in seg.own_sources:
                found.update(k for k in state.stores.get(lid, {}) if k != UNBOUND)
        return sorted(found, key=repr)

    # ------------------------------------------------------------------ evaluation
    def _holds(self, state: PersonState, seg: Segment | None, key: Key, t: int) -> bool:
        """Membership at `t`: the condition, gated by consent, first sight and hot-reload start."""
        if seg is None:
            return False
        if state.active_from and t < state.active_from.get(seg.name, NEG_INF):
            return False
        if not state.consent.allowed(t) or (not key and t < state.first_seen):
            return False
        return seg.condition.value(state, key, t)

    def _next(self, state: PersonState, seg: Segment | None, key: Key, t: int) -> int | None:
        """A time after `t` at which membership may change (None: never by time alone)."""
        if seg is None:
            return None
        best = seg.condition.next_change(state, key, t)
        others = [state.consent.next_change(t)]
        if state.active_from:
            start = state.active_from.get(seg.name, NEG_INF)
            others.append(start if start > t else None)
        if not key and state.first_seen > t:
            others.append(state.first_seen)
        for other in others:
            if other is not None and (best is None or other < best):
                best = other
        return best

    def _next_flip(self, state: PersonState, seg: Segment | None, key: Key, t: int,
                   current: bool) -> tuple[int | None, bool]:
        """The first time after `t` the value differs from `current` (exact), or a bound if too far."""
        for _ in range(self.config.max_flip_steps):
            nxt = self._next(state, seg, key, t)
            if nxt is None:
                return None, True
            if self._holds(state, seg, key, nxt) != current:
                return nxt, True
            t = nxt
        return t, False

    def _reconcile(self, state: PersonState, run: _Run, name: str, key: Key, a: int, b: int,
                   removed: bool = False) -> None:
        """Re-evaluates one tag over `[a, b]`, emits what differs from what was emitted, reschedules."""
        seg = None if removed else self.catalog.segments.get(name)
        inst = state.instances.get(name, {}).get(key)
        if inst is None and seg is None:
            return
        if state.active_from:
            a = min(max(a, state.active_from.get(name, NEG_INF)), b)
        points = inst.points if inst is not None else []
        settled = not points or points[-1].ts < a  # nothing emitted in [a, b]: the usual in-order case
        if settled:
            current = points[-1].enter if points else inst is not None and inst.base
        else:
            current = inst is not None and inst.value_before(a)
        timeline: list[tuple[int, bool]] = []
        t: int | None = a
        while t is not None and t <= b:
            value = self._holds(state, seg, key, t)
            if value != current:
                timeline.append((t, value))
                current = value
            t = self._next(state, seg, key, t) if t < b else None
        flip, exact = self._next_flip(state, seg, key, b, current)
        if inst is None:
            if not timeline and flip is None:
                return  # never held, nothing pending: no need to remember the binding
            assert seg is not None
            inst = state.instances.setdefault(name, {})[key] = Instance(key, seg.tag(key), seg.params_of(key))
        run.dirty[(name, key)] = inst
        if timeline or not settled:
            self._emit_diff(state, run, seg, name, inst, (a, b), timeline, (flip, exact))
        inst.exact = exact
        self._schedule(state, inst, name, flip)

    def _emit_diff(self, state: PersonState, run: _Run, seg: Segment | None, name: str, inst: Instance,
                   span: tuple[int, int], timeline: list[tuple[int, bool]],
                   after: tuple[int | None, bool]) -> None:
        """Retracts emitted changes in `span` that are not in `timeline` and emits the new ones; `after` is
        the next change past the span (for the expiry of an entry)."""
        a, b = span
        old = {(p.ts, p.enter): p for p in inst.between(a, b)}
        wanted = set(timeline)
        # a removed definition's exit carries the version the tag was held under
        version = seg.version if seg else next((p.version for p in reversed(inst.points) if p.version), "")
        out = run.out.changes
        for (ts, enter), point in old.items():
            if (ts, enter) in wanted:
                continue
            inst.retracted[(ts, enter)] = inst.retracted.get((ts, enter), 0) + 1
            out.append(retraction_record(person_id=state.person_id, segment=name, version=point.version,
                                         tag=inst.tag, params=inst.params, enter=enter, ts=ts,
                                         retracts=point.key, cause=self._cause(run, seg, ts)))
        merged: list[Point] = []
        fresh: list[Point] = []
        for ts, enter in timeline:
            kept = old.get((ts, enter))
            if kept is None:
                generation = inst.retracted.get((ts, enter), 0)
                kept = Point(ts, enter, change_key(state.person_id, name, version, inst.tag, enter, ts,
                                                   generation), version)
                fresh.append(kept)
            merged.append(kept)
        inst.replace(a, b, merged)
        flip, exact = after
        for i, point in enumerate(merged):
            if point not in fresh:
                continue
            expires = merged[i + 1].ts if i + 1 < len(merged) else (flip if exact else None)
            reason = self._cause(run, seg, point.ts)
            if seg is not None:
                evidence: list[dict[str, Any]] = []
                seg.condition.explain(state, inst.key, point.ts, evidence, self.config.max_evidence_ids)
                reason["condition"] = seg.summary
                reason["evidence"] = evidence
            out.append(change_record(person_id=state.person_id, segment=name, version=version, tag=inst.tag,
                                     params=inst.params, enter=point.enter, ts=point.ts, key=point.key,
                                     correction=point.ts < run.clock, expires_at=expires, reason=reason))

    def _cause(self, run: _Run, seg: Segment | None, ts: int) -> dict[str, Any]:
        if run.cause is not None:
            return {"cause": run.cause, **run.detail}
        if seg is None:
            return {"cause": "definition_removed"}
        ev = run.event
        if ev is not None:
            return {"cause": "event", "event_id": ev.id, "event_type": ev.type}
        return {"cause": "time"}

    # ------------------------------------------------------------------ time
    def _schedule(self, state: PersonState, inst: Instance, name: str, time: int | None) -> None:
        inst.scheduled = time
        if time is not None and (inst.queued is None or time < inst.queued):
            inst.queued = time
            state.seq += 1
            heapq.heappush(state.heap, (time, state.seq, name, inst.key))

    def _requeue(self, state: PersonState, inst: Instance, name: str, popped: int) -> None:
        """After popping a stale heap entry: make sure the instance's real schedule is queued."""
        if inst.queued == popped:
            inst.queued = None
        if inst.scheduled is not None and inst.scheduled != popped:
            self._schedule(state, inst, name, inst.scheduled)

    def _advance_to(self, state: PersonState, run: _Run, time: int,
                    skip: frozenset[str] = frozenset()) -> None:
        """Emits the changes due by time alone up to `time` and moves the clock there."""
        run.clock = max(run.clock, state.frontier)
        heap = state.heap
        while heap and heap[0][0] <= time:
            due, _, name, key = heapq.heappop(heap)
            inst = state.instances.get(name, {}).get(key)
            if inst is None:
                continue
            if inst.scheduled != due:
                self._requeue(state, inst, name, due)
                continue
            inst.queued = None
            if name in skip:
                continue
            self._reconcile(state, run, name, key, due, time)
        state.frontier = max(state.frontier, time)

    # ------------------------------------------------------------------ hot reload
    def _sync(self, state: PersonState, run: _Run, at: int | None) -> None:
        cat = self.catalog
        if state.catalog_version == cat.version:
            return
        run.refresh = True
        if state.frontier == NEG_INF:
            state.catalog_version = cat.version
            state.stores.clear()
            return
        when = max(state.frontier + 1, cat.updated_at if at is None else at)
        old = self._known.get(state.catalog_version)
        if old is not None:
            changed = {n for n, s in cat.segments.items()
                       if n not in old.segments or old.segments[n].version != s.version}
            new_leaves = set(cat.leaves) - set(old.leaves)
        else:
            changed, new_leaves = set(cat.segments), set(cat.leaves)
            state.stores.clear()
        removed = set(state.instances) - set(cat.segments)
        self._advance_to(state, run, when, skip=frozenset(changed | removed))
        run.clock = state.frontier
        for name in sorted(removed | changed):
            seg = cat.segments.get(name)
            for key, inst in sorted(state.instances.get(name, {}).items(), key=lambda kv: repr(kv[0])):
                if seg is None or tuple(inst.params) != seg.params:
                    run.cause = None
                    self._reconcile(state, run, name, key, when, when, removed=True)
                    state.instances[name].pop(key, None)
        for lid in [lid for lid in state.stores if lid not in cat.leaves]:
            del state.stores[lid]
        if new_leaves:
            self._replay(state, new_leaves)
        for name in sorted(changed):
            run.cause = "definition_added" if old is not None and name not in old.segments else \
                "definition_changed"
            state.active_from[name] = when
            for key in self._bindings(state, name, ALL):
                self._reconcile(state, run, name, key, when, when)
        run.cause = None
        state.catalog_version = cat.version

    def _erase(self, state: PersonState, run: _Run, ev: Ev) -> tuple[PersonState, Outputs, int | None]:
        """An `erase` event: the person leaves every segment at its time and everything kept is dropped
        (the returned state is empty; the wrapper may clear it instead)."""
        run.cause = "erase"
        fresh, out = self._leave(state, run, max(state.frontier + 1, ev.ts), erase=True)
        fresh.seen[ev.id] = ev.ts
        return fresh, out, None

    def _leave(self, state: PersonState, run: _Run, when: int, erase: bool) -> tuple[PersonState, Outputs]:
        """The person leaves every segment at `when` (cause `run.cause`), its Redis view is deleted
        (unconditionally for an erasure) and an empty state with the same clock and versions is returned."""
        for name, insts in sorted(state.instances.items()):
            for key in sorted(insts, key=repr):
                self._reconcile(state, run, name, key, when, when, removed=True)
        state.frontier = when
        out = self._finish(state, run)
        out.redis = [redis_delete(state.person_id, state.next_version(), self.config, erase)]
        fresh = self.new_state(state.person_id)
        fresh.watermark, fresh.frontier, fresh.version = state.watermark, when, state.version
        return fresh, out

    # ------------------------------------------------------------------ person merges
    def hand_off(self, state: PersonState, at: int) -> tuple[dict[str, Any] | None, PersonState, Outputs]:
        """The person was merged into another at event time `at` (`udfs/merges.py`).

        Returns:
            The person's export for the survivor (`export_person`; None when it has nothing), an empty state
            (same clock and versions) and the outputs: every tag exits at `max(clock + 1 ms, at)` with cause
            `merge`, its DynamoDB items and Redis view are deleted (version-guarded, not erasures).
        """
        run = _Run()
        self._sync(state, run, None)
        exported = export_person(state) if state.seen or state.consent.export()["updates"] else None
        run.cause = "merge"
        fresh, out = self._leave(state, run, max(state.frontier + 1, at), erase=False)
        return exported, fresh, out

    def fold(self, state: PersonState, exported: Mapping[str, Any],
             watermark: int | None = None) -> tuple[PersonState, Outputs, int | None]:
        """Folds an absorbed person's export into this (surviving) person, as if every retained event had
        carried this person's id: history, consent and traits are united, the evidence is rebuilt from the
        union and every tag is re-evaluated from the earliest absorbed event (not before the lateness
        horizon) to the person's clock. Changes have cause `merge` and name the absorbed person (`from`);
        those before the clock are corrections, as for a late event."""
        run = _Run()
        self._observe(state, watermark)
        self._sync(state, run, None)
        events = [Ev(*row) for row in exported["events"] if row[1] not in state.seen]
        times = [ev.ts for ev in events]
        times += [int(u[0]) for u in exported["consent"]["updates"]]
        times += [int(u[0]) for ups in exported["traits"]["updates"].values() for u in ups]
        first_seen = int(exported["first_seen"])
        if first_seen < state.first_seen:
            times.append(first_seen)
        horizon = state.horizon(self.config.allowed_lateness_ms)
        if times and max(min(times), horizon) - 1 > state.frontier:
            # nothing absorbed is older: what this person's own clock would have emitted before it comes first
            self._advance_to(state, run, max(min(times), horizon) - 1)
        state.consent.absorb(exported["consent"])
        state.traits.absorb(exported["traits"])
        for ev in events:
            state.remember(ev)
        state.first_seen = min(state.first_seen, first_seen)
        self._rebuild(state)
        if times:
            end = max(state.frontier, *times)
            start = min(max(min(times), horizon), end)
            run.cause, run.detail = "merge", {"from": str(exported["person_id"])}
            run.clock = state.frontier
            for name in sorted(self.catalog.segments):
                for key in self._bindings(state, name, ALL):
                    self._reconcile(state, run, name, key, start, end)
            run.cause, run.detail = None, {}
            self._advance_to(state, run, end)
        self._evict(state)
        return state, self._finish(state, run), self.next_wakeup(state)

    # ------------------------------------------------------------------ outputs and eviction
    def _expiry(self, inst: Instance) -> int | None:
        return inst.scheduled if inst.active and inst.exact else None

    def _finish(self, state: PersonState, run: _Run) -> Outputs:
        """Store writes for the tags whose membership, entry, expiry or version changed: DynamoDB items and
        the changed fields of the Redis view (placements only when a tag they read entered or exited)."""
        out, cfg = run.out, self.config
        fields: dict[str, Any] = {}
        removed: list[str] = []
        version: int | None = None
        first = not state.view_written
        decide = run.refresh or first
        watched = self.catalog.placement_segments
        for (name, key), inst in run.dirty.items():
            members = state.members.setdefault(name, {})
            if inst.active:
                seg = self.catalog.segments.get(name)
                written = (True, inst.entered_at, self._expiry(inst), seg.version if seg else "")
                members[key] = None
            else:
                written = None
                members.pop(key, None)
            if not members:
                del state.members[name]
            if written == inst.written:
                continue
            if name in watched and (written is None or inst.written is None or written[1] != inst.written[1]):
                decide = True
            version = version or state.next_version()
            if written is not None:
                out.dynamo.append(dynamo_put(state.person_id, inst.tag, name, written[3], inst.params,
                                             written[1], written[2], state.frontier, version, cfg))
                fields["tag:" + inst.tag] = self._tag_view(name, inst)
            elif inst.written is not None:
                erase = run.cause == "erase"
                out.dynamo.append(dynamo_delete(state.person_id, inst.tag, version, cfg, erase))
                removed.append("tag:" + inst.tag)
            inst.written = written
        if decide:
            decisions = self._decide(state)
            for slot in sorted(set(state.decisions) - set(decisions)):
                removed.append("placement:" + slot)
                del state.decisions[slot]
            for slot, decision in decisions.items():
                if state.decisions.get(slot) != decision:
                    state.decisions[slot] = fields["placement:" + slot] = decision
        if run.refresh or first:
            fields["consent"] = state.consent.allowed(state.frontier)
        if fields or removed:
            state.view_written = True
            version = version or state.next_version()
            out.redis.append(redis_update(state.person_id, fields, removed, version, cfg))
        return out

    def _evict(self, state: PersonState) -> None:
        """Forgets what can no longer matter: evidence, history, folded timelines, idle tags."""
        cfg, cat = self.config, self.catalog
        horizon = state.horizon(cfg.allowed_lateness_ms)
        if horizon == NEG_INF or horizon - state.evicted_at < cfg.evict_every_ms:
            return
        state.evicted_at = horizon
        state.traits.compact(horizon, state.consent)
        keep = []
        for ts, etype, event_id in state.unconsented:
            if ts >= horizon:
                keep.append((ts, etype, event_id))
            elif not state.consent.allowed(ts):
                state.forget(etype, ts, event_id)
        state.unconsented = keep
        # consent stays known as far back as raw history goes: replays (consent change, hot reload) need it
        state.consent.compact(horizon - max([cfg.min_history_ms, *cat.retention.values()]))
        for etype, rows in state.history.items():
            cut = bisect_left(rows, (horizon - max(cat.retention.get(etype, 0), cfg.min_history_ms),))
            for row in rows[:cut]:
                state.seen.pop(row[1], None)
            del rows[:cut]
        for lid, per_key in list(state.stores.items()):
            leaf = cat.leaves.get(lid)
            for key, store in list(per_key.items()):
                if leaf is not None:
                    leaf.evict(store, horizon)
                if leaf is None or store.empty():
                    del per_key[key]
            if not per_key:
                del state.stores[lid]
        for name, insts in list(state.instances.items()):
            for key, inst in list(insts.items()):
                inst.prune(horizon)
                if inst.idle():
                    del insts[key]
            if not insts:
                del state.instances[name]
        state.active_from = {n: t for n, t in state.active_from.items() if t >= horizon}


def _mark_all(affected: Affected, names: Iterable[str]) -> None:
    for name in names:
        affected[name] = ALL


def export_person(state: PersonState) -> dict[str, Any]:
    """What a merged-away person hands to the survivor (JSON-ready): its retained raw events, consent and
    trait timelines, and the time it was first seen. Evidence is not exported: the survivor rebuilds it."""
    events = [[ev.ts, ev.id, ev.type, dict(ev.props) or None, ev.channel, ev.source,
               dict(ev.traits) if ev.traits else None, dict(ev.consent) if ev.consent else None]
              for ev in state.retained()]
    return {"person_id": state.person_id, "first_seen": state.first_seen, "events": events,
            "consent": state.consent.export(), "traits": state.traits.export()}
