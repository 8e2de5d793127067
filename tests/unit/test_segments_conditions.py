"""Every condition type with exact entry and exit times, checked at the +-1 ms edges (tier 1).

Windows are half-open on the left: the window of length W at t holds events with t - W < ts <= t, so an
event at e counts on [e, e + W). Intervals below are [enter, exit) in epoch ms.
"""

from __future__ import annotations

import pytest

from udfs.segments import Engine, SegmentsConfig, compile_catalog, load_directory, parse_documents
from udfs.segments.reference import event, net_intervals, replay

S, M, H, D = 1000, 60_000, 3_600_000, 86_400_000
T0 = 1_795_000_000_000
EXAMPLES = compile_catalog(load_directory())
CONFIG = SegmentsConfig(allowed_lateness_ms=M)


def run(events, until, catalog=EXAMPLES, prefix=None):
    """Intervals per tag (optionally only tags starting with `prefix`), times relative to T0."""
    shifted = [{**e, "ts": e["ts_ms"] + T0, "ts_ms": e["ts_ms"] + T0} for e in events]
    _, out = replay(Engine(catalog, CONFIG), shifted, until=until + T0)
    found = {tag: [(a - T0, None if b is None else b - T0) for a, b in iv]
             for tag, iv in net_intervals(out.changes).items()}
    return {t: iv for t, iv in found.items() if prefix is None or t.startswith(prefix)}


def catalog(text):
    return compile_catalog(parse_documents(text))


def view(i, ts, **props):
    return event(f"v{i}", "product_view", ts, **props)


# ---------------------------------------------------------------- counts, sums, distinct counts
COUNT3 = catalog("kind: segment\nname: c3\ncondition: {count: {match: {type: search}, within: 10m, gte: 3}}")


def searches(*times):
    return [event(f"s{i}", "search", t) for i, t in enumerate(times)]


def test_count_enters_at_the_satisfying_event_and_exits_at_third_newest_plus_window():
    assert run(searches(0, 1 * M, 2 * M), 30 * M, COUNT3) == {"c3": [(2 * M, 10 * M)]}
    # a fourth search moves the exit to the new third-newest (1m) + 10m
    assert run(searches(0, 1 * M, 2 * M, 5 * M), 30 * M, COUNT3) == {"c3": [(2 * M, 11 * M)]}


def test_count_window_edges_to_the_millisecond():
    # the first search leaves the window exactly at 0 + 10m: a search at 10m makes only 2
    assert run(searches(0, 1 * M, 10 * M), 30 * M, COUNT3) == {}
    # one millisecond earlier it is still inside: enter at 10m - 1, exit at 0 + 10m
    assert run(searches(0, 1 * M, 10 * M - 1), 30 * M, COUNT3) == {"c3": [(10 * M - 1, 10 * M)]}
    # gt 2 is gte 3
    gt = catalog("kind: segment\nname: c3\ncondition: {count: {match: {type: search}, within: 10m, gt: 2}}")
    assert run(searches(1, 1 * M, 10 * M), 30 * M, gt) == {"c3": [(10 * M, 10 * M + 1)]}


def test_exit_is_emitted_by_advance_exactly_at_window_end():
    shifted = [{**e, "ts_ms": e["ts_ms"] + T0} for e in searches(0, 1 * M, 2 * M)]
    engine = Engine(COUNT3, CONFIG)
    state, out = replay(engine, shifted)
    assert engine.next_wakeup(state) == T0 + 10 * M
    state, out, wake = engine.advance(state, T0 + 10 * M - 1)
    assert out.changes == [] and wake == T0 + 10 * M
    state, out, wake = engine.advance(state, T0 + 10 * M)
    assert [(c["op"], c["ts_ms"]) for c in out.changes] == [("exit", T0 + 10 * M)]
    assert out.changes[0]["reason"]["cause"] == "time" and wake is None


