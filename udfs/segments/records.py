"""JSON-ready records of the segments job: `segment-changes` events, the Redis current-state view, the
DynamoDB items and `events.late` records. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from udfs.segments.config import SegmentsConfig
from udfs.stores.keys import build_key
from udfs.stores.ops import DynamoDelete, DynamoPut, RedisDelete, RedisHashUpdate

JOB = "segments"
CHANGE, LATE = "segment_change", "late"
TOO_LATE = "too_late"


@dataclass
class Outputs:
    """Everything one call of the core produced.

    Attributes:
        changes: `segment-changes` records, in emission order (retractions before the changes replacing them).
        late: `events.late` records.
        redis: Redis ops (`udfs.stores.ops`): updates of the person's view hash, a delete on erasure.
        dynamo: DynamoDB ops: a put per current (person, tag), a delete when it ends.
        duplicates: events ignored because their id was already seen.
    """

    changes: list[dict[str, Any]] = field(default_factory=list)
    late: list[dict[str, Any]] = field(default_factory=list)
    redis: list[RedisHashUpdate | RedisDelete] = field(default_factory=list)
    dynamo: list[DynamoPut | DynamoDelete] = field(default_factory=list)
    duplicates: int = 0

    def fields(self) -> dict[str, Any]:
        """The view-hash fields this call set (later writes win)."""
        found: dict[str, Any] = {}
        for write in self.redis:
            if isinstance(write, RedisHashUpdate):
                found.update(write.fields)
        return found

    def extend(self, other: Outputs) -> None:
        """Appends another call's outputs."""
        self.changes.extend(other.changes)
        self.late.extend(other.late)
        self.redis.extend(other.redis)
        self.dynamo.extend(other.dynamo)
        self.duplicates += other.duplicates


def _digest(*parts: object) -> str:
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def change_key(person_id: str, segment: str, version: str, tag: str, enter: bool, ts: int,
               generation: int) -> str:
    """Deterministic idempotency key of a change: the same change computed again gets the same key; a change
    re-emitted after a retraction of the same (tag, op, ts) gets a new one (`generation`)."""
    return _digest(person_id, segment, version, tag, "enter" if enter else "exit", ts, generation)


def change_record(*, person_id: str, segment: str, version: str, tag: str, params: Mapping[str, Any],
                  enter: bool, ts: int, key: str, correction: bool, expires_at: int | None,
                  reason: Mapping[str, Any]) -> dict[str, Any]:
    """A `segment-changes` record for one entry or exit (Kafka key: person id)."""
    return {"kind": CHANGE, "key": key, "person_id": person_id, "segment": segment, "version": version,
            "tag": tag, "params": dict(params), "op": "enter" if enter else "exit", "ts_ms": ts,
            "correction": correction, "retraction": False, "retracts": None,
            "expires_at_ms": expires_at if enter else None, "reason": dict(reason)}


def retraction_record(*, person_id: str, segment: str, version: str, tag: str, params: Mapping[str, Any],
                      enter: bool, ts: int, retracts: str, cause: Mapping[str, Any]) -> dict[str, Any]:
    """A record cancelling an earlier change (`retracts` is that change's key): it turned out wrong once
    late evidence arrived. Consumers drop the retracted record; the corrected change follows."""
    return {"kind": CHANGE, "key": _digest("retract", retracts), "person_id": person_id, "segment": segment,
            "version": version, "tag": tag, "params": dict(params), "op": "enter" if enter else "exit",
            "ts_ms": ts, "correction": True, "retraction": True, "retracts": retracts, "expires_at_ms": None,
            "reason": dict(cause)}


def late_record(person_id: str, event: Mapping[str, Any], ts_ms: int, watermark: int,
                config: SegmentsConfig) -> dict[str, Any]:
    """An `events.late` record for an event older than the watermark minus the allowed lateness."""
    key = f"{JOB}:{event.get('event_id')}"
    return {"kind": LATE, "key": key, "job": JOB, "reason": TOO_LATE, "person_id": person_id,
            "event_id": event.get("event_id"), "ts_ms": ts_ms, "watermark": watermark,
            "allowed_lateness_ms": config.allowed_lateness_ms,
            "detail": f"event time {ts_ms} is before watermark {watermark} - allowed lateness "
                      f"{config.allowed_lateness_ms} ms", "event": dict(event)}


def tag_view(segment: str, version: str, params: Mapping[str, Any], entered_at: int | None,
             expires_at: int | None) -> dict[str, Any]:
    """One tag in the current-state view."""
    return {"segment": segment, "params": dict(params), "version": version, "entered_at": entered_at,
            "expires_at": expires_at}


def view_record(person_id: str, as_of: int, consent: bool | None, tags: Mapping[str, Mapping[str, Any]],
                placements: Mapping[str, Any]) -> dict[str, Any]:
    """The person's current-state view (the Redis value): tags with entry and exact expiry, placements."""
    return {"person_id": person_id, "as_of": as_of, "consent": consent,
            "tags": {tag: dict(v) for tag, v in sorted(tags.items())},
            "placements": dict(sorted(placements.items()))}


def redis_key(person_id: str, config: SegmentsConfig) -> str:
    """The Redis hash holding a person's current-state view (`tagstream:segments:{person_id}`)."""
    return build_key(config.redis_view_key, person_id=person_id)


def redis_update(person_id: str, fields: Mapping[str, Any], removed: list[str], version: int,
                 config: SegmentsConfig) -> RedisHashUpdate:
    """An incremental write of the view hash: set `fields`, remove `removed`. Fields are `tag:{tag}` (one
    per current tag), `placement:{slot}` and `consent`; `Engine.view` gives the whole view as one document."""
    return RedisHashUpdate(redis_key(person_id, config), dict(fields), list(removed), version)


def redis_delete(person_id: str, version: int, config: SegmentsConfig, erase: bool = True) -> RedisDelete:
    """Deletes a person's view (`erase`: privacy erasure, unconditional; else version-guarded)."""
    return RedisDelete(redis_key(person_id, config), version, erase=erase)


def dynamo_put(person_id: str, tag: str, segment: str, definition_version: str, params: Mapping[str, Any],
               entered_at: int | None, expires_at: int | None, as_of: int, version: int,
               config: SegmentsConfig) -> DynamoPut:
    """The DynamoDB put of a current (person, tag) membership. The store adds `version` and `expires_at`
    (TTL, epoch seconds rounded up; absent when open-ended); `expires_at_ms` is the exact exit time."""
    item: dict[str, Any] = {"segment": segment, "definition_version": definition_version, "params": dict(params),
                            "entered_at": entered_at, "as_of": as_of}
    if expires_at is not None:
        item["expires_at_ms"] = expires_at
    return DynamoPut(config.dynamo_table, {"person_id": person_id, "tag": tag}, item, version, expires_at)


def dynamo_delete(person_id: str, tag: str, version: int, config: SegmentsConfig,
                  erase: bool = False) -> DynamoDelete:
    """The DynamoDB delete of a membership that ended (`erase`: privacy erasure, unconditional)."""
    return DynamoDelete(config.dynamo_table, {"person_id": person_id, "tag": tag}, version, erase)
