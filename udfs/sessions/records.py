"""JSON-ready records of the sessions job: Kafka outputs, the Redis views and the DynamoDB history items.

Nothing here does I/O: the Flink wrapper serializes these dicts and hands them to its sinks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from udfs.sessions.aggregate import PAGE_TYPES, top_category
from udfs.sessions.config import SessionConfig
from udfs.sessions.model import PersonState, Session
from udfs.stores.keys import build_key
from udfs.stores.ops import DynamoDelete, DynamoPut, RedisDelete, RedisSet

OPEN, UPDATE, CLOSE, CORRECTION, LATE = "open", "update", "close", "correction", "late"
SESSION_KINDS = (OPEN, UPDATE, CLOSE, CORRECTION)
TOO_LATE, EVICTED = "too_late", "evicted"
JOB = "sessions"


@dataclass(frozen=True)
class Output:
    """One output record.

    Attributes:
        kind: `open`, `update`, `close` or `correction` (topic `sessions`, Kafka key = person id), or `late`
            (topic `events.late`).
        key: deterministic idempotency key: `{session_id}:{kind}:{version}`, or `sessions:{event_id}`
            for a late event.
        record: the JSON-ready record.
    """

    kind: str
    key: str
    record: Mapping[str, Any]


class Replaced(NamedTuple):
    """A session that a correction replaces (merged into another one, or re-keyed)."""

    person_id: str
    session_id: str
    start_ms: int


def live_view(person_id: str, session: Session) -> dict[str, Any]:
    """Returns the compact live view of a session (the Redis live key)."""
    agg = session.agg
    return {**_common(person_id, session),
            "products": {k: {"views": v.views, "dwell_ms": v.dwell_ms} for k, v in agg.products.items()},
            "categories": {k: {"views": v.views, "dwell_ms": v.dwell_ms} for k, v in agg.categories.items()}}


def summary(person_id: str, session: Session) -> dict[str, Any]:
    """Returns the summary of a session (the close record, the Redis recent list, the DynamoDB item)."""
    agg = session.agg
    return {**_common(person_id, session),
            "end_ms": agg.last,
            "duration_ms": agg.last - agg.start,
            "exit_page": agg.exit.value if agg.exit else None,
            "event_types": dict(sorted(agg.types.items())),
            "products_viewed": sum(1 for p in agg.products.values() if p.views),
            "purchases": agg.cart.totals.purchases,
            "day": session.day,
            "split_reason": session.cut}


def session_output(kind: str, person_id: str, session: Session, replaced: Iterable[Replaced] = (),
                   cause: str | None = None) -> Output:
    """Returns a `sessions` record: the live view of an open session or the summary of a closed one."""
    key = f"{session.session_id}:{kind}:{session.version}"
    body = summary(person_id, session) if session.closed else live_view(person_id, session)
    status = "closed" if session.closed else "open"
    record: dict[str, Any] = {"kind": kind, "key": key, "status": status, **body}
    if kind == CORRECTION:
        record["replaces"] = [r._asdict() for r in replaced]
        record["cause"] = cause
    return Output(kind, key, record)


def late_output(person_id: str, event: Mapping[str, Any], ts_ms: int, reason: str, watermark: int,
                allowed_lateness_ms: int) -> Output:
    """Returns an `events.late` record for an event the job refused."""
    key = f"{JOB}:{event.get('event_id')}"
    return Output(LATE, key, {"kind": LATE, "key": key, "job": JOB, "reason": reason, "person_id": person_id,
                              "event_id": event.get("event_id"), "ts_ms": ts_ms, "watermark": watermark,
                              "allowed_lateness_ms": allowed_lateness_ms, "event": dict(event)})


def with_summary(recent: tuple[Mapping[str, Any], ...], drop_ids: Iterable[str],
                 doc: Mapping[str, Any] | None, limit: int) -> tuple[Mapping[str, Any], ...]:
    """Returns the recent summaries without `drop_ids`, plus `doc`, newest start first, cut to `limit`."""
    dropped = set(drop_ids)
    kept = [r for r in recent if r["session_id"] not in dropped]
    if doc is not None:
        kept.append(doc)
    kept.sort(key=lambda r: (r["start_ms"], r["session_id"]), reverse=True)
    return tuple(kept[:limit])


def redis_live(state: PersonState, config: SessionConfig) -> RedisSet | RedisDelete:
    """Returns the Redis write of a person's live session: `set` the view of the latest open session
    (expiring `live_ttl_ms` after its last activity), or `delete` when none is open. `version` is the
    state's `seq`."""
    key = build_key(config.redis_live_key, person_id=state.person_id)
    opened = [s for s in state.sessions if not s.closed]
    if not opened:
        return RedisDelete(key, state.seq)
    latest = max(opened, key=lambda s: s.start)
    return RedisSet(key, live_view(state.person_id, latest), state.seq, latest.agg.last + config.live_ttl_ms)


