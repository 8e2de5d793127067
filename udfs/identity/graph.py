"""The identity graph of one connected component: identifiers, the link log and the derived persons.

State is two grow-only facts, both set-like: each identifier's first sighting (min of (event time, event
id)) and the link log (one entry per event with ≥ 2 identifiers, or per probabilistic match). Persons are
*derived* from them by :func:`partition`, a pure function of the sets:

1. Links are replayed in canonical order (event time, then event id). Within a link the identifiers are
   ordered by (type priority, key); the first is the anchor and every other identifier's person is
   merged into the anchor's person unless the merged person would exceed a type's `max_per_person`, in
   which case that link is refused (the weaker identifier's link is the one dropped) and recorded.
2. The founding identifier of a person is its minimum by (first event time, type priority, key); the
   person id is `p-` + the first 32 hex of SHA-256 of that typed key (the survivor rule).

Since the state is a set union and persons are recomputed from it, merging two component states is
associative, commutative and idempotent, and the final identifier → person mapping does not depend on
arrival order. The link log keeps each link's provenance, so removing a link (unmerge) is a log deletion.

**Compaction.** The log keeps one link per distinct identifier tuple: the earliest by (event time, event
id). A later link naming exactly the same identifiers can never change the replay — by its turn the
earlier one was replayed, and it either united those persons or was refused, and persons only grow
during a replay, so the later one is a no-op or refused again. Dropping it leaves the persons, the
survivors and the refusal of the earliest link unchanged (the refusal records of repeats go), whatever
arrives later, and keeps the log bounded by the distinct tuples of the component (a user logging in a
thousand times on one device is one entry, not a thousand) instead of growing with every event.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from udfs.identity.config import IdentityConfig


def person_id_for(key: str) -> str:
    """Derives the person id of a founding typed identifier key (e.g. `user_id:42`)."""
    return "p-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def key_type(key: str) -> str:
    """Returns the identifier type of a typed key."""
    return key.partition(":")[0]


def stable_id(*parts: object) -> str:
    """A deterministic 32-hex idempotency key of its parts."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Link:
    """One entry of the link log.

    Attributes:
        event_id: the event (or `fs:` match id) that asserted the link.
        ts_ms: its event time.
        keys: the typed identifier keys it links, in canonical (priority, key) order.
        origin: provenance without PII: `kind` (`event` / `fs_match`), event type, source, score, evidence.
    """

    event_id: str
    ts_ms: int
    keys: tuple[str, ...]
    origin: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_list(self) -> list[Any]:
        """Serializes to a JSON-ready list."""
        return [self.event_id, self.ts_ms, list(self.keys), self.origin]

    @classmethod
    def from_list(cls, data: list[Any]) -> Link:
        """Inverse of :meth:`to_list`."""
        return cls(str(data[0]), int(data[1]), tuple(data[2]), dict(data[3]))


@dataclass(frozen=True)
class Refusal:
    """A link that was not applied, and why (`limit:<type>` or `component_limit`)."""

    event_id: str
    anchor: str
    refused: str
    reason: str

    @property
    def idempotency_key(self) -> str:
        """Deterministic id of this refusal."""
        return stable_id("refused", self.event_id, self.anchor, self.refused, self.reason)


@dataclass(frozen=True)
class Partition:
    """Persons derived from a component's state."""

    person_of: dict[str, str]
    members: dict[str, tuple[str, ...]]
    founding: dict[str, str]
    refusals: tuple[Refusal, ...]
    accepted: dict[str, tuple[str, ...]]  # person -> event ids of links applied inside it


def canonical_keys(keys: set[str] | list[str] | tuple[str, ...], config: IdentityConfig) -> tuple[str, ...]:
    """Orders typed keys by (type priority, key)."""
    return tuple(sorted(set(keys), key=lambda k: (config.type_rule(key_type(k)).priority, k)))


def founding_order(key: str, first_seen: dict[str, tuple[int, str]],
                   config: IdentityConfig) -> tuple[Any, ...]:
    """The survivor-rule order of an identifier: (first event time, type priority, key)."""
    return (first_seen[key][0], config.type_rule(key_type(key)).priority, key)


class _UnionFind:
    def __init__(self, keys: list[str]):
        self.parent = {k: k for k in keys}
        self.counts = {k: Counter({key_type(k): 1}) for k in keys}
        self.sizes = dict.fromkeys(keys, 1)

    def find(self, k: str) -> str:
        root = k
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[k] != root:
            self.parent[k], k = root, self.parent[k]
        return root

    def union_into(self, root: str, other: str) -> None:
        self.parent[other] = root
        self.counts[root] += self.counts.pop(other)
        self.sizes[root] += self.sizes.pop(other)