def test_parameterized_recency_gives_one_tag_per_product():
    events = [view(1, 0, product_id="p1"), view(2, 1 * M, product_id="p2"), view(3, 3 * M, product_id="p1"),
              view(4, 4 * M)]  # no product id: no tag
    assert run(events, H, prefix="viewed_product") == {
        "viewed_product:p1": [(0, 8 * M)], "viewed_product:p2": [(1 * M, 6 * M)]}


def test_tag_values_are_escaped():
    events = [view(1, 0, product_id="a:b%")]
    assert list(run(events, H, prefix="viewed_product")) == ["viewed_product:a%3Ab%25"]


def test_distinct_counts_products_not_views():
    events = [view(1, 0, product_id="p1", category="electronics"),
              view(2, 1 * M, product_id="p1", category="electronics"),  # same product again
              view(3, 2 * M, product_id="p2", category="electronics"),
              view(4, 2 * M + 30 * S, product_id="p9", category="garden"),  # other category
              view(5, 3 * M, product_id="p3", category="electronics")]
    # p1 is present until its last view + 10m = 11m, p2 until 12m, p3 until 13m: 3 distinct until 11m
    assert run(events, H, prefix="electronics") == {"electronics_enthusiast": [(3 * M, 11 * M)]}
    without_garden = events[:3] + events[4:]
    assert run(without_garden, H, prefix="electronics") == {"electronics_enthusiast": [(3 * M, 11 * M)]}
    assert run([events[0], events[2], events[4]], H, prefix="electronics") == {
        "electronics_enthusiast": [(3 * M, 10 * M)]}


def test_sum_is_exact_and_exits_when_the_sum_falls_below():
    buys = [event("b1", "purchase", 0, revenue=300), event("b2", "purchase", 1 * D, revenue=250)]
    assert run(buys, 40 * D, prefix="high_value") == {"high_value_customer": [(1 * D, 30 * D)]}
    cents = catalog("kind: segment\nname: s\ncondition: "
                    "{sum: {match: {type: purchase}, field: revenue, within: 1h, gte: 0.3}}")
    # 0.1 + 0.2 is not >= 0.3 in binary floating point; tagstream sums in exact millionths
    assert run([event("a", "purchase", 0, revenue=0.1), event("b", "purchase", 1, revenue=0.2)], 2 * H,
               cents) == {"s": [(1, H)]}
    # non-numeric and negative values are not evidence
    assert run([event("a", "purchase", 0, revenue="5"), event("b", "purchase", 1, revenue=-1)], 2 * H,
               cents) == {}


def test_recency_purchased_within_seven_days():
    assert run([event("b", "purchase", 5)], 10 * D, prefix="recent_purchaser") == {
        "recent_purchaser": [(5, 7 * D + 5)]}


def test_dwell_more_than_ten_minutes_in_a_category():
    events = [event("a", "page_view", 0, category="shoes", dwell_ms=6 * M),
              view(1, 10 * M, category="shoes", dwell_ms=4 * M)]  # exactly 10 minutes: not more
    assert run(events, 3 * H, prefix="category_browser") == {}
    events.append(event("c", "page_view", 20 * M, category="shoes", dwell_ms=1))
    # enters when the sum exceeds 10m; exits when the 6-minute page leaves the hour
    assert run(events, 3 * H, prefix="category_browser") == {"category_browser:shoes": [(20 * M, H)]}


def test_dwell_on_a_product_page_more_than_thirty_seconds():
    assert run([view(1, 0, product_id="p", dwell_ms=30 * S)], H, prefix="engaged_product") == {}
    assert run([view(1, 0, product_id="p", dwell_ms=30 * S + 1)], H, prefix="engaged_product") == {
        "engaged_product_viewer:p": [(0, 30 * M)]}


