"""Placements: the ordered rule hierarchy of the homepage banner, evaluated on current tags (tier 1)."""

from __future__ import annotations

from udfs.segments import Engine, SegmentsConfig, compile_catalog, load_directory
from udfs.segments.placements import ActiveTag, compile_placement, fill
from udfs.segments.reference import event, replay

S, M, H, D = 1000, 60_000, 3_600_000, 86_400_000
T0 = 1_795_000_000_000
EXAMPLES = compile_catalog(load_directory())


def banner(events, until=None):
    engine = Engine(EXAMPLES, SegmentsConfig())
    state, _ = replay(engine, [{**e, "ts_ms": e["ts_ms"] + T0} for e in events],
                      until=None if until is None else until + T0)
    return engine.view(state)["placements"]["homepage_banner"]


def browse(event_id, ts, category):
    return event(event_id, "page_view", ts, category=category, dwell_ms=11 * M)


def test_generic_banner_by_default():
    decision = banner([event("v", "page_view", 0)])
    assert decision == {"content": "banner_generic", "rule": "generic", "tag": None,
                        "version": EXAMPLES.placements["homepage_banner"].version}


def test_category_recommendation_for_the_most_recent_category():
    assert banner([browse("a", 0, "shoes")])["content"] == "banner_category_reco:shoes"
    decision = banner([browse("a", 0, "shoes"), browse("b", 1 * M, "bags")])
    assert decision["content"] == "banner_category_reco:bags" and decision["tag"] == "category_browser:bags"


def test_loyalty_discount_wins_for_recent_purchasers_until_the_week_is_over():
    events = [browse("a", 0, "shoes"), event("b", "purchase", 1 * M)]
    assert banner(events)["content"] == "banner_loyalty_discount"
    # after 7 days the purchase is no longer recent and the browsing is over too
    assert banner(events, until=7 * D + 1 * M)["content"] == "banner_generic"
    assert banner(events, until=7 * D + 1 * M - 1)["content"] == "banner_loyalty_discount"


def test_decision_changes_are_written_to_the_view():
    engine = Engine(EXAMPLES, SegmentsConfig())
    state = engine.new_state("p")
    state, out, _ = engine.on_event(state, {**browse("a", 0, "shoes"), "ts_ms": T0})
    assert out.fields()["placement:homepage_banner"]["content"] == "banner_category_reco:shoes"
    state, out, _ = engine.advance(state, T0 + H)
    assert out.fields()["placement:homepage_banner"]["content"] == "banner_generic"
    # tags that no placement reads do not rewrite decisions
    state, out, _ = engine.on_event(state, {**event("v", "product_view", 0, product_id="p"), "ts_ms": T0 + H})
    assert "tag:viewed_product:p" in out.fields() and not any(f.startswith("placement:") for f in out.fields())


def test_rules_with_unfillable_content_are_skipped():
    placement = compile_placement(
        {"kind": "placement", "name": "p", "rules": [
            {"when": {"any": [{"segment": "a"}, {"segment": "b"}]}, "content": "x:{category}"},
            {"when": {"all": [{"segment": "a"}, {"not": {"segment": "c"}}]}, "content": "y"},
            {"content": "z"}]},
        "v1", {"a": (), "b": ("category",), "c": ()})
    a = ActiveTag("a", "a", {}, 5)
    b = ActiveTag("b:shoes", "b", {"category": "shoes"}, 3)
    assert placement.decide({"a": [a]})["content"] == "y"
    assert placement.decide({"b": [b]})["content"] == "x:shoes"
    assert placement.decide({"a": [a], "c": [ActiveTag("c", "c", {}, 1)]})["content"] == "z"
    assert placement.decide({})["rule"] == "rule_2"
    assert fill("{a}-{b}", {"a": 1}) is None
