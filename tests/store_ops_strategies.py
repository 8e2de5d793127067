"""Hypothesis scenarios of versioned store ops, shared by the unit (model) and e2e (real stores) tests.

A scenario is a set of ops with distinct versions per key, some of them repeated (replays), and one
permutation of them. `build` turns the abstract specs into ops under a namespace (distinct keys per example)
and a wall-clock `now_ms` (expiries already past or well ahead).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from udfs.stores.ops import DynamoDelete, DynamoPut, RedisDelete, RedisHash, RedisHashUpdate, RedisSet, StoreOp

REDIS_KINDS = ("set", "hash", "delete")  # whole-value ops: they commute
DYNAMO_KINDS = ("put", "remove")  # remove: a DynamoDB delete
REDIS_ALL = (*REDIS_KINDS, "update", "erase")  # partial updates and erasures only survive in-order replays
DYNAMO_ALL = (*DYNAMO_KINDS, "wipe")  # wipe: a DynamoDB erasure
EXPIRIES = ("none", "past", "future")
TABLE = "tagstream_segments"


@dataclass(frozen=True)
class Spec:
    """One abstract op: which key (`slot`), version, kind, payload and expiry class."""

    slot: int
    version: int
    kind: str
    payload: int
    expiry: str


@dataclass(frozen=True)
class Scenario:
    """Distinct specs, with replays appended, and a permutation (indices into `specs`)."""

    specs: tuple[Spec, ...]
    order: tuple[int, ...]


@st.composite
def scenarios(draw: st.DrawFn, slots: int = 3, kinds: tuple[str, ...] = REDIS_KINDS,
              max_ops: int = 14) -> Scenario:
    """Ops on `slots` keys of one store (`kinds`: REDIS_KINDS or DYNAMO_KINDS)."""
    keys = draw(st.lists(st.tuples(st.integers(0, slots - 1), st.integers(0, 60)), min_size=1, max_size=max_ops,
                         unique=True))
    specs = [Spec(slot, version, draw(st.sampled_from(kinds)), draw(st.integers(0, 3)),
                  draw(st.sampled_from(EXPIRIES))) for slot, version in keys]
    replays = draw(st.lists(st.sampled_from(specs), max_size=4))
    everything = (*specs, *replays)
    order = draw(st.permutations(range(len(everything))))
    return Scenario(everything, tuple(order))


def build(spec: Spec, namespace: str, now_ms: int) -> StoreOp:
    """The op of a spec: Redis key `{namespace}:{slot}` or DynamoDB item (namespace, tag `t{slot}`)."""
    expires = {"none": None, "past": now_ms - 60_000, "future": now_ms + 86_400_000}[spec.expiry]
    key = f"{namespace}:{spec.slot}"
    item_key = {"person_id": namespace, "tag": f"t{spec.slot}"}
    if spec.kind == "set":
        return RedisSet(key, {"payload": spec.payload, "at": spec.version}, spec.version, expires)
    if spec.kind == "hash":
        return RedisHash(key, {"payload": str(spec.payload), "at": str(spec.version)}, spec.version, expires)
    if spec.kind == "put":
        item = {"payload": spec.payload + 0.25, "nested": {"xs": [1.5, spec.version, None]}}
        return DynamoPut(TABLE, item_key, item, spec.version, expires)
    if spec.kind == "update":
        return RedisHashUpdate(key, {f"f{spec.payload}": {"at": spec.version}}, [f"f{(spec.payload + 1) % 4}"],
                               spec.version, expires)
    if spec.kind in ("remove", "wipe"):
        return DynamoDelete(TABLE, item_key, spec.version, erase=spec.kind == "wipe")
    return RedisDelete(key, spec.version, erase=spec.kind == "erase")


def ops_of(scenario: Scenario, namespace: str, now_ms: int) -> tuple[list[StoreOp], list[StoreOp]]:
    """The scenario's ops in version order (replays included) and in its permutation."""
    ops = [build(s, namespace, now_ms) for s in scenario.specs]
    return sorted(ops, key=lambda o: o.version), [ops[i] for i in scenario.order]


def replay_of(scenario: Scenario, in_order: list[StoreOp]) -> list[StoreOp]:
    """A suffix of the in-order ops, as a restart from a checkpoint replays them (cut drawn from `order`)."""
    return in_order[scenario.order[0] % len(in_order):]
