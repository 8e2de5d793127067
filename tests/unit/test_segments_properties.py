"""Properties: the engine agrees with a brute-force reference of the semantics, and its result does not
depend on delivery order (within lateness), batching, timer firing or duplicates (tier 1, hypothesis)."""

from __future__ import annotations

import pickle

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udfs.segments import Engine, SegmentsConfig, compile_catalog, parse_documents
from udfs.segments.reference import Reference, event, net_intervals, replay

S = 1000
DELAY = 3 * S  # bounded out-of-orderness of the delivery
UNTIL = 80 * S
DOCS = parse_documents("""
kind: segment
name: viewed
params: [product_id]
condition: {recent: {match: {type: product_view, props: {product_id: "{product_id}"}}, within: 10s}}
---
kind: segment
name: three_views
condition: {count: {match: {type: product_view}, within: 10s, gte: 3}}
---
kind: segment
name: two_products
condition: {distinct: {match: {type: product_view}, field: product_id, within: 8s, gte: 2}}
---
kind: segment
name: dwell
params: [category]
condition:
  dwell: {match: {type: [page_view, product_view], props: {category: "{category}"}}, within: 10s, gt: 5s}
---
kind: segment
name: seq
params: [product_id]
condition:
  sequence:
    steps:
      - {type: product_view, props: {product_id: "{product_id}"}}
      - {type: add_to_cart, props: {product_id: "{product_id}"}}
    within: 6s
    hold: 5s
---
kind: segment
name: abandon
params: [product_id]
condition:
  not_followed_by:
    trigger: {type: add_to_cart, props: {product_id: "{product_id}"}}
    absent: {type: purchase}
    within: 4s
    hold: 7s
---
kind: segment
name: nobuy
condition: {absent: {match: {type: purchase}, within: 9s, seen_for: 3s}}
---
kind: segment
name: gold
condition: {trait: {name: tier, eq: gold}}
---
kind: segment
name: combo
condition: {all: [{segment: gold}, {segment: viewed}, {not: {segment: three_views}}]}
---
kind: segment
name: viewed_not_carted
params: [product_id]
condition:
  all:
    - segment: viewed
    - not: {recent: {match: {type: add_to_cart, props: {product_id: "{product_id}"}}, within: 3s}}
""")
CATALOG = compile_catalog(DOCS)
CONFIG = SegmentsConfig(allowed_lateness_ms=2 * S, evict_every_ms=1)
TAG_OF = {name: seg.tag for name, seg in CATALOG.segments.items()}

KINDS = ["product_view"] * 4 + ["page_view", "add_to_cart", "add_to_cart", "purchase", "identify", "consent"]
raw_event = st.tuples(st.integers(0, 40 * S), st.sampled_from(KINDS), st.sampled_from("abc"), st.sampled_from("xy"),
                      st.integers(0, 4000), st.booleans())


def build(rows):
    events = []
    for i, (ts, kind, product, category, dwell, flag) in enumerate(rows):
        if kind == "identify":
            events.append(event(f"e{i}", kind, ts, traits={"tier": "gold" if flag else "silver"}))
        elif kind == "consent":
            events.append(event(f"e{i}", kind, ts, consent={"personalization": flag or dwell % 3 > 0}))
        else:
            events.append(event(f"e{i}", kind, ts, product_id=product, category=category, dwell_ms=dwell))
    return events


