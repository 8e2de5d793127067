"""Erasure (`erase` events): delete every person an identifier resolves to, with an audit trail.

For each person of the event's identifiers: its identifiers, every link touching them, their profile
contributions and matching records are removed from the component; the outputs delete the person's
Redis profile and alias keys and DynamoDB item, tombstone the `profiles` changelog key, carry an
`erasures` audit record holding only the person id, a keyed hash of the identifier, the event time and
counts of what was deleted, and pass the (sanitized) `erase` event on to `events.identified` annotated
with the erased person's id, so the jobs downstream (sessions, segments) erase that person too. The
caller (the service, or the directory stage in the keyed job) keeps a tombstone of each erased identifier
so replayed older events do not bring the person back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from udfs.identity.observe import Observation
from udfs.identity.records import (
    Output,
    alias_key,
    erasure_record,
    identified_event,
    next_version,
    profile_deletion,
    profile_key,
)
from udfs.stores.ops import RedisDelete

if TYPE_CHECKING:
    from udfs.identity.engine import ComponentState, Settings


@dataclass
class ErasurePlan:
    """What an erasure did and what the wrapper must delete.

    Attributes:
        outputs: audit records and store deletions (Redis and DynamoDB ops, changelog tombstones).
        keys: typed identifier keys removed (the directory stage drops them and keeps tombstones).
        block_keys: blocking keys whose index entries of these identifiers must be purged.
        redis_keys: Redis keys to delete.
        dynamodb_keys: DynamoDB keys to delete, as {table, key}.
    """

    outputs: list[Output] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    block_keys: set[str] = field(default_factory=set)
    redis_keys: list[str] = field(default_factory=list)
    dynamodb_keys: list[dict[str, object]] = field(default_factory=list)


def hashed_identifier(key: str, settings: Settings) -> str:
    """The audit form of a typed key: `type:` + keyed hash (never the raw or reversible value)."""
    id_type = key.partition(":")[0]
    return f"{id_type}:{settings.hasher.digest('audit', key)}"


def erase_persons(state: ComponentState, obs: Observation, settings: Settings) -> ErasurePlan:
    """Erases, from one component (updated in place), every person of the observation's identifiers.

    The store deletions are erasures (unconditional) at the component's next version (`next_version`).
    """
    config = settings.config
    part = state.graph.partition(config)
    plan = ErasurePlan()
    version = next_version(state.seq, obs.ts_ms)
    for requested in obs.keys:
        pid = part.person_of.get(requested)
        if pid is None or part.members[pid][0] in plan.keys:
            continue
        members = set(part.members[pid])
        attributes = sum(len(state.profiles[k].attrs) + len(state.profiles[k].consent)
                         for k in members if k in state.profiles)
        n_ids, n_links = state.graph.remove(members)
        records = [rid for rid, entry in state.indexed.items() if entry[0] in members]
        for rid in records:
            plan.block_keys.update(state.indexed.pop(rid)[1:])
        for key in members:
            state.profiles.pop(key, None)
        plan.keys |= members
        plan.outputs.extend(profile_deletion(config, pid, version, erase=True))
        aliases = sorted(alias_key(config, k) for k in members)
        plan.outputs.extend(RedisDelete(k, version, erase=True) for k in aliases)
        plan.redis_keys.extend([profile_key(config, pid), *aliases])
        state.seq = version
        plan.dynamodb_keys.append({"table": config.stores.dynamodb_table, "key": {"person_id": pid}})
        deleted = {"identifiers": n_ids, "links": n_links, "profile_attributes": attributes,
                   "matching_records": len(records), "redis_keys": len(aliases) + 1, "dynamodb_items": 1}
        audit_id = hashed_identifier(requested, settings)
        plan.outputs.append(erasure_record(config, obs.event_id, obs.ts_ms, audit_id, pid, deleted))
        if obs.sanitized:
            plan.outputs.append(identified_event(config, obs.sanitized, pid))
    return plan


def audit_unknown(obs: Observation, settings: Settings) -> list[Output]:
    """Audit records of an erasure whose identifiers resolve to no person (nothing to delete)."""
    empty = {"identifiers": 0, "links": 0, "profile_attributes": 0, "matching_records": 0,
             "redis_keys": 0, "dynamodb_items": 0}
    return [erasure_record(settings.config, obs.event_id, obs.ts_ms, hashed_identifier(k, settings), None,
                           empty) for k in obs.keys]

