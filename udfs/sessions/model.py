"""State of the sessions job: frozen dataclasses and their JSON-ready dict forms (for Flink state).

Events of a person are totally ordered by their key `(ts_ms, event_id)`; "first" and "last" below always
mean by that key, never by arrival, so that any delivery order gives the same state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# Flink's initial watermark (Long.MIN_VALUE).
MIN_WATERMARK = -(2**63)

EventKey = tuple[int, str]


@dataclass(frozen=True)
class Marker:
    """A value taken from one event, kept because that event is the first or last of its kind."""

    ts: int
    event_id: str
    value: Any

    @property
    def key(self) -> EventKey:
        """The event's order key."""
        return (self.ts, self.event_id)

    def to_dict(self) -> list[Any]:
        """Returns the marker as a JSON-ready list."""
        return [self.ts, self.event_id, self.value]

    @classmethod
    def from_dict(cls, data: list[Any]) -> Marker:
        """Rebuilds a marker from `to_dict` output."""
        return cls(data[0], data[1], data[2])


@dataclass(frozen=True)
class CartOp:
    """One cart event: `add` and `remove` carry price * quantity; `purchase` carries its revenue, or
    None when it has none and converts the cart's value."""

    ts: int
    event_id: str
    kind: str
    amount: float | None
    currency: str | None = None

    @property
    def key(self) -> EventKey:
        """The event's order key."""
        return (self.ts, self.event_id)

    def to_dict(self) -> list[Any]:
        """Returns the op as a JSON-ready list."""
        return [self.ts, self.event_id, self.kind, self.amount, self.currency]

    @classmethod
    def from_dict(cls, data: list[Any]) -> CartOp:
        """Rebuilds an op from `to_dict` output."""
        return cls(*data)


@dataclass(frozen=True)
class CartTotals:
    """Cart figures after a run of cart ops."""

    value: float = 0.0
    revenue: float = 0.0
    purchases: int = 0
    currency: str | None = None

    def to_dict(self) -> list[Any]:
        """Returns the totals as a JSON-ready list."""
        return [self.value, self.revenue, self.purchases, self.currency]

    @classmethod
    def from_dict(cls, data: list[Any]) -> CartTotals:
        """Rebuilds totals from `to_dict` output."""
        return cls(*data)


NO_CART_TOTALS = CartTotals()