def partition(first_seen: dict[str, tuple[int, str]], links: dict[str, Link],
              config: IdentityConfig) -> Partition:
    """Derives persons from a component's identifiers and link log (see the module docstring)."""
    uf = _UnionFind(sorted(first_seen))
    refusals: list[Refusal] = []
    applied: dict[str, list[str]] = {}
    for link in sorted(links.values(), key=lambda lk: (lk.ts_ms, lk.event_id)):
        keys = [k for k in link.keys if k in uf.parent]
        if len(keys) < 2:
            continue
        anchor = keys[0]
        for key in keys[1:]:
            root, other = uf.find(anchor), uf.find(key)
            if root == other:
                continue
            merged = uf.counts[root] + uf.counts[other]
            over = sorted(t for t, n in merged.items()
                          if (limit := config.type_rule(t).max_per_person) is not None and n > limit)
            if over:
                refusals.append(Refusal(link.event_id, anchor, key, "limit:" + ",".join(over)))
                continue
            uf.union_into(root, other)
            applied[root] = [*applied.get(root, ()), *applied.pop(other, ()), link.event_id]
    groups: dict[str, list[str]] = {}
    for key in uf.parent:
        groups.setdefault(uf.find(key), []).append(key)
    person_of: dict[str, str] = {}
    members: dict[str, tuple[str, ...]] = {}
    founding: dict[str, str] = {}
    accepted: dict[str, tuple[str, ...]] = {}
    for root, keys in groups.items():
        founder = min(keys, key=lambda k: founding_order(k, first_seen, config))
        pid = person_id_for(founder)
        founding[pid] = founder
        members[pid] = canonical_keys(keys, config)
        accepted[pid] = tuple(sorted(set(applied.get(root, ()))))
        for key in keys:
            person_of[key] = pid
    return Partition(person_of, members, founding, tuple(refusals), accepted)


def _with_singleton(part: Partition, key: str) -> Partition:
    """The partition plus a new identifier alone in its own person."""
    pid = person_id_for(key)
    return Partition({**part.person_of, key: pid}, {**part.members, pid: (key,)}, {**part.founding, pid: key},
                     part.refusals, {**part.accepted, pid: ()})


def _apply_link(part: Partition, link: Link, first_seen: dict[str, tuple[int, str]],
                config: IdentityConfig) -> Partition:
    """One step of the greedy replay of :func:`partition`, for a link that sorts after all others."""
    person_of, members = dict(part.person_of), dict(part.members)
    founding, accepted, refusals = dict(part.founding), dict(part.accepted), list(part.refusals)
    keys = [k for k in link.keys if k in person_of]
    for key in keys[1:]:
        pa, pb = person_of[keys[0]], person_of[key]
        if pa == pb:
            continue
        merged = Counter(key_type(k) for k in members[pa] + members[pb])
        over = sorted(t for t, n in merged.items()
                      if (limit := config.type_rule(t).max_per_person) is not None and n > limit)
        if over:
            refusals.append(Refusal(link.event_id, keys[0], key, "limit:" + ",".join(over)))
            continue
        founder = min(founding[pa], founding[pb], key=lambda k: founding_order(k, first_seen, config))
        pid = person_id_for(founder)
        union = canonical_keys(members.pop(pa) + members.pop(pb), config)
        ids = sorted({*accepted.pop(pa), *accepted.pop(pb), link.event_id})
        founding.pop(pa), founding.pop(pb)
        members[pid], founding[pid], accepted[pid] = union, founder, tuple(ids)
        for k in union:
            person_of[k] = pid
    return Partition(person_of, members, founding, tuple(refusals), accepted)


