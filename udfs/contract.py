"""The event contract: parse event times and validate raw records against `schemas/event.schema.json`.

Pure Python, no pyflink import: the ingest operator is a thin wrapper around :class:`EventValidator`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
EVENT_SCHEMA_PATH = SCHEMA_DIR / "event.schema.json"

# Reason codes of dead-lettered records, in the order the checks run.
TOO_LARGE = "too_large"
NOT_UTF8 = "not_utf8"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
UNKNOWN_TYPE = "unknown_type"
SCHEMA = "schema"
BAD_TIMESTAMP = "bad_timestamp"
TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
# orjson serializes at most 255 nested arrays/objects: an accepted event nested deeper could not be written
# to `events.valid` (a poison pill that would fail the job on every restart), so it is a schema error. The
# limit leaves 15 levels for the envelopes downstream jobs wrap events in (the identity job's loop messages
# add 3; a 254-deep event crash-looped it in the chaos corpus).
MAX_NESTING_DEPTH = 240
REASONS = (TOO_LARGE, NOT_UTF8, INVALID_JSON, NOT_AN_OBJECT, UNKNOWN_TYPE, SCHEMA, BAD_TIMESTAMP,
           TIMESTAMP_OUT_OF_RANGE)


def load_event_schema() -> dict[str, Any]:
    """Returns the event JSON Schema as a dict."""
    schema: dict[str, Any] = json.loads(EVENT_SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def event_types() -> tuple[str, ...]:
    """Returns the event types the contract knows, in schema order."""
    return tuple(load_event_schema()["properties"]["type"]["enum"])


def parse_event_time(ts: object) -> int:
    """Converts an event's `ts` to epoch milliseconds.

    Args:
        ts: RFC 3339 text with an explicit offset (`Z` or `±hh:mm`; fractions beyond microseconds are
            truncated), or epoch milliseconds as an integer (a whole-number float counts).

    Returns:
        Epoch milliseconds.

    Raises:
        ValueError: if `ts` is neither form, or the text carries no offset.
    """
    if isinstance(ts, bool):
        raise ValueError("ts must be RFC 3339 text or epoch milliseconds, not a boolean")
    if isinstance(ts, int):
        return ts
    if isinstance(ts, float) and ts.is_integer():  # JSON Schema counts 1.7e12 as an integer too
        return int(ts)
    if not isinstance(ts, str):
        raise ValueError(f"ts must be RFC 3339 text or epoch milliseconds, not {type(ts).__name__}")
    match = _RFC3339.fullmatch(ts)
    if match is None:
        raise ValueError(f"ts {ts!r} is not RFC 3339 (YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM))")
    date, clock, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        parsed = datetime.fromisoformat(f"{date}T{clock}{(fraction or '')[:7]}{offset}")
    except ValueError as err:
        raise ValueError(f"ts {ts!r} is not a valid time: {err}") from None
    return _exact_epoch_ms(parsed)


def _exact_epoch_ms(parsed: datetime) -> int:
    """Epoch milliseconds of an aware datetime, without float rounding."""
    delta = parsed - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


@dataclass(frozen=True)
class ValidatorConfig:
    """Limits the validator enforces.

    Attributes:
        max_event_bytes: records larger than this are dead-lettered (`too_large`).
        min_ts_ms: event times before this are dead-lettered (default 2000-01-01T00:00:00Z).
        max_future_ms: event times further than this ahead of the record's Kafka timestamp (or of the
            wall clock when the record has none) are dead-lettered.
        dlq_payload_max_bytes: a dead-letter record keeps at most this many bytes of the original
            payload (and always its size and SHA-256), so that it fits in a Kafka message.
    """

    max_event_bytes: int = 64 * 1024
    min_ts_ms: int = 946_684_800_000
    max_future_ms: int = 24 * 3600 * 1000
    dlq_payload_max_bytes: int = 256 * 1024


@dataclass(frozen=True)
class Origin:
    """Where a raw record came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Returns the origin as a JSON-ready dict."""
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                "timestamp": self.timestamp_ms}


@dataclass(frozen=True)
class Accepted:
    """A record that passed every check."""

    event: dict[str, Any]
    ts_ms: int

    @property
    def event_id(self) -> str:
        """The event's unique id."""
        return str(self.event["event_id"])

    def to_json(self) -> bytes:
        """Serializes the event, with the derived `ts_ms`, as compact JSON."""
        return orjson.dumps(self.event)


@dataclass(frozen=True)
class Rejected:
    """A record that failed a check; it becomes a dead-letter record."""

    reason: str
    detail: str
    event_id: str | None = None