@dataclass(frozen=True)
class Cart:
    """A session's cart: its ops in key order, and the totals of `base` followed by the ops.

    Attributes:
        ops: cart ops sorted by key, at most `max_cart_ops` of them.
        base: totals of older ops folded away to bound memory (zero unless a session had more ops).
        totals: figures after `base` and `ops`.
    """

    ops: tuple[CartOp, ...] = ()
    base: CartTotals = NO_CART_TOTALS
    totals: CartTotals = NO_CART_TOTALS

    @property
    def empty(self) -> bool:
        """True when no cart event contributed."""
        return not self.ops and self.base == NO_CART_TOTALS

    def to_dict(self) -> dict[str, Any]:
        """Returns the cart as a JSON-ready dict."""
        return {"ops": [op.to_dict() for op in self.ops], "base": self.base.to_dict(),
                "totals": self.totals.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cart:
        """Rebuilds a cart from `to_dict` output."""
        return cls(tuple(CartOp.from_dict(op) for op in data["ops"]), CartTotals.from_dict(data["base"]),
                   CartTotals.from_dict(data["totals"]))


EMPTY_CART = Cart()


class ProductStat(NamedTuple):
    """Views and dwell time of one product in a session."""

    views: int
    dwell_ms: int
    category: str | None


class CategoryStat(NamedTuple):
    """Views and dwell time of one category in a session."""

    views: int
    dwell_ms: int


@dataclass(frozen=True)
class Aggregate:
    """What a session knows about its events. Aggregates combine associatively and commutatively.

    Attributes:
        start: time of the first event.
        last: time of the last event (last activity).
        events: number of events.
        types: events per event type.
        channels: events per channel.
        products: per product id: views (product_view events), dwell time (props.dwell_ms), category.
        categories: per category: views (page/product views carrying it) and dwell time.
        entry: the first event: {"channel", "referrer", "url", "utm"}.
        landing: url of the first event that has one.
        exit: url of the last event that has one.
        cart: cart ops and totals.
    """

    start: int
    last: int
    events: int
    types: Mapping[str, int]
    channels: Mapping[str, int]
    products: Mapping[str, ProductStat]
    categories: Mapping[str, CategoryStat]
    entry: Marker
    landing: Marker | None
    exit: Marker | None
    cart: Cart = EMPTY_CART

    def to_dict(self) -> dict[str, Any]:
        """Returns the aggregate as a JSON-ready dict."""
        return {"start": self.start, "last": self.last, "events": self.events, "types": dict(self.types),
                "channels": dict(self.channels), "products": {k: list(v) for k, v in self.products.items()},
                "categories": {k: list(v) for k, v in self.categories.items()}, "entry": self.entry.to_dict(),
                "landing": _marker_dict(self.landing), "exit": _marker_dict(self.exit),
                "cart": self.cart.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Aggregate:
        """Rebuilds an aggregate from `to_dict` output."""
        return cls(start=data["start"], last=data["last"], events=data["events"], types=dict(data["types"]),
                   channels=dict(data["channels"]),
                   products={k: ProductStat(*v) for k, v in data["products"].items()},
                   categories={k: CategoryStat(*v) for k, v in data["categories"].items()},
                   entry=Marker.from_dict(data["entry"]), landing=_marker(data["landing"]),
                   exit=_marker(data["exit"]), cart=Cart.from_dict(data["cart"]))


def _marker_dict(marker: Marker | None) -> list[Any] | None:
    return None if marker is None else marker.to_dict()


def _marker(data: list[Any] | None) -> Marker | None:
    return None if data is None else Marker.from_dict(data)


@dataclass(frozen=True)
class Session:
    """One session of a person.

    Attributes:
        session_id: derived from the person and `agg.start` (see `sessionizer.session_id`).
        agg: the session's aggregate.
        version: bumped on every change; part of the idempotency key of each output record.
        closed: true once the watermark passed last activity + gap (a close record was emitted).
        day: local date of the session when the day boundary is on (sessions never merge across days).
        cut: why the session was split from the one before it (`max_duration` or `campaign`), if it was;
            such a session never merges with its predecessor.
    """

    session_id: str
    agg: Aggregate
    version: int
    closed: bool = False
    day: str | None = None
    cut: str | None = None

    @property
    def start(self) -> int:
        """Time of the first event."""
        return self.agg.start

    @property
    def last(self) -> int:
        """Time of the last event."""
        return self.agg.last

    def to_dict(self) -> dict[str, Any]:
        """Returns the session as a JSON-ready dict."""
        return {"id": self.session_id, "agg": self.agg.to_dict(), "version": self.version,
                "closed": self.closed, "day": self.day, "cut": self.cut}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Session:
        """Rebuilds a session from `to_dict` output."""
        return cls(data["id"], Aggregate.from_dict(data["agg"]), data["version"], data["closed"], data["day"],
                   data["cut"])


@dataclass(frozen=True)
class PersonState:
    """Everything the sessions job keeps for one person (one Flink key).

    Attributes:
        person_id: the key.
        sessions: open and retained closed sessions, sorted by start.
        seen: event id -> event time of recently accepted events, for de-duplication.
        watermark: highest watermark (or `advance` time) seen.
        floor: events at or before this time are refused (reason `evicted`): sessions that could have
            absorbed them were evicted early by the `max_sessions` bound.
        recent: summaries of the last closed sessions, newest start first (the Redis `recent` list).
        seq: bumped by every call that emits something; the `version` of the person's Redis writes.
    """

    person_id: str
    sessions: tuple[Session, ...] = ()
    seen: Mapping[str, int] = field(default_factory=dict)
    watermark: int = MIN_WATERMARK
    floor: int = MIN_WATERMARK
    recent: tuple[Mapping[str, Any], ...] = ()
    seq: int = 0

    @property
    def idle(self) -> bool:
        """True when no session is open or retained (only `recent` is worth keeping)."""
        return not self.sessions

    def to_dict(self) -> dict[str, Any]:
        """Returns the state as a JSON-ready dict."""
        return {"person_id": self.person_id, "sessions": [s.to_dict() for s in self.sessions],
                "seen": dict(self.seen), "watermark": self.watermark, "floor": self.floor,
                "recent": [dict(r) for r in self.recent], "seq": self.seq}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PersonState:
        """Rebuilds a state from `to_dict` output."""
        return cls(data["person_id"], tuple(Session.from_dict(s) for s in data["sessions"]),
                   dict(data["seen"]), data["watermark"], data["floor"], tuple(data["recent"]), data["seq"])