def deliver(events, delays, cuts, fire, pickled=False):
    """Delivers events with bounded delays, moving the watermark only at batch cuts; timers fire at cuts
    (all due ones, or only the first when `fire` says so). Returns the final state, all change records and all
    store ops; `pickled`: the state goes through pickle before every call (as the Flink wrapper stores it),
    else it stays in memory (as its state cache keeps it)."""
    engine = Engine(CATALOG, CONFIG)
    order = sorted(range(len(events)), key=lambda i: (events[i]["ts_ms"] + delays[i % len(delays)], i))
    state = engine.new_state("p")
    changes, ops, late, watermark, wake, seen = [], [], [], None, None, None

    def call(method, *args):
        nonlocal state
        if pickled:
            state = pickle.loads(pickle.dumps(state))
        state, out, next_wake = method(state, *args)
        changes.extend(out.changes)
        late.extend(out.late)
        ops.extend(op.as_dict() for op in (*out.redis, *out.dynamo))
        return next_wake

    for n, i in enumerate(order):
        wake = call(engine.on_event, events[i], watermark)
        seen = events[i]["ts_ms"] if seen is None else max(seen, events[i]["ts_ms"])
        if n in cuts:
            watermark = seen - DELAY
            while wake is not None and wake <= watermark:
                wake = call(engine.advance, wake, watermark)
                if not fire[n % len(fire)]:
                    break
    call(engine.advance, UNTIL, UNTIL)
    assert late == []
    return engine, state, changes, ops


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_event, max_size=22))
def test_engine_matches_the_brute_force_reference(rows):
    events = build(rows)
    _, out = replay(Engine(CATALOG, CONFIG), sorted(events, key=lambda e: e["ts_ms"]), until=UNTIL)
    assert net_intervals(out.changes) == Reference(DOCS, events).intervals(UNTIL, TAG_OF)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_event, max_size=22), st.lists(st.integers(0, DELAY), min_size=1, max_size=8),
       st.sets(st.integers(0, 25)), st.lists(st.booleans(), min_size=1, max_size=4), st.data())
def test_order_batching_timers_and_duplicates_do_not_change_the_result(rows, delays, cuts, fire, data):
    events = build(rows)
    in_order, _ = replay(Engine(CATALOG, CONFIG), sorted(events, key=lambda e: e["ts_ms"]), until=UNTIL)
    expected = Reference(DOCS, events).intervals(UNTIL, TAG_OF)
    if events:
        duplicates = data.draw(st.lists(st.sampled_from(events), max_size=4))
        events = events + [dict(d) for d in duplicates]  # redelivered copies
    engine, state, changes, _ = deliver(events, delays, cuts, fire)
    assert net_intervals(changes) == expected
    assert engine.view(state)["tags"] == Engine(CATALOG, CONFIG).view(in_order)["tags"]
    keys = [c["key"] for c in changes]
    assert len(keys) == len(set(keys))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_event, max_size=22), st.lists(st.integers(0, DELAY), min_size=1, max_size=8),
       st.sets(st.integers(0, 25)), st.lists(st.booleans(), min_size=1, max_size=4))
def test_a_state_kept_in_memory_or_pickled_before_every_call_gives_the_same_records(rows, delays, cuts, fire):
    """The job keeps recently used states deserialized (`udfs.state_cache`) and reads the others back from
    their pickles: both paths give the same change records (keys included) and store ops."""
    events = build(rows)
    engine, kept, changes, ops = deliver(events, delays, cuts, fire)
    _, restored, pickled_changes, pickled_ops = deliver(events, delays, cuts, fire, pickled=True)
    assert pickled_changes == changes and pickled_ops == ops
    assert engine.view(restored) == engine.view(kept)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40 * S), st.sampled_from("abc")), max_size=25))
def test_exits_land_exactly_at_window_end(views):
    events = [event(f"v{i}", "product_view", ts, product_id=p) for i, (ts, p) in enumerate(views)]
    _, out = replay(Engine(CATALOG, CONFIG), sorted(events, key=lambda e: e["ts_ms"]), until=UNTIL)
    intervals = net_intervals(out.changes)
    times = sorted(ts for ts, _ in views)
    for product in "abc":
        mine = sorted(ts for ts, p in views if p == product)
        for enter, exit_ in intervals.get(f"viewed:{product}", []):
            inside = [t for t in mine if enter <= t < exit_]
            assert enter in mine and exit_ == max(inside) + 10 * S
            assert not [t for t in mine if t == exit_]
    for enter, exit_ in intervals.get("three_views", []):
        # the exit is the third-newest view before it, plus the window
        before = [t for t in times if t < exit_]
        assert exit_ == before[-3] + 10 * S and enter in times
