"""Session aggregates: built from one event and combined, associatively and commutatively.

Because `combine` does not depend on which aggregate came first, merging sessions in any order (an event
arriving late, a late event bridging two sessions, two persons merging) gives the same aggregate as folding
the events in time order. The only exceptions are the size bounds (`max_channels`, `max_products`,
`max_categories`, `max_cart_ops`): once one is hit, what is dropped or folded depends on arrival order.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from udfs.contract import parse_event_time
from udfs.sessions.config import SessionConfig
from udfs.sessions.model import (
    NO_CART_TOTALS,
    Aggregate,
    Cart,
    CartOp,
    CartTotals,
    CategoryStat,
    Marker,
    ProductStat,
)

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
PAGE_TYPES = frozenset({"page_view", "product_view"})
_CART_KINDS = {"add_to_cart": "add", "remove_from_cart": "remove", "purchase": "purchase"}

V = TypeVar("V")


def event_time(event: Mapping[str, Any]) -> int:
    """Returns an event's time in epoch ms: `ts_ms` (set by the ingest job), else `ts` parsed."""
    ts = event.get("ts_ms")
    if isinstance(ts, int) and not isinstance(ts, bool):
        return ts
    return parse_event_time(event["ts"])


def event_campaign(event: Mapping[str, Any]) -> str | None:
    """Returns an event's utm_campaign, from its props or its url query, if it has one."""
    props = _props(event)
    return utm_of(props, _text(props.get("url"))).get("utm_campaign")


def session_campaign(agg: Aggregate) -> str | None:
    """Returns a session's campaign: the utm_campaign of its first event."""
    campaign: str | None = agg.entry.value["utm"].get("utm_campaign")
    return campaign


def utm_of(props: Mapping[str, Any], url: str | None) -> dict[str, str]:
    """Returns the UTM parameters of an event: props fields first, then the url query."""
    utm = {name: value for name in UTM_FIELDS if isinstance(value := props.get(name), str)}
    if url and "utm_" in url:
        query = parse_qs(urlsplit(url).query)
        utm.update({name: query[name][0] for name in UTM_FIELDS if name not in utm and name in query})
    return utm


def from_event(event: Mapping[str, Any], ts: int) -> Aggregate:
    """Returns the aggregate of a single event (already validated against the contract)."""
    event_id = str(event["event_id"])
    etype = str(event["type"])
    props = _props(event)
    channel = _text(event.get("channel"))
    url = _text(props.get("url"))
    product, category = _text(props.get("product_id")), _text(props.get("category"))
    dwell = _int(props.get("dwell_ms"), 0)
    products: dict[str, ProductStat] = {}
    if product and (etype == "product_view" or dwell):
        products[product] = ProductStat(int(etype == "product_view"), dwell, category)
    categories: dict[str, CategoryStat] = {}
    if category and (etype in PAGE_TYPES or dwell):
        categories[category] = CategoryStat(int(etype in PAGE_TYPES), dwell)
    entry = {"channel": channel, "referrer": _text(props.get("referrer")), "url": url,
             "utm": utm_of(props, url)}
    page = Marker(ts, event_id, url) if url else None
    op = _cart_op(etype, props, ts, event_id)
    cart = Cart((op,), NO_CART_TOTALS, apply_cart_op(NO_CART_TOTALS, op)) if op else Cart()
    return Aggregate(start=ts, last=ts, events=1, types={etype: 1}, channels={channel: 1} if channel else {},
                     products=products, categories=categories, entry=Marker(ts, event_id, entry),
                     landing=page, exit=page, cart=cart)


def combine(a: Aggregate, b: Aggregate, config: SessionConfig) -> Aggregate:
    """Returns the aggregate of the events of `a` and `b` together."""
    return Aggregate(
        start=min(a.start, b.start),
        last=max(a.last, b.last),
        events=a.events + b.events,
        types=_merge(a.types, b.types, operator.add),
        channels=_top(_merge(a.channels, b.channels, operator.add), config.max_channels, _count_rank),
        products=_top(_merge(a.products, b.products, _add_products), config.max_products, _product_rank),
        categories=_top(_merge(a.categories, b.categories, _add_categories), config.max_categories,
                        _category_rank),
        entry=min(a.entry, b.entry, key=_marker_key),
        landing=_extreme(min, a.landing, b.landing),
        exit=_extreme(max, a.exit, b.exit),
        cart=merge_carts(a.cart, b.cart, config.max_cart_ops),
    )


def combine_all(aggs: Iterable[Aggregate], config: SessionConfig) -> Aggregate:
    """Returns the combination of one or more aggregates."""
    items = iter(aggs)
    result = next(items)
    for agg in items:
        result = combine(result, agg, config)
    return result


