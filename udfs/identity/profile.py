"""Profile attributes resolved independently of arrival order.

Each attribute keeps only what its policy needs to decide — the best candidate under a total order, the
per-event contributions of a `sum`, the earliest-seen elements of a `union` — and two states merge with
an associative, commutative and idempotent function. Hence any permutation (and any redelivery) of the
same events, and any order of person merges, yields the identical profile, provenance included.

Total orders (higher wins unless noted), each ending with the event id and then the canonical JSON of
the value, so no two distinct candidates tie:

- `source_priority`: (source trust score, event time, event id)
- `most_recent`: (event time, event id); a null value clears the attribute
- `non_empty`: as `most_recent`, but null/empty values never compete
- `first_seen`: lowest (event time, event id)
- `max` / `min`: highest / lowest (value, event time, event id); numbers rank before text
- `sum`: exact sum (math.fsum, or int sum) of one contribution per event id
- `union`: the set of elements, each with its earliest (event time, event id); the earliest
  `max_union_elements` are kept
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from udfs.identity.config import AttributePolicy, ProfilePolicies

_MAX_POLICIES = ("source_priority", "most_recent", "non_empty", "max")
_MIN_POLICIES = ("first_seen", "min")


def canonical_json(value: Any) -> str:
    """Returns a canonical JSON text of a value (sorted keys), used as a tie-break and set key."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def is_number(value: Any) -> bool:
    """True for int and float values other than booleans (and not NaN / infinite)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_empty(value: Any) -> bool:
    """True for null, blank text and empty containers."""
    return value is None or (isinstance(value, str) and not value.strip()) or value in ([], {})


@dataclass(frozen=True)
class Candidate:
    """A value offered by one event, with its provenance."""

    value: Any
    ts_ms: int
    event_id: str
    source: str

    def to_list(self) -> list[Any]:
        """Serializes to a compact JSON-ready list."""
        return [self.value, self.ts_ms, self.event_id, self.source]

    @classmethod
    def from_list(cls, data: list[Any]) -> Candidate:
        """Inverse of :meth:`to_list`."""
        return cls(data[0], int(data[1]), str(data[2]), str(data[3]))


def _value_rank(value: Any) -> tuple[int, Any]:
    return (0, value) if is_number(value) else (1, canonical_json(value))


def _order_key(policy: str, policies: ProfilePolicies) -> Callable[[Candidate], tuple[Any, ...]]:
    if policy == "source_priority":
        return lambda c: (policies.source_score(c.source), c.ts_ms, c.event_id)
    if policy in ("max", "min"):
        return lambda c: (_value_rank(c.value), c.ts_ms, c.event_id)
    return lambda c: (c.ts_ms, c.event_id)


def best_of(policy: str, policies: ProfilePolicies,
            candidates: Iterable[Candidate | None]) -> Candidate | None:
    """Returns the winning candidate under a single-value policy (None when there is none).

    Candidates equal under the policy's order (only possible for one event id offering two values) are
    decided by the canonical JSON of the value, so the result never depends on the order offered.
    """
    key = _order_key(policy, policies)
    lowest = policy in _MIN_POLICIES
    best: Candidate | None = None
    best_key: tuple[Any, ...] = ()
    for cand in candidates:
        if cand is None:
            continue
        k = key(cand)
        if best is None or (k < best_key if lowest else k > best_key):
            best, best_key = cand, k
        elif k == best_key and cand != best and canonical_json(cand.value) > canonical_json(best.value):
            best = cand
    return best


@dataclass
class AttributeState:
    """What one attribute keeps: the best candidate, or the parts of a `sum` / `union`."""

    best: Candidate | None = None
    parts: dict[str, Candidate] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Serializes to a JSON-ready dict."""
        out: dict[str, Any] = {}
        if self.best is not None:
            out["b"] = self.best.to_list()
        if self.parts:
            out["p"] = {k: c.to_list() for k, c in self.parts.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttributeState:
        """Inverse of :meth:`to_dict`."""
        best = Candidate.from_list(data["b"]) if "b" in data else None
        return cls(best, {k: Candidate.from_list(v) for k, v in data.get("p", {}).items()})


def accepts(policy: str, value: Any) -> bool:
    """Tells whether a value may compete under a policy (e.g. `sum` takes numbers only)."""
    if policy == "most_recent":
        return True
    if is_empty(value):
        return False
    if policy == "sum":
        return is_number(value)
    if policy in ("max", "min"):
        return is_number(value) or isinstance(value, str)
    return True


class ProfileState:
    """Per-attribute resolution state plus per-purpose consent (a state-based CRDT)."""

    def __init__(self, attrs: dict[str, AttributeState] | None = None,
                 consent: dict[str, Candidate] | None = None):
        self.attrs: dict[str, AttributeState] = attrs or {}
        self.consent: dict[str, Candidate] = consent or {}

    def is_empty(self) -> bool:
        """True when nothing was contributed."""
        return not self.attrs and not self.consent

    def add(self, policy: AttributePolicy, candidate: Candidate, policies: ProfilePolicies) -> None:
        """Offers one event's value for an attribute."""
        if not accepts(policy.policy, candidate.value):
            return
        state = self.attrs.setdefault(policy.name, AttributeState())
        if policy.policy == "sum":
            state.parts[candidate.event_id] = candidate
        elif policy.policy == "union":
            values = candidate.value if isinstance(candidate.value, list) else [candidate.value]
            incoming = {canonical_json(v): Candidate(v, candidate.ts_ms, candidate.event_id, candidate.source)
                        for v in values if not is_empty(v)}
            state.parts = _union_parts(state.parts, incoming, policies.max_union_elements)
        else:
            state.best = best_of(policy.policy, policies, (state.best, candidate))

    def add_consent(self, purpose: str, candidate: Candidate) -> None:
        """Records a consent decision (the most recent by event time, then event id, wins)."""
        self.consent[purpose] = best_of("most_recent", _NO_SCORES, (self.consent.get(purpose), candidate))  # type: ignore[assignment]

    def merge(self, other: ProfileState, policies: ProfilePolicies) -> None:
        """Merges another state into this one (associative, commutative, idempotent)."""
        for name, theirs in other.attrs.items():
            mine = self.attrs.setdefault(name, AttributeState())
            policy = policies.for_trait(name).policy
            if policy == "sum":
                mine.parts = {**mine.parts, **theirs.parts}
            elif policy == "union":
                mine.parts = _union_parts(mine.parts, theirs.parts, policies.max_union_elements)
            else:
                mine.best = best_of(policy, policies, (mine.best, theirs.best))
        for purpose, cand in other.consent.items():
            self.add_consent(purpose, cand)

    def copy(self) -> ProfileState:
        """Returns an independent copy."""
        return ProfileState.from_dict(self.to_dict())

    def resolve(self, policies: ProfilePolicies) -> dict[str, dict[str, Any]]:
        """Materializes the profile: attribute → {value, provenance}. Cleared attributes are absent."""
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(self.attrs):
            state = self.attrs[name]
            policy = policies.for_trait(name).policy
            resolved = _resolve_one(policy, state)
            if resolved is not None:
                out[name] = resolved
        return out

    def resolve_consent(self) -> dict[str, dict[str, Any]]:
        """Consent by purpose: {granted, provenance}."""
        return {p: {"granted": bool(c.value), "provenance": _provenance("most_recent", c)}
                for p, c in sorted(self.consent.items())}

    def to_dict(self) -> dict[str, Any]:
        """Serializes to a JSON-ready dict."""
        return {"a": {k: v.to_dict() for k, v in self.attrs.items()},
                "c": {k: v.to_list() for k, v in self.consent.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileState:
        """Inverse of :meth:`to_dict`."""
        return cls({k: AttributeState.from_dict(v) for k, v in data.get("a", {}).items()},
                   {k: Candidate.from_list(v) for k, v in data.get("c", {}).items()})


_NO_SCORES = ProfilePolicies({}, 0.0, AttributePolicy("*", "most_recent", "traits.*"), {})


def _union_parts(a: dict[str, Candidate], b: dict[str, Candidate], limit: int) -> dict[str, Candidate]:
    merged = dict(a)
    for key, cand in b.items():
        merged[key] = best_of("first_seen", _NO_SCORES, (merged.get(key), cand))  # type: ignore[assignment]
    if len(merged) > limit:
        kept = sorted(merged.items(), key=lambda kv: (kv[1].ts_ms, kv[1].event_id, kv[0]))[:limit]
        merged = dict(kept)
    return merged


def _provenance(policy: str, cand: Candidate) -> dict[str, Any]:
    return {"policy": policy, "source": cand.source, "ts": cand.ts_ms, "event_id": cand.event_id}


def _resolve_one(policy: str, state: AttributeState) -> dict[str, Any] | None:
    if policy in ("sum", "union"):
        if not state.parts:
            return None
        parts = list(state.parts.values())
        latest = max(parts, key=lambda c: (c.ts_ms, c.event_id))
        prov = {**_provenance(policy, latest), "count": len(parts)}
        if policy == "sum":
            values = [c.value for c in parts]
            total = sum(values) if all(isinstance(v, int) for v in values) else math.fsum(values)
            return {"value": total, "provenance": prov}
        ordered = sorted(parts, key=lambda c: _value_rank(c.value))
        return {"value": [c.value for c in ordered], "provenance": prov}
    best = state.best
    if best is None or (policy == "most_recent" and best.value is None):
        return None
    return {"value": best.value, "provenance": _provenance(policy, best)}