def redis_recent(state: PersonState, config: SessionConfig) -> RedisSet | RedisDelete:
    """Returns the Redis write of a person's last closed-session summaries (newest first), expiring
    `recent_ttl_ms` after the person's event time (watermark, or the latest end if later)."""
    key = build_key(config.redis_recent_key, person_id=state.person_id)
    if not state.recent:
        return RedisDelete(key, state.seq)
    now = max(state.watermark, *(r["end_ms"] for r in state.recent))
    return RedisSet(key, [dict(r) for r in state.recent], state.seq, now + config.recent_ttl_ms)


def session_key(start_ms: int, session_id: str) -> str:
    """Returns the DynamoDB sort key of a session: zero-padded start, then id (sorts by start)."""
    return f"{start_ms:013d}#{session_id}"


def dynamo_writes(output: Output, config: SessionConfig) -> list[DynamoPut | DynamoDelete]:
    """Returns the DynamoDB writes of one output: `delete` the sessions a correction replaces (and the item
    of a closed session a correction re-opened), then `put` the summary of a closed session.

    All carry the record's `version` (versions grow per session id, and a correction's exceeds those of
    the sessions it replaces), so the store skips them when it holds a newer one.
    """
    record = output.record
    if output.kind not in (CLOSE, CORRECTION):
        return []
    table, version = config.dynamodb_table, record["version"]
    writes: list[DynamoPut | DynamoDelete] = [
        DynamoDelete(table, _dynamo_key(r["person_id"], r["start_ms"], r["session_id"]), version)
        for r in record.get("replaces", ())]
    key = _dynamo_key(record["person_id"], record["start_ms"], record["session_id"])
    if record["status"] != "closed":
        writes.append(DynamoDelete(table, key, version))
        return writes
    item = {k: v for k, v in record.items() if k not in ("kind", "key", "status", "replaces", "cause")}
    item["expires_at"] = record["end_ms"] // 1000 + config.history_ttl_days * 86_400
    writes.append(DynamoPut(table, key, {**item, **key}, version, item["expires_at"] * 1000))
    return writes


def _dynamo_key(person_id: str, start_ms: int, session_id: str) -> dict[str, str]:
    return {"person_id": person_id, "session_key": session_key(start_ms, session_id)}


def _common(person_id: str, session: Session) -> dict[str, Any]:
    agg = session.agg
    entry = agg.entry.value
    totals = agg.cart.totals
    return {"person_id": person_id, "session_id": session.session_id, "version": session.version,
            "start_ms": agg.start, "last_activity_ms": agg.last, "event_count": agg.events,
            "page_count": sum(agg.types.get(t, 0) for t in PAGE_TYPES), "channels": sorted(agg.channels),
            "landing_page": agg.landing.value if agg.landing else None, "referrer": entry["referrer"],
            "utm": dict(entry["utm"]), "top_category": top_category(agg),
            "cart_value": round(totals.value, 2), "converted": totals.purchases > 0,
            "revenue": round(totals.revenue, 2), "currency": totals.currency}
