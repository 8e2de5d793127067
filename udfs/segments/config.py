"""Configuration of the segments job and the duration notation of definitions."""

from __future__ import annotations

import re
from dataclasses import dataclass

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

_UNITS = {"ms": 1, "s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}
_DURATION = re.compile(r"^([1-9][0-9]*)(ms|s|m|h|d|w)$")


def parse_duration(value: object) -> int:
    """Converts a duration (`"30s"`, `"5m"`, `"7d"`, or integer milliseconds) to milliseconds.

    Raises:
        ValueError: if the value is not a positive duration.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a duration like 500ms, 30s, 5m, 2h, 7d, 1w or integer ms > 0")
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_duration(ms: int) -> str:
    """Formats milliseconds in the largest unit that divides them exactly (`600000` -> `"10m"`)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True)
class SegmentsConfig:
    """How late data, consent, retained history and outputs are handled.

    Attributes:
        allowed_lateness_ms: events older than `watermark - allowed_lateness_ms` are returned as late
            outputs; younger out-of-order events are applied and correct earlier entries and exits.
        consent_purpose: the key of a `consent` event's `consent` object that gates personalization.
        default_consent: consent of a person who never sent a consent event for the purpose.
        min_history_ms: raw events of every type are retained at least this long (beyond the lateness
            horizon), so that a definition added at runtime sees recent history even for event types no
            current definition uses. Types used by definitions are retained for their longest window.
        max_evidence_ids: event ids listed per condition in the `reason` of a change record.
        max_flip_steps: bound on the breakpoints visited when computing the next change of one tag.
        evict_every_ms: evidence is evicted when the lateness horizon moved this much since the last time.
        redis_view_key: Redis key template of a person's view hash.
        dynamo_table: DynamoDB table of the per-(person, tag) items.
        person_id_types: identifier types tried in order by `person_id_of` (the wrapper's key selector).
    """

    allowed_lateness_ms: int = 5 * MINUTE_MS
    consent_purpose: str = "personalization"
    default_consent: bool = True
    min_history_ms: int = HOUR_MS
    max_evidence_ids: int = 10
    max_flip_steps: int = 10_000
    evict_every_ms: int = 5 * MINUTE_MS
    redis_view_key: str = "tagstream:segments:{person_id}"
    dynamo_table: str = "tagstream_segments"
    person_id_types: tuple[str, ...] = ("user_id", "anonymous_id", "device_id")