class EventValidator:
    """Checks raw records against the event contract with a compiled JSON Schema validator."""

    def __init__(self, config: ValidatorConfig | None = None, schema: dict[str, Any] | None = None):
        self.config = config or ValidatorConfig()
        schema = schema or load_event_schema()
        self._validator = jsonschema_rs.validator_for(schema)
        self._types = frozenset(schema["properties"]["type"]["enum"])

    def check(self, raw: bytes, reference_ms: int) -> Accepted | Rejected:
        """Validates one raw record.

        Args:
            raw: the record's value bytes, exactly as read from Kafka.
            reference_ms: the record's Kafka timestamp (or the wall clock), for the future-time bound.

        Returns:
            Accepted with the parsed event (and `ts_ms` set), or Rejected with a reason code and detail.
        """
        cfg = self.config
        if len(raw) > cfg.max_event_bytes:
            return Rejected(TOO_LARGE, f"record is {len(raw)} bytes; the limit is {cfg.max_event_bytes}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return Rejected(NOT_UTF8, f"not UTF-8: {err.reason} at byte {err.start}")
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError as err:
            return Rejected(INVALID_JSON, f"not valid JSON: {err}")
        if not isinstance(event, dict):
            return Rejected(NOT_AN_OBJECT, f"a JSON {type(event).__name__} is not an event object")
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        etype = event.get("type")
        if isinstance(etype, str) and etype not in self._types:
            return Rejected(UNKNOWN_TYPE, f"unknown event type {etype[:64]!r}", event_id)
        errors = [_describe(e) for e in self._validator.iter_errors(event)]
        if text.count("[") + text.count("{") > MAX_NESTING_DEPTH and nesting_depth(event) > MAX_NESTING_DEPTH:
            errors.append(f"(root): nested deeper than {MAX_NESTING_DEPTH} levels")
        if errors:
            return Rejected(SCHEMA, "; ".join(sorted(errors)[:5]), event_id)
        try:
            ts_ms = parse_event_time(event["ts"])
        except ValueError as err:
            return Rejected(BAD_TIMESTAMP, str(err), event_id)
        if ts_ms < cfg.min_ts_ms:
            return Rejected(TIMESTAMP_OUT_OF_RANGE, f"ts {ts_ms} is before the earliest allowed {cfg.min_ts_ms}",
                            event_id)
        if ts_ms > reference_ms + cfg.max_future_ms:
            return Rejected(TIMESTAMP_OUT_OF_RANGE,
                            f"ts {ts_ms} is more than {cfg.max_future_ms} ms after the record time {reference_ms}",
                            event_id)
        event["ts_ms"] = ts_ms
        return Accepted(event, ts_ms)

    def dead_letter(self, raw: bytes, rejected: Rejected, origin: Origin, now_ms: int) -> dict[str, Any]:
        """Builds the dead-letter record (see `schemas/dead-letter.schema.json`).

        The original bytes are kept as text when they are UTF-8 and as base64 otherwise, cut to
        `dlq_payload_max_bytes` (the size and SHA-256 of the whole payload are always kept).
        """
        limit = self.config.dlq_payload_max_bytes
        kept = raw[:limit]
        record: dict[str, Any] = {
            "dlq_id": f"{origin.topic}:{origin.partition}:{origin.offset}",
            "reason": rejected.reason,
            "detail": rejected.detail,
            "event_id": rejected.event_id,
            "origin": origin.as_dict(),
            "payload_size": len(raw),
            "payload_sha256": hashlib.sha256(raw).hexdigest(),
            "payload_truncated": len(raw) > limit,
            "dead_lettered_at": now_ms,
        }
        try:
            record["payload"] = kept.decode("utf-8")
        except UnicodeDecodeError:
            if rejected.reason == NOT_UTF8 or len(raw) <= limit:
                record["payload_base64"] = base64.b64encode(kept).decode("ascii")
            else:  # the cut fell inside a multi-byte character of a UTF-8 payload
                record["payload"] = kept.decode("utf-8", errors="ignore")
        return record


def nesting_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar is 0, `[]` is 1)."""
    depth, level = 0, [(value, 1)]
    while level:
        item, d = level.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        depth = max(depth, d)
        level.extend((child, d + 1) for child in children)
    return depth


def _describe(error: Any) -> str:
    path = "/".join(str(p) for p in error.instance_path) or "(root)"
    return f"{path}: {error.message}"[:300]


def epoch_ms(value: object) -> int | None:
    """Epoch milliseconds of a Kafka record timestamp as PyFlink hands it over.

    Accepts an int (ms), a datetime, an object with `to_epoch_milli()` (pyflink Instant) or None.
    """
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_EPOCH.tzinfo)
        return _exact_epoch_ms(value)
    to_ms = getattr(value, "to_epoch_milli", None)
    if callable(to_ms):
        return int(to_ms())
    raise TypeError(f"cannot read a timestamp from {type(value).__name__}")