def apply_cart_op(totals: CartTotals, op: CartOp) -> CartTotals:
    """Returns the cart totals after one more op (a removal never takes the value below zero)."""
    currency = totals.currency or op.currency
    amount = op.amount or 0.0
    if op.kind == "add":
        return CartTotals(totals.value + amount, totals.revenue, totals.purchases, currency)
    if op.kind == "remove":
        return CartTotals(max(0.0, totals.value - amount), totals.revenue, totals.purchases, currency)
    revenue = totals.value if op.amount is None else op.amount
    return CartTotals(0.0, totals.revenue + revenue, totals.purchases + 1, currency)


def fold_cart(totals: CartTotals, ops: Iterable[CartOp]) -> CartTotals:
    """Returns the cart totals after a run of ops."""
    for op in ops:
        totals = apply_cart_op(totals, op)
    return totals


def merge_carts(a: Cart, b: Cart, max_ops: int) -> Cart:
    """Returns the cart of two sessions' events together; an op arriving after the others is applied
    incrementally, otherwise the ops are re-folded in key order."""
    if b.empty:
        return a
    if a.empty:
        return b
    if b.base == NO_CART_TOTALS and (not a.ops or a.ops[-1].key < b.ops[0].key):
        merged = Cart(a.ops + b.ops, a.base, fold_cart(a.totals, b.ops))
    elif a.base == NO_CART_TOTALS and b.ops and b.ops[-1].key < a.ops[0].key:
        merged = Cart(b.ops + a.ops, b.base, fold_cart(b.totals, a.ops))
    else:
        base = CartTotals(a.base.value + b.base.value, a.base.revenue + b.base.revenue,
                          a.base.purchases + b.base.purchases, a.base.currency or b.base.currency)
        ops = tuple(sorted(a.ops + b.ops, key=operator.attrgetter("ts", "event_id")))
        merged = Cart(ops, base, fold_cart(base, ops))
    if len(merged.ops) <= max_ops:
        return merged
    folded = len(merged.ops) - max_ops
    return Cart(merged.ops[folded:], fold_cart(merged.base, merged.ops[:folded]), merged.totals)


def top_category(agg: Aggregate) -> str | None:
    """Returns the most viewed category (then longest dwell, then name), if any."""
    if not agg.categories:
        return None
    return min(agg.categories.items(), key=_category_rank)[0]


def _cart_op(etype: str, props: Mapping[str, Any], ts: int, event_id: str) -> CartOp | None:
    kind = _CART_KINDS.get(etype)
    currency = _text(props.get("currency"))
    if kind == "purchase":
        return CartOp(ts, event_id, kind, _number(props.get("revenue")), currency)
    price = _number(props.get("price"))
    if kind is None or price is None:
        return None
    return CartOp(ts, event_id, kind, price * _int(props.get("quantity"), 1), currency)


def _merge(a: Mapping[str, V], b: Mapping[str, V], add: Callable[[V, V], V]) -> dict[str, V]:
    if len(b) > len(a):
        a, b = b, a
    result = dict(a)
    for name, value in b.items():
        result[name] = add(result[name], value) if name in result else value
    return result


def _top(items: dict[str, V], limit: int, rank: Callable[[tuple[str, V]], Any]) -> dict[str, V]:
    if len(items) <= limit:
        return items
    return dict(sorted(items.items(), key=rank)[:limit])


def _add_products(a: ProductStat, b: ProductStat) -> ProductStat:
    categories = [c for c in (a.category, b.category) if c is not None]
    return ProductStat(a.views + b.views, a.dwell_ms + b.dwell_ms, min(categories) if categories else None)


def _add_categories(a: CategoryStat, b: CategoryStat) -> CategoryStat:
    return CategoryStat(a.views + b.views, a.dwell_ms + b.dwell_ms)


def _count_rank(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


def _product_rank(item: tuple[str, ProductStat]) -> tuple[int, int, str]:
    return (-item[1].views, -item[1].dwell_ms, item[0])


def _category_rank(item: tuple[str, CategoryStat]) -> tuple[int, int, str]:
    return (-item[1].views, -item[1].dwell_ms, item[0])


def _marker_key(marker: Marker) -> tuple[int, str]:
    return marker.key


def _extreme(pick: Callable[..., Marker], a: Marker | None, b: Marker | None) -> Marker | None:
    if a is None or b is None:
        return a or b
    return pick(a, b, key=_marker_key)


def _props(event: Mapping[str, Any]) -> Mapping[str, Any]:
    props = event.get("props")
    return props if isinstance(props, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value