@dataclass
class IdentityGraph:
    """Identifiers and link log of one connected component (a state-based CRDT plus a derived cache)."""

    first_seen: dict[str, tuple[int, str]] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    _cache: Partition | None = field(default=None, repr=False, compare=False)
    _tail_key: tuple[int, str] | None = field(default=None, repr=False, compare=False)
    _by_keys: dict[tuple[str, ...], str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.first_seen and not self.links:
            self._cache = Partition({}, {}, {}, (), {})
        given, self.links = self.links, {}
        for link in given.values():  # compacts a log stored before compaction existed
            self._keep(link)

    def _keep(self, link: Link) -> bool:
        """Puts a link into the compacted log: returns False when an earlier link of the same identifier
        tuple is kept (the new one is redundant); replaces a later one."""
        held_id = self._by_keys.get(link.keys)
        if held_id is not None:
            held = self.links[held_id]
            if (held.ts_ms, held.event_id) <= (link.ts_ms, link.event_id):
                return False
            del self.links[held_id]
        self.links[link.event_id] = link
        self._by_keys[link.keys] = link.event_id
        return True

    def observe(self, keys: list[str] | tuple[str, ...], ts_ms: int, event_id: str,
                config: IdentityConfig | None = None) -> bool:
        """Records sightings of identifiers; returns True when a first sighting changed.

        With `config`, new identifiers extend the cached partition as singletons instead of dropping it
        (a new identifier changes nobody else's first sighting).
        """
        changed = False
        for key in keys:
            seen = self.first_seen.get(key)
            if seen is None or (ts_ms, event_id) < seen:
                self.first_seen[key] = (ts_ms, event_id)
                changed = True
                if seen is None and config is not None and self._cache is not None:
                    self._cache = _with_singleton(self._cache, key)
                elif seen is None or ts_ms < seen[0]:  # persons depend on the first time only
                    self._cache = None
        return changed

    def add_link(self, link: Link, config: IdentityConfig | None = None) -> bool:
        """Appends a link to the log (idempotent by event id; compacted, see the module docstring); returns
        True when the log changed.

        With `config`, a link that sorts after every logged link is applied to the cached partition
        incrementally: the greedy replay would process it last, so the result is the same.
        """
        if link.event_id in self.links:
            return False
        tail = self._tail()
        self.observe(link.keys, link.ts_ms, link.event_id, config)
        if not self._keep(link):
            return False
        at_tail = tail is None or (link.ts_ms, link.event_id) > tail
        if config is not None and self._cache is not None and at_tail:
            self._cache = _apply_link(self._cache, link, self.first_seen, config)
        else:
            self._cache = None
        new_key = (link.ts_ms, link.event_id)
        self._tail_key = new_key if tail is None else max(tail, new_key)
        return True

    def _tail(self) -> tuple[int, str] | None:
        if self._tail_key is None and self.links:
            self._tail_key = max((lk.ts_ms, lk.event_id) for lk in self.links.values())
        return self._tail_key

    def merge(self, other: IdentityGraph, config: IdentityConfig | None = None) -> None:
        """Unions another component's state into this one.

        With `config` and disjoint identifiers (two distinct components), the persons of the union are the
        union of both partitions (links of one never touch identifiers of the other), so the cached
        partition is kept instead of being recomputed.
        """
        disjoint = config is not None and self.first_seen.keys().isdisjoint(other.first_seen)
        mine = self.partition(config) if disjoint and config is not None else None
        theirs = other.partition(config) if disjoint and config is not None else None
        for key, seen in other.first_seen.items():
            self.observe([key], *seen)
        for link in other.links.values():
            self.add_link(link)
        self._cache, self._tail_key = None, None
        if mine is not None and theirs is not None:
            self._cache = Partition({**mine.person_of, **theirs.person_of},
                                    {**mine.members, **theirs.members},
                                    {**mine.founding, **theirs.founding}, mine.refusals + theirs.refusals,
                                    {**mine.accepted, **theirs.accepted})

    def remove(self, keys: set[str]) -> tuple[int, int]:
        """Deletes identifiers and every link touching them; returns (identifiers, links) removed."""
        gone_links = [eid for eid, link in self.links.items() if keys.intersection(link.keys)]
        for eid in gone_links:
            del self._by_keys[self.links.pop(eid).keys]
        gone_ids = [k for k in keys if k in self.first_seen]
        for key in gone_ids:
            del self.first_seen[key]
        self._cache, self._tail_key = None, None
        return len(gone_ids), len(gone_links)

    def partition(self, config: IdentityConfig) -> Partition:
        """The derived persons (cached until the state changes)."""
        if self._cache is None:
            self._cache = partition(self.first_seen, self.links, config)
        return self._cache

    def to_dict(self) -> dict[str, Any]:
        """Serializes to a JSON-ready dict (the derived partition is not stored)."""
        return {"f": {k: list(v) for k, v in self.first_seen.items()},
                "l": [lk.to_list() for lk in self.links.values()]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdentityGraph:
        """Inverse of :meth:`to_dict`."""
        links = [Link.from_list(x) for x in data.get("l", [])]
        return cls({k: (int(v[0]), str(v[1])) for k, v in data.get("f", {}).items()},
                   {lk.event_id: lk for lk in links})