# ---------------------------------------------------------------- sequences and absence
def test_sequence_view_with_dwell_then_add_to_cart_within_thirty_minutes():
    long_view = view(1, 0, product_id="p", dwell_ms=2 * M + 1)
    cart = event("c", "add_to_cart", 30 * M - 1, product_id="p")
    assert run([long_view, cart], 3 * H, prefix="considered") == {
        "considered_purchase:p": [(30 * M - 1, 90 * M - 1)]}
    # the last step must be less than 30 minutes after the first
    assert run([long_view, {**cart, "ts_ms": 30 * M}], 3 * H, prefix="considered") == {}
    # order matters, and the steps must be strictly later
    assert run([{**cart, "ts_ms": 0}, {**long_view, "ts_ms": 1}], 3 * H, prefix="considered") == {}
    assert run([long_view, {**cart, "ts_ms": 0}], 3 * H, prefix="considered") == {}
    # a short view or another product does not count
    assert run([view(1, 0, product_id="p", dwell_ms=2 * M), cart], 3 * H, prefix="considered") == {}
    assert run([long_view, {**cart, "props": {"product_id": "q"}}], 3 * H, prefix="considered") == {}


def test_composition_variant_of_add_to_cart_and_dwell_in_either_order():
    cart = event("c", "add_to_cart", 0, product_id="p")
    views = [view(1, 1 * M, product_id="p", dwell_ms=1 * M),
             view(2, 5 * M, product_id="p", dwell_ms=1 * M + 1)]
    assert run([cart, *views], 3 * H, prefix="engaged_cart") == {"engaged_cart_item:p": [(5 * M, 30 * M)]}


def test_cart_abandonment_enters_at_add_to_cart_plus_thirty_minutes():
    cart = event("c", "add_to_cart", 0, product_id="p")
    assert run([cart], 2 * D, prefix="cart_ab") == {"cart_abandoner:p": [(30 * M, 30 * M + 24 * H)]}
    # a purchase within the 30 minutes, up to and including the last millisecond, prevents it
    for t in (0, 1, 30 * M):
        assert run([cart, event("b", "purchase", t)], 2 * D, prefix="cart_ab") == {}, t
    # a purchase after entering exits at once
    assert run([cart, event("b", "purchase", 30 * M + 1)], 2 * D, prefix="cart_ab") == {
        "cart_abandoner:p": [(30 * M, 30 * M + 1)]}
    # a later add_to_cart of another product is its own tag; a purchase ends both
    other = event("d", "add_to_cart", 10 * M, product_id="q")
    assert run([cart, other, event("b", "purchase", H)], 2 * D, prefix="cart_ab") == {
        "cart_abandoner:p": [(30 * M, H)], "cart_abandoner:q": [(40 * M, H)]}


def test_absence_no_purchase_in_thirty_days_for_people_seen_for_thirty_days():
    seen = event("v", "page_view", 0)
    assert run([seen], 31 * D, prefix="no_purchase") == {"no_purchase_30d": [(30 * D, None)]}
    buy = event("b", "purchase", 40 * D)
    assert run([seen, buy], 75 * D, prefix="no_purchase") == {
        "no_purchase_30d": [(30 * D, 40 * D), (70 * D, None)]}
    plain = catalog("kind: segment\nname: nb\ncondition: {absent: {match: {type: purchase}, within: 30d}}")
    assert run([event("v", "page_view", 7)], D, plain) == {"nb": [(7, None)]}
    assert run([event("v", "page_view", 7), event("b", "purchase", 8)], 31 * D, plain) == {
        "nb": [(7, 8), (30 * D + 8, None)]}


# ---------------------------------------------------------------- traits, composition, references
def test_trait_condition_follows_the_latest_trait():
    events = [event("i1", "identify", 5, traits={"tier": "gold"}),
              event("i2", "identify", 10, traits={"tier": "silver"}),
              event("i3", "identify", 20, traits={"tier": "gold", "name": "x"}),
              event("i4", "identify", 30, traits={"name": "y"}),  # tier unchanged
              event("i5", "identify", 40, traits={"tier": None})]  # removed
    assert run(events, 100, prefix="gold_tier") == {"gold_tier": [(5, 10), (20, 40)]}


