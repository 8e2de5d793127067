"""Person merges in the segments core: `Engine.hand_off` and `Engine.fold` (tier 1, hypothesis).

The property: a person who absorbs another ends with exactly the membership intervals it would have had if
every event had carried its id from the start.
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.unit.test_segments_properties import CATALOG, KINDS, UNTIL, S, build
from udfs.segments import Engine, SegmentsConfig
from udfs.segments.reference import event, net_intervals, replay

CONFIG = SegmentsConfig(allowed_lateness_ms=200 * S, evict_every_ms=1)  # no horizon cuts into the merge
rows = st.lists(st.tuples(st.integers(0, 40 * S), st.sampled_from(KINDS), st.sampled_from("abc"),
                          st.sampled_from("xy"), st.integers(0, 4000), st.booleans()), max_size=14)


def renamed(events: list[dict], prefix: str) -> list[dict]:
    return [{**e, "event_id": prefix + e["event_id"]} for e in events]


def merged_run(a_events: list[dict], b_events: list[dict], merge_ts: int):
    """A's events up to the merge go to A, which hands off at `merge_ts`; B takes its own events, folds A's
    export (through JSON, like the loop topic) and then A's later events (forwarded); time runs to UNTIL."""
    engine = Engine(CATALOG, CONFIG)
    by_time = sorted(a_events, key=lambda e: (e["ts_ms"], e["event_id"]))
    before = [e for e in by_time if e["ts_ms"] <= merge_ts]
    after = [e for e in by_time if e["ts_ms"] > merge_ts]
    a_state, a_out = replay(engine, before, person_id="A")
    exported, a_state, a_left = engine.hand_off(a_state, merge_ts)
    b_state, b_out = replay(engine, sorted(b_events, key=lambda e: (e["ts_ms"], e["event_id"])), person_id="B")
    if exported is not None:
        b_state, out, _ = engine.fold(b_state, orjson.loads(orjson.dumps(exported)))
        b_out.extend(out)
    b_state, out = replay(engine, after, person_id="B", state=b_state, until=UNTIL)
    b_out.extend(out)
    a_out.extend(a_left)
    return engine, (a_state, a_out), (b_state, b_out)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows, rows, st.integers(0, 45 * S))
# the survivor's own exit/entry due before the absorbed events (B's `nobuy` at 3000) keeps its time
@example([(3001, "product_view", "a", "x", 0, False)] * 2, [(0, "product_view", "a", "x", 0, False)], 3001)
def test_merge_then_events_is_one_person_from_the_start(a_rows, b_rows, merge_ts):
    a_events, b_events = renamed(build(a_rows), "a"), renamed(build(b_rows), "b")
    engine, (a_state, a_out), (b_state, b_out) = merged_run(a_events, b_events, merge_ts)
    one = Engine(CATALOG, CONFIG)
    alone, out = replay(one, sorted(a_events + b_events, key=lambda e: (e["ts_ms"], e["event_id"])),
                        person_id="B", until=UNTIL)
    assert net_intervals(b_out.changes) == net_intervals(out.changes)
    assert engine.view(b_state)["tags"] == one.view(alone)["tags"]
    # the absorbed person holds nothing afterwards
    assert engine.view(a_state)["tags"] == {} and not a_state.seen
    ends = {tag: spans[-1][1] for tag, spans in net_intervals(a_out.changes).items()}
    assert all(end is not None and end <= max(merge_ts, a_state.frontier) for end in ends.values())


def test_absorbed_tags_exit_with_cause_merge_and_the_survivor_enters_with_a_merge_reason():
    engine = Engine(CATALOG, CONFIG)
    a_state, _ = replay(engine, [event("a1", "product_view", 1 * S, person="A", product_id="a", category="x"),
                                 event("a2", "identify", 2 * S, person="A", traits={"tier": "gold"})],
                        person_id="A")
    exported, fresh, left = engine.hand_off(a_state, 3 * S)
    assert exported is not None and [row[1] for row in exported["events"]] == ["a1", "a2"]
    exits = [c for c in left.changes if c["op"] == "exit"]
    assert {c["tag"] for c in exits} == {"viewed:a", "gold", "combo", "viewed_not_carted:a"}
    assert all(c["reason"]["cause"] == "merge" and c["ts_ms"] == 3 * S for c in exits)
    assert all(op.op == "delete" and not op.erase for op in (*left.dynamo, *left.redis))
    assert left.redis and fresh.seen == {} and fresh.frontier == 3 * S

    b_state, _ = replay(engine, [event("b1", "page_view", 2500, person="B", category="y")], person_id="B")
    b_state, out, wake = engine.fold(b_state, exported, None)
    entries = {c["tag"]: c for c in out.changes if c["op"] == "enter"}
    assert set(entries) == {"viewed:a", "gold", "combo", "viewed_not_carted:a"}
    assert entries["viewed:a"]["ts_ms"] == 1 * S and entries["viewed:a"]["reason"]["cause"] == "merge"
    assert entries["viewed:a"]["reason"]["from"] == "A" and entries["viewed:a"]["correction"]
    assert {op.key["tag"] for op in out.dynamo if op.op == "put"} == set(entries)
    assert wake == 4 * S  # nobuy: first seen at 1 s (A's view) and no purchase for 3 s, as if B had viewed
    # a redelivered handoff changes nothing (the wrapper also skips it by id)
    again, out, _ = engine.fold(b_state, exported, None)
    assert out.changes == [] and engine.view(again)["tags"] == engine.view(b_state)["tags"]


def test_a_person_with_nothing_exports_nothing():
    engine = Engine(CATALOG, CONFIG)
    exported, _, left = engine.hand_off(engine.new_state("A"), 5)
    assert exported is None and left.changes == []
