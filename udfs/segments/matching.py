"""Event filters of segment definitions: which events count as evidence, and the values taken from them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from udfs.contract import parse_event_time

MISSING = object()
PREDICATE_OPS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "prefix")
_SCALARS = (str, int, float, bool)


class Ev:
    """The part of an event the segments core keeps: time, id, type and the fields conditions read."""

    __slots__ = ("channel", "consent", "id", "props", "source", "traits", "ts", "type")

    def __init__(self, ts: int, event_id: str, etype: str, props: Mapping[str, Any] | None = None,
                 channel: str | None = None, source: str | None = None,
                 traits: Mapping[str, Any] | None = None, consent: Mapping[str, Any] | None = None) -> None:
        self.ts = ts
        self.id = event_id
        self.type = etype
        self.props: Mapping[str, Any] = props or {}
        self.channel = channel
        self.source = source
        self.traits = traits
        self.consent = consent

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as the constructor's arguments (the person's history is pickled on every state write)."""
        return Ev, (self.ts, self.id, self.type, self.props, self.channel, self.source, self.traits, self.consent)

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Ev:
        """Builds from a validated event (`ts_ms` when present, else `ts` parsed)."""
        ts = event.get("ts_ms")
        if not isinstance(ts, int) or isinstance(ts, bool):
            ts = parse_event_time(event["ts"])
        props, traits, consent = (event.get(k) for k in ("props", "traits", "consent"))
        return cls(ts, str(event["event_id"]), str(event["type"]),
                   props if isinstance(props, Mapping) else None, event.get("channel"), event.get("source"),
                   traits if isinstance(traits, Mapping) else None,
                   consent if isinstance(consent, Mapping) else None)

    def to_event(self) -> dict[str, Any]:
        """Back to an event dict `on_event` accepts (e.g. to replay a merged person's history)."""
        body: dict[str, Any] = {"event_id": self.id, "type": self.type, "ts": self.ts, "ts_ms": self.ts,
                                "ids": {}}
        for name in ("props", "channel", "source", "traits", "consent"):
            value = getattr(self, name)
            if value:
                body[name] = dict(value) if isinstance(value, Mapping) else value
        return body

    def sort_key(self) -> tuple[int, str]:
        """Total order of events: time, then id."""
        return self.ts, self.id


def compile_predicate(spec: Any) -> tuple[str, Any]:
    """Normalizes a predicate: a scalar means equality, else a one-key mapping `{op: operand}`."""
    if isinstance(spec, Mapping):
        ((op, operand),) = spec.items()
        if op in ("in", "not_in"):
            operand = tuple(operand)
        return op, operand
    return "eq", spec


def check_predicate(op: str, operand: Any, value: Any) -> bool:
    """Evaluates a predicate on a value (`MISSING` or None when the field is absent)."""
    if op == "exists":
        return (value is not MISSING and value is not None) == bool(operand)
    if value is MISSING or value is None:
        return False
    if op == "eq":
        return _same(value, operand)
    if op == "ne":
        return not _same(value, operand)
    if op == "in":
        return any(_same(value, x) for x in operand)
    if op == "not_in":
        return not any(_same(value, x) for x in operand)
    if op == "prefix":
        return isinstance(value, str) and value.startswith(operand)
    if not _comparable(value, operand):
        return False
    if op == "gt":
        return bool(value > operand)
    if op == "gte":
        return bool(value >= operand)
    if op == "lt":
        return bool(value < operand)
    return bool(value <= operand)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else bool(a == b)


def _comparable(a: Any, b: Any) -> bool:
    numeric = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, numeric) and isinstance(b, numeric)) or (isinstance(a, str) and isinstance(b, str))


def describe_predicate(field: str, op: str, operand: Any) -> str:
    """Human-readable form of one predicate, for reasons and docs."""
    symbols = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
    if op in symbols:
        return f"{field}{symbols[op]}{json.dumps(operand)}"
    if op == "exists":
        return f"{field} exists" if operand else f"{field} missing"
    return f"{field} {op} {json.dumps(list(operand) if isinstance(operand, tuple) else operand)}"


class Match:
    """A compiled event filter: event types, predicates on props / channel / source.

    Attributes:
        id: canonical text of the filter (equal filters share one compiled object).
        types: accepted event types.
        tests: `(where, field, op, operand)` with `where` in `props`, `channel`, `source`.
        text: human-readable form.
    """

    __slots__ = ("id", "tests", "text", "types")

    def __init__(self, types: tuple[str, ...], tests: tuple[tuple[str, str, str, Any], ...]) -> None:
        self.types = frozenset(types)
        self.tests = tests
        self.id = json.dumps([sorted(types), [list(t) for t in tests]], default=list)
        parts = [describe_predicate(f if where == "props" else where, op, operand)
                 for where, f, op, operand in tests]
        self.text = "|".join(sorted(types)) + (f"[{', '.join(parts)}]" if parts else "")

    def accepts(self, ev: Ev) -> bool:
        """Whether the event matches (its type is assumed to be one of `types`)."""
        for where, field, op, operand in self.tests:
            if where == "props":
                value = ev.props.get(field, MISSING)
            else:
                value = ev.channel if where == "channel" else ev.source
            if not check_predicate(op, operand, value):
                return False
        return True


def bind_key(ev: Ev, fields: tuple[str, ...]) -> tuple[Any, ...] | None:
    """The parameter values an event binds (props `fields`, in parameter order); None if one is missing."""
    values = []
    for field in fields:
        value = ev.props.get(field)
        if value is None or not isinstance(value, _SCALARS) or value == "":
            return None
        values.append(value)
    return tuple(values)


def micro_units(value: Any) -> int | None:
    """A summable value as exact integer millionths; None for non-numbers, negatives and non-finite floats.

    Fixed-point sums are exact and independent of the order the values arrive in.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value < 0:
        return None
    return value * 1_000_000 if isinstance(value, int) else round(value * 1_000_000)


def distinct_value(value: Any) -> str | None:
    """A value counted by `distinct`, as text (numbers by their JSON form); None if not a scalar."""
    if value is None or not isinstance(value, _SCALARS) or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value)