def test_composition_with_references_and_negation():
    events = [event("i", "identify", 0, traits={"tier": "gold"}),
              event("a", "page_view", 1 * M, category="shoes", dwell_ms=11 * M),
              event("b", "purchase", 30 * M)]
    assert run(events, 3 * H, prefix="gold_window") == {"gold_window_shopper": [(1 * M, 30 * M)]}
    # without the trait: nothing
    assert run(events[1:], 3 * H, prefix="gold_window") == {}


ANY_NOT = catalog("""
kind: segment
name: active
condition:
  any:
    - recent: {match: {type: search}, within: 10m}
    - recent: {match: {type: login}, within: 1h}
---
kind: segment
name: idle_member
condition:
  all:
    - trait: {name: member, eq: true}
    - not: {segment: active}
""")


def test_any_and_not():
    events = [event("i", "identify", 0, traits={"member": True}), event("s", "search", 5 * M),
              event("l", "login", 10 * M)]
    assert run(events, 3 * H, ANY_NOT) == {"active": [(5 * M, 70 * M)],
                                           "idle_member": [(0, 5 * M), (70 * M, None)]}


SAME_PARAMS = catalog("""
kind: segment
name: viewed
params: [product_id]
condition: {recent: {match: {type: product_view, props: {product_id: "{product_id}"}}, within: 10m}}
---
kind: segment
name: hot
params: [product_id]
condition:
  all:
    - segment: viewed
    - count: {match: {type: product_view, props: {product_id: "{product_id}"}}, within: 2m, gte: 2}
---
kind: segment
name: browsing_not_carting
params: [product_id]
condition:
  all:
    - segment: viewed
    - not: {recent: {match: {type: add_to_cart, props: {product_id: "{product_id}"}}, within: 1h}}
""")


def test_references_with_the_same_parameters_bind_the_same_value():
    events = [view(1, 0, product_id="a"), view(2, 1 * M, product_id="b"), view(3, 90 * S, product_id="a")]
    assert run(events, H, SAME_PARAMS, prefix="hot") == {"hot:a": [(90 * S, 2 * M)]}


def test_negation_inside_a_parameterized_segment_needs_evidence_for_the_value():
    events = [view(1, 0, product_id="a"), event("c", "add_to_cart", 3 * M, product_id="a"),
              event("d", "add_to_cart", 4 * M, product_id="z")]  # z was never viewed: no tag
    assert run(events, 3 * H, SAME_PARAMS, prefix="browsing") == {"browsing_not_carting:a": [(0, 3 * M)]}


def test_unknown_fields_and_operators_in_filters():
    cat = catalog("""
kind: segment
name: big_cart
condition:
  recent:
    match: {type: add_to_cart, channel: {in: [web, app]}, props: {price: {gte: 100}, coupon: {exists: false}}}
    within: 1h
""")
    base = event("c", "add_to_cart", 0, price=100, channel="web")
    assert run([base], 2 * H, cat) == {"big_cart": [(0, H)]}
    for changed in ({"props": {"price": 99.99}}, {"channel": "pos"},
                    {"props": {"price": 150, "coupon": "X"}}, {"props": {"price": "150"}}):
        assert run([{**base, **changed}], 2 * H, cat) == {}, changed


@pytest.mark.parametrize("lag", [0, 30 * S])
def test_results_do_not_depend_on_timer_granularity(lag):
    events = searches(0, 1 * M, 2 * M, 3 * M, 20 * M, 21 * M, 22 * M)
    shifted = [{**e, "ts_ms": e["ts_ms"] + T0} for e in events]
    _, out = replay(Engine(COUNT3, CONFIG), shifted, watermark_lag=lag, until=T0 + 2 * H)
    assert net_intervals(out.changes) == {"c3": [(T0 + 2 * M, T0 + 11 * M), (T0 + 22 * M, T0 + 30 * M)]}
