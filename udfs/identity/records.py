"""Output record builders: Kafka records, Redis and DynamoDB operations, as JSON-ready data (no I/O).

The wrapper executes them as they come:

- :class:`KafkaRecord`: produce `value` (JSON; None is a tombstone) with `key` to `topic`.
- Store ops (`udfs.stores.ops`): `RedisSet` of alias keys, `RedisHash` of profiles, `DynamoPut` of profile
  items, `RedisDelete` / `DynamoDelete` of absorbed persons (and of erased ones, with `erase=True`). They
  carry the component's version (:func:`next_version`); `udfs.stores` executes them version-guarded.

Nothing here carries a raw email or phone: identifiers are typed keys whose hashed types are HMACs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from udfs.identity.config import IdentityConfig
from udfs.identity.graph import Refusal, key_type, stable_id
from udfs.stores.keys import build_key
from udfs.stores.ops import (
    DYNAMO_OPS,
    REDIS_OPS,
    DynamoDelete,
    DynamoOp,
    DynamoPut,
    RedisDelete,
    RedisHash,
    RedisOp,
    RedisSet,
)

MERGES, PROFILES, ERASURES, IDENTIFIED, REVIEW = "merges", "profiles", "erasures", "identified", "review"
DEFAULT_TOPICS = {MERGES: "person-merges", PROFILES: "profiles", ERASURES: "erasures",
                  IDENTIFIED: "events.identified", REVIEW: "person-merges"}


@dataclass(frozen=True)
class KafkaRecord:
    """A record to produce."""

    topic: str
    key: str
    value: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": "kafka", "topic": self.topic, "key": self.key, "value": self.value}


VERSION_SLOTS_PER_MS = 1000
Output = KafkaRecord | RedisOp | DynamoOp
STORE_OPS = (*REDIS_OPS, *DYNAMO_OPS)


def next_version(seq: int, ts_ms: int) -> int:
    """The version of a component's next store write: `max(seq + 1, ts_ms * 1000)`.

    Versions follow event time (1 000 writes per millisecond of event time before they spill into the next
    one) and never decrease within a component, so they are replay-stable: a restore that replays events
    from a checkpoint, or a backfill from empty state, computes versions at or below what the stores
    already hold for older facts (skipped by the version guard) and a newer event always wins. Packed
    event times stay below 2**53 (exact as JSON, Redis and DynamoDB numbers) until the year 2255.
    """
    return max(seq + 1, ts_ms * VERSION_SLOTS_PER_MS)


def topic_name(config: IdentityConfig, role: str) -> str:
    """The configured topic of a role (`merges`, `profiles`, `erasures`, `identified`, `review`)."""
    return config.topics.get(role, DEFAULT_TOPICS[role])


def alias_key(config: IdentityConfig, typed_key: str) -> str:
    """Redis alias key of a typed identifier key."""
    id_type, _, value = typed_key.partition(":")
    return build_key(config.stores.redis_alias_key, id_type=id_type, id_value=value)


def profile_key(config: IdentityConfig, person_id: str) -> str:
    """Redis profile hash key of a person."""
    return build_key(config.stores.redis_profile_key, person_id=person_id)


def merge_record(config: IdentityConfig, kind: str, absorbed: str, survivors: list[str], reason: str,
                 event_id: str, ts_ms: int, evidence: dict[str, Any]) -> KafkaRecord:
    """A `person-merges` record: `merge` (absorbed → one survivor) or `split` (→ several persons)."""
    value = {
        "kind": kind,
        "absorbed": absorbed,
        "survivor": survivors[0] if kind == "merge" else None,
        "survivors": survivors,
        "reason": reason,
        "event_id": event_id,
        "ts": ts_ms,
        "evidence": evidence,
        "idempotency_key": stable_id(kind, absorbed, ",".join(survivors), event_id),
    }
    return KafkaRecord(topic_name(config, MERGES), absorbed, value)


def refusal_record(config: IdentityConfig, refusal: Refusal, anchor_person: str, refused_person: str,
                   ts_ms: int) -> KafkaRecord:
    """A `person-merges` record of kind `refused`: the link was not applied, with the reason."""
    value = {
        "kind": "refused",
        "survivor": anchor_person,
        "absorbed": refused_person,
        "anchor_type": key_type(refusal.anchor),
        "refused_type": key_type(refusal.refused),
        "reason": refusal.reason,
        "event_id": refusal.event_id,
        "ts": ts_ms,
        "idempotency_key": refusal.idempotency_key,
    }
    return KafkaRecord(topic_name(config, MERGES), refused_person, value)


def review_record(config: IdentityConfig, person_a: str, person_b: str, record_a: str, record_b: str,
                  score: float, evidence: dict[str, Any], ts_ms: int) -> KafkaRecord:
    """A review candidate (kind `review`): a probabilistic pair between the thresholds, not merged."""
    pa, pb = sorted((person_a, person_b))
    value = {
        "kind": "review",
        "persons": [pa, pb],
        "records": sorted((record_a, record_b)),
        "score": round(score, 4),
        "evidence": evidence,
        "ts": ts_ms,
        "idempotency_key": stable_id("review", *sorted((record_a, record_b))),
    }
    return KafkaRecord(topic_name(config, REVIEW), pa, value)


def profile_document(person_id: str, version: int, updated_ts: int, identifiers: tuple[str, ...],
                     attributes: dict[str, dict[str, Any]],
                     consent: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The full JSON-ready profile of a person (the `profiles` changelog value and DynamoDB item body)."""
    return {
        "person_id": person_id,
        "version": version,
        "updated_ts": updated_ts,
        "identifiers": list(identifiers),
        "attributes": {k: v["value"] for k, v in attributes.items()},
        "provenance": {k: v["provenance"] for k, v in attributes.items()},
        "consent": {k: v["granted"] for k, v in consent.items()},
        "consent_provenance": {k: v["provenance"] for k, v in consent.items()},
    }


