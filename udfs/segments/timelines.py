"""Person-level facts as functions of event time: personalization consent and the latest profile traits.

Both keep the updates inside the lateness horizon (so late updates re-order correctly) and fold older ones
into a base value.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping
from typing import Any


class ConsentTimeline:
    """Whether personalization is allowed at each event time.

    The value at `t` is that of the newest consent update at or before `t`; several updates in the same
    millisecond combine with "deny wins", so the result does not depend on their arrival order.
    """

    __slots__ = ("_ts", "_vals", "base")

    def __init__(self, default: bool) -> None:
        self.base = default
        self._ts: list[int] = []
        self._vals: list[bool] = []

    def add(self, ts: int, allowed: bool) -> None:
        """Records one consent update."""
        i = bisect_right(self._ts, ts)
        self._ts.insert(i, ts)
        self._vals.insert(i, allowed)

    def allowed(self, t: int) -> bool:
        """Consent at time `t`."""
        if not self._ts:
            return self.base
        i = bisect_right(self._ts, t)
        if i == 0:
            return self.base
        j = bisect_left(self._ts, self._ts[i - 1])
        return all(self._vals[j:i])

    def next_change(self, t: int) -> int | None:
        """The first update after `t`, if any."""
        i = bisect_right(self._ts, t)
        return self._ts[i] if i < len(self._ts) else None

    def compact(self, horizon: int) -> None:
        """Folds updates before `horizon` into the base value."""
        k = bisect_left(self._ts, horizon)
        if k:
            self.base = self.allowed(horizon - 1)
            del self._ts[:k], self._vals[:k]

    def export(self) -> dict[str, Any]:
        """JSON-ready form (a person merge hands it to the survivor)."""
        return {"base": self.base, "updates": [[t, v] for t, v in zip(self._ts, self._vals, strict=True)]}

    def absorb(self, doc: Mapping[str, Any]) -> None:
        """Adds another person's consent (an `export`): its updates, and its base (deny wins)."""
        self.base = self.base and bool(doc["base"])
        for ts, allowed in doc["updates"]:
            self.add(int(ts), bool(allowed))


class TraitTimeline:
    """Profile traits at each event time: per trait, the value of the newest update at or before `t`.

    Updates made while consent was denied are ignored. A null value removes the trait.
    """

    __slots__ = ("_base", "_updates")

    def __init__(self) -> None:
        self._base: dict[str, Any] = {}
        self._updates: dict[str, list[tuple[int, str, Any]]] = {}

    def add(self, ts: int, event_id: str, traits: Mapping[str, Any]) -> None:
        """Records the traits an event carries."""
        for name, value in traits.items():
            insort(self._updates.setdefault(name, []), (ts, event_id, _Value(value)))

    def value_at(self, name: str, t: int, consent: ConsentTimeline) -> Any:
        """The trait's value at `t` (None when unset)."""
        updates = self._updates.get(name)
        if updates:
            i = bisect_right(updates, (t, _TOP))
            while i > 0:
                i -= 1
                ts, _, value = updates[i]
                if consent.allowed(ts):
                    return value.value
        return self._base.get(name)

    def next_change(self, name: str, t: int) -> int | None:
        """The first update of the trait after `t`, if any."""
        updates = self._updates.get(name)
        if not updates:
            return None
        i = bisect_right(updates, (t, _TOP))
        return updates[i][0] if i < len(updates) else None

    def compact(self, horizon: int, consent: ConsentTimeline) -> None:
        """Folds updates before `horizon` into the base values (call before compacting consent)."""
        for name in list(self._updates):
            updates = self._updates[name]
            k = bisect_left(updates, (horizon, ""))
            if not k:
                continue
            value = self.value_at(name, horizon - 1, consent)
            if value is None:
                self._base.pop(name, None)
            else:
                self._base[name] = value
            del updates[:k]
            if not updates:
                del self._updates[name]

    def export(self) -> dict[str, Any]:
        """JSON-ready form (a person merge hands it to the survivor)."""
        return {"base": dict(self._base),
                "updates": {n: [[ts, eid, v.value] for ts, eid, v in ups] for n, ups in self._updates.items()}}

    def absorb(self, doc: Mapping[str, Any]) -> None:
        """Adds another person's traits (an `export`): its updates, and its base values where this person
        has none."""
        for name, value in doc["base"].items():
            self._base.setdefault(name, value)
        for name, updates in doc["updates"].items():
            for ts, event_id, value in updates:
                insort(self._updates.setdefault(name, []), (int(ts), str(event_id), _Value(value)))


_TOP = "\U0010ffff"


class _Value:
    """Wraps a trait value so update tuples sort by (ts, event_id) only."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Value) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Value) and self.value == other.value

    __hash__ = None  # type: ignore[assignment]
