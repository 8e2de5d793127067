"""A brute-force reference of the segment semantics, written straight from docs/segments.md.

It interprets definition documents directly (no compiled conditions, no incremental windows): membership
of every tag is evaluated by scanning all events at every time where it could change. Far too slow for
production, it is the oracle the engine is tested against, and `net_intervals` turns a stream of change
records (with corrections and retractions) back into membership intervals.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from udfs.segments.config import parse_duration
from udfs.segments.engine import Engine
from udfs.segments.matching import (
    MISSING,
    Ev,
    bind_key,
    check_predicate,
    compile_predicate,
    distinct_value,
    micro_units,
)
from udfs.segments.records import Outputs
from udfs.segments.state import PersonState

Interval = tuple[int, int | None]


def event(event_id: str, etype: str, ts: int, person: str = "p", **fields: Any) -> dict[str, Any]:
    """A minimal valid event for tests and demos: `props` are the keyword arguments, except `traits`,
    `consent`, `channel` and `source`, which go to their own fields."""
    body: dict[str, Any] = {"event_id": event_id, "type": etype, "ts": ts, "ts_ms": ts,
                            "ids": {"user_id": person}}
    for name in ("traits", "consent", "channel", "source"):
        if name in fields:
            body[name] = fields.pop(name)
    if fields:
        body["props"] = fields
    return body


def replay(engine: Engine, events: Iterable[Mapping[str, Any]], *, person_id: str = "p",
           until: int | None = None, watermark_lag: int = 0,
           state: PersonState | None = None) -> tuple[PersonState, Outputs]:
    """Drives the engine like the Flink wrapper would: events in the given order, the watermark trailing the
    highest event time by `watermark_lag`, timers firing once the watermark passes them, and finally
    event time advanced to `until` (when given)."""
    state = state or engine.new_state(person_id)
    total = Outputs()
    watermark: int | None = None
    for body in events:
        state, out, wake = engine.on_event(state, body, watermark)
        total.extend(out)
        ts = Ev.from_event(body).ts
        watermark = ts - watermark_lag if watermark is None else max(watermark, ts - watermark_lag)
        while wake is not None and wake <= watermark:
            if wake <= state.frontier:
                raise RuntimeError(f"next wakeup {wake} is not after the person's clock {state.frontier}")
            state, out, wake = engine.advance(state, wake, watermark)
            total.extend(out)
    if until is not None:
        state, out, _ = engine.advance(state, until, until)
        total.extend(out)
    return state, total


def net_intervals(changes: Iterable[Mapping[str, Any]]) -> dict[str, list[Interval]]:
    """Membership intervals per tag from change records: retracted records and retractions are dropped, the
    rest are paired in event-time order.

    Raises:
        AssertionError: if the surviving records of a tag do not alternate enter, exit, enter...
    """
    records = list(changes)
    retracted = {r["retracts"] for r in records if r["retraction"]}
    by_tag: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if not r["retraction"] and r["key"] not in retracted:
            by_tag[r["tag"]].append(r)
    result: dict[str, list[Interval]] = {}
    for tag, rows in by_tag.items():
        rows.sort(key=lambda r: (r["ts_ms"], r["op"] == "enter"))
        intervals: list[Interval] = []
        for r in rows:
            if r["op"] == "enter":
                assert not intervals or intervals[-1][1] is not None, f"{tag}: enter while in at {r['ts_ms']}"
                intervals.append((r["ts_ms"], None))
            else:
                assert intervals and intervals[-1][1] is None, f"{tag}: exit while out at {r['ts_ms']}"
                intervals[-1] = (intervals[-1][0], r["ts_ms"])
        result[tag] = intervals
    return {tag: iv for tag, iv in sorted(result.items()) if iv}


class Reference:
    """Membership of every tag at any time, from all of a person's events at once."""

    def __init__(self, docs: Sequence[Mapping[str, Any]], events: Iterable[Mapping[str, Any]],
                 purpose: str = "personalization", default_consent: bool = True) -> None:
        self.docs = {d["name"]: d for d in docs if d["kind"] == "segment"}
        unique: dict[str, Ev] = {}
        for e in events:
            unique.setdefault(str(e["event_id"]), Ev.from_event(e))
        self.all = sorted(unique.values(), key=Ev.sort_key)
        self.default_consent = default_consent
        self.consents = [(e.ts, e.consent[purpose]) for e in self.all
                         if e.consent and isinstance(e.consent.get(purpose), bool)]
        self.events = [e for e in self.all if self.consent(e.ts)]
        self.first_seen = self.all[0].ts if self.all else None

    def consent(self, t: int) -> bool:
        """Consent at `t`: the newest update at or before `t`, deny winning within one millisecond."""
        before = [ts for ts, _ in self.consents if ts <= t]
        if not before:
            return self.default_consent
        return all(v for ts, v in self.consents if ts == max(before))

    def trait(self, name: str, t: int) -> Any:
        """The trait's newest consented value at or before `t`."""
        value = None
        for e in self.events:
            if e.ts <= t and e.traits and name in e.traits:
                value = e.traits[name]
        return value

    # ---- filters
    def _matches(self, spec: Mapping[str, Any], e: Ev, params: Sequence[str], key: tuple[Any, ...]) -> bool:
        types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        if e.type not in types:
            return False
        bound: dict[str, str] = {}
        for name, pred in (spec.get("props") or {}).items():
            if _is_placeholder(pred, params):
                bound[pred[1:-1]] = name
            elif not check_predicate(*compile_predicate(pred), e.props.get(name, MISSING)):
                return False
        for where in ("channel", "source"):
            if where in spec and not check_predicate(*compile_predicate(spec[where]), getattr(e, where)):
                return False
        if bound:
            return bind_key(e, tuple(bound[p] for p in params)) == key
        return True

    def _in(self, spec: Mapping[str, Any], params: Sequence[str], key: tuple[Any, ...], lo: int,
            hi: int) -> list[Ev]:
        return [e for e in self.events if lo <= e.ts <= hi and self._matches(spec, e, params, key)]

    # ---- conditions
    def holds(self, cond: Mapping[str, Any], params: Sequence[str], key: tuple[Any, ...], t: int) -> bool:
        """Whether a condition holds at `t` for a binding."""
        ((kind, arg),) = cond.items()
        if kind in ("all", "any"):
            results = (self.holds(c, params, key, t) for c in arg)
            return all(results) if kind == "all" else any(results)
        if kind == "not":
            return not self.holds(arg, params, key, t)
        if kind == "segment":
            target = self.docs[arg]
            target_params = tuple(target.get("params", ()))
            if params and target_params == tuple(params):
                return self.member_raw(arg, key, t)
            return any(self.member_raw(arg, k, t) for k in self.bindings(arg))
        if kind == "trait":
            ((op, operand),) = ((k, v) for k, v in arg.items() if k != "name")
            value = self.trait(arg["name"], t)
            return check_predicate(*compile_predicate({op: operand}), MISSING if value is None else value)
        if kind == "sequence":
            return self._sequence(arg, params, key, t)
        if kind == "not_followed_by":
            grace, hold = parse_duration(arg["within"]), parse_duration(arg["hold"])
            for a in self._in(arg["trigger"], params, key, t - grace - hold + 1, t - grace):
                if not self._in(arg["absent"], params, key, a.ts, t):
                    return True
            return False
        width = parse_duration(arg["within"])
        found = self._in(arg["match"], params, key, t - width + 1, t)
        if kind == "absent":
            seen = parse_duration(arg["seen_for"]) if "seen_for" in arg else 0
            return self.first_seen is not None and self.first_seen + seen <= t and not found
        return self._aggregate(kind, arg, found)

    def _aggregate(self, kind: str, arg: Mapping[str, Any], found: list[Ev]) -> bool:
        if kind in ("count", "recent"):
            need = 1 if kind == "recent" else arg.get("gte", arg.get("gt", 0) + 1)
            return len(found) >= need
        if kind == "distinct":
            values = {distinct_value(e.props.get(arg["field"])) for e in found} - {None}
            return len(values) >= arg.get("gte", arg.get("gt", 0) + 1)
        field = "dwell_ms" if kind == "dwell" else arg["field"]
        total = sum(m for e in found if (m := micro_units(e.props.get(field))) is not None)
        threshold = arg.get("gte", arg.get("gt"))
        limit = parse_duration(threshold) * 1_000_000 if kind == "dwell" else micro_units(threshold) or 0
        return total >= limit if "gte" in arg else total > limit

    def _sequence(self, arg: Mapping[str, Any], params: Sequence[str], key: tuple[Any, ...], t: int) -> bool:
        span, hold = parse_duration(arg["within"]), parse_duration(arg["hold"])
        steps = arg["steps"]
        for last in self._in(steps[-1], params, key, t - hold + 1, t):
            candidates = [self._in(s, params, key, last.ts - span + 1, last.ts - 1) for s in steps[:-1]]
            for chain in itertools.product(*candidates):
                times = [e.ts for e in chain] + [last.ts]
                if all(x < y for x, y in itertools.pairwise(times)):
                    return True
        return False

    # ---- bindings and membership
    def _bound_specs(self, cond: Any, params: Sequence[str]) -> list[tuple[Mapping[str, Any], int]]:
        """`(filter, reach)` of the filters binding the parameters, including those of same-parameter refs."""
        if not isinstance(cond, Mapping):
            return []
        ((kind, arg),) = cond.items()
        if kind in ("all", "any"):
            return [x for c in arg for x in self._bound_specs(c, params)]
        if kind == "not":
            return self._bound_specs(arg, params)
        if kind == "segment":
            target = self.docs[arg]
            same = params and tuple(target.get("params", ())) == tuple(params)
            return self._bound_specs(target["condition"], params) if same else []
        if kind == "sequence":
            reach = parse_duration(arg["within"]) + parse_duration(arg["hold"])
            specs = arg["steps"]
        elif kind == "not_followed_by":
            reach = parse_duration(arg["within"]) + parse_duration(arg["hold"])
            specs = [arg["trigger"], arg["absent"]]
        elif kind == "trait":
            return []
        else:
            reach, specs = parse_duration(arg["within"]), [arg["match"]]
        return [(s, reach) for s in specs
                if any(_is_placeholder(v, params) for v in (s.get("props") or {}).values())]

    def bindings(self, name: str) -> set[tuple[Any, ...]]:
        """Every binding some event gives the segment."""
        doc = self.docs[name]
        params = tuple(doc.get("params", ()))
        if not params:
            return {()}
        keys = set()
        for spec, _ in self._bound_specs(doc["condition"], params):
            fields = tuple(next(f for f, v in spec["props"].items() if v == "{" + p + "}") for p in params)
            for e in self.events:
                k = bind_key(e, fields)
                if k is not None and self._matches(spec, e, params, k):
                    keys.add(k)
        return keys

    def member_raw(self, name: str, key: tuple[Any, ...], t: int) -> bool:
        """Membership without the consent gate (consent gates the referring segment anyway)."""
        doc = self.docs[name]
        params = tuple(doc.get("params", ()))
        if self.first_seen is None or t < self.first_seen:
            return False
        if params and not any(self._in(spec, params, key, t - reach + 1, t)
                              for spec, reach in self._bound_specs(doc["condition"], params)):
            return False
        return self.holds(doc["condition"], params, key, t)

    def member(self, name: str, key: tuple[Any, ...], t: int) -> bool:
        """Whether the person holds the tag of `(name, key)` at `t`."""
        return self.consent(t) and self.member_raw(name, key, t)

    def _candidates(self, until: int) -> list[int]:
        durations = {0}
        for doc in self.docs.values():
            durations |= _durations(doc["condition"])
        sums = {a + b for a in durations for b in durations} | durations
        times = {e.ts + d for e in self.all for d in sums}
        return sorted(t for t in times if t <= until)

    def intervals(self, until: int, tag_of: Mapping[str, Any]) -> dict[str, list[Interval]]:
        """Membership intervals of every tag up to `until` (`tag_of[name](key)` renders a tag)."""
        times = self._candidates(until)
        result: dict[str, list[Interval]] = {}
        for name in sorted(self.docs):
            for key in sorted(self.bindings(name), key=repr):
                intervals: list[Interval] = []
                inside = False
                for t in times:
                    now = self.member(name, key, t)
                    if now and not inside:
                        intervals.append((t, None))
                    elif inside and not now:
                        intervals[-1] = (intervals[-1][0], t)
                    inside = now
                if intervals:
                    result[tag_of[name](key)] = intervals
        return dict(sorted(result.items()))


def _is_placeholder(value: Any, params: Sequence[str]) -> bool:
    return isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in params


def _durations(cond: Any) -> set[int]:
    found: set[int] = set()
    if isinstance(cond, Mapping):
        for name in ("within", "hold", "seen_for"):
            if name in cond:
                found.add(parse_duration(cond[name]))
        for value in cond.values():
            found |= _durations(value)
    elif isinstance(cond, list):
        for value in cond:
            found |= _durations(value)
    return found