def profile_outputs(config: IdentityConfig, doc: dict[str, Any], changed: list[str],
                    event_id: str) -> list[Output]:
    """Redis hash, DynamoDB item and `profiles` changelog record of one profile document (both stores expire
    it `profile_ttl_days` after its `updated_ts`, when set)."""
    person_id, version = doc["person_id"], doc["version"]
    fields = {"person_id": person_id, "version": str(doc["version"]), "updated_ts": str(doc["updated_ts"]),
              "consent": orjson.dumps(doc["consent"], option=orjson.OPT_SORT_KEYS).decode()}
    fields.update({f"attr:{k}": orjson.dumps(v).decode() for k, v in doc["attributes"].items()})
    item = dict(doc)
    expires_ms = None
    if config.stores.profile_ttl_days:
        item["expires_at"] = doc["updated_ts"] // 1000 + config.stores.profile_ttl_days * 86_400
        expires_ms = item["expires_at"] * 1000
    change = {"kind": "profile", **doc, "changed": changed, "event_id": event_id}
    return [
        RedisHash(profile_key(config, person_id), fields, version, expires_ms),
        DynamoPut(config.stores.dynamodb_table, {"person_id": person_id}, item, version, expires_ms),
        KafkaRecord(topic_name(config, PROFILES), person_id, change),
    ]


def profile_deletion(config: IdentityConfig, person_id: str, version: int, erase: bool = False) -> list[Output]:
    """Removes a person's profile everywhere (absorbed or erased person): Redis, DynamoDB, changelog.

    Args:
        config: identity configuration.
        person_id: the person.
        version: the component's version of the deletion.
        erase: an erasure (unconditional in the stores) rather than an absorption.
    """
    return [
        RedisDelete(profile_key(config, person_id), version, erase),
        DynamoDelete(config.stores.dynamodb_table, {"person_id": person_id}, version, erase),
        KafkaRecord(topic_name(config, PROFILES), person_id, None),
    ]


def alias_outputs(config: IdentityConfig, assignments: dict[str, str], version: int) -> list[Output]:
    """Redis alias writes: typed identifier key → person id, at the component's `version`."""
    return [RedisSet(alias_key(config, k), p, version) for k, p in sorted(assignments.items())]


def identified_event(config: IdentityConfig, sanitized: dict[str, Any], person_id: str) -> KafkaRecord:
    """The event annotated with its canonical person id (ids hashed, PII traits omitted or hashed)."""
    return KafkaRecord(topic_name(config, IDENTIFIED), person_id, {**sanitized, "person_id": person_id})


def erasure_record(config: IdentityConfig, event_id: str, ts_ms: int, hashed_identifier: str,
                   person_id: str | None, deleted: dict[str, int]) -> KafkaRecord:
    """The `erasures` audit record: no PII, only ids, the hashed identifier and counts of what went."""
    value = {
        "kind": "erasure",
        "person_id": person_id,
        "identifier": hashed_identifier,
        "event_id": event_id,
        "ts": ts_ms,
        "deleted": deleted,
        "idempotency_key": stable_id("erasure", event_id, hashed_identifier),
    }
    return KafkaRecord(topic_name(config, ERASURES), person_id or hashed_identifier, value)
