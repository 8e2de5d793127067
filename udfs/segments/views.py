"""Reading a person's current segments back from the stores the job writes (pure: no I/O here).

The Redis view hash (`tagstream:segments:{person_id}`, fields `tag:{tag}`, `placement:{slot}`, `consent`) and
the DynamoDB items of `tagstream_segments` are decoded into the document `Engine.view` produces
(`records.view_record`): `person_id`, `as_of`, `consent`, `tags`, `placements`. Tags whose expiry has passed
are dropped by the reader (the job writes an exit when its timer fires, which can lag the exact time, and
Redis keeps the field until then). A placement whose deciding tag is no longer live is kept but marked
`stale` (the job rewrites it when it processes the exit). A person whose consent is denied holds no tag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from udfs.segments.records import tag_view, view_record

TAG_PREFIX, PLACEMENT_PREFIX, CONSENT_FIELD = "tag:", "placement:", "consent"


def live(expires_at: int | None, now_ms: int) -> bool:
    """Whether a tag with this exact expiry (None: open-ended) still holds at `now_ms`."""
    return expires_at is None or now_ms < expires_at


def view_from_hash(person_id: str, fields: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    """The view of a person from the fields of their Redis view hash (store fields already removed).

    Args:
        person_id: the person.
        fields: field name -> JSON text, as `RedisStore.get_hash` returns them.
        now_ms: wall clock; tags expired at this time are dropped.

    Raises:
        ValueError: a field that is not JSON (the hash was not written by the segments job).
    """
    tags: dict[str, dict[str, Any]] = {}
    placements: dict[str, Any] = {}
    consent = None
    for name, raw in fields.items():
        value = orjson.loads(raw)
        if name.startswith(TAG_PREFIX):
            if isinstance(value, dict) and live(value.get("expires_at"), now_ms):
                tags[name[len(TAG_PREFIX):]] = value
        elif name.startswith(PLACEMENT_PREFIX):
            placements[name[len(PLACEMENT_PREFIX):]] = value
        elif name == CONSENT_FIELD:
            consent = value
    if consent is False:  # a denied person holds no tag (a backfilled field the live job never saw included)
        tags = {}
    return view_record(person_id, now_ms, consent, tags, _mark_stale(placements, tags))


def view_from_items(person_id: str, items: Iterable[Mapping[str, Any]], now_ms: int) -> dict[str, Any]:
    """The view of a person from their live `tagstream_segments` items (`DynamoStore.query_live`).

    DynamoDB holds memberships only: `placements` is empty and `consent` None (unknown).
    """
    tags = {}
    for item in items:
        expires = item.get("expires_at_ms")
        expires = int(expires) if expires is not None else None
        if not live(expires, now_ms):
            continue
        entered = item.get("entered_at")
        tags[str(item["tag"])] = tag_view(str(item.get("segment", "")), str(item.get("definition_version", "")),
                                          item.get("params") or {}, int(entered) if entered is not None else None,
                                          expires)
    return view_record(person_id, now_ms, None, tags, {})


def _mark_stale(placements: dict[str, Any], tags: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for slot, decision in placements.items():
        if isinstance(decision, dict) and decision.get("tag") and decision["tag"] not in tags:
            decision = {**decision, "stale": True}
        out[slot] = decision
    return out
