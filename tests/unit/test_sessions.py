"""Unit tests of the sessions core (udfs/sessions): edges, splits, lateness, merges, records."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from udfs.sessions import PersonState, SessionConfig, Sessionizer, session_id
from udfs.sessions.model import MIN_WATERMARK
from udfs.sessions.records import dynamo_writes, redis_live, redis_recent, session_key
from udfs.sessions.reference import final_sessions, make_event, reference_sessions, replay

GAP, LATENESS = 1_000, 500
CFG = SessionConfig(gap_ms=GAP, allowed_lateness_ms=LATENESS, max_duration_ms=None)
P = "person-1"
NO_WM = MIN_WATERMARK  # no watermark yet


def run(events_and_watermarks, config=CFG, final_time=None, state=None):
    """Replays (event-or-None, watermark) pairs for person P; returns (state, outputs)."""
    sessionizer = Sessionizer(config)
    return replay(sessionizer, state or sessionizer.new_state(P), events_and_watermarks, final_time)


def kinds(outputs):
    return [o.kind for o in outputs]


def ev(i, ts, etype="page_view", **props):
    return make_event(f"e{i}", ts, etype, url=props.pop("url", f"https://shop.test/p{i}"), **props)


# -- gap edge -----------------------------------------------------------------------------------------------


def test_events_exactly_gap_apart_share_a_session():
    state, outputs = run([(ev(1, 0), MIN_WATERMARK), (ev(2, GAP), MIN_WATERMARK)])
    assert kinds(outputs) == ["open", "update"]
    assert len(state.sessions) == 1 and state.sessions[0].agg.events == 2


def test_one_millisecond_over_the_gap_starts_a_new_session():
    state, outputs = run([(ev(1, 0), MIN_WATERMARK), (ev(2, GAP + 1), MIN_WATERMARK)])
    assert kinds(outputs) == ["open", "open"]
    assert [s.start for s in state.sessions] == [0, GAP + 1]


def test_reference_uses_the_same_gap_edge():
    events = [ev(1, 0), ev(2, GAP), ev(3, 2 * GAP + 1)]
    assert [(s.start_ms, s.last_ms, s.event_ids) for s in reference_sessions(events, GAP)] == [
        (0, GAP, ("e1", "e2")), (2 * GAP + 1, 2 * GAP + 1, ("e3",))]


def test_session_closes_when_the_watermark_reaches_last_activity_plus_gap():
    sessionizer = Sessionizer(CFG)
    step = sessionizer.on_event(sessionizer.new_state(P), ev(1, 100), MIN_WATERMARK)
    assert step.next_wakeup == 100 + GAP
    assert sessionizer.advance(step.state, 100 + GAP - 1).outputs == []
    closed = sessionizer.advance(step.state, 100 + GAP)
    assert kinds(closed.outputs) == ["close"]
    record = closed.outputs[0].record
    assert record["status"] == "closed" and record["key"] == f"{session_id(P, 100)}:close:2"
    assert closed.next_wakeup == 100 + GAP + LATENESS + 1  # eviction time


def test_closed_session_is_kept_for_lateness_then_evicted():
    sessionizer = Sessionizer(CFG)
    state = sessionizer.on_event(sessionizer.new_state(P), ev(1, 0), MIN_WATERMARK).state
    kept = sessionizer.advance(state, GAP + LATENESS)
    assert len(kept.state.sessions) == 1 and kept.state.sessions[0].closed
    evicted = sessionizer.advance(kept.state, GAP + LATENESS + 1)
    assert evicted.state.idle and evicted.state.seen == {} and evicted.next_wakeup is None
    assert evicted.state.recent[0]["session_id"] == session_id(P, 0)  # the Redis recent list survives


# -- lateness -----------------------------------------------------------------------------------------------


def test_event_at_the_lateness_bound_is_placed_and_one_older_is_late():
    watermark = 10_000
    bound = watermark - LATENESS
    state, outputs = run([(ev(1, bound), watermark), (ev(2, bound - 1), watermark)])
    assert kinds(outputs) == ["open", "late"]
    late = outputs[1].record
    assert late["reason"] == "too_late" and late["job"] == "sessions" and late["event_id"] == "e2"
    assert late["watermark"] == watermark and late["event"]["event_id"] == "e2"
    assert outputs[1].key == "sessions:e2"
    assert state.sessions[0].agg.events == 1


def test_late_event_bridging_two_open_sessions_merges_them():
    state, outputs = run([(ev(1, 0), NO_WM), (ev(2, 2 * GAP), NO_WM), (ev(3, GAP), NO_WM)])
    assert kinds(outputs) == ["open", "open", "correction"]
    correction = outputs[2].record
    assert correction["session_id"] == session_id(P, 0)
    replaced = {"person_id": P, "session_id": session_id(P, 2 * GAP), "start_ms": 2 * GAP}
    assert correction["replaces"] == [replaced]
    assert correction["cause"] == "late_event" and correction["status"] == "open"
    assert correction["event_count"] == 3 and correction["version"] == 2
    assert outputs[2].key == f"{session_id(P, 0)}:correction:2"
    assert len(state.sessions) == 1


def test_late_event_bridging_two_closed_sessions_corrects_history():
    config = SessionConfig(gap_ms=GAP, allowed_lateness_ms=3 * GAP)
    first, second = ev(1, 0), ev(2, 2 * GAP)
    bridge = ev(3, GAP)  # exactly one gap from each side
    state, outputs = run([(first, MIN_WATERMARK), (second, MIN_WATERMARK), (None, 3 * GAP + 200),
                          (bridge, 3 * GAP + 200)], config)
    assert kinds(outputs) == ["open", "open", "close", "close", "correction"]
    correction = outputs[-1]
    assert correction.record["status"] == "closed" and correction.record["event_count"] == 3
    assert [r["session_id"] for r in correction.record["replaces"]] == [session_id(P, 2 * GAP)]
    assert [r["session_id"] for r in state.recent] == [session_id(P, 0)]
    delete, put = dynamo_writes(correction, config)
    assert (delete.op, put.op) == ("delete", "put")
    assert delete.key == {"person_id": P, "session_key": session_key(2 * GAP, session_id(P, 2 * GAP))}
    assert put.key["session_key"] == f"{0:013d}#{session_id(P, 0)}"
    assert put.item["session_key"] == put.key["session_key"]
    assert put.item["version"] == put.version == delete.version == correction.record["version"]


def test_late_event_before_the_start_re_keys_the_session():
    _, outputs = run([(ev(1, 5_000), MIN_WATERMARK), (ev(2, 4_500), 4_400)])
    assert kinds(outputs) == ["open", "correction"]
    assert outputs[1].record["session_id"] == session_id(P, 4_500)
    assert outputs[1].record["replaces"][0]["session_id"] == session_id(P, 5_000)
    assert outputs[1].record["landing_page"] == "https://shop.test/p2"  # first by event time, not arrival


def test_late_event_extending_a_closed_session_emits_a_correction_with_the_same_id():
    _, outputs = run([(ev(1, 0), MIN_WATERMARK), (None, GAP), (ev(2, 700), GAP)])
    assert kinds(outputs) == ["open", "close", "correction"]
    assert outputs[2].record["replaces"] == [] and outputs[2].record["status"] == "open"
    assert outputs[2].record["session_id"] == session_id(P, 0)


def test_late_event_alone_opens_and_closes_at_once():
    config = SessionConfig(gap_ms=GAP, allowed_lateness_ms=2 * GAP)
    _, outputs = run([(ev(1, 10_000), 10_000), (ev(2, 8_500), 10_000)], config)
    assert kinds(outputs) == ["open", "open", "close"]
    assert outputs[2].record["session_id"] == session_id(P, 8_500)


# -- duplicates ---------------------------------------------------------------------------------------------


def test_duplicate_event_changes_nothing():
    sessionizer = Sessionizer(CFG)
    first = sessionizer.on_event(sessionizer.new_state(P), ev(1, 0, "add_to_cart", price=3.0), MIN_WATERMARK)
    again = sessionizer.on_event(first.state, ev(1, 0, "add_to_cart", price=3.0), MIN_WATERMARK)
    assert again.outputs == [] and again.state == first.state


def test_seen_ids_are_bounded():
    config = SessionConfig(gap_ms=GAP, allowed_lateness_ms=LATENESS, max_seen_ids=50)
    state, _ = run([(ev(i, i), MIN_WATERMARK) for i in range(500)], config)
    assert len(state.seen) <= 50 and "e499" in state.seen


# -- splits -------------------------------------------------------------------------------------------------


def test_max_duration_splits_and_exactly_max_stays():
    config = SessionConfig(gap_ms=GAP, allowed_lateness_ms=LATENESS, max_duration_ms=4 * GAP)
    times = [0, GAP, 2 * GAP, 3 * GAP, 4 * GAP, 5 * GAP, 6 * GAP]
    _, outputs = run([(ev(i, t), MIN_WATERMARK) for i, t in enumerate(times)], config, final_time=10**9)
    sessions = sorted(final_sessions(outputs).values(), key=lambda r: r["start_ms"])
    assert [(r["start_ms"], r["end_ms"], r["split_reason"]) for r in sessions] == [
        (0, 4 * GAP, None), (5 * GAP, 6 * GAP, "max_duration")]
    reference = reference_sessions([ev(i, t) for i, t in enumerate(times)], GAP, max_duration_ms=4 * GAP)
    assert [(s.start_ms, s.last_ms) for s in reference] == [(0, 4 * GAP), (5 * GAP, 6 * GAP)]


def test_late_event_between_a_session_and_its_cut_joins_by_max_duration():
    config = SessionConfig(gap_ms=GAP, allowed_lateness_ms=10 * GAP, max_duration_ms=4 * GAP)
    times = [0, 900, 1_800, 2_700, 3_600, 4_100]  # 4_100 is within the gap but past 4 * GAP: a cut
    state, _ = run([(ev(i, t), MIN_WATERMARK) for i, t in enumerate(times)], config)
    assert [(s.start, s.cut) for s in state.sessions] == [(0, None), (4_100, "max_duration")]
    state, outputs = run([(ev(10, 3_950), NO_WM), (ev(11, 4_050), NO_WM)], config, state=state)
    assert kinds(outputs) == ["update", "correction"]
    assert [(s.start, s.last, s.cut) for s in state.sessions] == [
        (0, 3_950, None), (4_050, 4_100, "max_duration")]


def test_day_boundary_splits_at_local_midnight():
    config = SessionConfig(gap_ms=30 * 60_000, allowed_lateness_ms=LATENESS, day_boundary_tz="Europe/Paris")
    paris = ZoneInfo("Europe/Paris")
    before = int(datetime(2026, 3, 10, 23, 55, tzinfo=paris).timestamp() * 1000)
    after = int(datetime(2026, 3, 11, 0, 5, tzinfo=paris).timestamp() * 1000)
    state, outputs = run([(ev(1, before), MIN_WATERMARK), (ev(2, after), MIN_WATERMARK)], config)
    assert kinds(outputs) == ["open", "open"]
    assert [s.day for s in state.sessions] == ["2026-03-10", "2026-03-11"]
    # a late event just before midnight joins the first day's session, never the second
    state, outputs = run([(ev(3, before + 60_000), MIN_WATERMARK)], config, state=state)
    assert kinds(outputs) == ["update"] and state.sessions[0].agg.events == 2


def test_campaign_change_splits_when_enabled():
    config = SessionConfig(gap_ms=GAP, allowed_lateness_ms=LATENESS, split_on_campaign=True)
    events = [ev(1, 0, url="https://shop.test/?utm_campaign=spring&utm_source=mail"),
              ev(2, 100),  # no campaign: continues
              ev(3, 200, utm_campaign="summer"),  # from props
              ev(4, 300, url="https://shop.test/x?utm_campaign=summer")]
    state, _ = run([(e, MIN_WATERMARK) for e in events], config)
    assert [(s.start, s.agg.events, s.cut) for s in state.sessions] == [(0, 2, None), (200, 2, "campaign")]
    assert state.sessions[0].agg.entry.value["utm"] == {"utm_campaign": "spring", "utm_source": "mail"}
    plain, _ = run([(e, MIN_WATERMARK) for e in events])
    assert len(plain.sessions) == 1


# -- aggregates and views -----------------------------------------------------------------------------------


def test_cart_products_categories_and_summary():
    events = [
        ev(1, 0, referrer="https://search.test/", utm_source="ads"),
        ev(2, 100, "product_view", product_id="sku-1", category="shoes", dwell_ms=4_000),
        ev(3, 200, "product_view", product_id="sku-2", category="hats", dwell_ms=1_000),
        ev(4, 300, "product_view", product_id="sku-1", category="shoes", dwell_ms=2_000),
        ev(5, 400, "add_to_cart", product_id="sku-1", price=20.0, quantity=2),
        ev(6, 500, "add_to_cart", product_id="sku-2", price=5.5),
        ev(7, 600, "remove_from_cart", product_id="sku-2", price=5.5),
    ]
    state, outputs = run([(e, MIN_WATERMARK) for e in events])
    view = outputs[-1].record
    assert view["cart_value"] == 40.0 and view["converted"] is False
    assert view["products"]["sku-1"] == {"views": 2, "dwell_ms": 6_000}
    assert view["categories"]["shoes"] == {"views": 2, "dwell_ms": 6_000}
    assert view["top_category"] == "shoes" and view["referrer"] == "https://search.test/"
    assert view["utm"] == {"utm_source": "ads"} and view["page_count"] == 4 and view["channels"] == ["web"]
    state, outputs = run([(ev(8, 700, "purchase", order_id="o-1"), MIN_WATERMARK)], state=state,
                         final_time=10**9)
    closed = outputs[-1].record
    assert kinds(outputs) == ["update", "close"]
    assert closed["converted"] is True and closed["revenue"] == 40.0 and closed["cart_value"] == 0.0
    assert closed["exit_page"] == "https://shop.test/p8" and closed["landing_page"] == "https://shop.test/p1"
    assert closed["duration_ms"] == 700 and closed["event_count"] == 8 and closed["products_viewed"] == 2


def test_cart_is_refolded_in_event_time_order_when_ops_arrive_late():
    in_order = [ev(1, 0, "add_to_cart", price=10.0), ev(2, 100, "purchase"),
                ev(3, 200, "add_to_cart", price=7.0)]
    late = [in_order[0], in_order[2], in_order[1]]
    for order in (in_order, late):
        state, _ = run([(e, MIN_WATERMARK) for e in order])
        totals = state.sessions[0].agg.cart.totals
        assert (totals.value, totals.revenue, totals.purchases) == (7.0, 10.0, 1)


def test_purchase_revenue_prop_wins_over_cart_value():
    state, _ = run([(ev(1, 0, "add_to_cart", price=10.0), MIN_WATERMARK),
                    (ev(2, 10, "purchase", revenue=12.5, currency="EUR"), MIN_WATERMARK)])
    totals = state.sessions[0].agg.cart.totals
    assert (totals.value, totals.revenue, totals.currency) == (0.0, 12.5, "EUR")


def test_per_session_memory_is_bounded():
    config = SessionConfig(gap_ms=GAP, allowed_lateness_ms=LATENESS, max_duration_ms=None, max_products=5,
                           max_categories=3, max_cart_ops=10, max_channels=2)
    events = [make_event(f"e{i}", i, "product_view" if i % 2 else "add_to_cart", channel=f"ch{i % 5}",
                         product_id=f"sku-{i}", category=f"c{i % 7}", price=1.0) for i in range(300)]
    state, _ = run([(e, MIN_WATERMARK) for e in events], config)
    agg = state.sessions[0].agg
    assert len(agg.products) == 5 and len(agg.categories) == 3 and len(agg.cart.ops) == 10
    assert len(agg.channels) == 2
    assert agg.cart.totals.value == 150.0  # folded ops still count


# -- person merge -------------------------------------------------------------------------------------------


def test_merge_person_folds_overlapping_and_distant_sessions():
    sessionizer = Sessionizer(CFG)
    survivor, _ = run([(ev(1, 1_000), MIN_WATERMARK), (ev(2, 1_500), MIN_WATERMARK)])
    absorbed = sessionizer.new_state("person-2")
    for event in (make_event("x1", 500, url="https://shop.test/landing"), make_event("x2", 1_200),
                  make_event("x3", 20_000)):
        absorbed = sessionizer.on_event(absorbed, event, MIN_WATERMARK).state
    step = sessionizer.merge_person(survivor, absorbed, MIN_WATERMARK)
    assert kinds(step.outputs) == ["correction", "correction"]
    near, far = (o.record for o in step.outputs)
    assert near["person_id"] == P and near["session_id"] == session_id(P, 500) and near["event_count"] == 4
    assert near["landing_page"] == "https://shop.test/landing" and near["cause"] == "person_merge"
    assert {(r["person_id"], r["session_id"]) for r in near["replaces"]} == {
        ("person-2", session_id("person-2", 500)), (P, session_id(P, 1_000))}
    assert far["session_id"] == session_id(P, 20_000)
    assert far["replaces"] == [{"person_id": "person-2", "session_id": session_id("person-2", 20_000),
                                "start_ms": 20_000}]
    assert [s.start for s in step.state.sessions] == [500, 20_000]
    assert {"e1", "e2", "x1", "x2", "x3"} <= set(step.state.seen)
    assert step.state.seq == max(survivor.seq, absorbed.seq) + 1
    with pytest.raises(ValueError):
        sessionizer.merge_person(survivor, survivor, 0)


def test_merge_person_closes_due_absorbed_sessions_first():
    sessionizer = Sessionizer(CFG)
    absorbed = sessionizer.on_event(sessionizer.new_state("person-2"), make_event("x1", 0), NO_WM).state
    step = sessionizer.merge_person(sessionizer.new_state(P), absorbed, 5 * GAP)
    assert kinds(step.outputs) == ["close"] and step.outputs[0].record["person_id"] == "person-2"
    assert step.state.idle


# -- ids, bounds, serialization, sinks ----------------------------------------------------------------------


def test_session_ids_are_deterministic_and_short():
    assert session_id(P, 1_700_000_000_000) == session_id(P, 1_700_000_000_000)
    assert session_id(P, 1) != session_id(P, 2) and session_id("a", 1) != session_id("b", 1)
    assert len(session_id(P, 0)) == 18 and session_id(P, 0).startswith("s_")
    deliveries = [(ev(1, 0), MIN_WATERMARK), (ev(2, 3 * GAP), 0), (ev(3, GAP), 0)]
    assert run(deliveries, final_time=10**9)[1] == run(deliveries, final_time=10**9)[1]


def test_max_sessions_bound_evicts_oldest_and_refuses_older_events():
    config = SessionConfig(gap_ms=GAP, allowed_lateness_ms=100 * GAP, max_sessions=3)
    state, outputs = run([(ev(i, i * 2 * GAP), MIN_WATERMARK) for i in range(5)], config)
    assert [s.start for s in state.sessions] == [4 * GAP, 6 * GAP, 8 * GAP]
    assert kinds(outputs).count("close") == 2 and state.floor == 2 * GAP + GAP
    state, outputs = run([(ev(9, 3 * GAP), MIN_WATERMARK)], config, state=state)
    assert outputs[0].record["reason"] == "evicted"


def test_state_round_trips_through_json():
    events = [ev(1, 0, "product_view", product_id="sku", category="c", dwell_ms=5, utm_campaign="x"),
              ev(2, 10, "add_to_cart", price=1.5, quantity=3), ev(3, 3 * GAP)]
    state, _ = run([(e, 0) for e in events], final_time=GAP + 20)
    assert state.sessions[0].closed
    restored = PersonState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert restored == state
    tail = [(ev(4, 20), GAP + 20)]
    assert run(tail, state=restored)[1] == run(tail, state=state)[1]


def test_redis_and_dynamo_helpers():
    state, outputs = run([(ev(1, 0), MIN_WATERMARK), (ev(2, 5 * GAP), MIN_WATERMARK)], final_time=3 * GAP)
    assert state.seq == 3  # three calls emitted something
    live = redis_live(state, CFG)
    assert (live.kind, live.op, live.key) == ("redis", "set", f"tagstream:session:live:{P}")
    assert live.value["session_id"] == session_id(P, 5 * GAP)
    assert live.expires_at_ms == 5 * GAP + CFG.live_ttl_ms  # its last activity + live_ttl_ms
    assert live.version == state.seq
    recent = redis_recent(state, CFG)
    assert recent.key == f"tagstream:session:recent:{P}" and recent.version == state.seq
    assert [r["session_id"] for r in recent.value] == [session_id(P, 0)]
    assert recent.expires_at_ms == max(state.watermark, 0) + CFG.recent_ttl_ms
    close = next(o for o in outputs if o.kind == "close")
    (put,) = dynamo_writes(close, CFG)
    assert (put.kind, put.op, put.table) == ("dynamodb", "put", "tagstream_sessions")
    assert put.item["person_id"] == P and put.item["expires_at"] == 0 + CFG.history_ttl_days * 86_400
    assert put.expires_at_ms == put.item["expires_at"] * 1000
    assert dynamo_writes(outputs[0], CFG) == []
    assert redis_live(PersonState(P), CFG).op == "delete"
    assert redis_recent(PersonState(P), CFG).op == "delete"


def test_updates_can_be_muted():
    config = SessionConfig(gap_ms=GAP, allowed_lateness_ms=LATENESS, emit_updates=False)
    _, outputs = run([(ev(1, 0), MIN_WATERMARK), (ev(2, 10), MIN_WATERMARK)], config)
    assert kinds(outputs) == ["open"]


@pytest.mark.parametrize("bad", [{"gap_ms": 0}, {"max_duration_ms": 0}, {"allowed_lateness_ms": -1},
                                 {"day_boundary_tz": "Mars/Olympus"}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        SessionConfig(**bad)
