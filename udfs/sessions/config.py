"""Configuration of the sessions job."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class SessionConfig:
    """How sessions are cut, how late data is handled and how much state a person may hold.

    Attributes:
        gap_ms: inactivity gap. Two events of a person whose times differ by at most `gap_ms` belong to
            the same session; one millisecond more starts a new one (Flink's session-window rule).
        max_duration_ms: an event more than this after its session's start starts a new session
            (split reason `max_duration`). None disables the split.
        allowed_lateness_ms: events older than `watermark - allowed_lateness_ms` are returned as late
            outputs; younger ones are placed, merging and correcting sessions if needed. Closed sessions
            stay in state until the watermark passes their last activity + gap + this.
        day_boundary_tz: IANA time zone (e.g. "Europe/Paris"); when set, no session spans local midnight.
            None disables the split.
        split_on_campaign: when true, an in-order event whose utm_campaign (from props or the url query)
            differs from its session's campaign starts a new session (split reason `campaign`).
        max_seen_ids: event ids remembered per person for de-duplication (the oldest are forgotten first).
        max_sessions: open plus retained closed sessions per person; beyond it the oldest is closed and
            evicted early, and events older than its end + gap are returned as late (reason `evicted`).
        max_channels: distinct channels kept per session (the least used are dropped first).
        max_products: distinct products kept per session (the least viewed are dropped first).
        max_categories: distinct categories kept per session (the least viewed are dropped first).
        max_cart_ops: cart events kept per session for exact re-ordering; older ones are folded into a total.
        recent_closed: closed-session summaries kept per person for the Redis `recent` list.
        emit_updates: emit an `update` record on every event of an open session (the `open`, `close` and
            `correction` records are always emitted).
        redis_live_key: Redis key of a person's live session view, formatted with `person_id`.
        redis_recent_key: Redis key of a person's last closed-session summaries, formatted with `person_id`.
        dynamodb_table: DynamoDB session history table (hash key `person_id`, range key `session_key`).
        live_ttl_ms: expiry of the Redis live-session key, so it disappears if the job stops.
        recent_ttl_ms: expiry of the Redis recent-sessions key.
        history_ttl_days: DynamoDB `expires_at` of a closed session, counted from its end.
    """

    gap_ms: int = 30 * MINUTE_MS
    max_duration_ms: int | None = 4 * HOUR_MS
    allowed_lateness_ms: int = 10 * MINUTE_MS
    day_boundary_tz: str | None = None
    split_on_campaign: bool = False
    max_seen_ids: int = 1000
    max_sessions: int = 32
    max_channels: int = 16
    max_products: int = 50
    max_categories: int = 50
    max_cart_ops: int = 200
    recent_closed: int = 10
    emit_updates: bool = True
    redis_live_key: str = "tagstream:session:live:{person_id}"
    redis_recent_key: str = "tagstream:session:recent:{person_id}"
    dynamodb_table: str = "tagstream_sessions"
    live_ttl_ms: int = 2 * 30 * MINUTE_MS
    recent_ttl_ms: int = 30 * DAY_MS
    history_ttl_days: int = 400

    def __post_init__(self) -> None:
        positive = ("gap_ms", "max_seen_ids", "max_sessions", "max_channels", "max_products",
                    "max_categories", "max_cart_ops", "live_ttl_ms", "recent_ttl_ms", "history_ttl_days")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.max_duration_ms is not None and self.max_duration_ms <= 0:
            raise ValueError(f"max_duration_ms must be positive or None, not {self.max_duration_ms}")
        if self.allowed_lateness_ms < 0 or self.recent_closed < 0:
            raise ValueError("allowed_lateness_ms and recent_closed must not be negative")
        if self.day_boundary_tz is not None:
            try:
                ZoneInfo(self.day_boundary_tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {self.day_boundary_tz!r}") from None

    def day_of(self, ts_ms: int) -> str | None:
        """Returns the local date (ISO) of an event time, or None when the day boundary is off."""
        if self.day_boundary_tz is None:
            return None
        return datetime.fromtimestamp(ts_ms // 1000, ZoneInfo(self.day_boundary_tz)).date().isoformat()
