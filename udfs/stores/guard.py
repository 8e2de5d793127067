"""The version guard: what a store does with an op given the version it holds (no I/O).

:func:`decide` is the rule the Redis Lua script (`redis_store.GUARD_LUA`) and the DynamoDB condition
expressions (`dynamo_store`) implement, and :class:`ReferenceStore` applies it in memory (the model the
property tests compare the real stores with). Per key, the store keeps the version of the last applied op
(Redis: hash field `_v`; DynamoDB: attribute `version`); a deletion keeps a *tombstone* holding only the
deletion's version (Redis `_t`; DynamoDB item with `_tombstone`) for `tombstone_ttl_ms`:

- a write or a delete whose version is ≤ the stored version (value or tombstone) is skipped;
- an erasure (`erase=True`) deletes unconditionally and leaves a tombstone with *its own* version, so a
  replayed older write stays deleted while a genuinely newer one (a new life of the key) is applied;
- a write whose `expires_at_ms` is already past is stored as a tombstone (expired), not as data.

Consequence (tested): without erasures and partial hash updates, applying any permutation of a set of ops
with distinct versions per key (exact duplicates allowed) gives the state of applying them in version
order. With every op kind: after applying ops in version order, replaying any of them in any order changes
nothing, and a batch that was partly applied before a failure can be re-applied whole.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from udfs.stores.ops import (
    VALUE_FIELD,
    DynamoDelete,
    DynamoErasePartition,
    DynamoPut,
    RedisDelete,
    RedisHash,
    RedisHashUpdate,
    RedisSet,
    StoreOp,
)


class Outcome(enum.Enum):
    """What applying one op did."""

    APPLIED = "applied"
    SKIPPED = "skipped"  # version not above the stored one (older or a replay)
    DELETED = "deleted"  # data removed (if any), tombstone written
    EXPIRED = "expired"  # a write already past its expiry: stored as a tombstone


def decide(stored_version: int | None, op: StoreOp, now_ms: int) -> Outcome:
    """The outcome of `op` on a key holding `stored_version` (value or tombstone; None: nothing)."""
    if isinstance(op, DynamoErasePartition) or (isinstance(op, RedisDelete | DynamoDelete) and op.erase):
        return Outcome.DELETED
    if stored_version is not None and op.version <= stored_version:
        return Outcome.SKIPPED
    if isinstance(op, RedisDelete | DynamoDelete):
        return Outcome.DELETED
    if op.expires_at_ms is not None and op.expires_at_ms <= now_ms:
        return Outcome.EXPIRED
    return Outcome.APPLIED


@dataclass(frozen=True)
class ApplyResult:
    """Counts of one `apply` call.

    Attributes:
        applied: writes stored.
        skipped: ops not above the stored version (older, or replays): not an error.
        deleted: deletions and erasures executed (tombstone written).
        expired: writes already past their expiry, stored as tombstones.
    """

    applied: int = 0
    skipped: int = 0
    deleted: int = 0
    expired: int = 0

    @classmethod
    def of(cls, outcomes: Iterable[Outcome]) -> ApplyResult:
        """Counts a sequence of outcomes."""
        counts = dict.fromkeys(Outcome, 0)
        for outcome in outcomes:
            counts[outcome] += 1
        return cls(counts[Outcome.APPLIED], counts[Outcome.SKIPPED], counts[Outcome.DELETED],
                   counts[Outcome.EXPIRED])

    def __add__(self, other: ApplyResult) -> ApplyResult:
        return ApplyResult(self.applied + other.applied, self.skipped + other.skipped,
                           self.deleted + other.deleted, self.expired + other.expired)

    @property
    def total(self) -> int:
        """Number of ops."""
        return self.applied + self.skipped + self.deleted + self.expired


@dataclass(frozen=True)
class Entry:
    """What a key holds: its version, and its data (None: a tombstone).

    Redis data is field → value (a `RedisSet` value under `v`); DynamoDB data is the stored item.
    """

    version: int
    data: Mapping[str, Any] | None


def stored_data(op: StoreOp, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The data a write leaves on a key that held `previous` (None: nothing or a tombstone)."""
    if isinstance(op, RedisSet):
        return {VALUE_FIELD: op.value}
    if isinstance(op, RedisHash):
        return dict(op.fields)
    if isinstance(op, RedisHashUpdate):
        merged = {**(previous or {}), **op.fields}
        return {k: v for k, v in merged.items() if k not in set(op.remove)}
    if isinstance(op, DynamoPut):
        return op.stored_item()
    raise TypeError(f"{type(op).__name__} writes no data")


class ReferenceStore:
    """An in-memory store applying :func:`decide` (tombstones never expire here)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, ...], Entry] = {}

    def apply(self, ops: Iterable[StoreOp], now_ms: int) -> ApplyResult:
        """Applies ops in order."""
        outcomes = []
        for op in ops:
            if isinstance(op, DynamoErasePartition):
                for ident in [i for i, e in self.entries.items() if op.covers(i) and e.data is not None]:
                    self.entries[ident] = Entry(op.version, None)
                outcomes.append(Outcome.DELETED)
                continue
            entry = self.entries.get(op.ident)
            outcome = decide(entry.version if entry else None, op, now_ms)
            if outcome is Outcome.APPLIED:
                self.entries[op.ident] = Entry(op.version, stored_data(op, entry.data if entry else None))
            elif outcome is not Outcome.SKIPPED:
                self.entries[op.ident] = Entry(op.version, None)
            outcomes.append(outcome)
        return ApplyResult.of(outcomes)

    def live(self, ident: tuple[str, ...]) -> Mapping[str, Any] | None:
        """The data a key holds, or None (absent or tombstone)."""
        entry = self.entries.get(ident)
        return entry.data if entry else None
